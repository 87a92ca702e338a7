"""Where a fast decode spends its GPU time: torch SDPA backends at the network's real attention shapes, and a
torch.profiler table (top kernels) of one fast decode of the released architecture (random weights).

    python benchmarks/device/profile_decode.py --size 2048
"""

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from pid.archs import ARCHS, random_net
from pid.decoder import PidDecoder
from pid.timing import summary, time_calls


def sdpa_backends(size: int) -> None:
    cfg = ARCHS["full"]
    tokens = (size // cfg.patch_size) ** 2
    shapes = {"MMDiT": (cfg.num_heads, tokens + cfg.txt_max_length, cfg.hidden_size // cfg.num_heads),
              "PiT": (cfg.pixel_num_heads, tokens, cfg.pixel_attn_hidden_size // cfg.pixel_num_heads)}
    for name, (H, S, d) in shapes.items():
        q, k, v = (torch.randn(1, H, S, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flop = 4 * H * S * S * d
        row = []
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            try:
                with sdpa_kernel([backend]):
                    times = time_calls([lambda: F.scaled_dot_product_attention(q, k, v)], "cuda", 10, 1)[0]
                    ms = summary(times)["median_s"] * 1e3
                row.append(f"{backend.name.lower()} {ms:.2f} ms ({flop / ms / 1e9:.0f} TFLOP/s)")
            except RuntimeError as e:
                row.append(f"{backend.name.lower()} n/a ({str(e).splitlines()[0][:60]})")
        print(f"sdpa {size}² {name} H={H} S={S} d={d}: " + "; ".join(row), flush=True)


def profile(size: int) -> None:
    cfg = ARCHS["full"]
    dec = PidDecoder(random_net(cfg, "cuda").bfloat16(), precision="fast")
    h = size // cfg.pixels_per_latent
    latent = torch.randn(1, cfg.lq_latent_channels, h, h, device="cuda")
    y = torch.randn(1, 300, cfg.txt_embed_dim, device="cuda")

    def run():
        return dec.decode(latent, sigma=0.2, caption_embeds=y, progress=False)
    run()
    torch.cuda.synchronize()
    t = time.perf_counter()
    run()
    torch.cuda.synchronize()
    wall = time.perf_counter() - t
    from torch.profiler import ProfilerActivity
    with torch.profiler.profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    events = prof.key_averages()
    total_us = sum(e.self_device_time_total for e in events)
    print(f"fast decode {size}²: wall {wall * 1e3:.1f} ms, GPU kernel time {total_us / 1e3:.1f} ms", flush=True)
    print(events.table(sort_by="self_cuda_time_total", row_limit=22, max_name_column_width=70), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--sdpa-sizes", default="2048,4096")
    args = ap.parse_args()
    for s in filter(None, args.sdpa_sizes.split(",")):
        sdpa_backends(int(s))
    profile(args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
