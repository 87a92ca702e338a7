"""FlashAttention-4 as a global-attention back end ("fa4"), on a machine without it: where it is refused and why, when
"auto" counts it as a candidate, and — against a stand-in with FA4's signature, not FA4 — the layout pid passes it.
The kernel itself runs only on an sm90/sm100 GPU with flash-attn-4 installed (benchmarks/device/run.sh speed)."""

import math

import pytest
import torch
import torch.nn.functional as F

import pid
from pid.archs import TINY, random_net
from pid.errors import PidError
from pid.ops import _flash4


@pytest.fixture
def no_fa4_package(monkeypatch):
    """As on a machine where flash-attn-4 is not installed (whatever this one has)."""
    monkeypatch.setattr(_flash4, "package_installed", lambda: False)
    _flash4._load.cache_clear()
    yield
    _flash4._load.cache_clear()


@pytest.fixture
def h100(monkeypatch):
    """torch's CUDA queries answering as on an H100 (no GPU is touched: device_problem only asks these)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")


def _qkv(dtype=torch.float32, B=2, H=3, Sq=5, Sk=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, S, d, generator=g).to(dtype) for S in (Sq, Sk, Sk))


def test_refused_without_the_package_naming_the_install(no_fa4_package, h100):
    why = _flash4.device_problem(torch.device("cuda"))
    assert why == "the flash-attn-4 package is not installed: pip install 'pid-decoder[fa4]' (flash-attn-4)"
    with pytest.raises(PidError) as e:
        pid.ops._attention.check_backend("fa4", "cuda")
    message = str(e.value)
    assert "\n" not in message and "pip install 'pid-decoder[fa4]'" in message and "attention='sdpa'" in message


def test_refused_on_other_devices_and_inputs(h100, monkeypatch):
    assert "not on cpu" in _flash4.device_problem(torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert "is 8.0" in _flash4.device_problem(torch.device("cuda"))
    monkeypatch.setattr(_flash4, "device_problem", lambda device: None)  # as on an H100 with the package
    q, k, v = _qkv(torch.bfloat16)
    assert _flash4.input_problem(q, k, v) is None
    assert "bfloat16 or float16" in _flash4.input_problem(*(t.float() for t in (q, k, v)))
    q12, k12, v12 = _qkv(torch.bfloat16, d=12)  # the tiny networks' PiT head dim
    assert "multiples of 8" in _flash4.input_problem(q12, k12, v12)
    assert [d for d in (8, 12, 64, 72, 128, 136) if _flash4.head_dim_supported(d)] == [8, 64, 72, 128]


def test_explicit_fa4_on_the_cpu_is_a_one_line_error():
    q, k, v = _qkv()
    with pytest.raises(PidError, match=r"^attention='fa4': FlashAttention-4 runs on CUDA GPUs .* not on cpu; or "
                                        r"choose attention='sdpa' or 'auto'$"):
        pid.ops.attention(q, k, v, backend="fa4")
    with pytest.raises(PidError, match="attention='fa4': FlashAttention-4 runs on CUDA GPUs"):
        pid.PidDecoder(random_net(TINY), precision="float32", attention="fa4")
    with pytest.raises(PidError, match="attention='fa4'"):
        pid.load(random_net(TINY).state_dict(), config=TINY, attention="fa4")


def test_fa4_needs_bf16_attention_inputs(monkeypatch):
    monkeypatch.setattr(_flash4, "device_problem", lambda device: None)
    with pytest.raises(PidError, match="takes bfloat16 attention inputs, which precision 'float32' does not make"):
        pid.PidDecoder(random_net(TINY), precision="float32", attention="fa4")
    assert pid.PidDecoder(random_net(TINY), precision="reference", attention="fa4").attention == "fa4"


def test_auto_counts_fa4_only_where_it_can_run(monkeypatch):
    q, k, v = _qkv(torch.bfloat16, d=64)
    autotune = pid.ops.AttentionAutotune()
    kernel = ["kernel"] if pid._extension.available() else []
    assert autotune.candidates(q, k, v) == kernel + ["sdpa"]  # this machine: no FA4 (a CPU)
    monkeypatch.setattr(_flash4, "can_run", lambda q, k, v: True)
    assert autotune.candidates(q, k, v) == kernel + ["sdpa", "fa4"]
    assert autotune.candidates(q, k, v, use_kernel=False) == ["sdpa", "fa4"]
    monkeypatch.setattr(_flash4, "can_run", lambda q, k, v: False)
    assert autotune.candidates(q, k, v) == kernel + ["sdpa"]


def flash_attn_func_stand_in(q, k, v, qv=None, gather_kv_indices=None, softmax_scale=None, causal=False,
                             window_size=(None, None), learnable_sink=None, softcap=0.0, num_splits=1, pack_gqa=None,
                             deterministic=False, score_mod=None, score_mod_bwd=None, mask_mod=None, aux_tensors=None,
                             aux_scalars=None, block_sparse_tensors=None, block_sparse_tensors_bwd=None,
                             return_lse=False, gather_bwd_recompute_p=False, gather_bwd_token_chunk=None, config=None,
                             scales=None):
    """NOT FlashAttention-4: plain float64 attention with the signature and layout of flash-attn-4's
    `flash_attn.cute.flash_attn_func` (4.0.0b40): q [B, Sq, H, D], k, v [B, Sk, H, D], scale default 1/sqrt(D),
    `causal` top-left; returns (out [B, Sq, H, D] in q's dtype, lse [B, H, Sq])."""
    assert all(t.stride(-1) == 1 for t in (q, k, v)), "FA4 reads rows with unit stride"
    B, Sq, H, D = q.shape
    assert k.shape[0] == B and k.shape[2] == H and k.shape[3] == D and v.shape == k.shape
    scale = 1 / math.sqrt(D) if softmax_scale is None else softmax_scale
    scores = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) * scale
    if causal:
        scores = scores.masked_fill(torch.ones(Sq, k.shape[1], dtype=torch.bool).triu(1), float("-inf"))
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v.double())
    return out.to(q.dtype).contiguous(), scores.logsumexp(-1).float()  # FA4 allocates out as [B, Sq, H, D]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_call_layout_against_a_stand_in(monkeypatch, dtype):
    """A layout test, not a kernel test: pid's fa4 path hands q/k/v over as [B, S, H, D] with the softmax scale
    1/sqrt(D) and causal=False, and returns [B, H, Sq, D] (laid out [B, Sq, H, D]) equal to SDPA's result."""
    monkeypatch.setattr(_flash4, "_load", lambda: (flash_attn_func_stand_in, ""))
    monkeypatch.setattr(_flash4, "device_problem", lambda device: None)
    monkeypatch.setattr(_flash4, "DTYPES", (torch.float32, torch.bfloat16))  # CPU tensors of either dtype
    q, k, v = _qkv(dtype, B=2, H=3, Sq=5, Sk=7, d=16)  # H, Sq, Sk all different: a swapped axis cannot pass
    out = pid.ops.attention(q, k, v, backend="fa4")
    assert out.shape == (2, 3, 5, 16) and out.transpose(1, 2).is_contiguous()
    want = F.scaled_dot_product_attention(q.double(), k.double(), v.double()).to(dtype)
    torch.testing.assert_close(out, want, atol=1e-6 if dtype == torch.float32 else 1e-2, rtol=1e-5 if dtype ==
                               torch.float32 else 1e-2)


