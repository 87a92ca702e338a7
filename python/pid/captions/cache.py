"""`CaptionCache`: caption embeddings by text encoder and caption, in memory and in a folder that outlives the
process (one safetensors file per entry, written atomically; a damaged entry is only a miss)."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from ..cache_dir import pid_cache_dir
from ..errors import PidError
from .files import CACHE_KEY_METADATA_KEY, check_embeds, read_embeds_file, save_caption_embeds
from .gemma import TXT_LEN, PathLike

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Where a decoder keeps caption embeddings across processes: `$PID_CACHE_DIR/captions`, else
    `$XDG_CACHE_HOME/pid/captions` (an absolute path, as the XDG specification asks), else `~/.cache/pid/captions`."""
    return pid_cache_dir() / "captions"


def caption_cache_key(encoder_key: str, caption: str) -> str:
    """sha256 hex of `encoder_key + "\\0" + caption` (the on-disk file stem)."""
    return hashlib.sha256(f"{encoder_key}\0{caption}".encode("utf-8")).hexdigest()


def _encoder_key(encoder: Any) -> str:
    """An encoder's key in a `CaptionCache`: its `cache_key` (a `CaptionEncoder`'s: `encoder_cache_key`), else its
    `model_id`."""
    return str(getattr(encoder, "cache_key", None) or encoder.model_id)


class CaptionCache:
    """Caption embeddings by (encoder key, caption): in memory, and in `folder` (one `<sha256>.safetensors` per
    entry, written atomically) when given, so that they survive across processes. Entries are `[300, D]` CPU
    tensors; the encoder key (`encoder_cache_key`) names the model, its dtype and pid's prompt rule.

    The folder only ever saves work: an entry that cannot be read, or does not hold what its name promises, is
    ignored with a warning (the caption is encoded again and the entry rewritten), and one that cannot be written
    is kept in memory only, with a warning. Memory keeps the `max_in_memory` most recently used entries (~1.4 MB
    each at Gemma's width): a long-running service with many captions does not grow without bound."""

    def __init__(self, folder: Optional[PathLike] = None, max_in_memory: int = 64):
        self.folder = Path(folder).expanduser() if folder is not None else None
        self.max_in_memory = max_in_memory
        self._memory: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._write_failed = False

    def _keep(self, key: str, caption: str, entry: torch.Tensor) -> None:
        self._memory[(key, caption)] = entry
        self._memory.move_to_end((key, caption))
        while len(self._memory) > self.max_in_memory:
            self._memory.popitem(last=False)

    def _file(self, key: str, caption: str) -> Optional[Path]:
        return self.folder / f"{caption_cache_key(key, caption)}.safetensors" if self.folder else None

    def get(self, key: str, caption: str, *, dim: Optional[int] = None) -> Optional[torch.Tensor]:
        """The `[300, D]` embeddings of `caption` under encoder `key`, or None. `dim`: an entry on disk of another
        width is unusable."""
        hit = self._memory.get((key, caption))
        if hit is not None:
            self._memory.move_to_end((key, caption))
            return hit
        file = self._file(key, caption)
        if file is None:
            return None
        try:
            if not file.is_file():
                return None
            embeds, captions, metadata = read_embeds_file(file, dim, TXT_LEN)
            problem = _entry_problem(embeds, captions, metadata, key, caption)
        except Exception as e:  # a damaged entry, whatever the damage, is only a miss
            problem = f"{type(e).__name__}: {e}"
        if problem:
            log.warning("ignoring caption cache entry %s: %s; the caption is encoded again", file, problem)
            return None
        self._keep(key, caption, embeds[0])
        return embeds[0]

    def put(self, key: str, caption: str, embeds: torch.Tensor) -> None:
        embeds = check_embeds(embeds, f"embeddings for caption {caption!r}", dim=None)
        if embeds.shape[0] != 1:
            raise PidError(f"one caption's embeddings must be [300, D] or [1, 300, D], got {list(embeds.shape)}")
        entry = embeds[0].detach().to("cpu").clone()
        self._keep(key, caption, entry)
        file = self._file(key, caption)
        if file is None:
            return
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            # atomic: a reader (another process) sees the whole entry or none
            save_caption_embeds(file, entry, [caption], model_id=None, metadata={CACHE_KEY_METADATA_KEY: key})
        except Exception as e:  # an unwritable cache costs a later re-encode, never this decode
            report = log.debug if self._write_failed else log.warning
            report("could not write caption cache entry %s (%s: %s); kept in memory only. Choose another folder "
                   "with $PID_CACHE_DIR or caption_cache=", file, type(e).__name__, e)
            self._write_failed = True

    def encode(self, encoder: Any, captions: Union[str, Sequence[str]], key: Optional[str] = None, *,
               dim: Optional[int] = None) -> torch.Tensor:
        """`[B, 300, D]` (CPU) for `captions` in order; `encoder.encode(list)` runs once, on the distinct misses.
        `key` defaults to the encoder's (`cache_key`, else `model_id`); `dim` as in `get`."""
        captions = [captions] if isinstance(captions, str) else list(captions)
        if not captions:
            raise PidError("no captions to encode")
        key = str(key) if key is not None else _encoder_key(encoder)
        found = {c: self.get(key, c, dim=dim) for c in dict.fromkeys(captions)}
        misses = [c for c, e in found.items() if e is None]
        if misses:
            log.info("encoding %d caption(s) with %s (%d cached)", len(misses), key, len(found) - len(misses))
            fresh = encoder.encode(misses)
            if fresh.shape[0] != len(misses):
                raise PidError(f"encoder returned {fresh.shape[0]} embeddings for {len(misses)} captions")
            for caption, embeds in zip(misses, fresh):
                self.put(key, caption, embeds)
                found[caption] = self._memory.get((key, caption), embeds.detach().cpu())
        return torch.stack([found[c] for c in captions])

    def __len__(self) -> int:
        return len(self._memory)

    def __repr__(self) -> str:
        return f"CaptionCache({str(self.folder) if self.folder else 'memory only'}, {len(self)} entries)"


def _entry_problem(embeds: torch.Tensor, captions: Optional[list[str]], metadata: Mapping[str, str], key: str,
                   caption: str) -> Optional[str]:
    """Why a cache file's content is not the entry (key, caption), or None."""
    if embeds.shape[0] != 1:
        return f"it holds {embeds.shape[0]} embeddings, not one"
    if metadata.get(CACHE_KEY_METADATA_KEY) != key:
        return "it was written for another encoder"
    if captions != [caption]:
        return "it holds another caption"
    return None

