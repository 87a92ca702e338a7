"""FLOP counts against the reference's published table, and the memory estimator against measured peaks."""

import pytest
import torch

from pid.config import PidConfig
from pid.cost import decode_flops, estimate_memory, forward_flops, pixel_chunk_for_budget
from pid.decoder import PidDecoder
from pid.memory import TensorMemoryTracker, parameter_bytes
from pid.nn import PidNet
from pid.variants import VARIANTS


@pytest.mark.parametrize("name,size,tflop", [("flux-v1.5", 2048, 46.4), ("flux-2k", 2048, 45.1),
                                             ("flux-v1.5", 4096, 491.5), ("flux-2k", 4096, 486.5)])
def test_forward_flops_match_spec_table(name, size, tflop):
    """The published totals per forward (batch 1, 300 text tokens)."""
    assert forward_flops(VARIANTS[name].config, size, size).total / 1e12 == pytest.approx(tflop, abs=0.05)


def test_decode_flops_hoisted():
    """A 4-step decode ≈185 TFLOP at 2048², ≈176 with the latent-only part computed once."""
    cfg = VARIANTS["flux-v1.5"].config
    assert 4 * forward_flops(cfg, 2048, 2048).total / 1e12 == pytest.approx(185.4, abs=0.1)
    assert decode_flops(cfg, 2048, 2048) / 1e12 == pytest.approx(175.8, abs=0.1)


def test_tracker_counts_allocations_not_views():
    a = torch.zeros(1000)  # allocated before: not counted
    with TensorMemoryTracker() as tr:
        b = a + 1  # 4000 bytes
        c = b.view(10, 100).t()  # a view: nothing new
        d = torch.empty(2000)  # 8000 bytes
        del d
        e = c.contiguous()  # 4000 bytes
    assert tr.peak == 12000 and tr.live == 8000 and e.is_contiguous()


SMALL = PidConfig(hidden_size=256, num_heads=4, pixel_attn_hidden_size=192, pixel_num_heads=4, patch_depth=4,
                  txt_embed_dim=64, lq_hidden_dim=64, lq_num_res_blocks=2)


@pytest.mark.parametrize("precision", ["float32", "reference", "fast"])
@pytest.mark.parametrize("size,batch,chunk", [(512, 1, None), (640, 2, None), (768, 1, 96)])
def test_estimate_within_20_percent_of_measured(precision, size, batch, chunk):
    net = PidNet(SMALL).eval()
    if precision == "fast":
        net = net.bfloat16()
    decoder = PidDecoder(net, precision=precision)
    latent = torch.randn(batch, 16, size // 32, size // 32)
    with TensorMemoryTracker() as tracker:
        decoder.decode(latent, caption_embeds=torch.randn(1, 300, 64), steps=1, pixel_chunk=chunk, progress=False)
    measured = parameter_bytes(net) + tracker.peak
    estimate = estimate_memory(SMALL, size, size, batch, precision, pixel_chunk=chunk)
    assert 0.8 <= estimate.peak / measured <= 1.2, (estimate, measured)


def test_chunking_bounds_the_pixel_stage():
    cfg = VARIANTS["flux-v1.5"].config
    full = estimate_memory(cfg, 4096, 4096)
    assert full.stage == "pixel blocks" and full.peak > 12 * 2**30
    chunk = pixel_chunk_for_budget(cfg, 1 * 2**30)
    bounded = estimate_memory(cfg, 4096, 4096, pixel_chunk=chunk)
    assert bounded.peak < full.peak / 2
