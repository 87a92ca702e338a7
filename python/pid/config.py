"""Network hyper-parameters (`PidConfig`) and their mapping to the reference constructor arguments."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ConfigError

GATE_TYPES = ("sigma_aware_per_token", "sigma_aware_per_token_per_dim")
ROPE_MODES = ("original", "ntk_aware")
PADDING_MODES = ("zeros", "reflect", "replicate")

# Defaults of the reference `PidNet.__init__` (nv-tlabs/PiD, pid/_src/networks/pid_net.py). They are
# used for any argument a reference kwargs dict omits. Note the RoPE trap: the base class defaults to
# rope_mode="original", but PidNet overrides it to "ntk_aware" with a 1024 px reference.
REFERENCE_DEFAULTS: dict[str, Any] = {
    "in_channels": 3,
    "num_groups": 16,
    "hidden_size": 1152,
    "pixel_hidden_size": 64,
    "pixel_attn_hidden_size": None,
    "pixel_num_groups": None,
    "patch_depth": 26,
    "pixel_depth": 2,
    "num_text_blocks": 4,
    "patch_size": 16,
    "txt_embed_dim": 4096,
    "txt_max_length": 1024,
    "use_text_rope": True,
    "text_rope_theta": 10000.0,
    "rope_mode": "ntk_aware",
    "rope_ref_h": 1024,
    "rope_ref_w": 1024,
    "repa_encoder_index": -1,
    "enable_ed": False,
    "ed_compress_ratio": 1,
    "ed_depth_per_stage": 1,
    "ed_window_size": 2,
    "ed_num_heads": None,
    "ed_hidden_size": None,
    "ed_use_token_shuffle": True,
    "lq_inject_mode": "controlnet",
    "lq_in_channels": 3,
    "lq_latent_channels": 0,
    "lq_hidden_dim": 512,
    "lq_num_res_blocks": 4,
    "lq_latent_unpatchify_factor": 1,
    "lq_aux_rgb_head": False,
    "lq_aux_rgb_head_latent_block_idx": -1,
    "lq_conv_padding_mode": "zeros",
    "lq_gate_type": "sigma_aware_per_token_per_dim",
    "lq_interval": 1,
    "zero_init_lq": True,
    "train_lq_proj_only": False,
    "sr_scale": 4,
    "latent_spatial_down_factor": 8,
    "pit_lq_inject": False,
}

# Reference arguments that only affect training (initialisation, freezing, a REPA tap) or the
# RGB-LQ branch that no PiD release builds; accepted and ignored.
_TRAINING_ONLY = ("repa_encoder_index", "zero_init_lq", "train_lq_proj_only", "lq_aux_rgb_head_latent_block_idx")
# Encoder/decoder token compression of PixelDiT; only its disabled form is supported.
_ED_ARGS = ("ed_compress_ratio", "ed_depth_per_stage", "ed_window_size", "ed_num_heads", "ed_hidden_size",
            "ed_use_token_shuffle")


@dataclass(frozen=True)
class PidConfig:
    """Every hyper-parameter of a PiD network. Defaults are the released v1.5 Flux student."""

    in_channels: int = 3
    hidden_size: int = 1536
    num_heads: int = 24
    pixel_hidden_size: int = 16
    pixel_attn_hidden_size: int = 1152
    pixel_num_heads: int = 16
    patch_depth: int = 14
    pixel_depth: int = 2
    patch_size: int = 16
    txt_embed_dim: int = 2304
    txt_max_length: int = 300
    use_text_rope: bool = True
    text_rope_theta: float = 10000.0
    rope_mode: str = "ntk_aware"
    rope_ref_h: int = 2048
    rope_ref_w: int = 2048
    lq_latent_channels: int = 16
    lq_hidden_dim: int = 1024
    lq_num_res_blocks: int = 4
    lq_latent_unpatchify_factor: int = 1
    lq_aux_rgb_head: bool = True
    lq_conv_padding_mode: str = "replicate"
    lq_gate_type: str = "sigma_aware_per_token"
    lq_interval: int = 2
    sr_scale: int = 4
    latent_spatial_down_factor: int = 8
    pit_lq_inject: bool = True
    num_text_blocks: int = 4  # stored by the reference, builds nothing

    def __post_init__(self):
        self.validate()

    # ---------------------------------------------------------------- derived quantities
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def pixel_head_dim(self) -> int:
        return self.pixel_attn_hidden_size // self.pixel_num_heads

    @property
    def mlp_hidden_size(self) -> int:
        """SwiGLU width of the MMDiT blocks: int(2·int(4·D)/3), no multiple-of rounding."""
        return int(2 * int(self.hidden_size * 4.0) / 3)

    @property
    def num_gates(self) -> int:
        """Number of LQ injection points in the patch blocks (gates before blocks 0, k, 2k, ...)."""
        return (self.patch_depth + self.lq_interval - 1) // self.lq_interval

    @property
    def effective_latent_down_factor(self) -> int:
        return self.latent_spatial_down_factor // self.lq_latent_unpatchify_factor

    @property
    def latent_to_patch_ratio(self) -> float:
        """Patch cells per latent cell and axis (after unpatchify): 2, 4 or 8 for the releases."""
        return self.sr_scale * self.effective_latent_down_factor / self.patch_size

    @property
    def latent_fold_factor(self) -> int:
        """Space-to-depth factor when the latent is finer than the patch grid (ratio < 1), else 1."""
        ratio = self.latent_to_patch_ratio
        return 1 if ratio >= 1 else int(round(1 / ratio))

    @property
    def latent_conv_in_channels(self) -> int:
        """Input channels of the latent CNN: the latent's channels after unpatchify, times the fold's."""
        return self.lq_latent_channels // self.lq_latent_unpatchify_factor**2 * self.latent_fold_factor**2

    @property
    def pixels_per_latent(self) -> int:
        """Output pixels per cell of the latent as handed in (before unpatchify), per axis."""
        return self.sr_scale * self.latent_spatial_down_factor

    def output_size(self, latent_h: int, latent_w: int) -> tuple[int, int]:
        """(H, W) of the image decoded from a latent of latent_h × latent_w cells (as handed in): the reference's
        rule, latent cells × VAE factor × super-resolution factor. The one output-size rule of the package."""
        return int(latent_h) * self.pixels_per_latent, int(latent_w) * self.pixels_per_latent

    @property
    def gate_width(self) -> int:
        """Logits per token of a gate: 1 (per-token) or hidden_size (per-token-per-dim)."""
        return 1 if self.lq_gate_type == "sigma_aware_per_token" else self.hidden_size

    @property
    def rope_ref_grid(self) -> tuple[int, int]:
        return self.rope_ref_h // self.patch_size, self.rope_ref_w // self.patch_size

    @property
    def aux_rgb_channels(self) -> int:
        return 3 * (self.patch_size // self.sr_scale) ** 2

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        def need(cond: bool, msg: str):
            if not cond:
                raise ConfigError(msg)

        need(self.hidden_size % self.num_heads == 0,
             f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        need(self.head_dim % 4 == 0, f"head_dim {self.head_dim} must be a multiple of 4 for the 2-D RoPE")
        need(self.pixel_attn_hidden_size % self.pixel_num_heads == 0,
             f"pixel_attn_hidden_size {self.pixel_attn_hidden_size} is not divisible by pixel_num_heads "
             f"{self.pixel_num_heads}")
        need(self.pixel_head_dim % 4 == 0, f"pixel head_dim {self.pixel_head_dim} must be a multiple of 4")
        need(self.pixel_hidden_size % 4 == 0,
             f"pixel_hidden_size {self.pixel_hidden_size} must be a multiple of 4 (2-D sin/cos table)")
        need(self.patch_depth >= 1 and self.pixel_depth >= 1, "patch_depth and pixel_depth must be >= 1")
        need(self.lq_interval >= 1, f"lq_interval must be >= 1, got {self.lq_interval}")
        need(self.rope_mode in ROPE_MODES, f"rope_mode must be one of {ROPE_MODES}, got {self.rope_mode!r}")
        need(self.lq_gate_type in GATE_TYPES,
             f"lq_gate_type must be one of {GATE_TYPES}, got {self.lq_gate_type!r} "
             "(the reference's error message spells the second one '..._and_dim', which does not build)")
        need(self.lq_conv_padding_mode in PADDING_MODES,
             f"lq_conv_padding_mode must be one of {PADDING_MODES}, got {self.lq_conv_padding_mode!r}")
        need(self.lq_latent_channels > 0, "lq_latent_channels must be > 0: PiD decodes a latent")
        f = self.lq_latent_unpatchify_factor
        need(f >= 1 and self.lq_latent_channels % (f * f) == 0 and self.latent_spatial_down_factor % f == 0,
             f"lq_latent_unpatchify_factor {f} must divide latent_spatial_down_factor "
             f"{self.latent_spatial_down_factor}, and its square must divide lq_latent_channels "
             f"{self.lq_latent_channels}")
        ratio = self.latent_to_patch_ratio
        need(ratio >= 1 or abs(self.latent_fold_factor * ratio - 1) < 1e-9,
             f"latent-to-patch ratio {ratio} is neither >= 1 nor the inverse of an integer")
        need(self.lq_hidden_dim % 4 == 0, f"lq_hidden_dim {self.lq_hidden_dim} must be divisible by 4 (GroupNorm)")
        need(self.patch_size % self.sr_scale == 0 or not self.lq_aux_rgb_head,
             "lq_aux_rgb_head needs patch_size divisible by sr_scale")

    # ---------------------------------------------------------------- reference kwargs
    @classmethod
    def from_reference_kwargs(cls, kwargs: Mapping[str, Any]) -> "PidConfig":
        """Build from the reference `PidNet(**kwargs)` arguments, with the reference defaults."""
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"reference PidNet arguments must be a dict (a JSON object), got {type(kwargs).__name__}")
        unknown = sorted(set(kwargs) - set(REFERENCE_DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown reference PidNet arguments: {unknown}")
        for key, value in kwargs.items():
            _check_kwarg_type(key, value)
        a = {**REFERENCE_DEFAULTS, **kwargs}
        if a["lq_inject_mode"] != "controlnet":
            raise ConfigError(f"lq_inject_mode must be 'controlnet', got {a['lq_inject_mode']!r}")
        if a["lq_in_channels"]:
            raise ConfigError(
                f"lq_in_channels={a['lq_in_channels']} builds the RGB low-quality-image branch, which no "
                "released PiD checkpoint has and pid does not implement. Pass lq_in_channels=0 (the reference "
                "default is 3, so it must be given explicitly).")
        if a["enable_ed"]:
            raise ConfigError("enable_ed=True (PixelDiT encoder/decoder compression) is not used by PiD and "
                              "not implemented; pass enable_ed=False")
        if a["lq_gate_type"] == "sigma_aware_per_token_and_dim":
            raise ConfigError("lq_gate_type 'sigma_aware_per_token_and_dim' does not build in the reference "
                              "either; the per-channel gate is 'sigma_aware_per_token_per_dim'")
        hidden = int(a["hidden_size"])
        heads = int(a["num_groups"])
        return cls(
            in_channels=int(a["in_channels"]),
            hidden_size=hidden,
            num_heads=heads,
            pixel_hidden_size=int(a["pixel_hidden_size"]),
            pixel_attn_hidden_size=int(a["pixel_attn_hidden_size"] or hidden),
            pixel_num_heads=int(a["pixel_num_groups"] or heads),
            patch_depth=int(a["patch_depth"]),
            pixel_depth=int(a["pixel_depth"]),
            patch_size=int(a["patch_size"]),
            txt_embed_dim=int(a["txt_embed_dim"]),
            txt_max_length=int(a["txt_max_length"]),
            use_text_rope=bool(a["use_text_rope"]),
            text_rope_theta=float(a["text_rope_theta"]),
            rope_mode=str(a["rope_mode"]),
            rope_ref_h=int(a["rope_ref_h"]),
            rope_ref_w=int(a["rope_ref_w"]),
            lq_latent_channels=int(a["lq_latent_channels"]),
            lq_hidden_dim=int(a["lq_hidden_dim"]),
            lq_num_res_blocks=int(a["lq_num_res_blocks"]),
            lq_latent_unpatchify_factor=int(a["lq_latent_unpatchify_factor"]),
            lq_aux_rgb_head=bool(a["lq_aux_rgb_head"]),
            lq_conv_padding_mode=str(a["lq_conv_padding_mode"]),
            lq_gate_type=str(a["lq_gate_type"]),
            lq_interval=int(a["lq_interval"]),
            sr_scale=int(a["sr_scale"]),
            latent_spatial_down_factor=int(a["latent_spatial_down_factor"]),
            pit_lq_inject=bool(a["pit_lq_inject"]),
            num_text_blocks=int(a["num_text_blocks"]),
        )

    def to_reference_kwargs(self) -> dict[str, Any]:
        """The complete reference `PidNet` arguments that build this network."""
        out = dict(REFERENCE_DEFAULTS)
        out.update(
            in_channels=self.in_channels, num_groups=self.num_heads, hidden_size=self.hidden_size,
            pixel_hidden_size=self.pixel_hidden_size, pixel_attn_hidden_size=self.pixel_attn_hidden_size,
            pixel_num_groups=self.pixel_num_heads, patch_depth=self.patch_depth, pixel_depth=self.pixel_depth,
            num_text_blocks=self.num_text_blocks, patch_size=self.patch_size, txt_embed_dim=self.txt_embed_dim,
            txt_max_length=self.txt_max_length, use_text_rope=self.use_text_rope,
            text_rope_theta=self.text_rope_theta, rope_mode=self.rope_mode, rope_ref_h=self.rope_ref_h,
            rope_ref_w=self.rope_ref_w, lq_in_channels=0, lq_latent_channels=self.lq_latent_channels,
            lq_hidden_dim=self.lq_hidden_dim, lq_num_res_blocks=self.lq_num_res_blocks,
            lq_latent_unpatchify_factor=self.lq_latent_unpatchify_factor, lq_aux_rgb_head=self.lq_aux_rgb_head,
            lq_conv_padding_mode=self.lq_conv_padding_mode, lq_gate_type=self.lq_gate_type,
            lq_interval=self.lq_interval, sr_scale=self.sr_scale,
            latent_spatial_down_factor=self.latent_spatial_down_factor, pit_lq_inject=self.pit_lq_inject,
        )
        return out

    def replace(self, **changes) -> "PidConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PidConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown PidConfig fields: {unknown}")
        return cls(**d)


def _check_kwarg_type(key: str, value: Any) -> None:
    """ConfigError unless `value` has the type of the reference argument `key` (None only where its default is)."""
    default = REFERENCE_DEFAULTS[key]
    if value is None and default is None:
        return
    kind = int if default is None else type(default)  # None defaults are optional sizes
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"reference PidNet argument {key!r} must be {'an' if kind is int else 'a'} {kind.__name__}"
                          f"{' or null' if default is None else ''}, got {value!r}")


def coerce_config(config: "PidConfig | Mapping[str, Any]") -> PidConfig:
    """Accept a PidConfig or a dict of reference `PidNet` constructor arguments (as in the golden JSON)."""
    if isinstance(config, PidConfig):
        return config
    if isinstance(config, Mapping):
        return PidConfig.from_reference_kwargs(config)
    raise TypeError(f"config must be a PidConfig or a dict of reference PidNet kwargs, got {type(config).__name__}")
