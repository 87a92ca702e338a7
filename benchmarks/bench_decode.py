"""End-to-end decode: the official implementation's eager path vs pid's regimes, in one process.

official:  the eager re-creation of the official regime: float32 weights + bf16 autocast, the full network forward at
           every step (the latent CNN and every timestep-only product recomputed), PyTorch ops only (SDPA, eager
           norms and sampler arithmetic: an ExecutionPlan with kernels=False), the 4-step student loop — what the
           official code runs. (Called "reference" in benchmarks/RESULTS.md before 2026-12.)
reference: pid.PidDecoder(precision="reference").decode: the same float32 weights and bf16 autocast, pid's decode
           (hoisted latent/caption/timestep work, pid's kernels).
fast:      precision="fast": bf16 weights, fused kernels, bounded-memory pixel blocks.
fp8:       precision="fp8": fast with the MMDiT Linears as fp8 GEMMs (pid.nn.fp8; emulated where the device has no
           fp8 tensor cores: its time then means nothing). fp8-pit: the PiT blocks' Linears in fp8 too.
graph:     the fast path with cuda_graph=True (CUDA only): the decode captured once, then replayed; its peak
           memory is measured on the capturing call.
All see the same latent, caption embeddings and noise. Without --checkpoint the network has random weights
(bf16 values) of the chosen architecture: timing does not need trained weights. --attention sets pid's paths'
global-attention back end, and a path may name its own: fast@fa4, fp8@fa4; --psnr adds each path's PSNR against the reference regime's output
(each path's last output is then kept on the device: its peak includes one more image).

    python benchmarks/bench_decode.py --arch small --sizes 256,512            # CPU
    python benchmarks/bench_decode.py --arch full --device cuda --sizes 1024,2048,4096 --peak-tflops 790
    python benchmarks/bench_decode.py --arch full --device cuda --sizes 2048 --paths fast,fast@fa4,fp8,fp8@fa4 --psnr
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import pid
from pid import _extension, sampling
from pid.archs import ARCHS, random_net
from pid.bench import measure
from pid.decoder import PidDecoder
from pid.flops import decode_flops
from pid.compare import psnr
from pid.memory import estimate_memory, parameter_bytes
from pid.nn import PidNet
from pid.nn.fp8 import PIT_LINEARS, quantize_linears
from pid.ops import _fp8
from pid.plan import ExecutionPlan

PATHS = ("official", "reference", "fast", "fp8", "fp8-pit", "graph")
BACKENDS = ("", "kernel", "sdpa", "fa4", "auto")  # a path's "@backend" ("": --attention's)

# The official eager path: float32 weights under bf16 autocast, PyTorch ops only.
OFFICIAL = ExecutionPlan(precision="reference", kernels=False)

def reference_decode(net: PidNet, latent, sigma, y, noise, eps, device, steps: int):
    """The official student loop: full forward per step under bf16 autocast (entered once around the loop), float32
    weights, PyTorch ops only."""
    def velocity(x, t, step):
        return net(x, t * 1000, y, lq_latent=latent, degrade_sigma=sigma, plan=OFFICIAL)
    with torch.no_grad(), OFFICIAL.autocast(device.type):
        return sampling.sample_student(velocity, noise, steps=steps, step_noises=eps, use_kernel=False).clamp(-1, 1)


def parse_paths(text: str) -> list[str]:
    """--paths: PATH or PATH@BACKEND, comma-separated (checked while the arguments are parsed)."""
    paths = text.split(",")
    if unknown := [p for p in paths if p.partition("@")[0] not in PATHS or p.partition("@")[2] not in BACKENDS
                   or p.startswith("official@")]:
        raise argparse.ArgumentTypeError(
            f"unknown path(s) {unknown}: choose from {', '.join(PATHS)}, pid's optionally @ an attention back end "
            f"({', '.join(BACKENDS[1:])})")
    return paths


def print_row(r: dict, paths: list[str]) -> None:
    for path in paths:
        e = r[path]
        floor = f"{e['vs_flop_floor']:.2f}" if "vs_flop_floor" in e else "-"
        mem = f"{e['peak_gib']:.2f}" if "peak_gib" in e else "-"
        print(f"{r['size']:>6} {path:10} {e['median_s']:9.3f} {e['min_s']:7.3f}..{e['max_s']:<7.3f} "
              f"{e['tflops_per_s']:8.2f} {floor:>8} {mem:>9}", flush=True)
    speedups = [f"{k[8:]} {v:.2f}x" for k, v in r.items() if k.startswith("speedup_")]
    est = [f"{k.removesuffix('_estimate_gib')} peak estimate {v:.2f} GiB" for k, v in r.items()
           if k.endswith("_estimate_gib")]
    psnrs = [f"{path} {r[path]['psnr_vs_reference_db']:.2f} dB" for path in paths
             if "psnr_vs_reference_db" in r[path]]
    notes = (([f"vs the official path: {', '.join(speedups)}"] if speedups else []) + est +
             ([f"PSNR vs the reference regime: {', '.join(psnrs)}"] if psnrs else []))
    if notes:
        print(f"{'':>6} " + "; ".join(notes), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=sorted(ARCHS), default="small")
    ap.add_argument("--checkpoint", help="a real checkpoint instead of random weights")
    ap.add_argument("--variant")
    ap.add_argument("--sizes", default="256,512", help="output sides, comma-separated (square images)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--paths", type=parse_paths, default="official,fast", help=f"{', '.join(PATHS)} (graph: CUDA), "
                    "comma-separated; pid's paths may name their attention back end: fast@fa4, fp8@sdpa")
    ap.add_argument("--attention", choices=("kernel", "sdpa", "fa4", "auto"), help="pid's paths' global attention "
                    "(default: the device's)")
    ap.add_argument("--psnr", action="store_true", help="each path's PSNR against the reference regime (which is "
                    "then decoded too, untimed, if not among --paths)")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for the FLOP-floor ratio")
    ap.add_argument("--no-memory", action="store_true", help="skip the (untimed) peak-memory runs")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if why := _extension.missing_kernels(device.type):
        raise SystemExit(f"pid: {why}")
    paths = args.paths
    if any(p.partition("@")[0] == "graph" for p in paths) and device.type != "cuda":
        ap.error("the graph path needs --device cuda")

    if args.checkpoint:
        ref_net = pid.load(args.checkpoint, variant=args.variant, device=device, precision="reference").net
        cfg = ref_net.config
    else:
        cfg = ARCHS[args.arch]
        ref_net = random_net(cfg, device)
    nets = {}  # networks shared by the decoders that can share them: the bf16 one; the fp8 one

    def net_for(kind):
        if kind not in nets:
            net = PidNet(cfg).to(device).eval()
            net.load_state_dict(ref_net.state_dict())
            nets[kind] = net.bfloat16().requires_grad_(False)
        return nets[kind]

    def make_decoder(kind, attention):
        if kind == "reference":
            return PidDecoder(ref_net, precision="reference", attention=attention)
        if kind == "fast":
            return PidDecoder(net_for("fast"), precision="fast", attention=attention)
        decoder = PidDecoder(net_for(kind), precision="fp8", attention=attention, fp8_emulation=True)
        return _with_pit_fp8(decoder) if kind == "fp8-pit" else decoder

    def decoder_key(path):  # (regime, attention back end) of a path: "fp8@fa4" -> ("fp8", "fa4")
        kind, _, attention = path.partition("@")
        return ("fast" if kind == "graph" else kind), (attention or args.attention)
    built = {}
    for path in paths + (["reference"] if args.psnr else []):
        key = decoder_key(path)
        if key[0] != "official" and key not in built:
            built[key] = make_decoder(*key)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    fp8_note = "" if not any(p.startswith("fp8") for p in paths) else (
        "; fp8 GEMMs: torch._scaled_mm" if _fp8.gemm_available(device) else "; fp8 EMULATED (no fp8 GEMM here)")
    print(f"pid bench_decode: {args.checkpoint or args.arch + ' architecture, random weights'}; {name}; "
          f"torch {torch.__version__}; batch {args.batch}; {args.steps} steps; attention "
          f"{args.attention or 'the device default'}{fp8_note}")
    print(f"{'size':>6} {'path':10} {'median s':>9} {'min..max s':>15} {'TFLOP/s':>8} {'x floor':>8} {'peak GiB':>9}")
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        gen = torch.Generator().manual_seed(size)
        h = w = size // cfg.pixels_per_latent
        latent = torch.randn(args.batch, cfg.lq_latent_channels, h, w, generator=gen).bfloat16().float().to(device)
        y = torch.randn(args.batch, 300, cfg.txt_embed_dim, generator=gen).bfloat16().float().to(device)
        sigma = torch.full((args.batch,), 0.2, device=device)
        shape = (args.batch, 3, size, size)
        noise = torch.randn(shape, generator=gen).to(device)
        eps = [torch.randn(shape, generator=gen).to(device) for _ in range(args.steps - 1)]
        outputs = {}  # each path's last output (on the CPU), for --psnr

        def run(path):
            key = decoder_key(path)
            if key[0] == "official":
                out = reference_decode(ref_net, latent, sigma, y, noise, eps, device, args.steps)
            else:
                out = built[key].decode(latent, sigma=sigma, caption_embeds=y, noise=noise, step_noises=eps,
                                        steps=args.steps, progress=False, cuda_graph=path.startswith("graph"))
            if args.psnr:
                outputs[path] = out
            return out
        flops = decode_flops(cfg, size, size, args.steps) * args.batch
        result = {"size": size, "batch": args.batch, "tflop": flops / 1e12}
        for path in paths:
            key = decoder_key(path)
            weights = parameter_bytes(ref_net if key[0] == "official" else built[key].net)
            entry = measure(lambda: run(path), device, flops, args.repeats, args.warmup,
                            None if args.no_memory else weights,  # graph: measured on the capturing call
                            built[key].release_graphs if path.startswith("graph") else None)
            if args.peak_tflops:
                entry["vs_flop_floor"] = entry["median_s"] / (flops / (args.peak_tflops * 1e12))
            result[path] = entry
        for regime in ("fast", "fp8"):
            if any(decoder_key(p)[0] == regime for p in paths):
                result[f"{regime}_estimate_gib"] = estimate_memory(cfg, size, size, args.batch, regime).peak / 2**30
        if args.psnr:
            if "reference" not in outputs:
                run("reference")  # untimed: only its output
            for path in paths:
                result[path]["psnr_vs_reference_db"] = psnr(outputs[path].float().cpu(),
                                                            outputs["reference"].float().cpu())
            outputs.clear()
        if "official" in result:
            for path in paths:
                if path != "official":
                    result[f"speedup_{path}"] = result["official"]["median_s"] / result[path]["median_s"]
        rows.append(result)
        print_row(result, paths)
        if args.json:  # after every size, so a run stopped at a time cap keeps what it measured
            Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "args": vars(args),
                                                   "results": rows}, indent=1))

    return 0


def _with_pit_fp8(decoder: PidDecoder) -> PidDecoder:
    """The fp8 decoder with the PiT blocks' Linears in fp8 too (pid.nn.fp8.PIT_LINEARS; not the regime's default)."""
    quantize_linears(decoder.net, PIT_LINEARS)
    return decoder


if __name__ == "__main__":
    sys.exit(main())
