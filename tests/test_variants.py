"""The registry of released checkpoints against the released checkpoints' state-dict shapes
(shared/spec/pid_state_dict_shapes.json beside the repository; those tests skip without it)."""

import json

import pytest
import torch

from pid.checkpoint import candidate_variants
from pid.state_dict import check_state_dict, fingerprint
from pid.nn import PidNet
from pid.sampling import STUDENT_T_LIST
from pid.variants import VARIANTS, get_variant

# The shapes file covers the ten distilled students (under its own names).
SHAPES_NAMES = {"flux_2k": "flux-2k", "sd3_2k": "sd3-2k", "flux2_2k": "flux2-2k", "dinov2_2k": "dinov2-2k",
                "siglip_2k": "siglip-2k", "sd3_2kto4k": "sd3-2kto4k", "sdxl_2kto4k": "sdxl-2kto4k",
                "flux_v15": "flux-v1.5", "qwen_v15": "qwenimage-v1.5", "flux2_v15": "flux2-v1.5"}
AUX = "lq_proj.lq_aux_rgb_head."


@pytest.fixture(scope="module")
def shapes(shapes_file):
    return json.loads(shapes_file.read_text())


def test_registry_contents():
    students = [v for v in VARIANTS.values() if v.kind == "student"]
    teachers = [v for v in VARIANTS.values() if v.kind == "teacher"]
    assert len(students) == 10 and len(teachers) == 3
    assert set(SHAPES_NAMES.values()) == {v.name for v in students}
    for v in students:
        assert (v.sampler.sampler, v.sampler.steps) == ("student", 4)
    # ... on the reference's time list
    assert STUDENT_T_LIST == (0.999, 0.866, 0.634, 0.342, 0.0)
    for v in teachers:
        assert (v.sampler.sampler, v.sampler.cfg_scale, v.sampler.shift) == ("dpm++2m", 5.0, 6.0)


@pytest.mark.parametrize("shapes_name", sorted(SHAPES_NAMES))
def test_released_variant_shapes(shapes, shapes_name):
    """Build each released network on the meta device; keys and shapes equal the shapes file's list (the v1.5
    lists also hold the 6 training-only aux-head keys, which pid does not build)."""
    variant = VARIANTS[SHAPES_NAMES[shapes_name]]
    with torch.device("meta"):
        net = PidNet(variant.config)
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    theirs = {k: v for k, v in shapes[shapes_name].items() if not k.startswith(AUX)}
    assert ours == theirs
    aux = [k for k in shapes[shapes_name] if k.startswith(AUX)]
    assert len(aux) == (6 if variant.generation == "v1.5" else 0)
    if aux:
        assert shapes[shapes_name][AUX + "3.weight"][0] == variant.config.aux_rgb_channels


@pytest.mark.parametrize("shapes_name", sorted(SHAPES_NAMES))
def test_fingerprint_of_synthesised_key_set(shapes, shapes_name):
    """Any released key set (as meta tensors, aux head removed like the student files) fingerprints to a
    candidate set that holds its variant and only variants with the same network."""
    sd = {k: torch.empty(s, device="meta") for k, s in shapes[shapes_name].items() if not k.startswith(AUX)}
    variant = VARIANTS[SHAPES_NAMES[shapes_name]]
    cands = candidate_variants(fingerprint(sd))
    assert variant in cands
    assert all(c.config.replace(lq_aux_rgb_head=False) == variant.config.replace(lq_aux_rgb_head=False)
               or c.latent.name != variant.latent.name for c in cands)
    assert all(c.kind == "student" for c in cands)
    with torch.device("meta"):
        check_state_dict(sd, PidNet(variant.config))  # strict: raises on any difference


def test_weights_tell_apart_what_they_can(shapes):
    def names(shapes_name, drop_aux=True):
        sd = {k: torch.empty(s, device="meta") for k, s in shapes[shapes_name].items()
              if not (drop_aux and k.startswith(AUX))}
        return sorted(v.name for v in candidate_variants(fingerprint(sd)))

    assert names("flux_2k") == ["flux-2k", "sd3-2k", "sd3-2kto4k"]  # identical networks
    assert names("flux_v15") == ["flux-v1.5", "qwenimage-v1.5"]
    assert names("flux_v15", drop_aux=False) == ["flux-v1.5-teacher", "qwenimage-v1.5-teacher"]
    for unique in ("flux2_2k", "dinov2_2k", "siglip_2k", "sdxl_2kto4k"):
        assert names(unique) == [SHAPES_NAMES[unique]]
    assert names("flux2_v15") == ["flux2-v1.5"]
    assert names("flux2_v15", drop_aux=False) == ["flux2-v1.5-teacher"]


def test_get_variant_by_any_name():
    v = get_variant("flux-v1.5")
    assert get_variant(v.experiment) is v and get_variant("zimage-turbo/2kto4k_v1pt5") is v
    assert get_variant("siglip/2k").sr_scale == 8
    with pytest.raises(KeyError, match="Known variants"):
        get_variant("flux-v3")


def test_output_size_rule():
    assert VARIANTS["flux-v1.5"].output_size(64, 64) == (2048, 2048)
    assert VARIANTS["flux2-2k"].output_size(32, 32) == (2048, 2048)
    assert VARIANTS["siglip-2k"].output_size(16, 16) == (2048, 2048)
    assert VARIANTS["dinov2-2k"].output_size(32, 32) == (2048, 2048)
    assert VARIANTS["flux-v1.5"].in_trained_envelope(1792, 2368)
    assert not VARIANTS["flux-v1.5"].in_trained_envelope(4096, 4096)
    assert VARIANTS["sd3-2kto4k"].in_trained_envelope(3000, 2000)
