"""The `pid` command line (also `python -m pid`), built on the public API only.

A user error ends a command with one line on stderr that names the problem and the fix, and exit code 2 (a
traceback only with --debug or PID_DEBUG=1). The cheap checks (input files, the output's folder and format, sizes,
device, optional dependencies) run before a checkpoint is loaded or downloaded. Every output is written atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger("pid.cli")

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
RAW_IMAGES = ".safetensors"  # float32 images in [-1, 1], [B, 3, H, W], under the key "images"


def _error(message: str):
    from pid.errors import PidError

    return PidError(message)


# ---------------------------------------------------------------------------------------------- checks
def _load_config_arg(value: Optional[str]):
    """--config: a JSON object of reference PidNet kwargs, or a golden case's JSON (its "net_kwargs")."""
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        raise _error(f"--config {value!r}: no such file (expected a JSON object of reference PidNet kwargs)")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise _error(f"--config {value!r} is not valid JSON ({e}); expected an object of reference PidNet "
                     "kwargs") from e
    if not isinstance(data, dict):
        raise _error(f"--config {value!r} holds a JSON {type(data).__name__}, not an object of reference PidNet "
                     "kwargs such as {\"hidden_size\": 1536, ...}")
    data = data.get("net_kwargs", data)  # a golden case JSON works too
    if not isinstance(data, dict):
        raise _error(f"--config {value!r}: \"net_kwargs\" must be a JSON object")
    return data


def _check_input_file(path: str, what: str, hint: str = "") -> None:
    if not Path(path).is_file():
        raise _error(f"{what} {path!r} does not exist or is not a file{f'; {hint}' if hint else ''}")


def _checkpoint_source(value: Optional[str], args):
    """The checkpoint to load, checked without reading or downloading anything: a file (its path), or the released
    Variant that `value` (or --variant, when there is no --checkpoint) names, which pid.load fetches from the Hugging
    Face cache or Hub."""
    from pid import hub
    from pid.variants import get_variant

    if value is None:
        if args.variant is None:
            raise _error("give --checkpoint FILE, or --variant NAME alone to use that variant's released checkpoint "
                         "(from the Hugging Face cache or Hub; see `pid variants`)")
        variant = get_variant(args.variant)
    else:
        variant = hub.named_variant(value)
    if variant is None:
        _check_input_file(value, "checkpoint", hint=hub.VARIANT_HINT)
        hub.refuse_revision(args.revision, f"{value!r} names a file")
        return value
    hub.require_huggingface_hub(variant)
    return variant


