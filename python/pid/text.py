"""Caption conditioning for PiD: the Gemma-2 text encoder with the CHI prompt prefix and
the reference's 300-token selection, caption-embedding files, a caption cache, and resolving the
`[B, 300, 2304]` embeddings that the network receives.

The network never sees a caption string, only these embeddings. They come either from precomputed files
(`pid encode-caption` on a machine that has Gemma, or any one-tensor `.pt`/`.safetensors`) or from Gemma
run here (`pip install 'pid[text]'`). There is no silent fallback: the in-distribution "no caption"
condition is the encoding of the CHI-prefixed empty caption `""`, not a zero tensor.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from .atomic import atomic_path
from .errors import CaptionEmbedsError, PidError
from .tensor_file import read_tensor_file

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "Efficient-Large-Model/gemma-2-2b-it"
TXT_LEN = 300  # embeddings per caption (BOS + 299), `model_max_length` of the reference
TXT_DIM = 2304  # Gemma-2-2B hidden width

# The reference's `chi_prompt` lines (its complex-human-instruction prefix), joined with "\n"; the last line ends with a space and
# the caption follows it directly.
CHI_PROMPT_LINES = (
    'Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions suitable for image generation. Evaluate the level of detail in the user prompt:',  # noqa: E501
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial relationships to create vivid and concrete scenes.",  # noqa: E501
    "- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.",  # noqa: E501
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",  # noqa: E501
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.",  # noqa: E501
    "Please generate only the enhanced description for the prompt below and avoid including any additional commentary or evaluations:",  # noqa: E501
    "User Prompt: ",
)
CHI_PROMPT = "\n".join(CHI_PROMPT_LINES)

# The teachers' CFG unconditional caption (the reference's default negative prompt); encoded with the CHI prefix like any caption.
DEFAULT_NEGATIVE_PROMPT = (
    "low quality, worst quality, over-saturated, three legs, six fingers, cartoon, anime, cgi, low res, "
    "blurry, deformed, distortion, duplicated limbs, plastic skin, jpeg artifacts, watermark"
)

EMBEDS_KEY = "caption_embeds"  # tensor name in our safetensors files
CAPTIONS_METADATA_KEY = "pid.captions"  # JSON list of the caption strings
MODEL_ID_METADATA_KEY = "pid.text_model_id"
INSTALL_HINT = "pip install 'pid[text]'"

PathLike = Union[str, os.PathLike]


class TextEncoderUnavailable(RuntimeError):
    """The Gemma text encoder cannot be used here (transformers missing, or the model is not available)."""


# ------------------------------------------------------------------------------ reference token selection
@torch.no_grad()
def encode_with_chi_prompt(tokenizer: Any, model: Any, captions: Union[str, Sequence[str]], *,
                           prefix: str = CHI_PROMPT, txt_len: int = TXT_LEN,
                           device: Optional[Union[str, torch.device]] = None) -> torch.Tensor:
    """The reference `_encode_text_raw` for any HF-like tokenizer and decoder model.

    `N_chi = len(tokenizer.encode(prefix))` (BOS included), `max_len = N_chi + txt_len - 2`; `prefix + caption`
    is tokenized to exactly `max_len` tokens (right padding, right truncation), the model runs on the whole
    sequence with the attention mask, and positions `[0] + [max_len - txt_len + 1, ..., max_len - 1]` (BOS plus
    the last `txt_len - 1`, pad-position states included) are kept. Without a prefix, `max_len = txt_len`.

    Returns `[B, txt_len, D]` in the model's output dtype (bf16 for Gemma). Inputs go to `device`, else to the
    device of the model's parameters when it has any.
    """
    captions = [captions] if isinstance(captions, str) else list(captions)
    if not captions:
        raise PidError("no captions to encode")
    if not all(isinstance(c, str) for c in captions):
        raise TypeError(f"captions must be strings, got {[type(c).__name__ for c in captions]}")
    if getattr(tokenizer, "padding_side", "right") != "right":
        raise PidError(f"the tokenizer pads on the {tokenizer.padding_side!r}; the reference token selection "
                         "needs right padding (set tokenizer.padding_side = 'right')")

    if prefix:
        max_len = len(tokenizer.encode(prefix)) + txt_len - 2
    else:
        max_len = txt_len
    if max_len < txt_len:
        raise PidError(f"prefix {prefix!r} tokenizes to fewer than 2 tokens: the {txt_len}-token window would "
                         "overlap the BOS position")

    tokens = tokenizer([prefix + c for c in captions], max_length=max_len, padding="max_length",
                       truncation=True, return_tensors="pt")
    input_ids, attention_mask = tokens["input_ids"], tokens["attention_mask"]
    if device is None:
        param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        device = param.device if param is not None else None
    if device is not None:
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)

    out = model(input_ids=input_ids, attention_mask=attention_mask)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    if hidden.ndim != 3 or tuple(hidden.shape[:2]) != (len(captions), max_len):
        raise PidError(f"model returned hidden states of shape {tuple(hidden.shape)}, expected "
                         f"[{len(captions)}, {max_len}, D] (did the tokenizer pad to max_length?)")
    keep = [0] + list(range(max_len - txt_len + 1, max_len))
    return hidden[:, keep]


# --------------------------------------------------------------------------------------- Gemma encoder
def _import_transformers():
    try:
        import transformers
    except ImportError as e:
        raise TextEncoderUnavailable(
            f"encoding captions needs Hugging Face transformers, which is not installed: {INSTALL_HINT}. "
            "Alternatively pass precomputed caption embeddings (caption_embeds=, made with "
            "`pid encode-caption` on a machine that has Gemma).") from e
    return transformers


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


class CaptionEncoder:
    """Gemma-2-2B-it (the Sana copy) loaded like the reference: `AutoTokenizer` padding on the right and
    `AutoModelForCausalLM(..., torch_dtype=bf16).get_decoder()`. `model_id` may be a Hugging Face id or a
    local folder holding the downloaded model. `HF_HUB_OFFLINE=1` (or `local_files_only=True`) never touches
    the network. `attn_implementation=None` keeps transformers' default, as the reference does.
    """

    def __init__(self, model_id: PathLike = DEFAULT_MODEL_ID, device: Union[str, torch.device] = "cpu",
                 dtype: torch.dtype = torch.bfloat16, local_files_only: bool = False,
                 cache_dir: Optional[PathLike] = None, *, attn_implementation: Optional[str] = None):
        transformers = _import_transformers()
        self.model_id = str(model_id)
        self.device = torch.device(device)
        self.dtype = dtype
        offline = local_files_only or _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE")
        kwargs: dict[str, Any] = {"local_files_only": offline}
        if cache_dir is not None:
            kwargs["cache_dir"] = str(cache_dir)
        model_kwargs: dict[str, Any] = {"torch_dtype": dtype}
        if attn_implementation is not None:
            model_kwargs["attn_implementation"] = attn_implementation

        log.info("loading text encoder %s (%s, %s%s)", self.model_id, self.device, dtype,
                 ", offline" if offline else "")
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_id, **kwargs)
            causal_lm = transformers.AutoModelForCausalLM.from_pretrained(self.model_id, **kwargs, **model_kwargs)
        except OSError as e:
            raise TextEncoderUnavailable(self._unavailable_message(offline, e)) from e
        self.tokenizer.padding_side = "right"
        self.model = causal_lm.get_decoder().to(self.device)
        self.model.eval()
        self.model.requires_grad_(False)

    def _unavailable_message(self, offline: bool, error: Exception) -> str:
        where = "in the local Hugging Face cache" if offline else "locally, and downloading it failed"
        return (f"text encoder {self.model_id!r} is not available {where} ({error}). Either encode the captions on "
                "a machine that has the model (`pid encode-caption ... --out embeds.safetensors`) and pass "
                "caption_embeds=, or download the model folder (e.g. `huggingface-cli download "
                f"{DEFAULT_MODEL_ID} --local-dir gemma-2-2b-it`) and pass its path as model_id.")

    def encode(self, captions: Union[str, Sequence[str]], batch_size: int = 8) -> torch.Tensor:
        """CHI-prefixed captions → `[B, 300, 2304]` in the encoder dtype, on the encoder device."""
        captions = [captions] if isinstance(captions, str) else list(captions)
        if not captions:
            raise PidError("no captions to encode")
        chunks = [encode_with_chi_prompt(self.tokenizer, self.model, captions[i:i + batch_size], device=self.device)
                  for i in range(0, len(captions), batch_size)]
        return torch.cat(chunks)

    def __repr__(self) -> str:
        return f"CaptionEncoder({self.model_id!r}, device={str(self.device)!r}, dtype={self.dtype})"


@functools.lru_cache(maxsize=1)
def default_caption_encoder() -> CaptionEncoder:
    """The `CaptionEncoder()` shared by calls that pass no encoder (loaded once, on first use)."""
    return CaptionEncoder()


class _LazyDefaultEncoder:
    """Stands in for the default encoder so that a fully cached request never loads (or needs) Gemma."""

    model_id = DEFAULT_MODEL_ID

    def encode(self, captions: list[str]) -> torch.Tensor:
        return default_caption_encoder().encode(captions)


# ------------------------------------------------------------------------------------ embedding files
def _check_embeds(t: Any, what: str, *, dim: Optional[int] = TXT_DIM, txt_len: Optional[int] = TXT_LEN
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
                        model_id: str = DEFAULT_MODEL_ID) -> Path:
    """Write `[B, 300, D]` (or `[300, D]`) embeddings to `path` (`.safetensors`), dtype kept, tensor name
    `caption_embeds`, with the caption texts (JSON list) and the text model id in the metadata. Atomic: a failed
    or interrupted write leaves the old file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise PidError(f"caption embeddings are written as .safetensors, got {str(path)!r}")
    from safetensors.torch import save_file

    embeds = _check_embeds(embeds, "caption embeddings", dim=None)
    metadata = {MODEL_ID_METADATA_KEY: str(model_id)}
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