def test_cli_offers_fa4_and_refuses_it_here_in_one_line(caplog):
    from pid.cli import main
    from pid.cli.args import ATTENTION_CHOICES

    assert ATTENTION_CHOICES == pid.ops._attention.BACKENDS
    with caplog.at_level("ERROR", logger="pid.cli"):
        assert main(["bench", "--arch", "tiny", "--sizes", "64", "--attention", "fa4", "--precision", "fast"]) == 2
    assert "attention='fa4': FlashAttention-4 runs on CUDA GPUs" in caplog.text


needs_fa4 = pytest.mark.skipif(not torch.cuda.is_available() or _flash4.device_problem(torch.device("cuda")) is not None,
                               reason="no GPU FlashAttention-4 runs on, or no flash-attn-4")


@needs_fa4
@pytest.mark.parametrize("H,d,n_text", [(24, 64, 300), (16, 72, 0)])  # the network's MMDiT and PiT attention
def test_cuda_fa4_matches_float32_attention(H, d, n_text):
    """FA4 itself, on the GPU: bf16 inputs, the network's head dims, against SDPA in float32 of the same inputs, as
    close as torch's own bf16 SDPA is; and an "auto" candidate there."""
    g = torch.Generator(device="cuda").manual_seed(d)
    q, k, v = (torch.randn(2, H, n_text + 1024 + 37, d, generator=g, device="cuda").bfloat16() for _ in range(3))
    out = pid.ops.attention(q, k, v, backend="fa4")
    assert out.shape == q.shape and out.dtype == torch.bfloat16 and out.transpose(1, 2).is_contiguous()
    exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    sdpa = F.scaled_dot_product_attention(q, k, v)
    err, sdpa_err = ((t.float() - exact).norm() / exact.norm() for t in (out, sdpa))
    assert err <= 2 * sdpa_err + 1e-3, (err, sdpa_err)
    assert "fa4" in pid.ops.AttentionAutotune().candidates(q, k, v)