def _check_output(path: str, suffixes: Sequence[str], what: str) -> Path:
    """An output path with one of `suffixes`, in a folder that exists (created if needed) and is writable."""
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise _error(f"{what} {path!r}: unknown format {out.suffix or '(no suffix)'!r}; use "
                     f"{', '.join(suffixes)}")
    if out.is_dir():
        raise _error(f"{what} {path!r} is a folder; give a file name such as {str(out / ('image' + suffixes[0]))!r}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _error(f"{what} {path!r}: cannot create the folder {str(out.parent)!r} ({e.strerror})") from e
    try:  # a file can be created there (os.access says yes for root on read-only or virtual file systems)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".pid-probe-"):
            pass
    except OSError as e:
        raise _error(f"{what} {path!r}: cannot write in the folder {str(out.parent)!r} ({e.strerror})") from e
    return out


def _check_device(device: str):
    from pid.decode import check_device

    return check_device(device)


def _require(module: str, what: str, install: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise _error(f"{what} needs {module}, which is not installed: {install}")


def _caption_cached(caption: str) -> bool:
    """Whether the default encoder's embeddings of `caption` are in the default caption cache: a decode then needs
    no Gemma (nor transformers)."""
    from pid.captions import CaptionCache, default_cache_dir, encoder_cache_key

    return CaptionCache(default_cache_dir()).get(encoder_cache_key(), caption) is not None


def _parse_size(value: Optional[str]):
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
        raise _error(f"--size {value!r}: expected N or WxH (width x height), e.g. 2048 or 2688x1536") from None
    if w < 1 or h < 1:
        raise _error(f"--size {value!r}: width and height must be positive, e.g. 2048 or 2688x1536")
    return size


def _parse_pixel_chunk(value: str):
    if value in ("auto", "none"):
        return None if value == "none" else "auto"
    try:
        chunk = int(value)
    except ValueError:
        chunk = 0
    if chunk < 1:
        raise _error(f"--pixel-chunk {value!r}: a positive number of patches, 'auto' or 'none'")
    return chunk


def _read_latent(path: str):
    from pid.errors import LatentError
    from pid.tensor_file import read_tensor_file

    tensors = read_tensor_file(path, "latent file", error=LatentError).tensors
    if "latent" in tensors:
        return tensors["latent"]
    if len(tensors) != 1:
        raise LatentError(f"latent file {path!r} holds {len(tensors)} tensors ({sorted(tensors)}); expected one "
                          "(or one named 'latent')")
    return next(iter(tensors.values()))


def _read_caption_embeds(path: Optional[str]):
    """--caption-embeds: the embeddings of a file (any length and width; the decoder checks them), or None."""
    if path is None:
        return None
    from pid.captions import load_caption_embeds

    return load_caption_embeds(path, dim=None, txt_len=None)[0]


def _serve_model_source(args):  # pid serve (issue 22): the checkpoint and config, as decode checks them
    return _checkpoint_source(args.checkpoint, args), _load_config_arg(args.config)


def _require_at_least(args, minimum: int, *names: str) -> None:
    for name in names:
        if getattr(args, name) < minimum:
            raise _error(f"--{name.replace('_', '-')} must be at least {minimum}, got {getattr(args, name)}")


# ---------------------------------------------------------------------------------------------- commands
def cmd_info(args) -> int:
    import pid

    source = _checkpoint_source(args.checkpoint, args)
    decoder = pid.load(source, variant=args.variant, config=_load_config_arg(args.config), revision=args.revision,
                       token=args.token)
    info = decoder.info()
    info["config"] = decoder.config.to_dict()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for key, value in info.items():
        if key == "config":
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        if key == "parameters":
            value = f"{value:,} ({value / 1e6:.1f} M)"
        print(f"{key:20s} {value}")
    return 0


def cmd_decode(args) -> int:
    # Everything cheap first: the inputs, the output, the options; then the checkpoint.
    out = _check_output(args.out, [*IMAGE_FORMATS, RAW_IMAGES], "--out")
    if out.suffix.lower() in IMAGE_FORMATS:
        _require("PIL", f"writing {out.suffix} images", "pip install pillow (or 'pid-decoder[images]'), or write "
                 f"{out.with_suffix(RAW_IMAGES).name} (float images)")
    if args.server is not None:  # pid serve (issue 22): the server decodes
        from pid.serve.cli import decode_on_server

        _write_images(decode_on_server(args), out)
        return 0
    if args.caption is not None and not _caption_cached(args.caption):
        _require("transformers", "--caption (encoding with Gemma-2)", "pip install 'pid-decoder[text]', or pass "
                 "--caption-embeds made by `pid encode-caption` on a machine that has it")
    size = _parse_size(args.size)
    chunk = _parse_pixel_chunk(args.pixel_chunk)
    if args.max_memory is not None:
        from pid.budget import parse_bytes

        parse_bytes(args.max_memory)
    try:
        sigma = [float(s) for s in args.sigma.split(",")] if "," in args.sigma else float(args.sigma)
    except ValueError:
        raise _error(f"--sigma {args.sigma!r}: a number in [0, 1], or one per sample: 0.3,0.5") from None
    device = _check_device(args.device)
    rank = 0
    if args.parallel:
        device, rank = _init_parallel(args.device)
    source = _checkpoint_source(args.checkpoint, args)
    config = _load_config_arg(args.config)
    latent = _read_latent(args.latent)
    caption_embeds = _read_caption_embeds(args.caption_embeds)

    import pid

    decoder = pid.load(source, variant=args.variant, config=config, device=device, precision=args.precision,
                       attention=args.attention, revision=args.revision, token=args.token, parallel=args.parallel)
    images = decoder.decode(latent, sigma=sigma, caption=args.caption, caption_embeds=caption_embeds,
                            steps=args.steps, sampler=args.sampler, cfg_scale=args.cfg_scale, shift=args.shift,
                            seed=args.seed, output_size=size, latent_format=args.latent_format, window=args.window,
                            pixel_chunk=chunk, max_memory=args.max_memory, check_memory=not args.force,
                            output="tensor")
    if rank == 0:  # every rank has the images; one writes them
        _write_images(images, out)
    return 0


def _init_parallel(device_arg: str):
    """torch.distributed from torchrun's environment for --parallel: this rank's device (cuda:LOCAL_RANK with
    --device cuda, else the CPU) and rank; ranks other than 0 log warnings and errors only."""
    import atexit

    from pid import parallel

    if device_arg not in ("cpu", "cuda"):
        raise _error(f"--parallel takes --device cpu or cuda (each rank uses cuda:LOCAL_RANK), got {device_arg!r}")
    rank, world, device = parallel.init_from_env(device_arg)
    atexit.register(parallel.shutdown)
    if rank != 0:
        logging.getLogger("pid").setLevel(logging.WARNING)
    log.info("rank %d of %d on %s", rank, world, device)
    return device, rank


def _write_images(images, out: Path) -> None:
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

        from pid.decoder import to_pixels

        pixels = to_pixels(images)
        paths = [out] if len(pixels) == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(len(pixels))]
        for p, path in zip(pixels, paths):
            image = Image.fromarray(p.numpy())
            with atomic_path(path) as tmp:
                image.save(tmp, format=IMAGE_FORMATS[out.suffix.lower()])
            log.info("wrote %s (%dx%d)", path, image.width, image.height)
    except OSError as e:
        raise _error(f"could not write {str(out)!r}: {e.strerror or e} (any earlier file there is unchanged)") from e


def cmd_generate(args) -> int:
    """A diffusers pipeline, optionally stopped after --stop-at-step transformer evaluations, decoded by PiD."""
    out = _check_output(args.out, [*IMAGE_FORMATS, RAW_IMAGES], "--out")
    if out.suffix.lower() in IMAGE_FORMATS:
        _require("PIL", f"writing {out.suffix} images", "pip install pillow (or 'pid-decoder[images]')")
    _require("diffusers", "pid generate", "pip install 'pid-decoder[diffusers]'")
    if args.caption_embeds is None:
        _require("transformers", "the caption (the prompt, encoded with Gemma-2)", "pip install 'pid-decoder[text]', or "
                 "pass --caption-embeds made by `pid encode-caption`")
    _require_at_least(args, 1, "height", "width", "steps")
    if args.stop_at_step is not None and not 1 <= args.stop_at_step <= args.steps:
        raise _error(f"--stop-at-step must lie in 1..--steps ({args.steps}), got {args.stop_at_step}")
    device = _check_device(args.device)
    source = _checkpoint_source(args.checkpoint, args)
    config = _load_config_arg(args.config)
    caption_embeds = _read_caption_embeds(args.caption_embeds)

    import diffusers
    import torch

    import pid
    import pid.diffusers

    decoder = pid.load(source, variant=args.variant, config=config, device=device, precision=args.precision,
                       attention=args.attention, revision=args.revision, token=args.token)
    pipe = diffusers.DiffusionPipeline.from_pretrained(args.pipeline, torch_dtype=getattr(torch, args.pipeline_dtype))
    pid.diffusers.check_decoder(pipe, decoder)  # before the pipeline runs
    pipe = pipe.to(device)
    pipe_kwargs = dict(prompt=args.prompt, height=args.height, width=args.width, num_inference_steps=args.steps,
                       generator=torch.Generator(device).manual_seed(args.seed))
    if args.guidance_scale is not None:
        pipe_kwargs["guidance_scale"] = args.guidance_scale
    if args.negative_prompt is not None:
        pipe_kwargs["negative_prompt"] = args.negative_prompt
    result = pid.diffusers.generate(pipe, decoder, stop_at_step=args.stop_at_step, caption=args.caption,
                                    caption_embeds=caption_embeds, decode_kwargs=dict(
                                        seed=args.seed, window=args.window, pixel_chunk=_parse_pixel_chunk(
                                            args.pixel_chunk), check_memory=not args.force, output="tensor"),
                                    **pipe_kwargs)
    _write_images(result.images, out)
    return 0


def cmd_compare(args) -> int:
    """The same latent, caption and noise decoded in several precision regimes, measured against one."""
    from pid.plan import PRECISIONS

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for p in [*precisions, args.against]:
        if p not in PRECISIONS:
            raise _error(f"precision {p!r}: use {', '.join(PRECISIONS)}")
    json_out = _check_output(args.json, [".json"], "--json") if args.json else None
    device = _check_device(args.device)
    source = _checkpoint_source(args.checkpoint, args)
    config = _load_config_arg(args.config)
    latent = _read_latent(args.latent)
    caption_embeds = _read_caption_embeds(args.caption_embeds)
    try:
        sigma = float(args.sigma)
    except ValueError:
        raise _error(f"--sigma {args.sigma!r}: a number in [0, 1]") from None

    from pid.compare import compare_precisions

    rows = compare_precisions(source, latent, precisions, against=args.against, seed=args.seed, sigma=sigma,
                              caption_embeds=caption_embeds, load_kwargs=dict(
                                  variant=args.variant, config=config, device=device, revision=args.revision,
                                  token=args.token))
    print(f"{'precision':10} {'seconds':>8} {'PSNR dB':>8} {'max |diff|':>11}   (against {args.against}, seed {args.seed})")
    for r in rows:
        print(f"{r['precision']:10} {r['seconds']:8.2f} {r['psnr_db']:8.2f} {r['max_abs_diff']:11.4g}")
    if json_out is not None:
        from pid.atomic import atomic_path

        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps({"against": args.against, "seed": args.seed, "rows": rows}, indent=1))
    return 0