def load_caption_embeds(path: PathLike, *, dim: Optional[int] = TXT_DIM, txt_len: Optional[int] = TXT_LEN
                        ) -> tuple[torch.Tensor, Optional[list[str]]]:
    """Read caption embeddings → (`[B, 300, D]` tensor in its stored dtype, captions or None).

    Accepts our files, a `.safetensors` holding exactly one tensor under any name, and a weights-only
    `torch.save` file (`.pt` etc.) holding one tensor (or a dict with one). A `[300, D]` tensor gets a batch
    dim. `dim` / `txt_len` = None accept any width / length.
    """
    path = Path(path)
    f = read_tensor_file(path, "caption embeddings file", error=CaptionEmbedsError)
    tensors, metadata = f.tensors, f.metadata
    embeds = _check_embeds(_pick_tensor(tensors, path), f"caption embeddings in {str(path)!r}",
                           dim=dim, txt_len=txt_len)
    model_id = metadata.get(MODEL_ID_METADATA_KEY)
    if model_id is not None and model_id != DEFAULT_MODEL_ID:
        log.info("%s was encoded with %s (PiD's text encoder is %s)", path, model_id, DEFAULT_MODEL_ID)
    return embeds, _read_captions(metadata, embeds.shape[0], path)


# ------------------------------------------------------------------------------------------- cache
def caption_cache_key(model_id: str, caption: str) -> str:
    """sha256 hex of `model_id + "\\0" + caption` (the on-disk file stem)."""
    return hashlib.sha256(f"{model_id}\0{caption}".encode("utf-8")).hexdigest()


