"""Named network sizes with random weights, for benchmarks, the self-test and tests (no trained weights needed):
`full` (the released 1.40 B v1.5 network), `small` and `tiny` (the one small test network of the package)."""

from __future__ import annotations

import torch

from .config import PidConfig
from .nn import PidNet

# The test network: the released v1.5 layout scaled down, with the released pixel width (c = 16, the kernels'
# unrolled path), head dims 16 (MMDiT) and 12 (PiT), a short caption (12 tokens of 32 features) and one LQ block.
TINY = PidConfig(hidden_size=64, num_heads=4, pixel_hidden_size=16, pixel_attn_hidden_size=48, pixel_num_heads=4,
                 patch_depth=4, txt_embed_dim=32, txt_max_length=12, lq_hidden_dim=32, lq_num_res_blocks=1,
                 rope_ref_h=128, rope_ref_w=128)

ARCHS = {
    "full": PidConfig(),  # the released v1.5 network
    "small": PidConfig(hidden_size=512, num_heads=8, pixel_attn_hidden_size=384, pixel_num_heads=8, patch_depth=6,
                       txt_embed_dim=2304, lq_hidden_dim=128, lq_num_res_blocks=2),
    "tiny": TINY,
}


def random_net(cfg: PidConfig, device="cpu", seed: int = 0) -> PidNet:
    """A PidNet with random weights holding bf16 values, as released checkpoints do. The reference's zero-initialised
    layers are left as PyTorch initialises them, so every part of the network affects the output."""
    torch.manual_seed(seed)
    with torch.device(device):
        net = PidNet(cfg).eval().requires_grad_(False)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.bfloat16().float())
    return net
