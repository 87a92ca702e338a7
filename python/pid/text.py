"""Caption conditioning for PiD: the Gemma-2 text encoder with the CHI prompt prefix and
the reference's 300-token selection, caption-embedding files, a caption cache, and resolving the
`[B, 300, 2304]` embeddings that the network receives.

The network never sees a caption string, only these embeddings. They come either from precomputed files
(`pid encode-caption` on a machine that has Gemma, or any one-tensor `.pt`/`.safetensors`) or from Gemma
run here (`pip install 'pid-decoder[text]'`). There is no silent fallback: the in-distribution "no caption"
condition is the encoding of the CHI-prefixed empty caption `""`, not a zero tensor.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import torch

from .atomic import atomic_path
from .cache_dir import pid_cache_dir
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
CACHE_KEY_METADATA_KEY = "pid.caption_cache_key"  # the encoder key of a caption-cache entry
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
                        model_id: Optional[str] = DEFAULT_MODEL_ID, *,
                        metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write `[B, 300, D]` (or `[300, D]`) embeddings to `path` (`.safetensors`), dtype kept, tensor name
    `caption_embeds`, with the caption texts (JSON list), the text model id (unless None) and `metadata` in the
    file's metadata. Atomic: a failed or interrupted write leaves the old file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise PidError(f"caption embeddings are written as .safetensors, got {str(path)!r}")
    from safetensors.torch import save_file

    embeds = _check_embeds(embeds, "caption embeddings", dim=None)
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


def _read_embeds_file(path: Path, dim: Optional[int], txt_len: Optional[int]
                      ) -> tuple[torch.Tensor, Optional[list[str]], dict[str, str]]:
    f = read_tensor_file(path, "caption embeddings file", error=CaptionEmbedsError)
    embeds = _check_embeds(_pick_tensor(f.tensors, path), f"caption embeddings in {str(path)!r}",
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
    embeds, captions, metadata = _read_embeds_file(path, dim, txt_len)
    model_id = metadata.get(MODEL_ID_METADATA_KEY)
    if model_id is not None and model_id != DEFAULT_MODEL_ID:
        log.info("%s was encoded with %s (PiD's text encoder is %s)", path, model_id, DEFAULT_MODEL_ID)
    return embeds, captions


# ------------------------------------------------------------------------------------------- cache
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
            embeds, captions, metadata = _read_embeds_file(file, dim, TXT_LEN)
            problem = _entry_problem(embeds, captions, metadata, key, caption)
        except Exception as e:  # a damaged entry, whatever the damage, is only a miss
            problem = f"{type(e).__name__}: {e}"
        if problem:
            log.warning("ignoring caption cache entry %s: %s; the caption is encoded again", file, problem)
            return None
        self._keep(key, caption, embeds[0])
        return embeds[0]

    def put(self, key: str, caption: str, embeds: torch.Tensor) -> None:
        embeds = _check_embeds(embeds, f"embeddings for caption {caption!r}", dim=None)
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
    with encoder_session(encoder, device) as session:
        embeds = cache.encode(session, captions, dim=dim)
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
