"""decode(max_memory=...): planning chunks for a memory budget (pid.budget)."""

import pytest
import torch

from pid.archs import TINY, random_net
from pid.budget import parse_bytes, plan_for_budget
from pid.cost import estimate_memory
from pid.decoder import PidDecoder
from pid.errors import MemoryBudgetError, PidError
from pid.memory import TensorMemoryTracker, parameter_bytes


@pytest.mark.parametrize("text,expected", [("6GB", 6 * 10**9), ("5.5GiB", int(5.5 * 2**30)), ("800MiB", 800 * 2**20),
                                           (1234, 1234), ("1e9", 10**9), (" 2 gb ", 2 * 10**9)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["six GB", "6 parsecs", "-1GB", 0, True])
def test_parse_bytes_rejects(bad):
    with pytest.raises(PidError, match="max_memory"):
        parse_bytes(bad)


def test_the_least_split_plan_that_fits_is_chosen():
    cfg = TINY
    whole = estimate_memory(cfg, 512, 512, 1, "float32")
    assert plan_for_budget(cfg, 512, 512, 1, "float32", whole.peak).pixel_chunk is None  # fits unsplit
    tight = plan_for_budget(cfg, 512, 512, 1, "float32", int(whole.peak * 0.5))
    assert tight.pixel_chunk is not None and tight.estimate.peak <= whole.peak * 0.5
    # A chunk given as a number is kept.
    assert plan_for_budget(cfg, 512, 512, 1, "float32", whole.peak, pixel_chunk=300).pixel_chunk == 300
    with pytest.raises(MemoryBudgetError, match=r"needs at least .* GiB .* more than max_memory"):
        plan_for_budget(cfg, 512, 512, 1, "float32", 10**6)


def test_decode_within_max_memory_and_unchanged_function():
    """A decode planned for a budget stays under it (measured: weights + tracked tensors) and computes the same
    images as an unsplit one (float32 rounding of the smaller matrix products aside)."""
    net = random_net(TINY)
    decoder = PidDecoder(net, precision="float32", caption_cache=None)
    latent, y = torch.randn(1, 16, 16, 16), torch.randn(12, 32)
    whole = decoder.decode(latent, caption_embeds=y, steps=1, pixel_chunk=None, progress=False)
    budget = 130 * 10**6
    assert estimate_memory(TINY, 512, 512, 1, "float32").peak > budget
    with TensorMemoryTracker() as tracker:
        planned = decoder.decode(latent, caption_embeds=y, steps=1, max_memory="130MB", progress=False)
    assert parameter_bytes(net) + tracker.peak <= budget
    assert ((planned - whole).norm() / whole.norm()).item() < 1e-5
    with pytest.raises(MemoryBudgetError, match="more than max_memory"):
        decoder.decode(latent, caption_embeds=y, steps=1, max_memory="20MB", progress=False)
