"""The Gemma-2 caption encoder as the reference runs it: the CHI prompt prefix, the 300-token window (BOS + the
last 299 positions), the model loaded through transformers (optional extra `pid-decoder[text]`), and the encoder
of one request (`encoder_session`: the default encoder made at the first cache miss, released at the end)."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import torch

from ..errors import PidError

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

INSTALL_HINT = "pip install 'pid-decoder[text]'"

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


def _dtype_argument(transformers: Any) -> str:
    """The `from_pretrained` argument that sets the weights' dtype: `dtype` since transformers 4.56 (where
    `torch_dtype`, the reference's spelling under 4.57.1, is deprecated), `torch_dtype` before. Same effect."""
    try:
        major, minor = (int(part) for part in str(transformers.__version__).split(".")[:2])
    except (AttributeError, ValueError):
        return "torch_dtype"
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


# Names pid's prompt and token window in the caption-cache keys: editing the CHI prefix or the 300-token rule
# changes every key, so no embedding made under the old rule is reused.
_PROMPT_TAG = f"chi-{hashlib.sha256(CHI_PROMPT.encode()).hexdigest()[:12]}-{TXT_LEN}"


def encoder_cache_key(model_id: PathLike = DEFAULT_MODEL_ID, dtype: torch.dtype = torch.bfloat16) -> str:
    """What identifies a `CaptionEncoder`'s embeddings in a `CaptionCache`, computed without loading it: the model
    (a Hugging Face id as given, its revision not included; or a local folder — where transformers looks first — by
    its absolute path and its files' names, sizes and modification times, so a replaced model is not mistaken for
    the old one), the dtype it runs in, and pid's prompt and token window. Not the device: a GPU and a CPU encode
    the same function (their bf16 roundings differ)."""
    name = str(model_id)
    if os.path.isdir(name):
        folder = Path(name).resolve()
        files = sorted((p.name, p.stat()) for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        stamp = json.dumps([[n, st.st_size, st.st_mtime_ns] for n, st in files])
        name = f"{folder}@{hashlib.sha256(stamp.encode()).hexdigest()[:16]}"
    return f"{name}|{str(dtype).removeprefix('torch.')}|{_PROMPT_TAG}"


class CaptionEncoder:
    """Gemma-2-2B-it (the Sana copy) loaded like the reference: `AutoTokenizer` padding on the right and
    `AutoModelForCausalLM(..., torch_dtype=bf16).get_decoder()`. `model_id` may be a Hugging Face id or a
    local folder holding the downloaded model. `HF_HUB_OFFLINE=1` (or `local_files_only=True`) never touches
    the network. `attn_implementation=None` keeps transformers' default, as the reference does. `cache_key`
    identifies its embeddings in a `CaptionCache` (`encoder_cache_key`).
    """

    def __init__(self, model_id: PathLike = DEFAULT_MODEL_ID, device: Union[str, torch.device] = "cpu",
                 dtype: torch.dtype = torch.bfloat16, local_files_only: bool = False,
                 cache_dir: Optional[PathLike] = None, *, attn_implementation: Optional[str] = None):
        transformers = _import_transformers()
        self.model_id = str(model_id)
        self.device = torch.device(device)
        self.dtype = dtype
        self.cache_key = encoder_cache_key(self.model_id, dtype)
        offline = local_files_only or _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE")
        kwargs: dict[str, Any] = {"local_files_only": offline}
        if cache_dir is not None:
            kwargs["cache_dir"] = str(cache_dir)
        model_kwargs: dict[str, Any] = {_dtype_argument(transformers): dtype}
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


class _LazyDefaultEncoder:
    """Stands in for the default encoder, `CaptionEncoder(model_id, device, dtype)`, during one request: it is
    created at the request's first cache miss (a fully cached request never loads, or needs, Gemma) and dropped by
    `release()` at the request's end, so that its ~5 GB never sit beside a decode."""

    model_id = DEFAULT_MODEL_ID
    dtype = torch.bfloat16

    def __init__(self, device: Union[str, torch.device] = "cpu"):
        self.device = torch.device(device)
        self.encoder: Optional[CaptionEncoder] = None

    @property
    def cache_key(self) -> str:
        return encoder_cache_key(self.model_id, self.dtype)

    def encode(self, captions: list[str]) -> torch.Tensor:
        if self.encoder is None:
            self.encoder = CaptionEncoder(self.model_id, device=self.device, dtype=self.dtype)
        return self.encoder.encode(captions)

    def release(self) -> None:
        if self.encoder is None:
            return
        log.info("releasing text encoder %s", self.encoder.model_id)
        self.encoder = None
        gc.collect()  # transformers' modules may hold reference cycles: free the weights now, not at some later GC
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # hand the freed blocks back, so the decode (and other processes) can use them


@contextlib.contextmanager
def encoder_session(encoder: Any = None, device: Union[str, torch.device] = "cpu") -> Iterator[Any]:
    """The encoder of one request: `encoder` as given (left where its owner put it: pid neither moves nor frees
    it), else the default Gemma encoder, created on `device` only if a caption misses the cache and released when
    the block ends."""
    if encoder is not None:
        yield encoder
        return
    default = _LazyDefaultEncoder(device)
    try:
        yield default
    finally:
        default.release()

