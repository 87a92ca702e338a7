"""The execution plan: what a decode runs is decided by one explicit value, and the decoding entry points."""

import importlib

import pytest
import torch

import pid
from pid.archs import TINY, random_net
from pid.plan import ExecutionPlan, check_weights_dtype, default_precision, resolve_precision


def test_regime_plans():
    f32, ref, fast = (ExecutionPlan.for_precision(p) for p in ("float32", "reference", "fast"))
    assert (f32.autocast_dtype, ref.autocast_dtype, fast.autocast_dtype) == (None, torch.bfloat16, torch.bfloat16)
    assert (f32.fused_norm, ref.fused_norm, fast.fused_norm) == (False, False, True)
    assert (f32.gate_logit_dtype, ref.gate_logit_dtype, fast.gate_logit_dtype) == (
        torch.float32, torch.float32, torch.bfloat16)
    assert all(p.kernels for p in (f32, ref, fast))
    assert f32.attention_backend("cpu") == "kernel" and f32.attention_backend("cuda") == "sdpa"
    assert f32.replace(attention="auto").attention_backend("cpu") == "auto"


def test_plan_is_a_value():
    plan = ExecutionPlan(window=8)
    with pytest.raises(AttributeError):
        plan.window = 4  # frozen
    derived = plan.replace(pixel_chunk=7)
    assert derived.autotune is plan.autotune  # the "auto" memory travels with the plans derived from one
    assert derived == ExecutionPlan(window=8, pixel_chunk=7)  # the memory does not take part in equality
    assert hash(derived) == hash(ExecutionPlan(window=8, pixel_chunk=7))


@pytest.mark.parametrize("bad,match", [(dict(precision="int8"), "precision must be one of"),
                                       (dict(attention="flash"), "'kernel', 'sdpa', 'fa4' or 'auto'"),
                                       (dict(pixel_chunk=0), "pixel_chunk must be a positive int")])
def test_plan_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        ExecutionPlan(**bad)


def test_plan_autocast_is_the_regime_whatever_the_caller_had():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the caller's autocast does not leak into a float32 call
        with ExecutionPlan().autocast("cpu"):
            assert (a @ b).dtype == torch.float32
    with ExecutionPlan.for_precision("reference").autocast("cpu"):
        assert (a @ b).dtype == torch.bfloat16


@pytest.mark.parametrize("native_bf16", [True, False])
def test_resolve_precision(monkeypatch, native_bf16):
    import pid.plan

    monkeypatch.setattr(pid.plan, "native_bf16_cpu", lambda: native_bf16)
    # Fast by default where bfloat16 is native: CUDA, and CPUs with AMX / AVX512-BF16; float32 on other CPUs.
    assert resolve_precision(None, device="cpu") == ("fast" if native_bf16 else "float32")
    assert resolve_precision(None, device="cuda") == "fast"
    # Weights in memory, or a dtype= spelling, decide between their regimes.
    assert resolve_precision(None, torch.bfloat16) == "fast"
    assert resolve_precision(None, "torch.float32", "cpu") == "float32"
    assert resolve_precision(None, torch.float32, "cuda") == "reference"
    assert default_precision("cpu", torch.bfloat16) == "fast"
    assert default_precision("cpu", torch.float32) == "float32"
    assert default_precision("cuda", torch.float32) == "reference"
    assert check_weights_dtype("reference", torch.float32) == "reference"
    assert resolve_precision("reference", torch.float32) == "reference"
    with pytest.raises(ValueError, match="contradict"):
        resolve_precision("reference", torch.bfloat16)
    with pytest.raises(ValueError, match="not supported"):
        resolve_precision(None, torch.float16)
    with pytest.raises(ValueError, match="needs bf16 weights"):
        check_weights_dtype("fast", torch.float32)


def _tiny_inputs(B=1, h=2, w=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, TINY.lq_latent_channels, h, w, generator=g),
            torch.randn(B, TINY.txt_max_length, TINY.txt_embed_dim, generator=g))


def test_decoder_plan_and_per_call_options():
    net = random_net(TINY)
    decoder = pid.PidDecoder(net, attention="sdpa")
    assert decoder.plan == ExecutionPlan(precision="float32", attention="sdpa")
    assert decoder.plan.autotune is decoder.autotune
    latent, y = _tiny_inputs()
    kw = dict(caption_embeds=y, seed=3, progress=False)
    # A decode is the network under the decoder's plan: equal to the sampler run by hand with that plan.
    plan = decoder.plan.replace(window=2, pixel_window=2, pixel_chunk=5)  # pixel_window "same": the window
    with torch.no_grad():
        lat = latent.bfloat16().float()
        cond = net.encode_condition(lat, torch.zeros(1), (4, 6), plan=plan)
        text = net.encode_text(y, plan=plan)
        gen = torch.Generator().manual_seed(3)
        noise = torch.randn(1, 3, 64, 96, generator=gen)
        by_hand = pid.sampling.sample_student(lambda x, t, step: net.velocity(x, t * 1000, text, cond, plan=plan), noise,
                                              generator=gen).clamp(-1, 1)
    assert torch.equal(decoder.decode(latent, window=2, pixel_chunk=5, **kw), by_hand)
    # The window changes the function, the chunks do not (to float rounding); the decoder's plan is unchanged.
    plain = decoder.decode(latent, **kw)
    assert not torch.equal(plain, by_hand)
    torch.testing.assert_close(decoder.decode(latent, pixel_chunk=5, **kw), plain, rtol=1e-5, atol=1e-5)
    assert decoder.plan.window is None and decoder.plan.pixel_chunk is None
    with pytest.raises(ValueError, match="window must be a positive int"):
        decoder.decode(latent, window=0, **kw)
    with pytest.raises(ValueError, match="pixel_chunk must be a positive"):
        decoder.decode(latent, pixel_chunk=-1, **kw)


def test_decoder_owns_its_caption_cache():
    class CountingEncoder:
        model_id = "counting"
        calls = 0

        def encode(self, captions):
            CountingEncoder.calls += 1
            g = torch.Generator().manual_seed(len(captions[0]))
            return torch.randn(len(captions), 300, TINY.txt_embed_dim, generator=g)  # Gemma: 300 tokens

    decoder = pid.PidDecoder(random_net(TINY))
    latent, _ = _tiny_inputs()
    encoder = CountingEncoder()
    first = decoder.decode(latent, caption="a fox", text_encoder=encoder, progress=False)
    again = decoder.decode(latent, caption="a fox", text_encoder=encoder, progress=False)
    assert CountingEncoder.calls == 1 and len(decoder.caption_cache) == 1  # encoded once, reused
    assert torch.equal(first, again)


def test_import_pid_decode_and_the_one_call_spelling(tmp_path):
    module = importlib.import_module("pid.decode")
    assert module is pid.decode and module.load is pid.load
    net = random_net(TINY)
    path = tmp_path / "tiny.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    latent, y = _tiny_inputs()
    kw = dict(config=TINY, caption_embeds=y, seed=1, progress=False)
    by_module = pid.decode.decode(path, latent, **kw)
    by_call = pid.decode(path, latent, **kw)
    assert torch.equal(by_module, by_call)
    assert torch.equal(by_call, pid.load(path, config=TINY).decode(latent, caption_embeds=y, seed=1, progress=False))
