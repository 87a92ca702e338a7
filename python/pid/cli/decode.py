"""`pid decode`, `pid generate` (a diffusers pipeline, then PiD) and `pid compare` (precision regimes side by side)."""

from __future__ import annotations

import json
import logging

from .args import (PRECISION_CHOICES, CHECKPOINT_HELP, IMAGE_FORMATS, RAW_IMAGES, add_attention_args, add_hub_args, add_model_args,
                   caption_cached, check_device, check_output, checkpoint_source, load_config_arg, parse_pixel_chunk,
                   parse_size, read_caption_embeds, read_latent, require, require_at_least, user_error, write_images)

log = logging.getLogger("pid.cli")


def cmd_decode(args) -> int:
    # Everything cheap first: the inputs, the output, the options; then the checkpoint.
    out = check_output(args.out, [*IMAGE_FORMATS, RAW_IMAGES], "--out")
    if out.suffix.lower() in IMAGE_FORMATS:
        require("PIL", f"writing {out.suffix} images", "pip install pillow (or 'pid-decoder[images]'), or write "
                 f"{out.with_suffix(RAW_IMAGES).name} (float images)")
    if args.server is not None:  # a `pid serve` server decodes (docs/serve.md)
        from pid.serve.cli import decode_on_server

        write_images(decode_on_server(args), out)
        return 0
    if args.caption is not None and not caption_cached(args.caption):
        require("transformers", "--caption (encoding with Gemma-2)", "pip install 'pid-decoder[text]', or pass "
                 "--caption-embeds made by `pid encode-caption` on a machine that has it")
    size = parse_size(args.size)
    chunk = parse_pixel_chunk(args.pixel_chunk)
    if args.max_memory is not None:
        from pid.memory import parse_bytes

        parse_bytes(args.max_memory)
    try:
        sigma = [float(s) for s in args.sigma.split(",")] if "," in args.sigma else float(args.sigma)
    except ValueError:
        raise user_error(f"--sigma {args.sigma!r}: a number in [0, 1], or one per sample: 0.3,0.5") from None
    device = check_device(args.device)
    rank = 0
    if args.parallel:
        device, rank = _init_parallel(args.device)
    source = checkpoint_source(args.checkpoint, args)
    config = load_config_arg(args.config)
    latent = read_latent(args.latent)
    caption_embeds = read_caption_embeds(args.caption_embeds)

    import pid

    decoder = pid.load(source, variant=args.variant, config=config, device=device, precision=args.precision,
                       attention=args.attention, revision=args.revision, token=args.token, parallel=args.parallel)
    images = decoder.decode(latent, sigma=sigma, caption=args.caption, caption_embeds=caption_embeds,
                            steps=args.steps, sampler=args.sampler, cfg_scale=args.cfg_scale, shift=args.shift,
                            seed=args.seed, output_size=size, latent_format=args.latent_format, window=args.window,
                            pixel_chunk=chunk, max_memory=args.max_memory, check_memory=not args.force,
                            output="tensor")
    if rank == 0:  # every rank has the images; one writes them
        write_images(images, out)
    return 0


def _init_parallel(device_arg: str):
    """torch.distributed from torchrun's environment for --parallel: this rank's device (cuda:LOCAL_RANK with
    --device cuda, else the CPU) and rank; ranks other than 0 log warnings and errors only."""
    import atexit

    from pid import parallel

    if device_arg not in ("cpu", "cuda"):
        raise user_error(f"--parallel takes --device cpu or cuda (each rank uses cuda:LOCAL_RANK), got {device_arg!r}")
    rank, world, device = parallel.init_from_env(device_arg)
    atexit.register(parallel.shutdown)
    if rank != 0:
        logging.getLogger("pid").setLevel(logging.WARNING)
    log.info("rank %d of %d on %s", rank, world, device)
    return device, rank


def cmd_generate(args) -> int:
    """A diffusers pipeline, optionally stopped after --stop-at-step transformer evaluations, decoded by PiD."""
    out = check_output(args.out, [*IMAGE_FORMATS, RAW_IMAGES], "--out")
    if out.suffix.lower() in IMAGE_FORMATS:
        require("PIL", f"writing {out.suffix} images", "pip install pillow (or 'pid-decoder[images]')")
    require("diffusers", "pid generate", "pip install 'pid-decoder[diffusers]'")
    if args.caption_embeds is None:
        require("transformers", "the caption (the prompt, encoded with Gemma-2)", "pip install 'pid-decoder[text]', or "
                 "pass --caption-embeds made by `pid encode-caption`")
    require_at_least(args, 1, "height", "width", "steps")
    if args.stop_at_step is not None and not 1 <= args.stop_at_step <= args.steps:
        raise user_error(f"--stop-at-step must lie in 1..--steps ({args.steps}), got {args.stop_at_step}")
    device = check_device(args.device)
    source = checkpoint_source(args.checkpoint, args)
    config = load_config_arg(args.config)
    caption_embeds = read_caption_embeds(args.caption_embeds)

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
                                        seed=args.seed, window=args.window, pixel_chunk=parse_pixel_chunk(
                                            args.pixel_chunk), check_memory=not args.force, output="tensor"),
                                    **pipe_kwargs)
    write_images(result.images, out)
    return 0


