"""FLOP counts against the reference's published table, and the memory estimator against measured peaks."""

import pytest
import torch

from pid.archs import random_net
from pid.config import PidConfig
from pid.flops import decode_flops, forward_flops
from pid.memory import TensorMemoryTracker, estimate_memory, parameter_bytes, pixel_chunk_for_budget
from pid.decoder import PidDecoder
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
    net = PidNet(SMALL).eval().requires_grad_(False)  # as pid.load makes it (see estimate_memory)
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
    assert bounded.stage != "pixel blocks" and bounded.peak < 0.6 * full.peak


# MMDiT-heavy (wide hidden, narrow pixel stage chunked): the MMDiT stages set the peak, as in the released network.
WIDE = PidConfig(hidden_size=1024, num_heads=4, pixel_attn_hidden_size=192, pixel_num_heads=4, patch_depth=2,
                 txt_embed_dim=64, lq_hidden_dim=64, lq_num_res_blocks=1)


@pytest.mark.parametrize("precision,size,token_chunk,keep", [("fast", 1024, None, True), ("fast", 1024, 256, False),
                                                             ("float32", 1024, 256, False),
                                                             ("reference", 1536, 256, False)])
def test_mmdit_stages_estimate_within_20_percent_beyond_the_weights(precision, size, token_chunk, keep):
    """The MMDiT feed-forward (unchunked) and attention (token chunks, gate features made per step) stages against
    the tracked peak of what a decode allocates, weights left out of both sides."""
    net = random_net(WIDE)
    if precision == "fast":
        net = net.bfloat16()
    decoder = PidDecoder(net, precision=precision, caption_cache=None)
    latent = torch.randn(1, 16, size // 32, size // 32)
    with TensorMemoryTracker() as tracker:
        decoder.decode(latent, caption_embeds=torch.zeros(1, 300, 64), steps=1, pixel_chunk=64,
                       token_chunk=token_chunk, keep_gate_features=keep, progress=False)
    estimate = estimate_memory(WIDE, size, size, 1, precision, 64, token_chunk=token_chunk, keep_gate_features=keep)
    assert estimate.stage.startswith("MMDiT")
    assert 0.8 <= (estimate.peak - estimate.weights) / tracker.peak <= 1.2, (str(estimate), tracker.peak / 2**20)


def test_released_network_fits_the_consumer_card_targets():
    """The issue's budgets for a fast decode of the released architecture (estimator; GB = 10^9 bytes): 2048² in
    3.5 GB, 4096² in 6 GB, 8192² in 16 GB, with the plan pid.memory chooses."""
    from pid.memory import plan_for_budget

    cfg = VARIANTS["flux-v1.5"].config
    for size, budget in ((2048, 3.5e9), (4096, 6e9), (8192, 16e9)):
        plan = plan_for_budget(cfg, size, size, 1, "fast", int(budget))
        assert plan.estimate.peak <= budget
        # ... and unchunked it would not fit: the plan is what makes it fit.
        assert estimate_memory(cfg, size, size, 1, "fast").peak > budget
