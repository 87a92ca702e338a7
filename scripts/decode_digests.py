"""SHA-256 digests of a fixed table of decodes and network calls: run it before and after a change that must not
change a number (a restructuring), and compare.

    python scripts/decode_digests.py --save before.json      # on the old code
    python scripts/decode_digests.py --compare before.json   # on the new code: exit 1 naming every case that differs

Every case runs through the public API only (`pid.load`, `PidDecoder.decode`, the network's reference-signature
`forward` with an `ExecutionPlan`), on the golden networks when `../shared/golden` (or $PID_GOLDEN_DIR) is there and on
the tiny random network always: the three precision regimes, the student and the guided DPM-Solver++ teacher,
batches with per-sample σ, explicit noises, windows, pixel and token chunks, gate features made per step, memory
budgets, the output formats, and the network with pid's kernels and with the PyTorch references. A digest is of the
output's bytes, so "equal" means bit for bit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

import pid
from pid import golden
from pid.archs import TINY, random_net


def digest(value) -> str:
    if isinstance(value, list):  # PIL images
        value = np.stack([np.asarray(v) for v in value])
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous()
        data = value.view(torch.uint8).numpy().tobytes() if value.dtype == torch.bfloat16 else value.numpy().tobytes()
        return f"{tuple(value.shape)}:{value.dtype}:" + hashlib.sha256(data).hexdigest()
    value = np.ascontiguousarray(value)
    return f"{value.shape}:{value.dtype}:" + hashlib.sha256(value.tobytes()).hexdigest()


def networks():
    """(name, reference kwargs, float32 state dict) of the networks the cases run on."""
    tiny = random_net(TINY)
    yield "tiny", TINY.to_reference_kwargs(), {k: v.float() for k, v in tiny.state_dict().items()}
    folder = golden.find_golden_dir(Path(__file__).resolve().parents[1].parent / "shared" / "golden")
    if folder is None:
        print("golden data not found: tiny network only", file=sys.stderr)
        return
    from safetensors.torch import load_file

    for name in ("v1_net", "v15_net", "v15_flux2_net"):
        meta = json.loads((folder / f"{name}.json").read_text())
        yield name, meta["net_kwargs"], load_file(str(folder / meta["weights_file"]))


def cases():
    out = {}
    for name, kwargs, weights in networks():
        cfg = pid.PidConfig.from_reference_kwargs(kwargs)
        g = torch.Generator().manual_seed(7)
        C, f = cfg.lq_latent_channels, cfg.sr_scale * cfg.latent_spatial_down_factor
        latent = torch.randn(2, C, 128 // f, 64 // f, generator=g)  # a 128x64 image
        y = torch.randn(2, 5, cfg.txt_embed_dim, generator=g)
        null_y = torch.randn(2, 5, cfg.txt_embed_dim, generator=g)
        for precision in ("float32", "reference", "fast"):
            dec = pid.load(weights, config=kwargs, precision=precision, caption_cache=None)
            run = f"{name}/{precision}"
            base = dict(sigma=[0.0, 0.3], caption_embeds=y, progress=False)
            out[f"{run}/student"] = dec.decode(latent, seed=3, **base)
            out[f"{run}/student-1sample"] = dec.decode(latent[:1], seed=3, caption_embeds=y[:1], sigma=0.2,
                                                        progress=False)
            out[f"{run}/student-6steps"] = dec.decode(latent, seed=4, steps=6, **base)
            out[f"{run}/dpm-cfg"] = dec.decode(latent, seed=5, sampler="dpm++2m", steps=5, cfg_scale=4.0, shift=3.0,
                                               negative_caption_embeds=null_y, **base)
            out[f"{run}/dpm-nocfg"] = dec.decode(latent[:1], seed=5, sampler="dpm++2m", steps=3,
                                                 caption_embeds=y[:1], progress=False)
            if precision == "float32" or name == "tiny":
                noise = torch.randn(2, 3, 128, 64, generator=g)
                steps = [torch.randn(2, 3, 128, 64, generator=g) for _ in range(3)]
                out[f"{run}/explicit-noise"] = dec.decode(latent, noise=noise, step_noises=steps, **base)
                out[f"{run}/window"] = dec.decode(latent, seed=3, window=3, **base)
                out[f"{run}/pixel-window"] = dec.decode(latent, seed=3, window=None, pixel_window=2, **base)
                out[f"{run}/pixel-chunk"] = dec.decode(latent, seed=3, pixel_chunk=7, **base)
                out[f"{run}/token-chunk"] = dec.decode(latent, seed=3, token_chunk=5, **base)
                out[f"{run}/gate-per-step"] = dec.decode(latent, seed=3, keep_gate_features=False, **base)
                out[f"{run}/max-memory"] = dec.decode(latent, seed=3, max_memory="2GB", **base)
                out[f"{run}/numpy"] = dec.decode(latent, seed=3, output="numpy", **base)
                out[f"{run}/output-size"] = dec.decode(latent[:1], seed=3, caption_embeds=y[:1], output_size=(96, 128),
                                                       progress=False)
            # The network alone, reference signature, pid's kernels and the PyTorch references.
            x = torch.randn(2, 3, 128, 64, generator=g)
            t = torch.tensor([999.0, 342.0])
            for kernels in (True, False):
                plan = pid.ExecutionPlan.for_precision(precision, kernels=kernels)
                with torch.no_grad():
                    out[f"{run}/forward-kernels={kernels}"] = dec.net(x, t, y, lq_latent=latent,
                                                                      degrade_sigma=torch.tensor([0.0, 0.5]), plan=plan)
    return {k: digest(v) for k, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", type=Path, help="write the digests to this JSON file")
    parser.add_argument("--compare", type=Path, help="compare with the digests in this JSON file")
    args = parser.parse_args()
    torch.manual_seed(0)
    digests = cases()
    if args.save:
        args.save.write_text(json.dumps(digests, indent=1) + "\n")
        print(f"{len(digests)} digests written to {args.save}")
    if args.compare:
        before = json.loads(args.compare.read_text())
        differ = [k for k in before if digests.get(k) != before[k]]
        missing = sorted(set(digests) ^ set(before))
        for k in differ:
            print(f"DIFFERS: {k}")
        for k in missing:
            print(f"only in one run: {k}")
        print(f"{len(before) - len(differ)} of {len(before)} cases bit-identical")
        return 1 if differ or missing else 0
    if not args.save:
        print(json.dumps(digests, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
