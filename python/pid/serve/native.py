"""pid's native form, `POST /v1/decode`: the body a safetensors file holding `latent` and optionally `caption_embeds`
and a per-sample `sigma`; options in the query (`sigma`, `seed`, `steps`, `caption`, `latent_format`); the reply as
the `Accept` header asks (image/png, image/jpeg, or a safetensors file of float32 images)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from .replies import SAFETENSORS_TYPE, ReplyFormat
from .wire import PID_PARAMS, PidOptions, Query, WireError, bad, check_for_decoder, check_latent_values, check_sigma, \
    normalise, parse_pid_options

NATIVE_PARAMS = (*PID_PARAMS, "latent_format")
NATIVE_TENSORS = ("latent", "caption_embeds", "sigma")


def native_reply_format(accept: Optional[str]) -> ReplyFormat:
    """The reply /v1/decode sends for an Accept header: image/png, image/jpeg, else a safetensors file."""
    types = [part.split(";")[0].strip().lower() for part in (accept or "").split(",") if part.strip()]
    for media in types:
        if media == "image/png":
            return ReplyFormat("png")
        if media in ("image/jpeg", "image/jpg"):
            return ReplyFormat("jpeg")
        if media in (SAFETENSORS_TYPE, "application/octet-stream", "*/*", "application/*"):
            return ReplyFormat("safetensors")
    if not types:
        return ReplyFormat("safetensors")
    raise WireError(406, f"Accept {accept!r}: /v1/decode replies with image/png, image/jpeg or {SAFETENSORS_TYPE} "
                         "(float32 images under 'images')")




@dataclass(frozen=True)
class NativeRequest:
    """A parsed /v1/decode request: the normalised latent, caption embeddings if it brought them, PiD's options."""

    latent: torch.Tensor
    caption_embeds: Optional[torch.Tensor]
    options: PidOptions


def parse_native_query(pairs: Iterable[tuple[str, str]]) -> tuple[PidOptions, str]:
    query = Query(pairs, NATIVE_PARAMS, "/v1/decode")
    return parse_pid_options(query), query.choice("latent_format", ("normalized", "raw"), "normalized")


def parse_native_body(body: bytes, options: PidOptions, latent_format: str, channels: int, space,
                      txt_dim: int) -> NativeRequest:
    """The safetensors body of /v1/decode: `latent` [B, C, h, w] (or [C, h, w]), optional `caption_embeds`
    ([L, D] or [1 | B, L, D]) and `sigma` ([B] or a scalar, instead of the query's)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from ..captions import check_embeds
    from ..errors import PidError

    try:
        tensors = load(body)
    except (SafetensorError, ValueError, OSError) as e:
        raise bad(f"the body is not a safetensors file ({e}); send one holding 'latent' (and optionally "
                  "'caption_embeds', 'sigma')") from None
    unknown = sorted(set(tensors) - set(NATIVE_TENSORS))
    if unknown or "latent" not in tensors:
        raise bad(f"the safetensors body holds {sorted(tensors)}; it takes 'latent' (required), 'caption_embeds' and "
                  "'sigma'")
    latent = tensors["latent"]
    if not latent.is_floating_point() or latent.ndim not in (3, 4):
        raise bad(f"'latent' must be a floating-point [B, C, h, w] tensor, got {latent.dtype} {list(latent.shape)}")
    latent = (latent[None] if latent.ndim == 3 else latent).float()
    check_latent_values(latent)
    if latent_format == "raw":
        latent = normalise(latent, space)
    latent = check_for_decoder(latent, channels, space)
    if "sigma" in tensors:
        sigma = tensors["sigma"].reshape(-1).double().tolist()
        check_sigma(sigma)
        options = PidOptions(tuple(sigma), options.seed, options.steps, options.caption)
    options.sigmas(latent.shape[0])  # one, or one per sample
    embeds = tensors.get("caption_embeds")
    if embeds is not None:
        if options.caption is not None:
            raise bad("give caption (text) or caption_embeds, not both")
        try:
            embeds = check_embeds(embeds, "caption_embeds", dim=txt_dim, txt_len=None).float()
        except PidError as e:
            raise bad(str(e)) from None
        if embeds.shape[0] not in (1, latent.shape[0]):
            raise bad(f"caption_embeds holds {embeds.shape[0]} captions for {latent.shape[0]} samples; give one or "
                      "one per sample")
    return NativeRequest(latent, embeds, options)


def safetensors_shape(body: bytes, name: str) -> Optional[list[int]]:
    """The shape of tensor `name` from a safetensors header, without reading the tensors (None if unreadable)."""
    try:
        n = int.from_bytes(body[:8], "little")
        if not 0 < n <= len(body) - 8:
            return None
        shape = json.loads(body[8:8 + n]).get(name, {}).get("shape")
        return [int(d) for d in shape] if isinstance(shape, list) else None
    except (ValueError, AttributeError, TypeError):
        return None
