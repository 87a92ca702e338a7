"""Reading PiD checkpoints: `.pth` (weights-only) and `.safetensors`, reference prefix filtering,
fingerprinting against the variant registry, and validation with precise errors."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from .config import PidConfig, coerce_config
from .errors import CheckpointError
from .tensor_file import read_tensor_file
from .variants import VARIANTS, Variant, get_variant, variant_from_path_parts

log = logging.getLogger(__name__)

# Keys of full training exports that the reference loader drops.
DROPPED_PREFIXES = ("net_ema.", "fake_score.", "discriminator.")
# Parameters that exist in some checkpoints but that inference never reads: the LQ adapter's auxiliary RGB head,
# a training-only loss branch kept in the undistilled teachers' files.
UNUSED_PREFIXES = ("lq_proj.lq_aux_rgb_head.",)
# Safetensors metadata keys our converter writes.
VARIANT_METADATA_KEY = "pid.variant"
CONFIG_METADATA_KEY = "pid.config"  # JSON of the reference PidNet kwargs

_LATENT_KEY = "lq_proj.latent_proj.0.weight"
_GATE_KEY = "lq_proj.gate_modules.0.content_proj.weight"
_RELEASED_SIZE_HINT = "the released model_ema_bf16.pth files are about 2.8 GB"


# ------------------------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a flat {name: tensor} dict from `.safetensors` or a weights-only `torch.save` file.
    Returns (state dict, safetensors metadata or {})."""
    f = read_tensor_file(path, "checkpoint", error=CheckpointError, hint=_RELEASED_SIZE_HINT)
    return f.tensors, f.metadata


def filter_reference_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference loader's filtering: strip `net.`, drop EMA / fake-score / discriminator copies, keep
    un-prefixed keys as they are."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(DROPPED_PREFIXES):
            continue
        name = key[len("net."):] if key.startswith("net.") else key
        if name in out:
            raise CheckpointError(f"checkpoint has both {key!r} and {name!r}: which one to use is ambiguous")
        out[name] = value
    return out


# ------------------------------------------------------------------------------------------- fingerprint
@dataclass(frozen=True)
class Fingerprint:
    """The structural facts a state dict reveals about the network it belongs to."""

    hidden_size: int
    lq_hidden_dim: int
    latent_conv_in_channels: int
    gate_width: int
    pit_lq_inject: bool
    has_aux_head: bool

    @property
    def generation(self) -> str:
        return {512: "v1", 1024: "v1.5"}.get(self.lq_hidden_dim, "custom")

    def describe(self) -> str:
        gate = "per-token" if self.gate_width == 1 else "per-token-per-dim"
        return (f"{self.generation} network: LQ width {self.lq_hidden_dim}, {self.latent_conv_in_channels} latent "
                f"conv input channels, {gate} gates, PiT gate {'yes' if self.pit_lq_inject else 'no'}, "
                f"aux RGB head {'present' if self.has_aux_head else 'absent'}")

    _FIELDS = ("hidden_size", "lq_hidden_dim", "latent_conv_in_channels", "gate_width", "pit_lq_inject")

    def differences(self, config: PidConfig) -> list[str]:
        """The structural fields on which the weights and `config` disagree, as "field: checkpoint a, config b"."""
        return [f"{f}: checkpoint {getattr(self, f)}, config {getattr(config, f)}" for f in self._FIELDS
                if getattr(self, f) != getattr(config, f)]

    def fits(self, config: PidConfig) -> bool:
        return not self.differences(config)


def fingerprint(state_dict: Mapping[str, torch.Tensor]) -> Fingerprint:
    """Fingerprint a filtered (un-prefixed) state dict; raise if it is not a PiD network."""
    missing = [k for k in (_LATENT_KEY, _GATE_KEY, "y_pos_embedding") if k not in state_dict]
    if missing:
        sample = sorted(state_dict)[:6]
        raise CheckpointError(
            f"this is not a PiD checkpoint: it lacks {missing} (found {len(state_dict)} keys, e.g. {sample}). "
            "Expected a file such as checkpoints/<experiment>/model_ema_bf16.pth from the nvidia/PiD release.")
    latent_w = state_dict[_LATENT_KEY]
    return Fingerprint(
        hidden_size=int(state_dict["y_pos_embedding"].shape[-1]),
        lq_hidden_dim=int(latent_w.shape[0]),
        latent_conv_in_channels=int(latent_w.shape[1]),
        gate_width=int(state_dict[_GATE_KEY].shape[0]),
        pit_lq_inject="pit_lq_gate.log_alpha" in state_dict,
        has_aux_head=any(k.startswith(UNUSED_PREFIXES) for k in state_dict),
    )


def candidate_variants(fp: Fingerprint) -> list[Variant]:
    """Released variants whose network fits the fingerprint. Where the aux head separates students from
    teachers, the ones consistent with it are preferred."""
    fits = [v for v in VARIANTS.values() if fp.fits(v.config)]
    consistent = [v for v in fits if v.checkpoint_has_aux_head == fp.has_aux_head]
    return consistent or fits


