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

    p = sub.add_parser("variants", help="list the released checkpoints pid knows")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("selftest", help="check the install: compiled kernels, a tiny network, golden parity")
    p.add_argument("--golden-dir", help="folder of reference parity cases (default: $PID_GOLDEN_DIR or "
                                        "../shared/golden)")
    p.set_defaults(func=cmd_selftest)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import pid
    from pid.variants import UnknownVariantError

    try:
        return args.func(args)
    except (pid.CheckpointError, pid.ConfigError, UnknownVariantError, ValueError) as e:
        log.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
