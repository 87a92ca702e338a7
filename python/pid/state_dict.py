"""The network's weights by their reference names, without files: the reference loader's prefix filtering, the
structural fingerprint a state dict reveals, and the strict check of names and shapes against a network (with the
likely cause of a mismatch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from .config import PidConfig
from .errors import CheckpointError

# Keys of full training exports that the reference loader drops.
DROPPED_PREFIXES = ("net_ema.", "fake_score.", "discriminator.")
# Parameters that exist in some checkpoints but that inference never reads: the LQ adapter's auxiliary RGB head,
# a training-only loss branch kept in the undistilled teachers' files.
UNUSED_PREFIXES = ("lq_proj.lq_aux_rgb_head.",)

_LATENT_KEY = "lq_proj.latent_proj.0.weight"
_GATE_KEY = "lq_proj.gate_modules.0.content_proj.weight"


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


def generation_hint(fp: Fingerprint, cfg: PidConfig) -> str:
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
            hint = generation_hint(fingerprint(sd), cfg)
        raise CheckpointError("the state dict does not fit the network:\n" + "\n".join(problems)
                              + (f"\n{hint}" if hint else ""))
    return sd


def _clip(lines: list[str], limit: int = 20) -> str:
    more = len(lines) - limit
    return "\n".join(lines[:limit] + ([f"  ... and {more} more"] if more > 0 else []))
