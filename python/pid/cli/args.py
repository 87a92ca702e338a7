"""What the commands share: reading and checking their arguments before anything heavy runs (input files, the output's
folder and format, sizes, device, optional dependencies, the checkpoint to load), writing images, and the options
several commands take."""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger("pid.cli")

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
RAW_IMAGES = ".safetensors"  # float32 images in [-1, 1], [B, 3, H, W], under the key "images"
# pid.plan.PRECISIONS and pid.ops._attention.BACKENDS, spelled out so that parsing arguments imports no torch (a test
# checks that they agree).
PRECISION_CHOICES = ("float32", "reference", "fast", "fp8")
ATTENTION_CHOICES = ("kernel", "sdpa", "fa4", "auto")
CHECKPOINT_HELP = ("model_ema_bf16.pth, .safetensors, or a variant name: its released checkpoint, from the Hugging "
                   "Face cache or downloaded (pip install 'pid-decoder[hub]')")


def user_error(message: str):
    from pid.errors import PidError

    return PidError(message)


def load_config_arg(value: Optional[str]):
    """--config: a JSON object of reference PidNet kwargs, or a golden case's JSON (its "net_kwargs")."""
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        raise user_error(f"--config {value!r}: no such file (expected a JSON object of reference PidNet kwargs)")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise user_error(f"--config {value!r} is not valid JSON ({e}); expected an object of reference PidNet "
                     "kwargs") from e
    if not isinstance(data, dict):
        raise user_error(f"--config {value!r} holds a JSON {type(data).__name__}, not an object of reference PidNet "
                     "kwargs such as {\"hidden_size\": 1536, ...}")
    data = data.get("net_kwargs", data)  # a golden case JSON works too
    if not isinstance(data, dict):
        raise user_error(f"--config {value!r}: \"net_kwargs\" must be a JSON object")
    return data


def check_input_file(path: str, what: str, hint: str = "") -> None:
    if not Path(path).is_file():
        raise user_error(f"{what} {path!r} does not exist or is not a file{f'; {hint}' if hint else ''}")


def checkpoint_source(value: Optional[str], args):
    """The checkpoint to load, checked without reading or downloading anything: a file (its path), or the released
    Variant that `value` (or --variant, when there is no --checkpoint) names, which pid.load fetches from the Hugging
    Face cache or Hub."""
    from pid import hub
    from pid.variants import get_variant

    if value is None:
        if args.variant is None:
            raise user_error("give --checkpoint FILE, or --variant NAME alone to use that variant's released checkpoint "
                         "(from the Hugging Face cache or Hub; see `pid variants`)")
        variant = get_variant(args.variant)
    else:
        variant = hub.named_variant(value)
    if variant is None:
        check_input_file(value, "checkpoint", hint=hub.VARIANT_HINT)
        hub.refuse_revision(args.revision, f"{value!r} names a file")
        return value
    hub.require_huggingface_hub(variant)
    return variant


