"""The `pid` command line (also `python -m pid`), built on the public API only."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger("pid.cli")


def _load_config_arg(value: Optional[str]):
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        raise SystemExit(f"pid: --config {value!r}: no such file (expected a JSON of reference PidNet kwargs)")
    data = json.loads(path.read_text())
    return data.get("net_kwargs", data)  # a golden case JSON works too


def cmd_info(args) -> int:
    import pid

    decoder = pid.load(args.checkpoint, variant=args.variant, config=_load_config_arg(args.config))
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


def _read_latent(path: str):
    from pid.errors import LatentError
    from pid.tensor_file import read_tensor_file

    tensors = read_tensor_file(path, "latent file", error=LatentError).tensors
    if "latent" in tensors:
        return tensors["latent"]
    if len(tensors) != 1:
        raise LatentError(f"latent file {path!r} holds {len(tensors)} tensors ({sorted(tensors)}); expected one "
                          "(or one named 'latent')")
    return next(iter(tensors.values()))


def _parse_size(value: Optional[str]):
    if value is None:
        return None
    try:
        if "x" in value.lower():
            w, h = value.lower().split("x")
            return int(h), int(w)
        return int(value)
    except ValueError:
        raise SystemExit(f"pid: --size {value!r}: expected N or WxH, e.g. 2048 or 2688x1536") from None


def _add_attention_args(p) -> None:
    p.add_argument("--window", type=int, help="windowed attention over w x w patch neighbourhoods, for very large "
                   "outputs: changes the output (docs/attention.md); default global")
    p.add_argument("--attention", choices=("kernel", "sdpa", "auto"),
                   help="global attention: pid's kernel, torch SDPA, or auto (the faster, timed per shape); "
                        "default: kernel on CPU, sdpa on CUDA")


def cmd_decode(args) -> int:
    import pid

    decoder = pid.load(args.checkpoint, variant=args.variant, config=_load_config_arg(args.config),
                       device=args.device, precision=args.precision, attention=args.attention)
    latent = _read_latent(args.latent)
    sigma = [float(s) for s in args.sigma.split(",")] if "," in args.sigma else float(args.sigma)
    images = decoder.decode(latent, sigma=sigma, caption=args.caption, caption_embeds=args.caption_embeds,
                            steps=args.steps, sampler=args.sampler, cfg_scale=args.cfg_scale, shift=args.shift,
                            seed=args.seed, output_size=_parse_size(args.size), latent_format=args.latent_format,
                            window=args.window, output="pil")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out] if len(images) == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(len(images))]
    for image, path in zip(images, paths):
        image.save(path)
        log.info("wrote %s (%dx%d)", path, image.width, image.height)
    return 0


def cmd_convert(args) -> int:
    import pid
    from pid.checkpoint import save_safetensors

    decoder = pid.load(args.checkpoint, variant=args.variant, config=_load_config_arg(args.config))
    save_safetensors(decoder, args.out)
    log.info("wrote %s", args.out)
    return 0


def cmd_encode_caption(args) -> int:
    from pid.text import encode_caption_command

    encode_caption_command(args.caption, args.out, model_id=args.model, device=args.device)
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


def cmd_bench(args) -> int:
    import torch

    import pid
    from pid import bench
    from pid.archs import ARCHS, random_net

    if args.checkpoint:
        decoder = pid.load(args.checkpoint, variant=args.variant, config=_load_config_arg(args.config),
                           device=args.device, precision=args.precision, attention=args.attention)
        what = decoder.variant.name if decoder.variant else args.checkpoint
    else:
        net = random_net(ARCHS[args.arch], args.device)
        if args.precision == "fast":
            net = net.bfloat16()
        decoder = pid.PidDecoder(net, precision=args.precision, attention=args.attention)
        what = f"{args.arch} architecture, random weights"
    if args.cuda_graph and decoder.device.type != "cuda":
        raise ValueError("--cuda-graph needs --device cuda")
    attention = decoder.plan.attention_backend(decoder.device.type)
    window = "" if args.window is None else f", window {args.window}"
    if not args.verbose:
        logging.getLogger("pid.decoder").setLevel(logging.WARNING)  # one line per decode would bury the table
    device = decoder.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"pid bench: {what}; precision {decoder.precision}{'; CUDA graph' if args.cuda_graph else ''}; "
          f"attention {attention}{window}; {name}; torch {torch.__version__}; batch {args.batch}; {args.steps} steps",
          flush=True)
    rows = bench.bench_sizes(decoder, [int(s) for s in args.sizes.split(",")], batch=args.batch, steps=args.steps,
                             repeats=args.repeats, warmup=args.warmup, cuda_graph=args.cuda_graph,
                             memory=not args.no_memory, window=args.window)
    print(bench.format_rows(rows, args.peak_tflops))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "what": what,
                                               "precision": decoder.precision, "attention": attention,
                                               "window": args.window, "rows": rows}, indent=1))
    return 0


def cmd_selftest(args) -> int:
    from pid.selftest import run_selftest

    return 0 if run_selftest(golden_dir=args.golden_dir) else 1


def build_parser() -> argparse.ArgumentParser:
    import pid

    parser = argparse.ArgumentParser(prog="pid", description="PiD pixel-diffusion decoder engine")
    parser.add_argument("--version", action="version", version=f"pid {pid.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="what a checkpoint is: variant, generation, latent space, parameters")
    p.add_argument("checkpoint", help="model_ema_bf16.pth or .safetensors")
    p.add_argument("--variant", help="registry name, experiment name or registry key (see `pid variants`)")
    p.add_argument("--config", help="JSON file of reference PidNet kwargs, for checkpoints outside the registry")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("decode", help="decode a latent file into PNG images")
    p.add_argument("latent", help=".safetensors or .pt holding one [B, C, h, w] or [C, h, w] tensor")
    p.add_argument("--checkpoint", required=True, help="model_ema_bf16.pth or .safetensors")
    p.add_argument("--variant", help="registry name, experiment name or registry key (see `pid variants`)")
    p.add_argument("--config", help="JSON file of reference PidNet kwargs, for checkpoints outside the registry")
    p.add_argument("--sigma", default="0.0", help="noise level of the latent, or one per sample: 0.3,0.5 (default 0)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--caption", help="caption text (needs the Gemma encoder: pip install 'pid[text]')")
    group.add_argument("--caption-embeds", help="safetensors/.pt file of caption embeddings (pid encode-caption)")
    p.add_argument("--latent-format", choices=("normalized", "raw"), default="normalized",
                   help="normalized (what the LDM denoises; default) or raw VAE moments")
    p.add_argument("--steps", type=int)
    p.add_argument("--sampler", choices=("student", "dpm++2m"))
    p.add_argument("--cfg-scale", type=float)
    p.add_argument("--shift", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", help="output size N or WxH (default: the latent's natural size)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("float32", "reference", "fast"),
                   help="float32 (CPU default), reference (official: fp32 weights + bf16 autocast; GPU default), "
                        "fast (bf16 weights + fused kernels)")
    p.add_argument("--out", default="pid.png", help="PNG path (batches get _0, _1, ... suffixes)")
    _add_attention_args(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("convert", help="write a checkpoint as bf16 safetensors (no net. prefix, variant metadata)")
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--variant")
    p.add_argument("--config")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("encode-caption", help="encode a caption with Gemma-2 into an embeddings file")
    p.add_argument("caption", nargs="+", help="one or more captions")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="Efficient-Large-Model/gemma-2-2b-it", help="model id or local folder")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_encode_caption)

    p = sub.add_parser("variants", help="list the released checkpoints pid knows")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("bench", help="time whole decodes: seconds, TFLOP/s, peak memory vs the estimate")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a checkpoint to time (default: --arch with random weights)")
    source.add_argument("--arch", choices=("full", "small", "tiny"), default="full",
                        help="random-weight network: full (the released 1.40 B), small, tiny (default full)")
    p.add_argument("--variant")
    p.add_argument("--config")
    p.add_argument("--sizes", default="1024", help="square output sides, comma-separated (default 1024)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("float32", "reference", "fast"), default="fast")
    p.add_argument("--cuda-graph", action="store_true", help="capture each size's decode once and replay it")
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for the FLOP-floor ratio")
    p.add_argument("--no-memory", action="store_true", help="skip the (untimed) peak-memory run")
    p.add_argument("--json", help="write the rows here")
    _add_attention_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("selftest", help="check the install: compiled kernels, a tiny network, golden parity")
    p.add_argument("--golden-dir", help="folder of reference parity cases (default: $PID_GOLDEN_DIR or "
                                        "../shared/golden)")
    p.set_defaults(func=cmd_selftest)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ValueError as e:  # pid.errors.PidError, and the ValueErrors of argument checks
        log.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