def resolve(state_dict: Mapping[str, torch.Tensor], *, variant: Optional[str] = None,
            config: "PidConfig | Mapping[str, Any] | None" = None, path: Optional[Path] = None,
            metadata: Optional[Mapping[str, str]] = None) -> tuple[PidConfig, Optional[Variant]]:
    """Decide which network a (filtered) state dict is for: from `config`, `variant`, the file's metadata or
    folder name, or its fingerprint, always confirmed by the fingerprint."""
    fp = fingerprint(state_dict)
    chosen = get_variant(variant) if variant is not None else None
    if config is None and chosen is None and metadata and metadata.get(CONFIG_METADATA_KEY) \
            and not metadata.get(VARIANT_METADATA_KEY):
        config = json.loads(metadata[CONFIG_METADATA_KEY])
    if config is not None:
        cfg = coerce_config(config)
        if not fp.fits(cfg):
            raise CheckpointError(f"the checkpoint does not fit the given config ({'; '.join(fp.differences(cfg))}): "
                                  f"it is a {fp.describe()}. {_generation_hint(fp, cfg)}".rstrip())
        return cfg, chosen
    source = f"variant={variant!r}"
    if chosen is None and metadata and metadata.get(VARIANT_METADATA_KEY):
        chosen, source = get_variant(metadata[VARIANT_METADATA_KEY]), "its metadata"
    if chosen is None and path is not None:
        chosen = variant_from_path_parts(list(path.resolve().parts))
        source = f"its path ({path})"
    candidates = candidate_variants(fp)
    if chosen is not None:
        if not fp.fits(chosen.config):
            others = ", ".join(v.name for v in candidates) or "none of the released variants"
            raise CheckpointError(
                f"{source} names variant {chosen.name!r}, but the weights are a {fp.describe()}, which fits "
                f"{others}. {_generation_hint(fp, chosen.config)}")
        return chosen.config, chosen
    if len(candidates) == 1:
        return candidates[0].config, candidates[0]
    if not candidates:
        raise CheckpointError(
            f"no released PiD variant matches this checkpoint ({fp.describe()}). If it is a custom network, pass "
            "config= with its reference PidNet constructor arguments (a dict or a JSON file on the CLI).")
    names = ", ".join(v.name for v in candidates)
    raise CheckpointError(
        f"the weights alone cannot tell which variant this is: they fit {names} (same shapes, different latent "
        "spaces). Choose with variant='<name>' (CLI: --variant), or keep the file in its official folder "
        "checkpoints/<experiment>/ so the folder name decides.")


def _generation_hint(fp: Fingerprint, cfg: PidConfig) -> str:
    cfg_gen = {512: "v1", 1024: "v1.5"}.get(cfg.lq_hidden_dim)
    if fp.generation in ("v1", "v1.5") and cfg_gen and cfg_gen != fp.generation:
        return f"Likely cause: a {fp.generation} checkpoint loaded with a {cfg_gen} config."
    if fp.latent_conv_in_channels != cfg.latent_conv_in_channels:
        return ("Likely cause: a checkpoint for another latent space (the LQ conv input channels identify it: "
                "16 Flux/SD3/Qwen/Z-Image, 128 FLUX.2 v1, 32 FLUX.2 v1.5, 4 SDXL, 768 DINOv2, 1152 SigLIP).")
    return ""


# ------------------------------------------------------------------------------------------- validation
def check_state_dict(state_dict: Mapping[str, torch.Tensor], net: torch.nn.Module,
                     strict: bool = True) -> dict[str, torch.Tensor]:
    """Drop the documented unused keys and check names and shapes against `net`; raise with the lists."""
    sd = {k: v for k, v in state_dict.items() if not k.startswith(UNUSED_PREFIXES)}
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    mismatched = [(k, tuple(sd[k].shape), expected[k]) for k in sorted(set(sd) & set(expected))
                  if tuple(sd[k].shape) != expected[k]]
    problems = []
    if mismatched:
        lines = [f"  {k}: checkpoint {list(a)} vs network {list(b)}" for k, a, b in mismatched]
        problems.append(f"{len(mismatched)} shape mismatch(es):\n" + _clip(lines))
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s):\n" + _clip([f"  {k}" for k in missing]))
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s):\n" + _clip([f"  {k}" for k in unexpected]))
    if problems:
        hint = ""
        cfg = getattr(net, "config", None)
        if cfg is not None and _LATENT_KEY in sd and _GATE_KEY in sd and "y_pos_embedding" in sd:
            hint = _generation_hint(fingerprint(sd), cfg)
        raise CheckpointError("the state dict does not fit the network:\n" + "\n".join(problems)
                              + (f"\n{hint}" if hint else ""))
    return sd


def _clip(lines: list[str], limit: int = 20) -> str:
    more = len(lines) - limit
    return "\n".join(lines[:limit] + ([f"  ... and {more} more"] if more > 0 else []))


# ------------------------------------------------------------------------------------------- writing
def save_safetensors(decoder, path: "str | os.PathLike") -> None:
    """Write a loaded decoder's weights as bf16 safetensors without the `net.` prefix, with the variant name
    (or, for a custom network, its reference kwargs) and the pid version in the metadata. `path` must end in
    `.safetensors` (pid reads files by their suffix). Atomic: a failed or interrupted write leaves the old file."""
    from safetensors.torch import save_file

    from ._version import __version__
    from .atomic import atomic_path

    if Path(path).suffix != ".safetensors":
        raise CheckpointError(f"{str(path)!r}: converted checkpoints are safetensors files, and pid reads a file by "
                              f"its suffix; name it {Path(path).with_suffix('.safetensors').name!r}")

    tensors = {k: v.detach().to("cpu", torch.bfloat16).contiguous() for k, v in decoder.net.state_dict().items()}
    metadata = {"pid.version": __version__, CONFIG_METADATA_KEY: json.dumps(decoder.config.to_reference_kwargs())}
    if decoder.variant is not None:
        metadata[VARIANT_METADATA_KEY] = decoder.variant.name
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