def check_output(path: str, suffixes: Sequence[str], what: str) -> Path:
    """An output path with one of `suffixes`, in a folder that exists (created if needed) and is writable."""
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise user_error(f"{what} {path!r}: unknown format {out.suffix or '(no suffix)'!r}; use "
                     f"{', '.join(suffixes)}")
    if out.is_dir():
        raise user_error(f"{what} {path!r} is a folder; give a file name such as {str(out / ('image' + suffixes[0]))!r}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise user_error(f"{what} {path!r}: cannot create the folder {str(out.parent)!r} ({e.strerror})") from e
    try:  # a file can be created there (os.access says yes for root on read-only or virtual file systems)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".pid-probe-"):
            pass
    except OSError as e:
        raise user_error(f"{what} {path!r}: cannot write in the folder {str(out.parent)!r} ({e.strerror})") from e
    return out


def check_device(device: str):
    from pid.decode import check_device

    return check_device(device)


def require(module: str, what: str, install: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise user_error(f"{what} needs {module}, which is not installed: {install}")


def caption_cached(caption: str) -> bool:
    """Whether the default encoder's embeddings of `caption` are in the default caption cache: a decode then needs
    no Gemma (nor transformers)."""
    from pid.captions import CaptionCache, default_cache_dir, encoder_cache_key

    return CaptionCache(default_cache_dir()).get(encoder_cache_key(), caption) is not None


def parse_size(value: Optional[str]):
    """--size N or WxH → N or (height, width) as decode takes it."""
    if value is None:
        return None
    try:
        if "x" in value.lower():
            w, h = (int(v) for v in value.lower().split("x"))
            size = (h, w)
        else:
            w = h = int(value)
            size = w
    except ValueError:
        raise user_error(f"--size {value!r}: expected N or WxH (width x height), e.g. 2048 or 2688x1536") from None
    if w < 1 or h < 1:
        raise user_error(f"--size {value!r}: width and height must be positive, e.g. 2048 or 2688x1536")
    return size


def parse_pixel_chunk(value: str):
    if value in ("auto", "none"):
        return None if value == "none" else "auto"
    try:
        chunk = int(value)
    except ValueError:
        chunk = 0
    if chunk < 1:
        raise user_error(f"--pixel-chunk {value!r}: a positive number of patches, 'auto' or 'none'")
    return chunk


def read_latent(path: str):
    from pid.errors import LatentError
    from pid.tensor_file import read_tensor_file

    tensors = read_tensor_file(path, "latent file", error=LatentError).tensors
    if "latent" in tensors:
        return tensors["latent"]
    if len(tensors) != 1:
        raise LatentError(f"latent file {path!r} holds {len(tensors)} tensors ({sorted(tensors)}); expected one "
                          "(or one named 'latent')")
    return next(iter(tensors.values()))


def read_caption_embeds(path: Optional[str]):
    """--caption-embeds: the embeddings of a file (any length and width; the decoder checks them), or None."""
    if path is None:
        return None
    from pid.captions import load_caption_embeds

    return load_caption_embeds(path, dim=None, txt_len=None)[0]


def require_at_least(args, minimum: int, *names: str) -> None:
    for name in names:
        if getattr(args, name) < minimum:
            raise user_error(f"--{name.replace('_', '-')} must be at least {minimum}, got {getattr(args, name)}")


def write_images(images, out: Path) -> None:
    """PNG / JPEG / WebP files (batches: _0, _1, ... suffixes, truncated to uint8 as the reference saves), or one
    safetensors file of the float images. Each file atomically."""
    from pid.atomic import atomic_path

    try:
        if out.suffix.lower() == RAW_IMAGES:
            from safetensors.torch import save_file

            with atomic_path(out) as tmp:
                save_file({"images": images.float().cpu().contiguous()}, str(tmp))
            log.info("wrote %s (%d images %dx%d, float32 in [-1, 1])", out, images.shape[0], images.shape[3],
                     images.shape[2])
            return
        from PIL import Image

        from pid.images import to_pixels

        pixels = to_pixels(images)
        paths = [out] if len(pixels) == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(len(pixels))]
        for p, path in zip(pixels, paths):
            image = Image.fromarray(p.numpy())
            with atomic_path(path) as tmp:
                image.save(tmp, format=IMAGE_FORMATS[out.suffix.lower()])
            log.info("wrote %s (%dx%d)", path, image.width, image.height)
    except OSError as e:
        raise user_error(f"could not write {str(out)!r}: {e.strerror or e} (any earlier file there is unchanged)") from e


# ---------------------------------------------------------------------------------------------- options
class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default, where it has one worth showing."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "%(default)" not in text and action.option_strings and not (
                default is None or default is False or default is argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def add_attention_args(p) -> None:
    p.add_argument("--window", type=int, help="windowed attention over w x w patch neighbourhoods, for very large "
                   "outputs: changes the output (docs/attention.md); none: global attention, as trained")
    p.add_argument("--attention", choices=ATTENTION_CHOICES,
                   help="global attention: pid's kernel, torch SDPA, fa4 (FlashAttention-4: pip install "
                        "'pid-decoder[fa4]', an sm90/sm100 GPU), or auto (the fastest, timed per shape); "
                        "none: the device's default (kernel on CPU, sdpa on CUDA)")


def add_model_args(p) -> None:
    p.add_argument("--variant", help="registry name, experiment name or registry key (see `pid variants`)")
    p.add_argument("--config", help="JSON file of reference PidNet kwargs, for checkpoints outside the registry")


def add_hub_args(p) -> None:
    p.add_argument("--revision", help="branch, tag or commit of nvidia/PiD on the Hugging Face Hub, for a variant's "
                   "released checkpoint (default: main)")
    p.add_argument("--token", help="Hugging Face access token (default: huggingface_hub's: HF_TOKEN or `hf auth "
                   "login`)")
