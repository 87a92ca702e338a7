"""`pid bench` (whole decodes timed, with their FLOPs and peak memory) and `pid selftest` (the install checked)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .args import (PRECISION_CHOICES, add_attention_args, add_hub_args, add_model_args, check_device, check_output, checkpoint_source,
                   load_config_arg, require_at_least, user_error)

log = logging.getLogger("pid.cli")


def cmd_bench(args) -> int:
    json_out = check_output(args.json, [".json"], "--json") if args.json else None
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise user_error(f"--sizes {args.sizes!r}: positive square output sides, comma-separated, e.g. 1024,2048")
    require_at_least(args, 1, "batch", "steps", "repeats")
    require_at_least(args, 0, "warmup")
    device = check_device(args.device)
    if args.cuda_graph and device.type != "cuda":
        raise user_error("--cuda-graph needs --device cuda")

    import torch

    import pid
    from pid import bench
    from pid.archs import ARCHS, random_net
    from pid.atomic import atomic_path

    if args.checkpoint:
        source = checkpoint_source(args.checkpoint, args)
        decoder = pid.load(source, variant=args.variant, config=load_config_arg(args.config), device=device,
                           precision=args.precision, attention=args.attention, revision=args.revision,
                           token=args.token)
        what = decoder.variant.name if decoder.variant else args.checkpoint
    else:
        from pid.plan import weights_dtype

        net = random_net(ARCHS[args.arch], device).to(weights_dtype(args.precision))
        decoder = pid.PidDecoder(net, precision=args.precision, attention=args.attention)
        what = f"{args.arch} architecture, random weights"
    attention = decoder.plan.attention_backend(decoder.device.type)
    window = "" if args.window is None else f", window {args.window}"
    if not args.verbose:
        logging.getLogger("pid.decoder").setLevel(logging.WARNING)  # one line per decode would bury the table
    device = decoder.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"pid bench: {what}; precision {decoder.precision}{'; CUDA graph' if args.cuda_graph else ''}; "
          f"attention {attention}{window}; {name}; torch {torch.__version__}; batch {args.batch}; {args.steps} steps",
          flush=True)
    rows = bench.bench_sizes(decoder, sizes, batch=args.batch, steps=args.steps, repeats=args.repeats,
                             warmup=args.warmup, cuda_graph=args.cuda_graph, memory=not args.no_memory,
                             window=args.window)
    print(bench.format_rows(rows, args.peak_tflops))
    if json_out is not None:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps({"device": name, "torch": torch.__version__, "what": what,
                                       "precision": decoder.precision, "attention": attention,
                                       "window": args.window, "rows": rows}, indent=1))
    return 0


def cmd_selftest(args) -> int:
    from pid.selftest import run_selftest

    if args.golden_dir is not None and not (Path(args.golden_dir) / "FORMAT.md").is_file():
        raise user_error(f"--golden-dir {args.golden_dir!r} is not a folder of golden cases (it has no FORMAT.md)")
    return 0 if run_selftest(golden_dir=args.golden_dir) else 1


def register(sub, fmt) -> None:
    """Adds these commands to the `pid` parser's subcommands."""
    p = sub.add_parser("bench", help="time whole decodes: seconds, TFLOP/s, peak memory vs the estimate",
                       formatter_class=fmt)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a checkpoint (file or variant name) to time (default: --arch with "
                        "random weights)")
    source.add_argument("--arch", choices=("full", "small", "tiny"), default="full",
                        help="random-weight network: full (the released 1.40 B), small, tiny")
    add_model_args(p)
    add_hub_args(p)
    p.add_argument("--sizes", default="1024", help="square output sides, comma-separated")
    p.add_argument("--batch", type=int, default=1, help="images per decode")
    p.add_argument("--steps", type=int, default=4, help="sampler steps")
    p.add_argument("--repeats", type=int, default=3, help="timed decodes per size")
    p.add_argument("--warmup", type=int, default=1, help="untimed decodes first")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="fast", help="precision regime")
    p.add_argument("--cuda-graph", action="store_true", help="capture each size's decode once and replay it")
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for the FLOP-floor ratio")
    p.add_argument("--no-memory", action="store_true", help="skip the (untimed) peak-memory run")
    p.add_argument("--json", help="write the rows here (.json)")
    add_attention_args(p)
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("selftest", help="check the install: compiled kernels, a tiny network, golden parity",
                       formatter_class=fmt)
    p.add_argument("--golden-dir", help="folder of reference parity cases (default: $PID_GOLDEN_DIR or "
                                        "../shared/golden)")
    p.set_defaults(func=cmd_selftest)
