"""What travels over HTTP: the Remote VAE decode protocol exactly as diffusers' client (`diffusers.utils.remote_decode`)
speaks it, and what every request shares (query values, PiD's options, latent checks). Parsing turns a request's query and body into the
normalised latent and PiD's per-request options, or a `WireError` (an HTTP status and a one-line message); nothing
here touches the decoder or the event loop.

Remote decode (`POST /`, `POST /decode`): the body is the tensor's raw little-endian bytes (`Content-Type:
tensor/binary`); the query has `shape` (a repeated key), `dtype`, `output_type` (pil | pt), `image_format` (jpg | png),
`partial_postprocess` (True | False), optionally `scaling_factor` / `shift_factor` (the raw VAE latent is
x / scaling_factor + shift_factor), the legacy `do_scaling` flag, and `height` / `width` (the LDM image size, for
FLUX's packed 3-D latents). PiD's own options are extra query parameters the stock client never sends: `sigma`,
`seed`, `steps`, `caption`. (pid's native form is native.py; the replies, replies.py.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch

from .replies import ReplyFormat

DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
REMOTE_PARAMS = ("shape", "dtype", "output_type", "image_format", "partial_postprocess", "scaling_factor",
                 "shift_factor", "do_scaling", "height", "width")
PID_PARAMS = ("sigma", "seed", "steps", "caption")
MAX_STEPS = 100  # a sampler setting beyond this is a mistake (the student takes 4, the teachers 25)
MAX_CAPTION_CHARS = 4000


class WireError(Exception):
    """A request the server refuses: `status` (400 bad input, 413 too large, 503 busy, ...) and a one-line
    message naming the problem and the fix, sent as JSON {"error": message}."""

    def __init__(self, status: int, message: str, headers: Optional[dict] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad(message: str) -> WireError:
    return WireError(400, message)


# ------------------------------------------------------------------------------------------ query values
class Query:
    """A request's query parameters as (key, value) pairs, a key possibly repeated; refuses keys not in `known`."""

    def __init__(self, pairs: Iterable[tuple[str, str]], known: Sequence[str], where: str):
        self.values: dict[str, list[str]] = {}
        for key, value in pairs:
            self.values.setdefault(key, []).append(value)
        unknown = sorted(set(self.values) - set(known))
        if unknown:
            raise bad(f"unknown query parameter(s) {', '.join(unknown)} for {where}; it takes {', '.join(known)}")

    def one(self, key: str) -> Optional[str]:
        values = self.values.get(key)
        if not values:
            return None
        if len(values) > 1:
            raise bad(f"query parameter {key} is given {len(values)} times; give it once")
        return values[0]

    def all(self, key: str) -> list[str]:
        return self.values.get(key, [])

    def number(self, key: str, kind: type, default=None):
        value = self.one(key)
        if value is None:
            return default
        try:
            number = kind(value)
        except ValueError:
            raise bad(f"query parameter {key}={value!r} is not a{'n integer' if kind is int else ' number'}") from None
        if kind is float and not math.isfinite(number):
            raise bad(f"query parameter {key}={value!r} must be a finite number")
        return number

    def boolean(self, key: str, default: bool) -> bool:
        value = self.one(key)
        if value is None:
            return default
        if value.lower() not in ("true", "false"):
            raise bad(f"query parameter {key}={value!r} must be True or False")
        return value.lower() == "true"

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.one(key)
        if value is None:
            return default
        if value not in choices:
            raise bad(f"query parameter {key}={value!r}: use one of {', '.join(choices)}")
        return value


@dataclass(frozen=True)
class PidOptions:
    """PiD's per-request parameters: noise level (one value, or one per sample), seed, sampler steps (None: the
    variant's), caption text (None: the server's default caption)."""

    sigma: tuple[float, ...] = (0.0,)
    seed: int = 0
    steps: Optional[int] = None
    caption: Optional[str] = None

    def sigmas(self, batch: int) -> list[float]:
        """One σ per sample of a batch of `batch`."""
        if len(self.sigma) == 1:
            return list(self.sigma) * batch
        if len(self.sigma) != batch:
            raise bad(f"sigma has {len(self.sigma)} values for {batch} samples; give one, or one per sample "
                      "(comma-separated)")
        return list(self.sigma)


