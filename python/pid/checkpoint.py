"""PiD checkpoint files: reading `.pth` (weights-only) and `.safetensors`, deciding which network a state dict is for
(config, variant, the file's metadata or folder, confirmed by its fingerprint: `pid.state_dict`), and writing the
converted `.safetensors`."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from .config import PidConfig, coerce_config
from .errors import CheckpointError
from .state_dict import Fingerprint, fingerprint, generation_hint
from .tensor_file import read_tensor_file
from .variants import VARIANTS, Variant, get_variant, variant_from_path_parts

log = logging.getLogger(__name__)

# Safetensors metadata keys our converter writes.
VARIANT_METADATA_KEY = "pid.variant"
CONFIG_METADATA_KEY = "pid.config"  # JSON of the reference PidNet kwargs

_RELEASED_SIZE_HINT = "the released model_ema_bf16.pth files are about 2.8 GB"


# ------------------------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a flat {name: tensor} dict from `.safetensors` or a weights-only `torch.save` file.
    Returns (state dict, safetensors metadata or {})."""
    f = read_tensor_file(path, "checkpoint", error=CheckpointError, hint=_RELEASED_SIZE_HINT)
    return f.tensors, f.metadata


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
                                  f"it is a {fp.describe()}. {generation_hint(fp, cfg)}".rstrip())
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
                f"{others}. {generation_hint(fp, chosen.config)}")
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
