"""Checkpoint reading, reference prefix filtering, variant identification and loader errors."""

import pytest
import torch
from safetensors.torch import save_file

import pid
from pid.checkpoint import read_checkpoint, resolve
from pid.errors import CheckpointError
from pid.state_dict import filter_reference_keys
from pid.config import PidConfig
from pid.nn import PidNet
from pid.variants import VARIANTS


def meta_state_dict(variant_name: str, aux: bool = False) -> dict:
    """The variant's full key set as meta tensors (no memory), optionally with the aux-head keys."""
    cfg = VARIANTS[variant_name].config
    with torch.device("meta"):
        sd = dict(PidNet(cfg).state_dict())
        if aux:
            hd = cfg.lq_hidden_dim
            sd.update({"lq_proj.lq_aux_rgb_head.0.weight": torch.empty(hd),
                       "lq_proj.lq_aux_rgb_head.3.weight": torch.empty(cfg.aux_rgb_channels, hd)})
    return sd


def resolve_name(sd, **kw):
    cfg, variant = resolve(filter_reference_keys(sd), **kw)
    assert variant is None or cfg == variant.config
    return variant.name if variant else None


def test_prefix_filtering():
    t = torch.zeros(1)
    sd = {"net.a": t, "net_ema.a": t, "fake_score.b": t, "discriminator.c": t, "bare": t}
    assert set(filter_reference_keys(sd)) == {"a", "bare"}
    with pytest.raises(CheckpointError, match="ambiguous"):
        filter_reference_keys({"net.a": t, "a": t})


def test_pth_prefixed_and_bare_and_safetensors(tmp_path, tiny_checkpoint):
    cfg = tiny_checkpoint.kwargs
    weights = tiny_checkpoint.weights
    ref = pid.load(tiny_checkpoint.pth, config=cfg)
    bare = tmp_path / "bare.pth"
    torch.save({k: v.bfloat16() for k, v in weights.items()}, bare)
    st = tmp_path / "w.safetensors"
    save_file({"net." + k: v.bfloat16().contiguous() for k, v in weights.items()}, str(st))
    full_export = tmp_path / "export.pth"
    torch.save({**{"net." + k: v.bfloat16() for k, v in weights.items()},
                **{"net_ema." + k: torch.zeros_like(v) for k, v in weights.items()}}, full_export)
    for path in (bare, st, full_export, tiny_checkpoint.safetensors):
        other = pid.load(path, config=cfg)
        for (k, a), (_, b) in zip(ref.net.state_dict().items(), other.net.state_dict().items()):
            assert torch.equal(a, b), (path.name, k)
    assert torch.equal(ref.net.state_dict()["final_layer.linear.weight"], weights["final_layer.linear.weight"])


def test_load_state_dict_in_memory_and_dtype(tiny_checkpoint):
    dec = pid.load(tiny_checkpoint.weights, config=PidConfig.from_reference_kwargs(tiny_checkpoint.kwargs),
                   dtype=torch.bfloat16)
    assert dec.dtype == torch.bfloat16 and dec.source == "<state dict>"
    with pytest.raises(ValueError, match="dtype"):
        pid.load(tiny_checkpoint.weights, config=tiny_checkpoint.kwargs, dtype=torch.float64)


def test_truncated_pth(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.pth.read_bytes()
    cut = tmp_path / "model_ema_bf16.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(cut)


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(100, 100)}, str(path))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(path)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="neither a .safetensors file nor a torch.save archive"):
        read_checkpoint(text)
    code = tmp_path / "evil.pth"
    torch.save({"a": torch.zeros(1), "obj": _Custom()}, code)
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_checkpoint(code)
    nested = tmp_path / "nested.pth"
    torch.save({"model": {"a": torch.zeros(1)}}, nested)
    with pytest.raises(CheckpointError, match="not a flat"):
        read_checkpoint(nested)
    vae = tmp_path / "vae.safetensors"
    save_file({"encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)}, str(vae))
    with pytest.raises(CheckpointError, match="not a PiD checkpoint"):
        pid.load(vae)
    with pytest.raises(CheckpointError, match="does not exist"):
        pid.load(tmp_path / "missing.pth")


class _Custom:
    pass


def test_missing_unexpected_and_shape_errors(tiny_checkpoint):
    cfg = tiny_checkpoint.kwargs
    sd = tiny_checkpoint.weights
    missing = {k: v for k, v in sd.items() if k != "patch_blocks.1.attn.qkv_x.weight"}
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\):\n  patch_blocks.1.attn.qkv_x.weight"):
        pid.load(missing, config=cfg)
    extra = {**sd, "patch_blocks.9.norm_x1.weight": torch.ones(64)}
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\):\n  patch_blocks.9.norm_x1.weight"):
        pid.load(extra, config=cfg)
    wrong = {**sd, "final_layer.linear.weight": torch.zeros(3, 9)}
    with pytest.raises(CheckpointError, match=r"final_layer.linear.weight: checkpoint \[3, 9\] vs network \[3, 16\]"):
        pid.load(wrong, config=cfg)
    # the training-only aux head is a documented unused key: accepted with or without it
    no_aux = {k: v for k, v in sd.items() if not k.startswith("lq_proj.lq_aux_rgb_head.")}
    assert len(no_aux) < len(sd)
    pid.load(no_aux, config=cfg)