def cmd_compare(args) -> int:
    """The same latent, caption and noise decoded in several precision regimes, measured against one."""
    from pid.plan import PRECISIONS

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for p in [*precisions, args.against]:
        if p not in PRECISIONS:
            raise user_error(f"precision {p!r}: use {', '.join(PRECISIONS)}")
    json_out = check_output(args.json, [".json"], "--json") if args.json else None
    device = check_device(args.device)
    source = checkpoint_source(args.checkpoint, args)
    config = load_config_arg(args.config)
    latent = read_latent(args.latent)
    caption_embeds = read_caption_embeds(args.caption_embeds)
    try:
        sigma = float(args.sigma)
    except ValueError:
        raise user_error(f"--sigma {args.sigma!r}: a number in [0, 1]") from None

    from pid.compare import compare_precisions

    rows = compare_precisions(source, latent, precisions, against=args.against, seed=args.seed, sigma=sigma,
                              caption_embeds=caption_embeds, load_kwargs=dict(
                                  variant=args.variant, config=config, device=device, revision=args.revision,
                                  token=args.token, fp8_emulation=args.fp8_emulation))
    print(f"{'precision':10} {'seconds':>8} {'PSNR dB':>8} {'max |diff|':>11}   (against {args.against}, seed {args.seed})")
    for r in rows:
        print(f"{r['precision']:10} {r['seconds']:8.2f} {r['psnr_db']:8.2f} {r['max_abs_diff']:11.4g}")
    if json_out is not None:
        from pid.atomic import atomic_path

        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps({"against": args.against, "seed": args.seed, "rows": rows}, indent=1))
    return 0


def register(sub, fmt) -> None:
    """Adds these commands to the `pid` parser's subcommands."""
    p = sub.add_parser("decode", help="decode a latent file into images", formatter_class=fmt)
    p.add_argument("latent", help=".safetensors or .pt holding one [B, C, h, w] or [C, h, w] tensor")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP + "; without it, --variant's released checkpoint")
    add_model_args(p)
    add_hub_args(p)
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
    p.add_argument("--precision", choices=PRECISION_CHOICES,
                   help="fast (bf16 weights + fused kernels; the default on CUDA and on CPUs with AMX / AVX512-BF16), "
                        "float32 (the parity regime; the default on other CPUs), reference (official: fp32 weights + "
                        "bf16 autocast), fp8 (fast with fp8 matrix products; GPUs with fp8 tensor cores)")
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
    add_attention_args(p)
    from pid.serve.cli import add_server_arg

    add_server_arg(p)
    p.set_defaults(func=cmd_decode)
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
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP + "; without it, --variant's released checkpoint (a variant "
                   "of the pipeline's family)")
    add_model_args(p)
    add_hub_args(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--caption", help="PiD's caption, if not the prompt")
    group.add_argument("--caption-embeds", help="safetensors/.pt file of caption embeddings (pid encode-caption)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pipeline's and PiD's noise")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISION_CHOICES, help="PiD's precision regime (as decode's)")
    p.add_argument("--pixel-chunk", default="auto", help="patches per chunk of the pixel blocks: N, auto or none")
    p.add_argument("--force", action="store_true", help="decode even when the memory estimate exceeds what the "
                   "device has free")
    p.add_argument("--out", default="pid.png", help="an image (.png, .jpg, .webp) or .safetensors (float32 images)")
    add_attention_args(p)
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("compare", help="decode one latent in several precision regimes: PSNR and time against one",
                       formatter_class=fmt)
    p.add_argument("latent", help=".safetensors or .pt holding one [B, C, h, w] or [C, h, w] tensor")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP + "; without it, --variant's released checkpoint")
    add_model_args(p)
    add_hub_args(p)
    p.add_argument("--caption-embeds", required=True, help="safetensors/.pt file of caption embeddings")
    p.add_argument("--precisions", default="fast,float32", help="the regimes to measure, comma-separated")
    p.add_argument("--fp8-emulation", action="store_true", help="measure fp8 where the device has no fp8 tensor "
                   "cores (a CPU): its arithmetic emulated exactly, slowly (quality, not speed)")
    p.add_argument("--against", default="reference", help="the baseline regime")
    p.add_argument("--sigma", default="0.0", help="noise level of the latent")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise, the same in every regime")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--json", help="write the rows here (.json)")
    p.set_defaults(func=cmd_compare)
