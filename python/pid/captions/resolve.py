"""The `[B, 300, D]` caption embeddings of one decode: precomputed ones (a tensor or a file), or captions encoded
through the cache. Never a silent zero embedding."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Sequence, Union

import torch

from ..errors import PidError
from .cache import CaptionCache
from .files import check_embeds, load_caption_embeds
from .gemma import INSTALL_HINT, TXT_DIM, TXT_LEN, PathLike, encoder_session

log = logging.getLogger(__name__)


def _no_caption_message() -> str:
    return ("PiD needs caption embeddings and none were given. Either pass caption_embeds= (a tensor or a "
            ".safetensors/.pt file precomputed with `pid encode-caption` on a machine that has Gemma), or "
            f"install the text encoder ({INSTALL_HINT}) and pass caption=. For no caption, use caption=\"\": the "
            "in-distribution 'no caption' condition is the CHI-prefixed empty caption, which also needs the "
            "encoder or a precomputed file (there is no all-zero fallback).")


def resolve_caption_embeds(batch_size: int, caption: Optional[Union[str, Sequence[str]]] = None,
                           caption_embeds: Optional[Union[torch.Tensor, PathLike]] = None, encoder: Any = None,
                           cache: Optional[CaptionCache] = None, *, dim: Optional[int] = TXT_DIM,
                           txt_len: Optional[int] = TXT_LEN, device: Union[str, torch.device] = "cpu"
                           ) -> torch.Tensor:
    """The `[batch_size, 300, D]` caption embeddings for one decode call (`txt_len=None` accepts any length).

    Precomputed `caption_embeds` win (a path is loaded; `[300, D]` or `[1, 300, D]` broadcast to the batch,
    `[B, 300, D]` must have B == batch_size). Otherwise `caption` (a str for the whole batch, or a list of
    batch_size strings) is encoded with `encoder` (default: a `CaptionEncoder()` created on `device` at the first
    cache miss and released before this returns, `encoder_session`) through `cache` (default: a throwaway
    in-memory one). Neither → ValueError. Dtype/device as produced (bf16; CPU for encoded captions): the caller
    casts.
    """
    if batch_size < 1:
        raise PidError(f"batch_size must be >= 1, got {batch_size}")
    if caption_embeds is not None:
        if caption is not None:
            log.warning("both caption and caption_embeds given: using caption_embeds")
        if isinstance(caption_embeds, (str, os.PathLike)):
            embeds, _ = load_caption_embeds(caption_embeds, dim=dim, txt_len=txt_len)
        else:
            embeds = check_embeds(caption_embeds, "caption_embeds", dim=dim, txt_len=txt_len)
        if embeds.shape[0] == batch_size:
            return embeds
        if embeds.shape[0] == 1:
            return embeds.expand(batch_size, -1, -1).contiguous()
        raise PidError(f"caption_embeds holds {embeds.shape[0]} captions for a batch of {batch_size}; "
                         "give one (broadcast) or one per batch item")

    if caption is None:
        raise PidError(_no_caption_message())
    if isinstance(caption, str):
        captions = [caption] * batch_size
    else:
        captions = list(caption)
        if len(captions) != batch_size:
            raise PidError(f"{len(captions)} captions for a batch of {batch_size}; give one string (broadcast) "
                             "or one per batch item")
    cache = cache if cache is not None else CaptionCache()  # (an empty cache is falsy: it has __len__)
    with encoder_session(encoder, device) as session:
        embeds = cache.encode(session, captions, dim=dim)
    return check_embeds(embeds, "encoded captions", dim=dim)