def cmd_convert(args) -> int:
    import pid
    from pid.checkpoint import save_safetensors

    out = _check_output(args.out, [".safetensors"], "output")
    source = _checkpoint_source(args.checkpoint, args)
    decoder = pid.load(source, variant=args.variant, config=_load_config_arg(args.config), revision=args.revision,
                       token=args.token)
    try:
        save_safetensors(decoder, out)
    except OSError as e:
        raise _error(f"could not write {str(out)!r}: {e.strerror or e} (any earlier file there is unchanged)") from e
    log.info("wrote %s", out)
    return 0


def cmd_download(args) -> int:
    from pid import hub

    print(hub.checkpoint_path(args.variant, revision=args.revision, token=args.token))
    return 0


def encode_caption_command(captions: Sequence[str], out, model_id=None, device="cpu", *,
                           local_files_only: bool = False) -> Path:
    """Body of `pid encode-caption`: encode `captions` with Gemma and write one `.safetensors` file to `out`."""
    from pid.captions import DEFAULT_MODEL_ID, CaptionEncoder, save_caption_embeds
    from pid.errors import PidError

    model_id = DEFAULT_MODEL_ID if model_id is None else model_id
    captions = [captions] if isinstance(captions, str) else list(captions)
    if not captions:
        raise PidError("give at least one caption (\"\" is the 'no caption' condition)")
    encoder = CaptionEncoder(model_id, device=device, local_files_only=local_files_only)
    embeds = encoder.encode(captions)
    path = save_caption_embeds(out, embeds, captions, model_id=str(model_id))
    log.info("wrote %d caption embedding(s) %s %s (%s) to %s", len(captions), list(embeds.shape),
             str(embeds.dtype).removeprefix("torch."), model_id, path)
    return path


