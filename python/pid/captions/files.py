"""Caption-embedding files: `[B, 300, D]` tensors in `.safetensors` (pid's, with the captions and the text model in the
metadata) or any one-tensor `.safetensors` / weights-only `torch.save` file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from ..atomic import atomic_path
from ..errors import CaptionEmbedsError, PidError
from ..tensor_file import read_tensor_file
from .gemma import DEFAULT_MODEL_ID, TXT_DIM, TXT_LEN, PathLike

log = logging.getLogger(__name__)

EMBEDS_KEY = "caption_embeds"  # tensor name in our safetensors files
CAPTIONS_METADATA_KEY = "pid.captions"  # JSON list of the caption strings
MODEL_ID_METADATA_KEY = "pid.text_model_id"
CACHE_KEY_METADATA_KEY = "pid.caption_cache_key"  # the encoder key of a caption-cache entry


def check_embeds(t: Any, what: str, *, dim: Optional[int] = TXT_DIM, txt_len: Optional[int] = TXT_LEN
                  ) -> torch.Tensor:
    """A `[B, L, D]` (or `[L, D]`, given a batch dim) floating, finite tensor with the expected L and D."""
    if not isinstance(t, torch.Tensor):
        raise CaptionEmbedsError(f"{what} is a {type(t).__name__}, not a tensor")
    if t.ndim == 2:
        t = t.unsqueeze(0)
    expected = f"[B, {txt_len or 'L'}, {dim or 'D'}] or [{txt_len or 'L'}, {dim or 'D'}]"
    if t.ndim != 3 or (txt_len is not None and t.shape[1] != txt_len) or (dim is not None and t.shape[2] != dim):
        raise CaptionEmbedsError(f"{what} has shape {list(t.shape)}; caption embeddings must be {expected} "
                                 f"(Gemma-2-2B last hidden states, BOS + {TXT_LEN - 1} tokens)")
    if not t.is_floating_point():
        raise CaptionEmbedsError(f"{what} has dtype {t.dtype}; caption embeddings are floating point")
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise CaptionEmbedsError(f"{what} contains NaN or infinite values")
    return t


def save_caption_embeds(path: PathLike, embeds: torch.Tensor, captions: Optional[Union[str, Sequence[str]]] = None,
                        model_id: Optional[str] = DEFAULT_MODEL_ID, *,
                        metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write `[B, 300, D]` (or `[300, D]`) embeddings to `path` (`.safetensors`), dtype kept, tensor name
    `caption_embeds`, with the caption texts (JSON list), the text model id (unless None) and `metadata` in the
    file's metadata. Atomic: a failed or interrupted write leaves the old file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise PidError(f"caption embeddings are written as .safetensors, got {str(path)!r}")
    from safetensors.torch import save_file

    embeds = check_embeds(embeds, "caption embeddings", dim=None)
    metadata = dict(metadata or {})
    if model_id is not None:
        metadata[MODEL_ID_METADATA_KEY] = str(model_id)
    if captions is not None:
        captions = [captions] if isinstance(captions, str) else list(captions)
        if len(captions) != embeds.shape[0]:
            raise PidError(f"{len(captions)} captions for {embeds.shape[0]} embeddings")
        metadata[CAPTIONS_METADATA_KEY] = json.dumps(captions, ensure_ascii=False)
    with atomic_path(path) as tmp:
        save_file({EMBEDS_KEY: embeds.detach().to("cpu").contiguous()}, str(tmp), metadata=metadata)
    return path


def _pick_tensor(tensors: dict[str, Any], path: Path) -> torch.Tensor:
    if EMBEDS_KEY in tensors:
        return tensors[EMBEDS_KEY]
    if len(tensors) != 1:
        raise CaptionEmbedsError(f"{str(path)!r} holds {len(tensors)} entries ({', '.join(map(str, tensors))}); "
                                 f"a caption-embedding file holds one tensor (or one named {EMBEDS_KEY!r})")
    return next(iter(tensors.values()))


def _read_captions(metadata: dict[str, str], n: int, path: Path) -> Optional[list[str]]:
    raw = metadata.get(CAPTIONS_METADATA_KEY)
    if raw is None:
        return None
    try:
        captions = json.loads(raw)
    except ValueError:
        captions = None
    if not (isinstance(captions, list) and len(captions) == n and all(isinstance(c, str) for c in captions)):
        log.warning("%s: ignoring malformed %s metadata", path, CAPTIONS_METADATA_KEY)
        return None
    return captions


def read_embeds_file(path: Path, dim: Optional[int], txt_len: Optional[int]
                      ) -> tuple[torch.Tensor, Optional[list[str]], dict[str, str]]:
    f = read_tensor_file(path, "caption embeddings file", error=CaptionEmbedsError)
    embeds = check_embeds(_pick_tensor(f.tensors, path), f"caption embeddings in {str(path)!r}",
                           dim=dim, txt_len=txt_len)
    return embeds, _read_captions(f.metadata, embeds.shape[0], path), f.metadata


def load_caption_embeds(path: PathLike, *, dim: Optional[int] = TXT_DIM, txt_len: Optional[int] = TXT_LEN
                        ) -> tuple[torch.Tensor, Optional[list[str]]]:
    """Read caption embeddings → (`[B, 300, D]` tensor in its stored dtype, captions or None).

    Accepts our files, a `.safetensors` holding exactly one tensor under any name, and a weights-only
    `torch.save` file (`.pt` etc.) holding one tensor (or a dict with one). A `[300, D]` tensor gets a batch
    dim. `dim` / `txt_len` = None accept any width / length.
    """
    path = Path(path)
    embeds, captions, metadata = read_embeds_file(path, dim, txt_len)
    model_id = metadata.get(MODEL_ID_METADATA_KEY)
    if model_id is not None and model_id != DEFAULT_MODEL_ID:
        log.info("%s was encoded with %s (PiD's text encoder is %s)", path, model_id, DEFAULT_MODEL_ID)
    return embeds, captions