def test_generation_mismatch_is_explained(tiny_checkpoint):
    sd = tiny_checkpoint.weights  # a v1.5-style network (LQ width 32 here)
    v1_like = PidConfig.from_reference_kwargs({**tiny_checkpoint.kwargs, "lq_hidden_dim": 512})
    with pytest.raises(CheckpointError, match="does not fit the given config"):
        pid.load(sd, config=v1_like)
    with pytest.raises(CheckpointError, match="a v1 checkpoint loaded with a v1.5 config"):
        resolve(meta_state_dict("flux-2k"), config=VARIANTS["flux-v1.5"].config)
    with pytest.raises(CheckpointError, match="names variant 'flux-v1.5'.*fits flux-2k, sd3-2k, sd3-2kto4k.*"
                                              "a v1 checkpoint loaded with a v1.5 config"):
        resolve(meta_state_dict("flux-2k"), variant="flux-v1.5")
    with pytest.raises(CheckpointError, match="another latent space"):
        resolve(meta_state_dict("sdxl-2kto4k"), variant="sd3-2kto4k")


def test_ambiguous_weights_list_candidates():
    with pytest.raises(CheckpointError, match="fit flux-v1.5, qwenimage-v1.5 .*variant="):
        resolve_name(meta_state_dict("flux-v1.5"))
    with pytest.raises(CheckpointError, match="fit flux-2k, sd3-2k, sd3-2kto4k"):
        resolve_name(meta_state_dict("sd3-2k"))


def test_unique_fingerprints_need_no_hint():
    for name in ("flux2-2k", "dinov2-2k", "siglip-2k", "sdxl-2kto4k", "flux2-v1.5"):
        assert resolve_name(meta_state_dict(name)) == name
    assert resolve_name(meta_state_dict("flux2-v1.5", aux=True)) == "flux2-v1.5-teacher"


def test_no_released_match():
    sd = meta_state_dict("flux-v1.5")
    sd["lq_proj.latent_proj.0.weight"] = torch.empty(1024, 7, 3, 3, device="meta")
    with pytest.raises(CheckpointError, match="no released PiD variant matches.*config="):
        resolve_name(sd)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_identification_by_folder_name(tmp_path, name):
    variant = VARIANTS[name]
    sd = meta_state_dict(name, aux=variant.checkpoint_has_aux_head)
    path = tmp_path / "hf" / "checkpoints" / variant.experiment / "model_ema_bf16.pth"
    assert resolve_name(sd, path=path) == name
    converted = tmp_path / f"{variant.experiment}.safetensors"  # a converted file named after it
    assert resolve_name(sd, path=converted) == name


def test_identification_by_metadata_and_variant_argument():
    sd = meta_state_dict("flux-v1.5")
    assert resolve_name(sd, metadata={"pid.variant": "qwenimage-v1.5"}) == "qwenimage-v1.5"
    assert resolve_name(sd, variant="zimage/2kto4k_v1pt5") == "flux-v1.5"
    with pytest.raises(KeyError, match="unknown PiD variant"):
        resolve_name(sd, variant="flux-v9")


def test_folder_name_contradicting_weights(tmp_path):
    path = tmp_path / "checkpoints" / VARIANTS["sdxl-2kto4k"].experiment / "model_ema_bf16.pth"
    with pytest.raises(CheckpointError, match="its path .* names variant 'sdxl-2kto4k'"):
        resolve_name(meta_state_dict("flux-v1.5"), path=path)