def cmd_encode_caption(args) -> int:
    out = _check_output(args.out, [".safetensors"], "--out")
    _require("transformers", "encode-caption", "pip install 'pid-decoder[text]'")
    _check_device(args.device)

    encode_caption_command(args.caption, out, model_id=args.model, device=args.device)
    return 0


def cmd_variants(args) -> int:
    from pid.variants import VARIANTS

    if args.json:
        print(json.dumps({n: {"experiment": v.experiment, "generation": v.generation, "kind": v.kind,
                              "latent_space": v.latent.name, "sr_scale": v.sr_scale,
                              "registry_keys": list(v.registry_keys)} for n, v in VARIANTS.items()}, indent=1))
        return 0
    print(f"{'variant':24s} {'gen':5s} {'kind':8s} {'latent':10s} {'sr':3s} experiment")
    for name, v in VARIANTS.items():
        print(f"{name:24s} {v.generation:5s} {v.kind:8s} {v.latent.name:10s} {v.sr_scale:<3d} {v.experiment}")
    return 0


def cmd_memory(args) -> int:
    """The estimated peak of a decode (per rank), unsplit and, with --max-memory, as decode(max_memory=) plans it."""
    from pid.budget import parse_bytes, plan_for_budget
    from pid.cost import estimate_memory
    from pid.variants import get_variant

    cfg = get_variant(args.variant).config
    size = _parse_size(args.size)
    height, width = size if isinstance(size, tuple) else (size, size)
    if args.world_size < 1:
        raise _error(f"--world-size must be at least 1, got {args.world_size}")
    if args.world_size > 1 and args.parallel == "sequence":
        from pid.parallel import SequenceParallel

        SequenceParallel(0, args.world_size).check_heads(cfg.num_heads, cfg.pixel_num_heads)
    if args.batch < 1:
        raise _error(f"--batch must be at least 1, got {args.batch}")
    gib = 2.0**30
    common = dict(world_size=args.world_size, parallel=args.parallel)
    whole = estimate_memory(cfg, height, width, args.batch, args.precision, **common)
    per = f" per rank ({args.world_size} ranks, {args.parallel} parallel)" if args.world_size > 1 else ""
    print(f"{args.variant} {width}x{height}, batch {args.batch}, {args.precision}{per}")
    print(f"  unsplit:        {whole.peak / gib:6.2f} GiB  ({whole})")
    if args.max_memory is not None:
        plan = plan_for_budget(cfg, height, width, args.batch, args.precision, parse_bytes(args.max_memory), **common)
        print(f"  --max-memory {args.max_memory}: {plan.estimate.peak / gib:.2f} GiB  (pixel_chunk {plan.pixel_chunk}, "
              f"token_chunk {plan.token_chunk}, gate features {'kept' if plan.keep_gate_features else 'per step'}; "
              f"{plan.estimate})")
    return 0


