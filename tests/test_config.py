"""PidConfig and its mapping to the reference constructor arguments."""

import json

import pytest

from pid.config import REFERENCE_DEFAULTS, ConfigError, PidConfig, coerce_config

from conftest import SHARED


def _golden_kwargs():
    folder = SHARED / "golden"
    if not folder.is_dir():
        pytest.skip("no golden folder")
    return {p.stem: json.loads(p.read_text())["net_kwargs"] for p in sorted(folder.glob("*_net.json"))}


def test_golden_kwargs_round_trip():
    for name, kwargs in _golden_kwargs().items():
        cfg = PidConfig.from_reference_kwargs(kwargs)
        assert cfg.hidden_size == kwargs["hidden_size"] and cfg.num_heads == kwargs["num_groups"]
        assert cfg.lq_gate_type == kwargs["lq_gate_type"] and cfg.rope_mode == kwargs["rope_mode"]
        back = cfg.to_reference_kwargs()
        ignored = {"repa_encoder_index", "zero_init_lq", "train_lq_proj_only"}  # training-only
        assert {k: v for k, v in back.items() if k not in ignored} == \
               {k: v for k, v in kwargs.items() if k not in ignored}, name
        assert PidConfig.from_reference_kwargs(back) == cfg


def test_reference_defaults_and_the_v1_rope_trap():
    """The released v1 config never sets rope_mode: PidNet's default (ntk_aware, 1024 px) applies."""
    cfg = PidConfig.from_reference_kwargs({"lq_in_channels": 0, "lq_latent_channels": 16, "num_groups": 24,
                                           "hidden_size": 1536})
    assert cfg.rope_mode == "ntk_aware" and (cfg.rope_ref_h, cfg.rope_ref_w) == (1024, 1024)
    assert cfg.rope_ref_grid == (64, 64)
    assert cfg.lq_interval == 1 and cfg.num_gates == 26  # reference defaults: interval 1, 26 blocks
    assert cfg.pixel_attn_hidden_size == 1536 and cfg.pixel_num_heads == 24  # None → patch values
    assert cfg.txt_max_length == 1024 and cfg.txt_embed_dim == 4096


def test_released_defaults():
    cfg = PidConfig()
    assert (cfg.head_dim, cfg.pixel_head_dim, cfg.mlp_hidden_size, cfg.num_gates) == (64, 72, 4096, 7)
    assert cfg.latent_to_patch_ratio == 2 and cfg.gate_width == 1


@pytest.mark.parametrize("bad,match", [
    ({"lq_in_channels": 3, "lq_latent_channels": 16}, "RGB low-quality-image branch"),
    ({"lq_in_channels": 0}, "lq_latent_channels must be > 0"),
    ({"lq_in_channels": 0, "lq_latent_channels": 16, "enable_ed": True}, "enable_ed"),
    ({"lq_in_channels": 0, "lq_latent_channels": 16, "lq_gate_type": "sigma_aware_per_token_and_dim"},
     "does not build"),
    ({"lq_in_channels": 0, "lq_latent_channels": 16, "lq_gate_type": "other"}, "lq_gate_type must be"),
    ({"lq_in_channels": 0, "lq_latent_channels": 16, "rope_mode": "yarn"}, "rope_mode"),
    ({"lq_in_channels": 0, "lq_latent_channels": 16, "lq_conv_padding_mode": "circular"}, "padding"),
    ({"lq_in_channels": 0, "lq_latent_channels": 16, "hidden_size": 100, "num_groups": 3}, "divisible"),
    ({"lq_in_channels": 0, "lq_latent_channels": 18, "lq_latent_unpatchify_factor": 2}, "unpatchify"),
    ({"lq_in_channels": 0, "lq_latent_channels": 16, "no_such_arg": 1}, "unknown reference"),
])
def test_invalid_configs_are_rejected(bad, match):
    with pytest.raises(ConfigError, match=match):
        PidConfig.from_reference_kwargs(bad)


def test_coerce_config():
    cfg = PidConfig()
    assert coerce_config(cfg) is cfg
    assert coerce_config(cfg.to_reference_kwargs()) == cfg
    with pytest.raises(TypeError):
        coerce_config("flux")
    assert set(cfg.to_reference_kwargs()) == set(REFERENCE_DEFAULTS)
