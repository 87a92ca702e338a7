"""Registry of the released PiD checkpoints (nvidia/PiD on Hugging Face): what each one decodes and how it was trained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .config import PidConfig
from .errors import UnknownVariantError
from .latents import LatentSpace, get_latent_space

@dataclass(frozen=True)
class SamplerDefaults:
    """How a variant is sampled by default (the official registry's settings)."""

    sampler: str  # "student" (4-step distilled, pid.sampling.STUDENT_T_LIST) or "dpm++2m" (undistilled teacher)
    steps: int
    cfg_scale: Optional[float] = None
    shift: Optional[float] = None
    # (base_shift, base_image_size): shift = base · sqrt(sqrt(H·W) / base_image_size)
    dynamic_shift: Optional[tuple[float, int]] = None


STUDENT = SamplerDefaults("student", 4)
TEACHER = SamplerDefaults("dpm++2m", 25, cfg_scale=5.0, shift=6.0, dynamic_shift=(6.0, 2048))


def _square(*sides: int) -> tuple[tuple[int, int], ...]:
    return tuple((s, s) for s in sides)


def _with_transposes(*sizes: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    out = []
    for w, h in sizes:
        out.append((w, h))
        if w != h:
            out.append((h, w))
    return tuple(out)


# (width, height) in pixels of the output image.
SIZES_2K = _with_transposes((2048, 2048), (2304, 1728), (2688, 1536))
SIZES_V15 = _square(2048, 2304, 2560, 2816, 3072, 3328, 3584) + _with_transposes(
    (2368, 1792), (2688, 1984), (2944, 2240), (3264, 2432), (3520, 2688), (3840, 2816), (4096, 2816),
    (2752, 1536), (3072, 1728), (3392, 1920), (3776, 2112), (4096, 2176))


@dataclass(frozen=True)
class Variant:
    """One released checkpoint."""

    name: str
    experiment: str  # folder name under checkpoints/ in the nvidia/PiD Hugging Face repo
    generation: str  # "v1" or "v1.5"
    kind: str  # "student" or "teacher"
    latent: LatentSpace  # the latent space it decodes (pid.latents); FLUX.2 / DINOv2 without their statistics
    config: PidConfig
    sampler: SamplerDefaults
    registry_keys: tuple[str, ...] = ()  # "backbone/pid_ckpt_type" keys of the official registry
    trained_sizes: tuple[tuple[int, int], ...] = ()  # known training buckets, (width, height)
    trained_side_range: tuple[int, int] = (1536, 2688)  # shortest/longest side seen in training
    notes: str = ""

    @property
    def sr_scale(self) -> int:
        return self.config.sr_scale

    @property
    def checkpoint_has_aux_head(self) -> bool:
        """Undistilled teachers keep the training-only aux RGB head; distilled students do not."""
        return self.config.lq_aux_rgb_head and self.kind == "teacher"

    def output_size(self, latent_h: int, latent_w: int) -> tuple[int, int]:
        """(H, W) of the decoded image for a latent grid (PidConfig.output_size)."""
        return self.config.output_size(latent_h, latent_w)

    def in_trained_envelope(self, height: int, width: int) -> bool:
        """Whether (height, width) is a training bucket, or within the side range where none are known."""
        if self.trained_sizes:
            return (width, height) in self.trained_sizes
        lo, hi = self.trained_side_range
        return lo <= min(height, width) and max(height, width) <= hi


_V1 = PidConfig(
    rope_ref_h=1024, rope_ref_w=1024, lq_hidden_dim=512, lq_aux_rgb_head=False, lq_conv_padding_mode="zeros",
    lq_gate_type="sigma_aware_per_token_per_dim", pit_lq_inject=False)
_V15 = PidConfig()  # the PidConfig defaults are the v1.5 network


def _v1(name, experiment, latent, keys, *, sizes=SIZES_2K, side_range=(1536, 2688), notes="", **cfg):
    return Variant(name, experiment, "v1", "student", get_latent_space(latent), _V1.replace(**cfg), STUDENT,
                   tuple(keys), sizes, side_range, notes)


def _v15(name, experiment, latent, keys, kind="student", **cfg):
    return Variant(name, experiment, "v1.5", kind, get_latent_space(latent), _V15.replace(**cfg),
                   STUDENT if kind == "student" else TEACHER, tuple(keys), SIZES_V15, (1536, 4096))


_ZIMAGE_V1 = ("zimage/2k", "zimage-turbo/2k")
_ZIMAGE_V15 = ("zimage/2kto4k_v1pt5", "zimage-turbo/2kto4k_v1pt5")
_KLEIN_V1 = ("flux2-klein-4b/2k", "flux2-klein-9b/2k")
_KLEIN_V15 = ("flux2-klein-4b/2kto4k_v1pt5", "flux2-klein-9b/2kto4k_v1pt5")

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        _v1("flux-2k", "PiD_res2k_sr4x_official_flux_distill_4step", "flux", ("flux/2k",) + _ZIMAGE_V1),
        _v1("flux2-2k", "PiD_res2k_sr4x_official_flux2_distill_4step", "flux2", ("flux2/2k",) + _KLEIN_V1,
            lq_latent_channels=128, latent_spatial_down_factor=16),
        _v1("sd3-2k", "PiD_res2k_sr4x_official_sd3_distill_4step", "sd3", ("sd3/2k",)),
        _v1("dinov2-2k", "PiD_res2k_sr4x_official_dinov2_distill_4step", "dinov2", ("dinov2/2k",),
            sizes=_square(2048), side_range=(2048, 2048), lq_latent_channels=768, latent_spatial_down_factor=16),
        _v1("siglip-2k", "PiD_res2k_sr8x_official_siglip_distill_4step", "siglip", ("siglip/2k",),
            sizes=_square(2048), side_range=(2048, 2048), lq_latent_channels=1152, latent_spatial_down_factor=16,
            sr_scale=8),
        _v1("sd3-2kto4k", "PiD_res2kto4k_sr4x_official_sd3_distill_4step", "sd3", ("sd3/2kto4k",),
            sizes=(), side_range=(1536, 3840), notes="multi-resolution 2048 to 3840; exact buckets unreleased"),
        _v1("sdxl-2kto4k", "PiD_res2kto4k_sr4x_official_sdxl_distill_4step", "sdxl", ("sdxl/2kto4k",),
            sizes=(), side_range=(1536, 3840), lq_latent_channels=4,
            notes="multi-resolution 2048 to 3840; exact buckets unreleased; noisy latents in the VP frame"),
        _v15("flux-v1.5", "PiD_v1pt5_res2kto4k_sr4x_official_flux_distill_4step", "flux",
             ("flux/2kto4k_v1pt5",) + _ZIMAGE_V15),
        _v15("flux2-v1.5", "PiD_v1pt5_res2kto4k_sr4x_official_flux2_distill_4step", "flux2",
             ("flux2/2kto4k_v1pt5",) + _KLEIN_V15, lq_latent_channels=128, latent_spatial_down_factor=16,
             lq_latent_unpatchify_factor=2),
        _v15("qwenimage-v1.5", "PiD_v1pt5_res2kto4k_sr4x_official_qwenimage_distill_4step", "qwenimage",
             ("qwenimage/2kto4k_v1pt5", "qwenimage-2512/2kto4k_v1pt5")),
        _v15("flux-v1.5-teacher", "PiD_v1pt5_res2kto4k_sr4x_official_flux_undistilled", "flux", (), "teacher"),
        _v15("flux2-v1.5-teacher", "PiD_v1pt5_res2kto4k_sr4x_official_flux2_undistilled", "flux2", (), "teacher",
             lq_latent_channels=128, latent_spatial_down_factor=16, lq_latent_unpatchify_factor=2),
        _v15("qwenimage-v1.5-teacher", "PiD_v1pt5_res2kto4k_sr4x_official_qwenimage_undistilled", "qwenimage", (),
             "teacher"),
    )
}


def get_variant(name: str) -> Variant:
    """Look a variant up by its pid name, its experiment (folder) name, or an official registry key."""
    key = name.strip()
    if key in VARIANTS:
        return VARIANTS[key]
    for v in VARIANTS.values():
        if key == v.experiment or key in v.registry_keys:
            return v
    raise UnknownVariantError(
        f"unknown PiD variant {name!r}. Known variants: {', '.join(VARIANTS)}; an official experiment name "
        "(e.g. PiD_v1pt5_res2kto4k_sr4x_official_flux_distill_4step) or registry key (e.g. flux/2kto4k_v1pt5) "
        "works too. For a checkpoint outside the registry pass config= (reference PidNet kwargs).")


def variant_from_path_parts(parts: list[str]) -> Optional[Variant]:
    """The variant whose experiment name appears in a file path (folder or file stem), if any."""
    found = {v.name: v for v in VARIANTS.values() for p in parts if v.experiment in p}
    if len(found) == 1:
        return next(iter(found.values()))
    return None