def cmd_bench(args) -> int:
    json_out = _check_output(args.json, [".json"], "--json") if args.json else None
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise _error(f"--sizes {args.sizes!r}: positive square output sides, comma-separated, e.g. 1024,2048")
    _require_at_least(args, 1, "batch", "steps", "repeats")
    _require_at_least(args, 0, "warmup")
    device = _check_device(args.device)
    if args.cuda_graph and device.type != "cuda":
        raise _error("--cuda-graph needs --device cuda")

    import torch

    import pid
    from pid import bench
    from pid.archs import ARCHS, random_net
    from pid.atomic import atomic_path

    if args.checkpoint:
        source = _checkpoint_source(args.checkpoint, args)
        decoder = pid.load(source, variant=args.variant, config=_load_config_arg(args.config), device=device,
                           precision=args.precision, attention=args.attention, revision=args.revision,
                           token=args.token)
        what = decoder.variant.name if decoder.variant else args.checkpoint
    else:
        net = random_net(ARCHS[args.arch], device)
        if args.precision == "fast":
            net = net.bfloat16()
        decoder = pid.PidDecoder(net, precision=args.precision, attention=args.attention)
        what = f"{args.arch} architecture, random weights"
    attention = decoder.plan.attention_backend(decoder.device.type)
    window = "" if args.window is None else f", window {args.window}"
    if not args.verbose:
        logging.getLogger("pid.decoder").setLevel(logging.WARNING)  # one line per decode would bury the table
    device = decoder.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"pid bench: {what}; precision {decoder.precision}{'; CUDA graph' if args.cuda_graph else ''}; "
          f"attention {attention}{window}; {name}; torch {torch.__version__}; batch {args.batch}; {args.steps} steps",
          flush=True)
    rows = bench.bench_sizes(decoder, sizes, batch=args.batch, steps=args.steps, repeats=args.repeats,
                             warmup=args.warmup, cuda_graph=args.cuda_graph, memory=not args.no_memory,
                             window=args.window)
    print(bench.format_rows(rows, args.peak_tflops))
    if json_out is not None:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps({"device": name, "torch": torch.__version__, "what": what,
                                       "precision": decoder.precision, "attention": attention,
                                       "window": args.window, "rows": rows}, indent=1))
    return 0


