"""Reading a file of tensors: `.safetensors`, or a `torch.save` file loaded with weights_only (never arbitrary code).
Checkpoints, latents, caption embeddings, VAE and RAE statistics and the command line all read through here, so
the same failure gets the same message everywhere."""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import PidError, TensorFileError


@dataclass(frozen=True)
class TensorFile:
    """What a file holds: its tensors by name (a bare tensor saved with torch.save is under the name ""), and the
    safetensors metadata ({} for torch files)."""

    path: Path
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]


def read_tensor_file(path: "str | os.PathLike", what: str, *, error: type[PidError] = TensorFileError,
                     nested: bool = False, hint: str = "") -> TensorFile:
    """Read `path` (`.safetensors`, else a torch.save zip archive) into a TensorFile.

    A torch file may hold one tensor or a dict of tensors; with `nested=True` nested dicts are flattened to dotted
    names and entries that are not tensors are skipped. `what` names the file in messages ("checkpoint", "latent
    file", ...), `error` is the PidError raised, `hint` is added where the file looks truncated."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {str(path)!r} does not exist or is not a file")
    size = path.stat().st_size
    where = f"{what} {str(path)!r} ({size:,} bytes)"
    truncated = f"it is probably truncated{f' ({hint})' if hint else ''}: download or write it again"
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise error(f"{where} is not a readable safetensors file ({e}); {truncated}") from e
        return TensorFile(path, tensors, metadata)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            damaged = f.read(2) == b"PK"
        if damaged:
            raise error(f"{where} is a damaged torch.save archive; {truncated}")
        raise error(f"{where} is neither a .safetensors file nor a torch.save archive")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise error(f"{where} holds objects other than tensors and cannot be loaded safely (weights_only=True "
                    f"refused it: {str(e).splitlines()[0]}); pid never unpickles arbitrary code. Save tensors "
                    "only: a dict of tensors, or .safetensors") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise error(f"{where} could not be read ({str(e).splitlines()[0]}); {truncated}") from e
    return TensorFile(path, _tensors_of(obj, where, error, nested), {})


def _tensors_of(obj: Any, where: str, error: type[PidError], nested: bool) -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {"": obj}
    if not isinstance(obj, Mapping):
        raise error(f"{where} holds a {type(obj).__name__}, not a tensor or a dict of tensors")
    if not nested:
        others = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if others:
            raise error(f"{where} holds a {type(obj).__name__} with entries that are not tensors ({others[:8]}), "
                        "not a flat dict of tensors")
        return {str(k): v for k, v in obj.items()}
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            flat[prefix] = value
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)

    walk("", obj)
    return flat