class CaptionCache:
    """Caption embeddings by (model id, caption): in memory, and in `folder` (one `<sha256>.safetensors` per
    entry) when given, so that they survive across processes. Entries are `[300, D]` CPU tensors."""

    def __init__(self, folder: Optional[PathLike] = None):
        self.folder = Path(folder) if folder is not None else None
        self._memory: dict[tuple[str, str], torch.Tensor] = {}

    def _file(self, model_id: str, caption: str) -> Optional[Path]:
        return self.folder / f"{caption_cache_key(model_id, caption)}.safetensors" if self.folder else None

    def get(self, model_id: str, caption: str) -> Optional[torch.Tensor]:
        hit = self._memory.get((model_id, caption))
        if hit is not None:
            return hit
        file = self._file(model_id, caption)
        if file is None or not file.is_file():
            return None
        try:
            embeds, captions = load_caption_embeds(file, dim=None)
        except CaptionEmbedsError as e:
            log.warning("ignoring unreadable cache entry %s: %s", file, e)
            return None
        if captions != [caption]:
            log.warning("ignoring cache entry %s: it holds a different caption", file)
            return None
        self._memory[(model_id, caption)] = embeds[0]
        return embeds[0]

    def put(self, model_id: str, caption: str, embeds: torch.Tensor) -> None:
        embeds = _check_embeds(embeds, f"embeddings for caption {caption!r}", dim=None)
        if embeds.shape[0] != 1:
            raise PidError(f"one caption's embeddings must be [300, D] or [1, 300, D], got {list(embeds.shape)}")
        entry = embeds[0].detach().to("cpu").clone()
        self._memory[(model_id, caption)] = entry
        file = self._file(model_id, caption)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            save_caption_embeds(file, entry, [caption], model_id=model_id)  # atomic: readers never see half a file

    def encode(self, encoder: Any, captions: Union[str, Sequence[str]], model_id: Optional[str] = None
               ) -> torch.Tensor:
        """`[B, 300, D]` (CPU) for `captions` in order; `encoder.encode(list)` runs once, on the distinct misses.
        `model_id` defaults to `encoder.model_id`."""
        captions = [captions] if isinstance(captions, str) else list(captions)
        if not captions:
            raise PidError("no captions to encode")
        model_id = str(model_id if model_id is not None else encoder.model_id)
        misses = list(dict.fromkeys(c for c in captions if self.get(model_id, c) is None))
        if misses:
            log.info("encoding %d caption(s) with %s (%d cached)", len(misses), model_id,
                     len(set(captions)) - len(misses))
            fresh = encoder.encode(misses)
            if fresh.shape[0] != len(misses):
                raise PidError(f"encoder returned {fresh.shape[0]} embeddings for {len(misses)} captions")
            for caption, embeds in zip(misses, fresh):
                self.put(model_id, caption, embeds)
        return torch.stack([self._memory[(model_id, c)] for c in captions])

    def __len__(self) -> int:
        return len(self._memory)