def cmd_selftest(args) -> int:
    from pid.selftest import run_selftest

    if args.golden_dir is not None and not (Path(args.golden_dir) / "FORMAT.md").is_file():
        raise _error(f"--golden-dir {args.golden_dir!r} is not a folder of golden cases (it has no FORMAT.md)")
    return 0 if run_selftest(golden_dir=args.golden_dir) else 1


# ---------------------------------------------------------------------------------------------- parser
class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default, where it has one worth showing."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "%(default)" not in text and action.option_strings and not (
                default is None or default is False or default is argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def _add_attention_args(p) -> None:
    p.add_argument("--window", type=int, help="windowed attention over w x w patch neighbourhoods, for very large "
                   "outputs: changes the output (docs/attention.md); none: global attention, as trained")
    p.add_argument("--attention", choices=("kernel", "sdpa", "auto"),
                   help="global attention: pid's kernel, torch SDPA, or auto (the faster, timed per shape); "
                        "none: the device's default (kernel on CPU, sdpa on CUDA)")


def _add_model_args(p) -> None:
    p.add_argument("--variant", help="registry name, experiment name or registry key (see `pid variants`)")
    p.add_argument("--config", help="JSON file of reference PidNet kwargs, for checkpoints outside the registry")


def _add_hub_args(p) -> None:
    p.add_argument("--revision", help="branch, tag or commit of nvidia/PiD on the Hugging Face Hub, for a variant's "
                   "released checkpoint (default: main)")
    p.add_argument("--token", help="Hugging Face access token (default: huggingface_hub's: HF_TOKEN or `hf auth "
                   "login`)")


_CHECKPOINT_HELP = ("model_ema_bf16.pth, .safetensors, or a variant name: its released checkpoint, from the Hugging "
                    "Face cache or downloaded (pip install 'pid-decoder[hub]')")