def parse_sigma(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise bad(f"sigma={text!r} is not a number: give the latent's noise level in [0, 1] (0: clean), or one per "
                  "sample, comma-separated") from None
    check_sigma(values)
    return values


def check_sigma(values: Sequence[float]) -> None:
    if not all(math.isfinite(v) and 0 <= v <= 1 for v in values):
        raise bad(f"sigma must lie in [0, 1] (0: a clean latent), got {list(values)}")


def parse_pid_options(query: Query) -> PidOptions:
    sigma = query.one("sigma")
    seed = query.number("seed", int, 0)
    if not 0 <= seed < 2**63:
        raise bad(f"seed={seed} must lie in [0, 2^63)")
    steps = query.number("steps", int)
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise bad(f"steps={steps} must lie in 1..{MAX_STEPS} (the student samples in 4, the teachers in 25)")
    caption = query.one("caption")
    if caption is not None and len(caption) > MAX_CAPTION_CHARS:
        raise bad(f"caption has {len(caption)} characters; at most {MAX_CAPTION_CHARS} (Gemma reads 300 tokens)")
    return PidOptions(parse_sigma(sigma) if sigma is not None else (0.0,), seed, steps, caption)


# ------------------------------------------------------------------------------------------ latents
def check_latent_values(latent: torch.Tensor) -> None:
    """400 for values the decoder would refuse, before the latent joins a batch: NaN / Inf, and values that overflow
    bfloat16 (the dtype PiD takes latents in)."""
    if not bool(torch.isfinite(latent).all()):
        raise bad("the latent contains NaN or infinite values: check the pipeline's output (e.g. a VAE run in float16)")
    if not bool(torch.isfinite(latent.to(torch.bfloat16)).all()):
        raise bad(f"latent values up to {latent.abs().max().item():.3g} overflow bfloat16, the dtype PiD takes "
                  "latents in: a normalised latent is of order 1; check scaling_factor / shift_factor")


def normalise(raw: torch.Tensor, space) -> torch.Tensor:
    """The normalised latent of a raw VAE latent, in the decoder's latent space (400 if it has none)."""
    from ..errors import PidError

    if space is None:
        raise bad("this server's decoder has no latent space (a network given only by its config), so it cannot "
                  "take a raw VAE latent: send the normalised latent (do_scaling=True, no scaling_factor), or start "
                  "the server with --variant")
    try:
        return space.normalize(raw)
    except PidError as e:
        raise bad(str(e)) from None


def check_for_decoder(latent: torch.Tensor, channels: int, space) -> torch.Tensor:
    """A normalised latent [B, C, h, w] checked against the decoder (channels, the latent space's grid)."""
    from ..errors import PidError
    from ..latents import check_latent

    if latent.ndim != 4 or latent.shape[1] != channels:
        raise bad(f"this decoder takes {channels}-channel latents [B, {channels}, h, w], got shape {list(latent.shape)}")
    if space is not None:
        try:
            check_latent(latent, space)
        except PidError as e:
            raise bad(str(e)) from None
    check_latent_values(latent)
    return latent


@dataclass(frozen=True)
class RemoteRequest:
    """A parsed Remote VAE decode request (everything but the body)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    output_type: str
    image_format: str
    partial_postprocess: bool
    scaling_factor: Optional[float]
    shift_factor: Optional[float]
    do_scaling: bool
    height: Optional[int]
    width: Optional[int]
    options: PidOptions

    @property
    def body_bytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()

    @property
    def latent_format(self) -> str:
        """"raw" (the VAE's latent: scaling_factor given, or no scaling at all) or "normalized" (the legacy
        do_scaling=True without a factor: the server applies its own latent space's normalisation, which is PiD's
        input as it is)."""
        if self.scaling_factor is None and self.shift_factor is None and self.do_scaling:
            return "normalized"
        return "raw"

    @property
    def reply(self) -> "ReplyFormat":
        if self.output_type == "pil":
            return ReplyFormat("jpeg" if self.image_format == "jpg" else "png")
        return ReplyFormat("pixels" if self.partial_postprocess else "tensor")

    def grid_shape(self, channels: int, vae_factor: int) -> tuple[int, int, int, int]:
        """(B, C, h, w) of the latent grid this request's tensor becomes, checked against the decoder's channel
        count, before its body is read."""
        shape = self.shape
        if len(shape) == 5:  # a video-VAE layout [B, C, 1, h, w] (Qwen-Image): one frame only
            if shape[2] != 1:
                raise bad(f"shape {list(shape)}: a 5-D latent has {shape[2]} frames; PiD decodes images (1 frame)")
            shape = (shape[0], shape[1], shape[3], shape[4])
        if len(shape) == 4:
            B, C, h, w = shape
        elif len(shape) == 3:
            B, C, h, w = self._packed_grid(channels, vae_factor)
        else:
            raise bad(f"shape {list(shape)}: a latent is [B, C, h, w], or FLUX's packed [B, tokens, features] with "
                      "height and width")
        if C != channels:
            raise bad(f"this decoder takes {channels}-channel latents, the request's shape {list(self.shape)} has {C}")
        if self.reply.single_image and B != 1:
            raise bad(f"output_type=pil returns one image, the latent holds {B}: send one latent per request, or "
                      "output_type=pt")
        return B, C, h, w

    def _packed_grid(self, channels: int, vae_factor: int) -> tuple[int, int, int, int]:
        """FLUX's packed tokens [B, (h/2)(w/2), 4C] (as FluxPipeline._unpack_latents reads them, from the LDM image
        height × width), or FLUX.2's tokens [B, h·w, C] of its already packed latent."""
        B, n, features = self.shape
        if self.height is None or self.width is None:
            raise bad(f"shape {list(self.shape)} is a packed latent: give height and width (the image size the "
                      "pipeline made it for)")
        if features == 4 * channels:
            h, w = 2 * (self.height // (vae_factor * 2)), 2 * (self.width // (vae_factor * 2))
            tokens = (h // 2) * (w // 2)
        elif features == channels:
            h, w = self.height // vae_factor, self.width // vae_factor
            tokens = h * w
        else:
            raise bad(f"shape {list(self.shape)}: packed tokens of {features} features; this decoder takes "
                      f"{channels}-channel latents ({4 * channels} features per 2x2-packed token)")
        if n != tokens or h == 0 or w == 0:
            raise bad(f"shape {list(self.shape)}: {n} packed tokens do not make the latent of a {self.width}x"
                      f"{self.height} image ({tokens} tokens): check height and width")
        return B, channels, h, w

    def latent(self, body: bytes, channels: int, vae_factor: int, space) -> torch.Tensor:
        """The normalised float32 latent [B, C, h, w] of the body (whose length was checked)."""
        x = torch.frombuffer(bytearray(body), dtype=self.dtype).reshape(self.shape).float()
        B, C, h, w = self.grid_shape(channels, vae_factor)
        if x.ndim == 5:
            x = x[:, :, 0]
        elif x.ndim == 3:
            x = unpack_tokens(x, h, w)
        check_latent_values(x)
        if self.scaling_factor is not None or self.shift_factor is not None:
            # As the pipeline would before its VAE: latents / scaling_factor + shift_factor (float32)
            x = x / (1.0 if self.scaling_factor is None else self.scaling_factor) + (self.shift_factor or 0.0)
        if self.latent_format == "raw":
            x = normalise(x, space)
        return check_for_decoder(x, channels, space)


def unpack_tokens(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B, tokens, F] → [B, C, h, w]: FLUX's 2×2 packing (F = 4C; token row-major over the h/2 × w/2 grid, feature
    c·4 + 2i + j, as FluxPipeline._unpack_latents), or plain tokens (F = C, row-major over h × w)."""
    B, n, features = tokens.shape
    if n == h * w:
        return tokens.reshape(B, h, w, features).permute(0, 3, 1, 2).contiguous()
    x = tokens.reshape(B, h // 2, w // 2, features // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(B, features // 4, h, w).contiguous()


def parse_remote_query(pairs: Iterable[tuple[str, str]]) -> RemoteRequest:
    """The Remote VAE decode query (as diffusers' `prepare_decode` builds it) plus PiD's options, or a 400."""
    query = Query(pairs, (*REMOTE_PARAMS, *PID_PARAMS), "the remote-decode endpoint")
    dims = query.all("shape")
    if not dims:
        raise bad("query parameter shape is missing: the latent's shape as a repeated key (shape=1&shape=16&shape=128&"
                  "shape=128), as diffusers' remote_decode sends it")
    try:
        shape = tuple(int(d) for d in dims)
    except ValueError:
        raise bad(f"shape {dims} must be integers") from None
    if any(d < 1 for d in shape):
        raise bad(f"shape {list(shape)} must have positive sides")
    dtype_name = query.one("dtype")
    if dtype_name is None:
        raise bad(f"query parameter dtype is missing: one of {', '.join(DTYPES)}")
    if dtype_name not in DTYPES:
        raise bad(f"dtype={dtype_name!r} is not supported: the latent's dtype is one of {', '.join(DTYPES)}")
    output_type = query.one("output_type") or "pil"
    if output_type not in ("pil", "pt"):
        raise bad(f"output_type={output_type!r}: PiD decodes images, use pil (a JPEG or PNG) or pt (a tensor)")
    height, width = query.number("height", int), query.number("width", int)
    if (height is None) != (width is None) or (height is not None and (height < 1 or width < 1)):
        raise bad("height and width go together, both positive (the LDM image size of a packed latent)")
    scaling = query.number("scaling_factor", float)
    if scaling is not None and scaling == 0:
        raise bad("scaling_factor=0: the raw latent is x / scaling_factor + shift_factor; give the VAE's factor")
    return RemoteRequest(shape=shape, dtype=DTYPES[dtype_name], output_type=output_type,
                         image_format=query.choice("image_format", ("jpg", "png"), "jpg"),
                         partial_postprocess=query.boolean("partial_postprocess", False), scaling_factor=scaling,
                         shift_factor=query.number("shift_factor", float), do_scaling=query.boolean("do_scaling", False),
                         height=height, width=width, options=parse_pid_options(query))


class ClientGone(Exception):
    """The client disconnected before its reply was ready."""


async def read_body(request, size: int, *, exact: bool) -> bytes:
    """The body, refused (400 / 413) as soon as it is longer than `size` bytes, or (exact) not `size` bytes."""
    declared = request.headers.get("content-length")
    what = f"shape x dtype make {size:,} bytes" if exact else f"at most {size:,} bytes are taken"
    if declared is not None and declared.isdigit() and (int(declared) > size or exact and int(declared) != size):
        raise WireError(400 if exact else 413, f"the body has {int(declared):,} bytes, but {what}")
    from starlette.requests import ClientDisconnect

    chunks, received = [], 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > size:
                raise WireError(400 if exact else 413, f"the body has more than {size:,} bytes, but {what}")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone() from None
    if exact and received != size:
        raise WireError(400, f"the body has {received:,} bytes, but {what}")
    return b"".join(chunks)
