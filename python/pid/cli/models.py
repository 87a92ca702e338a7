"""Commands about checkpoints and what a decode needs: `pid info`, `convert`, `download`, `variants`, `memory`."""

from __future__ import annotations

import json
import logging

from .args import (PRECISION_CHOICES, CHECKPOINT_HELP, add_hub_args, add_model_args, check_output, checkpoint_source, load_config_arg,
                   parse_size, user_error)

log = logging.getLogger("pid.cli")


def cmd_info(args) -> int:
    import pid

    source = checkpoint_source(args.checkpoint, args)
    decoder = pid.load(source, variant=args.variant, config=load_config_arg(args.config), revision=args.revision,
                       token=args.token)
    info = decoder.info()
    info["config"] = decoder.config.to_dict()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for key, value in info.items():
        if key == "config":
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        if key == "parameters":
            value = f"{value:,} ({value / 1e6:.1f} M)"
        print(f"{key:20s} {value}")
    return 0


def cmd_convert(args) -> int:
    import pid
    from pid.checkpoint import save_safetensors

    out = check_output(args.out, [".safetensors"], "output")
    source = checkpoint_source(args.checkpoint, args)
    decoder = pid.load(source, variant=args.variant, config=load_config_arg(args.config), revision=args.revision,
                       token=args.token)
    try:
        save_safetensors(decoder, out)
    except OSError as e:
        raise user_error(f"could not write {str(out)!r}: {e.strerror or e} (any earlier file there is unchanged)") from e
    log.info("wrote %s", out)
    return 0


def cmd_download(args) -> int:
    from pid import hub

    print(hub.checkpoint_path(args.variant, revision=args.revision, token=args.token))
    return 0


def cmd_variants(args) -> int:
    from pid.variants import VARIANTS

    if args.json:
        print(json.dumps({n: {"experiment": v.experiment, "generation": v.generation, "kind": v.kind,
                              "latent_space": v.latent.name, "sr_scale": v.sr_scale,
                              "registry_keys": list(v.registry_keys)} for n, v in VARIANTS.items()}, indent=1))
        return 0
    print(f"{'variant':24s} {'gen':5s} {'kind':8s} {'latent':10s} {'sr':3s} experiment")
    for name, v in VARIANTS.items():
        print(f"{name:24s} {v.generation:5s} {v.kind:8s} {v.latent.name:10s} {v.sr_scale:<3d} {v.experiment}")
    return 0


def cmd_memory(args) -> int:
    """The estimated peak of a decode (per rank), unsplit and, with --max-memory, as decode(max_memory=) plans it."""
    from pid.memory import parse_bytes, plan_for_budget
    from pid.memory import estimate_memory
    from pid.variants import get_variant

    cfg = get_variant(args.variant).config
    size = parse_size(args.size)
    height, width = size if isinstance(size, tuple) else (size, size)
    if args.world_size < 1:
        raise user_error(f"--world-size must be at least 1, got {args.world_size}")
    if args.world_size > 1 and args.parallel == "sequence":
        from pid.parallel import SequenceParallel

        SequenceParallel(0, args.world_size).check_heads(cfg.num_heads, cfg.pixel_num_heads)
    if args.batch < 1:
        raise user_error(f"--batch must be at least 1, got {args.batch}")
    gib = 2.0**30
    common = dict(world_size=args.world_size, parallel=args.parallel)
    whole = estimate_memory(cfg, height, width, args.batch, args.precision, **common)
    per = f" per rank ({args.world_size} ranks, {args.parallel} parallel)" if args.world_size > 1 else ""
    print(f"{args.variant} {width}x{height}, batch {args.batch}, {args.precision}{per}")
    print(f"  unsplit:        {whole.peak / gib:6.2f} GiB  ({whole})")
    if args.max_memory is not None:
        plan = plan_for_budget(cfg, height, width, args.batch, args.precision, parse_bytes(args.max_memory), **common)
        print(f"  --max-memory {args.max_memory}: {plan.estimate.peak / gib:.2f} GiB  (pixel_chunk {plan.pixel_chunk}, "
              f"token_chunk {plan.token_chunk}, gate features {'kept' if plan.keep_gate_features else 'per step'}; "
              f"{plan.estimate})")
    return 0


def register(sub, fmt) -> None:
    """Adds these commands to the `pid` parser's subcommands."""
    p = sub.add_parser("info", help="what a checkpoint is: variant, generation, latent space, parameters",
                       formatter_class=fmt)
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    add_model_args(p)
    add_hub_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("convert", help="write a checkpoint as bf16 safetensors (no net. prefix, variant metadata)",
                       formatter_class=fmt)
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("out", help="the .safetensors file to write")
    add_model_args(p)
    add_hub_args(p)
    p.set_defaults(func=cmd_convert)
    p = sub.add_parser("download", help="fetch a variant's released checkpoint from the Hugging Face Hub (nvidia/PiD) "
                       "into the Hugging Face cache, or find it there; print its path", formatter_class=fmt)
    p.add_argument("variant", help="registry name, experiment name or registry key (see `pid variants`)")
    add_hub_args(p)
    p.set_defaults(func=cmd_download)
    p = sub.add_parser("variants", help="list the released checkpoints pid knows", formatter_class=fmt)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_variants)
    p = sub.add_parser("memory", help="estimated peak memory of a decode (per rank), and the plan --max-memory makes",
                       formatter_class=fmt)
    p.add_argument("variant", help="a released variant (pid variants), e.g. flux-v1.5")
    p.add_argument("--size", required=True, help="output size N or WxH (width x height)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="fast")
    p.add_argument("--max-memory", help="a budget (e.g. 6GB): the least splitting that fits, as decode plans it")
    p.add_argument("--world-size", type=int, default=1, help="ranks of a parallel decode (per-rank peak)")
    p.add_argument("--parallel", choices=("sequence", "data"), default="sequence")
    p.set_defaults(func=cmd_memory)