def build_parser() -> argparse.ArgumentParser:
    import pid
    from pid.serve import cli as serve_cli  # pid serve (issue 22)

    fmt = _HelpFormatter
    parser = argparse.ArgumentParser(prog="pid", description="PiD pixel-diffusion decoder engine", formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"pid-decoder {pid.__version__} (import name pid)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="a traceback for every error (also PID_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="what a checkpoint is: variant, generation, latent space, parameters",
                       formatter_class=fmt)
    p.add_argument("checkpoint", help=_CHECKPOINT_HELP)
    _add_model_args(p)
    _add_hub_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("decode", help="decode a latent file into images", formatter_class=fmt)
    p.add_argument("latent", help=".safetensors or .pt holding one [B, C, h, w] or [C, h, w] tensor")
    p.add_argument("--checkpoint", help=_CHECKPOINT_HELP + "; without it, --variant's released checkpoint")
    _add_model_args(p)
    _add_hub_args(p)
    p.add_argument("--sigma", default="0.0", help="noise level of the latent, or one per sample: 0.3,0.5")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--caption", help="caption text (needs the Gemma encoder: pip install 'pid-decoder[text]')")
    group.add_argument("--caption-embeds", help="safetensors/.pt file of caption embeddings (pid encode-caption)")
    p.add_argument("--latent-format", choices=("normalized", "raw"), default="normalized",
                   help="normalized (what the LDM denoises) or raw VAE moments")
    p.add_argument("--steps", type=int, help="sampler steps (default: the variant's)")
    p.add_argument("--sampler", choices=("student", "dpm++2m"), help="default: the variant's")
    p.add_argument("--cfg-scale", type=float, help="teacher guidance (default: the variant's)")
    p.add_argument("--shift", type=float, help="teacher flow shift (default: the variant's dynamic shift)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial and re-noising noise")
    p.add_argument("--size", help="output size N or WxH (width x height; default: the latent's natural size)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("float32", "reference", "fast"),
                   help="fast (bf16 weights + fused kernels; the default on CUDA and on CPUs with AMX / AVX512-BF16), "
                        "float32 (the parity regime; the default on other CPUs), reference (official: fp32 weights + "
                        "bf16 autocast)")
    p.add_argument("--pixel-chunk", default="auto", help="patches per chunk of the pixel blocks (bounds memory): N, "
                   "auto (from the free GPU memory) or none")
    p.add_argument("--force", action="store_true", help="decode even when the memory estimate exceeds what the "
                   "device has free")
    p.add_argument("--out", default="pid.png", help="an image (.png, .jpg, .webp; batches get _0, _1, ... suffixes) "
                   "or .safetensors (float32 images in [-1, 1], [B, 3, H, W], key 'images')")
    p.add_argument("--max-memory", help="plan the decode to fit this peak, weights included (e.g. 6GB, 5.5GiB): "
                   "pixel and token chunks, gate features made per step; the network's function is unchanged")
    p.add_argument("--parallel", choices=("sequence", "data"), help="under torchrun (torchrun --nproc-per-node N -m "
                   "pid decode ...): split each image's tokens (sequence) or the batch's samples (data) across the "
                   "ranks; rank 0 writes --out")
    _add_attention_args(p)
    serve_cli.add_server_arg(p)  # pid serve (issue 22): --server URL
    p.set_defaults(func=cmd_decode)
    serve_cli.add_serve_parser(sub, _add_model_args, _add_hub_args, _serve_model_source, fmt)  # pid serve (issue 22)

    p = sub.add_parser("generate", help="run a diffusers pipeline (optionally stopped early) and decode with PiD",
                       formatter_class=fmt)
    p.add_argument("--pipeline", required=True, help="a diffusers pipeline: Hugging Face id or local folder "
                   "(FLUX.1, Z-Image, FLUX.2, FLUX.2-klein, SD3, SDXL, Qwen-Image)")
    p.add_argument("--prompt", required=True, help="the prompt (also PiD's caption unless --caption / "
                   "--caption-embeds)")
    p.add_argument("--negative-prompt", help="the pipeline's negative prompt, where it takes one")
    p.add_argument("--height", type=int, default=1024, help="the pipeline's image height (PiD's is 4x)")
    p.add_argument("--width", type=int, default=1024, help="the pipeline's image width (PiD's is 4x)")
    p.add_argument("--steps", type=int, default=28, help="the pipeline's num_inference_steps")
    p.add_argument("--guidance-scale", type=float, help="the pipeline's guidance_scale (default: its own)")
    p.add_argument("--stop-at-step", type=int, help="stop after K transformer evaluations and decode the still-noisy "
                   "latent (e.g. 24 of 28 for FLUX.1); default: the finished latent")
    p.add_argument("--pipeline-dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    p.add_argument("--checkpoint", help=_CHECKPOINT_HELP + "; without it, --variant's released checkpoint (a variant "
                   "of the pipeline's family)")
    _add_model_args(p)
    _add_hub_args(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--caption", help="PiD's caption, if not the prompt")
    group.add_argument("--caption-embeds", help="safetensors/.pt file of caption embeddings (pid encode-caption)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pipeline's and PiD's noise")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("float32", "reference", "fast"), help="PiD's precision regime (as decode's)")
    p.add_argument("--pixel-chunk", default="auto", help="patches per chunk of the pixel blocks: N, auto or none")
    p.add_argument("--force", action="store_true", help="decode even when the memory estimate exceeds what the "
                   "device has free")
    p.add_argument("--out", default="pid.png", help="an image (.png, .jpg, .webp) or .safetensors (float32 images)")
    _add_attention_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("compare", help="decode one latent in several precision regimes: PSNR and time against one",
                       formatter_class=fmt)
    p.add_argument("latent", help=".safetensors or .pt holding one [B, C, h, w] or [C, h, w] tensor")
    p.add_argument("--checkpoint", help=_CHECKPOINT_HELP + "; without it, --variant's released checkpoint")
    _add_model_args(p)
    _add_hub_args(p)
    p.add_argument("--caption-embeds", required=True, help="safetensors/.pt file of caption embeddings")
    p.add_argument("--precisions", default="fast,float32", help="the regimes to measure, comma-separated")
    p.add_argument("--against", default="reference", help="the baseline regime")
    p.add_argument("--sigma", default="0.0", help="noise level of the latent")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise, the same in every regime")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--json", help="write the rows here (.json)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("convert", help="write a checkpoint as bf16 safetensors (no net. prefix, variant metadata)",
                       formatter_class=fmt)
    p.add_argument("checkpoint", help=_CHECKPOINT_HELP)
    p.add_argument("out", help="the .safetensors file to write")
    _add_model_args(p)
    _add_hub_args(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("download", help="fetch a variant's released checkpoint from the Hugging Face Hub (nvidia/PiD) "
                       "into the Hugging Face cache, or find it there; print its path", formatter_class=fmt)
    p.add_argument("variant", help="registry name, experiment name or registry key (see `pid variants`)")
    _add_hub_args(p)
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("encode-caption", help="encode a caption with Gemma-2 into an embeddings file",
                       formatter_class=fmt)
    p.add_argument("caption", nargs="+", help="one or more captions")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--model", default="Efficient-Large-Model/gemma-2-2b-it", help="model id or local folder")
    p.add_argument("--device", default="cpu", help="where Gemma-2 runs: cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_encode_caption)

    p = sub.add_parser("variants", help="list the released checkpoints pid knows", formatter_class=fmt)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("memory", help="estimated peak memory of a decode (per rank), and the plan --max-memory makes",
                       formatter_class=fmt)
    p.add_argument("variant", help="a released variant (pid variants), e.g. flux-v1.5")
    p.add_argument("--size", required=True, help="output size N or WxH (width x height)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--precision", choices=("float32", "reference", "fast"), default="fast")
    p.add_argument("--max-memory", help="a budget (e.g. 6GB): the least splitting that fits, as decode plans it")
    p.add_argument("--world-size", type=int, default=1, help="ranks of a parallel decode (per-rank peak)")
    p.add_argument("--parallel", choices=("sequence", "data"), default="sequence")
    p.set_defaults(func=cmd_memory)

    p = sub.add_parser("bench", help="time whole decodes: seconds, TFLOP/s, peak memory vs the estimate",
                       formatter_class=fmt)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a checkpoint (file or variant name) to time (default: --arch with "
                        "random weights)")
    source.add_argument("--arch", choices=("full", "small", "tiny"), default="full",
                        help="random-weight network: full (the released 1.40 B), small, tiny")
    _add_model_args(p)
    _add_hub_args(p)
    p.add_argument("--sizes", default="1024", help="square output sides, comma-separated")
    p.add_argument("--batch", type=int, default=1, help="images per decode")
    p.add_argument("--steps", type=int, default=4, help="sampler steps")
    p.add_argument("--repeats", type=int, default=3, help="timed decodes per size")
    p.add_argument("--warmup", type=int, default=1, help="untimed decodes first")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("float32", "reference", "fast"), default="fast", help="precision regime")
    p.add_argument("--cuda-graph", action="store_true", help="capture each size's decode once and replay it")
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for the FLOP-floor ratio")
    p.add_argument("--no-memory", action="store_true", help="skip the (untimed) peak-memory run")
    p.add_argument("--json", help="write the rows here (.json)")
    _add_attention_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("selftest", help="check the install: compiled kernels, a tiny network, golden parity",
                       formatter_class=fmt)
    p.add_argument("--golden-dir", help="folder of reference parity cases (default: $PID_GOLDEN_DIR or "
                                        "../shared/golden)")
    p.set_defaults(func=cmd_selftest)
    return parser


def _user_errors() -> tuple:
    """Exceptions that are the user's to fix: bad input (pid.errors.PidError and other ValueErrors), files and
    folders (OSError), a missing optional model or package, and running out of memory."""
    import torch

    from pid.captions import TextEncoderUnavailable

    return ValueError, OSError, ImportError, TextEncoderUnavailable, torch.OutOfMemoryError


def _one_line(e: BaseException) -> str:
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text += f": {e.filename}"
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("PID_DEBUG", "") not in ("", "0")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        log.error("interrupted")
        return 130
    except _user_errors() as e:
        if debug:
            raise
        import torch

        message = _one_line(e)
        if isinstance(e, torch.OutOfMemoryError):
            message = ("out of memory: " + message.split(". ")[0] + ". Try --pixel-chunk with a smaller N, --window, "
                       "a smaller --size or another --device (pid.estimate_memory gives the peak)")
        log.error("%s", message)
        return 2


if __name__ == "__main__":
    sys.exit(main())