# ------------------------------------------------------------------------------------------ resolving
def _no_caption_message() -> str:
    return ("PiD needs caption embeddings and none were given. Either pass caption_embeds= (a tensor or a "
            ".safetensors/.pt file precomputed with `pid encode-caption` on a machine that has Gemma), or "
            f"install the text encoder ({INSTALL_HINT}) and pass caption=. For no caption, use caption=\"\": the "
            "in-distribution 'no caption' condition is the CHI-prefixed empty caption, which also needs the "
            "encoder or a precomputed file (there is no all-zero fallback).")


def resolve_caption_embeds(batch_size: int, caption: Optional[Union[str, Sequence[str]]] = None,
                           caption_embeds: Optional[Union[torch.Tensor, PathLike]] = None, encoder: Any = None,
                           cache: Optional[CaptionCache] = None, *, dim: Optional[int] = TXT_DIM,
                           txt_len: Optional[int] = TXT_LEN) -> torch.Tensor:
    """The `[batch_size, 300, D]` caption embeddings for one decode call (`txt_len=None` accepts any length).

    Precomputed `caption_embeds` win (a path is loaded; `[300, D]` or `[1, 300, D]` broadcast to the batch,
    `[B, 300, D]` must have B == batch_size). Otherwise `caption` (a str for the whole batch, or a list of
    batch_size strings) is encoded with `encoder` (default: a `CaptionEncoder()` created on first need)
    through `cache` (default: a throwaway in-memory one). Neither → ValueError. Dtype/device as produced
    (bf16; CPU for encoded captions): the caller casts.
    """
    if batch_size < 1:
        raise PidError(f"batch_size must be >= 1, got {batch_size}")
    if caption_embeds is not None:
        if caption is not None:
            log.warning("both caption and caption_embeds given: using caption_embeds")
        if isinstance(caption_embeds, (str, os.PathLike)):
            embeds, _ = load_caption_embeds(caption_embeds, dim=dim, txt_len=txt_len)
        else:
            embeds = _check_embeds(caption_embeds, "caption_embeds", dim=dim, txt_len=txt_len)
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
    embeds = cache.encode(encoder if encoder is not None else _LazyDefaultEncoder(), captions)
    return _check_embeds(embeds, "encoded captions", dim=dim)


# ------------------------------------------------------------------------------------------- CLI body
def encode_caption_command(captions: Sequence[str], out: PathLike, model_id: PathLike = DEFAULT_MODEL_ID,
                           device: Union[str, torch.device] = "cpu", *, local_files_only: bool = False) -> Path:
    """Body of `pid encode-caption`: encode `captions` with Gemma and write one `.safetensors` file to `out`."""
    captions = [captions] if isinstance(captions, str) else list(captions)
    if not captions:
        raise PidError("give at least one caption (\"\" is the 'no caption' condition)")
    encoder = CaptionEncoder(model_id, device=device, local_files_only=local_files_only)
    embeds = encoder.encode(captions)
    path = save_caption_embeds(out, embeds, captions, model_id=str(model_id))
    log.info("wrote %d caption embedding(s) %s %s (%s) to %s", len(captions), list(embeds.shape),
             str(embeds.dtype).removeprefix("torch."), model_id, path)
    return path
