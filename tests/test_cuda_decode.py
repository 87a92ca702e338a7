"""The whole network and decoder on a CUDA device: golden parity in float32, and the fast path (bf16 weights,
CUDA kernels) within the PSNR budget of the reference precision path. Skipped without a GPU (CI); run by
benchmarks/device/run.sh on a lent one."""

import pytest
import torch

import pid
from pid import golden
from pid.nn import PidNet

from conftest import SHARED, needs_cuda
from test_golden_net import _assert_close
from test_precision import PSNR_BUDGET_DB, psnr
from test_precision import _decode as _precision_decode

GOLDEN = golden.find_golden_dir(SHARED / "golden")
pytestmark = [needs_cuda, pytest.mark.skipif(GOLDEN is None, reason="no golden folder")]
NETS = ["v1_net", "v15_net", "v15_flux2_net"]


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("name", NETS)
def test_net_matches_reference_on_cuda(name):
    case = golden.GoldenCase(name, GOLDEN)
    net = PidNet.from_reference_kwargs(case.meta["net_kwargs"]).eval()
    net.load_state_dict(case.weights())
    io = {k: v.cuda() for k, v in case.io.items()}
    with torch.no_grad():
        out = net.cuda()(io["x"], io["t"], io["y"], lq_latent=io["lq_latent"], degrade_sigma=io["degrade_sigma"])
    _assert_close(out.cpu(), case.io["output"], case)  # the CPU bounds: relative L2 and the case's tolerances


def _decode(name, precision, device):
    return _precision_decode(name, precision, device)[1].float().cpu()


@pytest.mark.parametrize("name", NETS)
def test_fast_on_cuda_within_psnr_budget(name):
    ref = _decode(name, "reference", "cuda")
    fast = _decode(name, "fast", "cuda")
    assert psnr(fast, ref) >= PSNR_BUDGET_DB


@pytest.mark.parametrize("name", NETS)
def test_cuda_decode_matches_cpu_float32(name):
    cpu = _decode(name, "float32", "cpu")
    gpu = _decode(name, "float32", "cuda")
    assert psnr(gpu, cpu) >= 80  # float32 on both: only summation order differs


@pytest.mark.parametrize("sampler", ["student", "dpm++2m"])
def test_cuda_graph_replays_equal_eager_decodes(sampler):
    case = golden.GoldenCase("v15_net", GOLDEN)
    dec = pid.load(case.weights(), config=case.meta["net_kwargs"], precision="fast", device="cuda")
    kw = dict(sampler=sampler, steps=4 if sampler == "student" else 3, progress=False)
    if sampler == "dpm++2m":
        kw.update(cfg_scale=3.0, negative_caption_embeds=torch.randn(300, dec.config.txt_embed_dim))
    io = case.io
    for seed in (1, 2):  # the first call captures, the second only replays
        latent = torch.randn_like(io["lq_latent"]).cuda()
        y = torch.randn_like(io["y"]).cuda()
        eager = dec.decode(latent, sigma=0.3, caption_embeds=y, seed=seed, **kw)
        graphed = dec.decode(latent, sigma=0.3, caption_embeds=y, seed=seed, cuda_graph=True, **kw)
        assert psnr(graphed, eager) >= 90, seed
    assert len(dec._graphs) == 1
    dec.release_graphs()


def test_cuda_graphs_kept_are_bounded():
    from pid.cuda_graphs import MAX_GRAPHS

    case = golden.GoldenCase("v15_net", GOLDEN)
    dec = pid.load(case.weights(), config=case.meta["net_kwargs"], precision="fast", device="cuda")
    y = case.io["y"][:1].cuda()
    for w in range(1, MAX_GRAPHS + 2):  # one more shape than kept
        latent = torch.randn(1, dec.config.lq_latent_channels, 2, w, device="cuda")
        eager = dec.decode(latent, caption_embeds=y, seed=w, progress=False)
        assert psnr(dec.decode(latent, caption_embeds=y, seed=w, progress=False, cuda_graph=True), eager) >= 90
    assert len(dec._graphs) == MAX_GRAPHS
    first = (1, dec.config.lq_latent_channels, 2, 1)
    assert all(first not in key for key in dec._graphs)  # the oldest (the first shape's) was dropped
    dec.release_graphs()
    assert not dec._graphs
