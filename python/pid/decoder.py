"""`PidDecoder`: a loaded PiD network with its configuration and variant; `pid.load` builds one."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from . import checkpoint, sampling
from .config import PidConfig
from .nn import PidNet
from .variants import Variant

log = logging.getLogger(__name__)

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)
# float32:   float32 weights and math (golden parity; the CPU default).
# reference: the official regime: float32 weights holding the bf16 values, bf16 autocast (the CUDA default).
# fast:      bf16 weights (no float32 copy), bf16 autocast, float32 residual streams, pid's fused kernels.
PRECISIONS = ("float32", "reference", "fast")
MAX_GRAPHS = 4  # captured decodes (cuda_graph=True) a decoder keeps


class PidDecoder:
    """A PiD network ready for inference: `net` (a PidNet in eval mode), `config`, and `variant` (the registry
    entry, or None for a network given only by its config)."""

    def __init__(self, net: PidNet, variant: Optional[Variant] = None, source: Optional[str] = None,
                 precision: Optional[str] = None):
        self.net = net
        self.config: PidConfig = net.config
        self.variant = variant
        self.source = source
        self.precision = _check_precision(precision, self.device, self.dtype)
        self._times: dict = {}  # timestep conditions by network time, reused across steps and decodes
        self._graphs: dict = {}  # captured decodes (cuda_graph=True) by shapes and sampler settings

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def info(self) -> dict[str, Any]:
        v = self.variant
        out: dict[str, Any] = {
            "source": self.source,
            "variant": v.name if v else None,
            "parameters": self.num_parameters(),
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "precision": self.precision,
            "sr_scale": self.config.sr_scale,
            "latent_channels": self.config.lq_latent_channels,
        }
        if v is not None:
            out.update(experiment=v.experiment, generation=v.generation, kind=v.kind, latent_space=v.latent.name,
                       vae_factor=v.latent.vae_factor, sampler=v.sampler.sampler, steps=v.sampler.steps,
                       trained_sizes=[f"{w}x{h}" for w, h in v.trained_sizes],
                       trained_side_range=list(v.trained_side_range))
        return out

    # ------------------------------------------------------------------------------------------ decode
    def decode(self, latent: torch.Tensor, *, sigma: "float | Sequence[float] | torch.Tensor" = 0.0,
               caption: "str | Sequence[str] | None" = None, caption_embeds: "torch.Tensor | str | None" = None,
               negative_caption_embeds: "torch.Tensor | str | None" = None, steps: Optional[int] = None,
               sampler: Optional[str] = None, cfg_scale: Optional[float] = None, shift: Optional[float] = None,
               seed: int = 0, generator: Optional[torch.Generator] = None, noise: Optional[torch.Tensor] = None,
               step_noises: Optional[Sequence[torch.Tensor]] = None,
               output_size: "int | tuple[int, int] | None" = None, latent_format: str = "normalized",
               latent_space=None, output: str = "tensor", progress: bool = True, text_encoder=None,
               pixel_chunk: "int | str | None" = "auto", cuda_graph: bool = False):
        """Decode a latent [B, C, h, w] (or [C, h, w]) into images.

        sigma: the latent's noise level (0 for a clean latent), one value or one per sample, in the variant's
        frame (flow; VP for SDXL). Captions: `caption_embeds` ([300, 2304] or [B, 300, 2304], or a file) or
        `caption` text (needs the optional Gemma encoder). Sampler defaults come from the variant: 4-step
        student, or for the teachers DPM-Solver++ with CFG 5 and the dynamic shift. Randomness: `noise` (the
        initial [B, 3, H, W] state) and `step_noises`, else `generator`, else a generator on the decoder's
        device seeded with `seed` — the reference's draw order (initial noise, then one draw per re-noise).
        `pixel_chunk` bounds the memory of the pixel blocks (patches per chunk; "auto" chooses from the free GPU
        memory, None never chunks). `cuda_graph=True` (CUDA only, opt-in) captures the whole decode in a CUDA graph
        on the first call for a given shape and sampler setting and replays it afterwards, which removes the
        per-kernel launch cost; the graph keeps its working memory between calls (the last MAX_GRAPHS = 4
        are kept; `release_graphs()` frees them). Returns [B, 3, H, W] in [-1, 1] (`output="tensor"`), uint8
        [B, H, W, 3] (`"numpy"`) or PIL images."""
        from . import text as captions

        cfg, device = self.config, self.device
        latent = self._prepare_latent(latent, latent_format, latent_space)
        B, _, h, w = latent.shape
        H, W = self._output_size(h, w, output_size)
        sigma_t = _sigma_tensor(sigma, B, device)
        sampler_name, steps = self._sampler_choice(sampler, steps)
        if sampler_name == "student":
            if cfg_scale is not None or shift is not None:
                log.warning("cfg_scale and shift are ignored by the distilled 4-step student sampler")
            times = sampling.student_velocity_times(steps)
        else:
            cfg_scale, shift = self._teacher_settings(cfg_scale, shift, H, W)
            times = sampling.dpm_velocity_times(steps, shift)
        if cuda_graph and device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a decoder on a CUDA device, this one is on {device}")

        def embeds(caption, caption_embeds, what):
            return self._to_device(captions.resolve_caption_embeds(
                B, caption=caption, caption_embeds=caption_embeds, encoder=text_encoder, dim=cfg.txt_embed_dim,
                txt_len=None), what).float()
        y = embeds(caption, caption_embeds, "caption_embeds")
        null_y = None
        if sampler_name != "student" and cfg_scale != 1.0:
            default = captions.DEFAULT_NEGATIVE_PROMPT if negative_caption_embeds is None else None
            null_y = embeds(default, negative_caption_embeds, "negative_caption_embeds")
        if generator is None:
            generator = torch.Generator(device).manual_seed(int(seed))
        if noise is None:
            noise = torch.randn((B, 3, H, W), generator=generator, device=device, dtype=torch.float32)
        elif tuple(noise.shape) != (B, 3, H, W):
            raise ValueError(f"noise must have shape {(B, 3, H, W)}, got {tuple(noise.shape)}")
        noise = self._to_device(noise, "noise").float()
        if cuda_graph and sampler_name == "student" and step_noises is None:
            # A graph replays fixed buffers: draw the re-noising noises now, in the order the loop would.
            draws = sum(1 for t in sampling.student_schedule(steps).tolist()[1:] if t > 0)
            step_noises = [torch.randn_like(noise, generator=generator) for _ in range(draws)]
        if step_noises is not None:
            step_noises = [self._to_device(e, "step_noises").float() for e in step_noises]

        net = self.net
        grid = (H // cfg.patch_size, W // cfg.patch_size)
        chunk = self._pixel_chunk(pixel_chunk, B * grid[0] * grid[1])
        with torch.no_grad(), self._autocast():
            time_conds = self._time_conditions(times, B)

        def sample(latent, sigma, y, null_y, noise, step_noises, callback=None):
            with torch.no_grad(), self._autocast(cache=not cuda_graph):
                cond = net.encode_condition(latent, sigma, grid)
                velocity = _velocity_fn(net, net.encode_text(y), cond, time_conds, chunk)
                if sampler_name == "student":
                    return sampling.sample_student(velocity, noise, steps=steps, generator=generator,
                                                   step_noises=step_noises, callback=callback)
                unconditional = None if null_y is None else \
                    _velocity_fn(net, net.encode_text(null_y), cond, time_conds, chunk)
                # Guidance v_u + s·(v_c − v_u) is formed inside the fused sampler step (unconditional pass first).
                return sampling.sample_dpmpp_2m(velocity, noise, steps=steps, shift=shift, callback=callback,
                                                uncond_velocity_fn=unconditional, cfg_scale=cfg_scale)

        inputs = dict(latent=latent, sigma=sigma_t, y=y, null_y=null_y, noise=noise, step_noises=step_noises)
        if sampler_name != "student":
            log.info("DPM-Solver++(2M): %d steps, CFG %.2f, shift %.3f", steps, cfg_scale, shift)
        if cuda_graph:
            key = (sampler_name, steps, cfg_scale, shift, chunk, self.net.attention_window,
                   *[_shape(v) for v in inputs.values()])
            if key not in self._graphs:
                if len(self._graphs) >= MAX_GRAPHS:  # each holds its working memory: drop the oldest
                    del self._graphs[next(iter(self._graphs))]
                self._graphs[key] = _CapturedDecode(sample, inputs, time_conds)
            x = self._graphs[key].replay(inputs)
        else:
            callback = _Progress(sampler_name, steps, B, H, W, enabled=progress)
            x = sample(**inputs, callback=callback)
            callback.close()
        return _format_output(x.clamp(-1, 1), output)

    def release_graphs(self) -> None:
        """Drops the captured decodes of `cuda_graph=True` and their working memory."""
        self._graphs.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _time_conditions(self, times: Sequence[float], batch: int) -> list:
        """The timestep-only work (embedding, every block's modulation) at each sampler time, computed once per
        schedule and reused across guidance passes and decodes. The network takes t × 1000 in float32."""
        out = []
        for t in times:
            key = (t, batch, self.device)
            if key not in self._times:
                if len(self._times) >= 64:
                    self._times.clear()
                t_net = torch.full((batch,), t, dtype=torch.float32, device=self.device) * 1000
                self._times[key] = self.net.encode_time(t_net)
            out.append(self._times[key])
        return out

    def _prepare_latent(self, latent, latent_format, latent_space) -> torch.Tensor:
        from . import latents as latent_spaces

        if not isinstance(latent, torch.Tensor):
            raise TypeError(f"latent must be a torch.Tensor, got {type(latent).__name__}")
        if latent.ndim == 3:
            latent = latent[None]
        if latent.ndim != 4 or not latent.is_floating_point():
            raise ValueError(f"latent must be a floating-point [B, C, h, w] tensor, got {latent.dtype} "
                             f"{tuple(latent.shape)}")
        latent = self._to_device(latent, "latent")
        if not torch.isfinite(latent).all():
            raise ValueError("latent contains NaN or Inf values: check the LDM output (e.g. a VAE run in float16)")
        if latent_format not in ("normalized", "raw"):
            raise ValueError(f"latent_format must be 'normalized' or 'raw', got {latent_format!r}")
        space = latent_space
        if space is None and self.variant is not None:
            space = self.variant.latent
        elif space is not None:
            space = latent_spaces.get_latent_space(space)
        if latent_format == "raw":
            if space is None:
                raise ValueError("latent_format='raw' needs the latent space: load a registry variant or pass "
                                 "latent_space= (a pid.latents object)")
            latent = space.normalize(latent)
        if space is not None:
            latent_spaces.check_latent(latent, space)
        C = self.config.lq_latent_channels
        if latent.shape[1] != C:
            raise ValueError(f"this decoder takes {C}-channel latents, got {latent.shape[1]} channels")
        # The reference entry points hand PiD a bf16 latent; the network up-casts it.
        return latent.to(torch.bfloat16).to(torch.float32)

    def _to_device(self, t: torch.Tensor, what: str) -> torch.Tensor:
        """CPU tensors move to the decoder's device; a tensor on another accelerator is an error."""
        if t.device.type != "cpu" and t.device != self.device:
            raise ValueError(f"{what} is on {t.device} but the decoder is on {self.device}: move it with "
                             f".to({str(self.device)!r}), or load the decoder with device={str(t.device)!r}")
        return t.to(self.device)

    def _output_size(self, h: int, w: int, output_size) -> tuple[int, int]:
        cfg = self.config
        natural = (h * cfg.pixels_per_latent, w * cfg.pixels_per_latent)
        if output_size is None:
            H, W = natural
        else:
            H, W = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
            if H % cfg.patch_size or W % cfg.patch_size:
                raise ValueError(f"output_size {H}x{W} must be a multiple of {cfg.patch_size} in both sides, e.g. "
                                 f"{H // cfg.patch_size * cfg.patch_size}x{W // cfg.patch_size * cfg.patch_size}")
            if (H, W) != natural:
                log.warning("output size %dx%d differs from the latent's natural %dx%d: the latent features are "
                            "nearest-resized to the patch grid, which is outside what PiD was trained on",
                            H, W, *natural)
        if self.variant is not None and not self.variant.in_trained_envelope(H, W):
            log.warning("%dx%d is outside the sizes %s was trained at (%s); quality is not characterised there",
                        W, H, self.variant.name, "see Variant.trained_sizes" if self.variant.trained_sizes
                        else f"sides {self.variant.trained_side_range}")
        return H, W

    def _pixel_chunk(self, pixel_chunk, patches: int) -> Optional[int]:
        if pixel_chunk is None:
            return None
        if pixel_chunk == "auto":
            if self.device.type != "cuda":
                return None
            from .cost import pixel_chunk_for_budget

            free, _ = torch.cuda.mem_get_info(self.device)
            chunk = pixel_chunk_for_budget(self.config, free // 4, self.precision)
            return None if chunk >= patches else chunk
        if not isinstance(pixel_chunk, int) or pixel_chunk < 1:
            raise ValueError(f"pixel_chunk must be a positive number of patches, 'auto' or None, got {pixel_chunk!r}")
        return pixel_chunk

    def _sampler_choice(self, sampler: Optional[str], steps: Optional[int]) -> tuple[str, int]:
        defaults = self.variant.sampler if self.variant is not None else None
        name = sampler or (defaults.sampler if defaults else "student")
        if name not in ("student", "dpm++2m"):
            raise ValueError(f"sampler must be 'student' or 'dpm++2m', got {name!r}")
        if steps is None:
            steps = defaults.steps if defaults and defaults.sampler == name else (4 if name == "student" else 25)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return name, int(steps)

    def _teacher_settings(self, cfg_scale, shift, H, W) -> tuple[float, float]:
        defaults = self.variant.sampler if self.variant is not None and self.variant.kind == "teacher" else None
        if cfg_scale is None:
            cfg_scale = defaults.cfg_scale if defaults else 1.0
        if shift is None:
            if defaults and defaults.dynamic_shift:
                shift = sampling.dynamic_shift(H, W, *defaults.dynamic_shift)
            else:
                shift = defaults.shift if defaults else 6.0
        return float(cfg_scale), float(shift)

    @contextlib.contextmanager
    def _autocast(self, cache: bool = True):
        """The precision regime: bf16 autocast for reference and fast (none for float32); the fused
        norm/modulate kernels for fast. `cache=False` while capturing a CUDA graph (autocast's cast cache
        must not outlive the capture)."""
        from .nn.layers import fused_norm

        autocast = contextlib.nullcontext() if self.precision == "float32" else \
            torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=cache)
        with autocast, fused_norm(self.precision == "fast"):
            yield

    def __repr__(self) -> str:
        name = self.variant.name if self.variant else "custom"
        return (f"PidDecoder({name}, {self.num_parameters() / 1e6:.1f}M params, device={self.device}, "
                f"precision={self.precision})")


def load(checkpoint_or_state_dict: "str | os.PathLike | Mapping[str, torch.Tensor]", variant: Optional[str] = None,
         config: "PidConfig | Mapping[str, Any] | None" = None, device: "str | torch.device" = "cpu",
         dtype: Optional[torch.dtype] = None, precision: Optional[str] = None) -> PidDecoder:
    """Load a PiD checkpoint (`model_ema_bf16.pth`, `.safetensors`, or an in-memory state dict).

    The network is chosen by `config` (a PidConfig or the reference PidNet kwargs), else `variant` (a registry
    name such as "flux-v1.5", an experiment name, or an official registry key), else the file's metadata or
    official folder name, else the weights' fingerprint when it is unambiguous.

    precision: "float32" (float32 math; default on CPU), "reference" (the official float32-weights + bf16
    autocast regime; default on GPU) or "fast" (bf16 weights, bf16 autocast, fused kernels). `dtype` is the
    older spelling: float32 → the device default, bfloat16 → "fast"."""
    device = _check_device(device)
    precision = _precision_from(dtype, precision, device)
    dtype = torch.bfloat16 if precision == "fast" else torch.float32
    path: Optional[Path] = None
    metadata: dict[str, str] = {}
    if isinstance(checkpoint_or_state_dict, Mapping):
        raw = checkpoint_or_state_dict
        source = "<state dict>"
    else:
        path = Path(checkpoint_or_state_dict)
        log.info("reading %s", path)
        raw, metadata = checkpoint.read_checkpoint(path)
        source = str(path)
    state_dict = checkpoint.filter_reference_keys(raw)
    cfg, chosen = checkpoint.resolve(state_dict, variant=variant, config=config, path=path, metadata=metadata)
    with torch.device("meta"):
        net = PidNet(cfg)
    net.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state_dict.items()}, assign=True)
    net.eval().requires_grad_(False)
    decoder = PidDecoder(net, chosen, source, precision)
    log.info("loaded %r", decoder)
    return decoder


def decode(checkpoint_or_state_dict, latent: torch.Tensor, *, variant: Optional[str] = None,
           config: "PidConfig | Mapping[str, Any] | None" = None, device: "str | torch.device" = "cpu",
           precision: Optional[str] = None, **decode_kwargs):
    """One call: `load(...)` then `.decode(latent, **decode_kwargs)`. To decode several latents, load once."""
    return load(checkpoint_or_state_dict, variant=variant, config=config, device=device,
                precision=precision).decode(latent, **decode_kwargs)


def _sigma_tensor(sigma, batch: int, device) -> torch.Tensor:
    """The network's per-sample σ [B], validated for a decode: σ ∈ [0, 1]."""
    sigma = PidNet.sigma_per_sample(sigma, batch, device)
    if not torch.isfinite(sigma).all() or (sigma < 0).any() or (sigma > 1).any():
        raise ValueError(f"sigma must lie in [0, 1] (0 = clean latent), got {sigma.tolist()}")
    return sigma


def _velocity_fn(net: PidNet, text, cond, time_conds: Sequence, pixel_chunk: Optional[int] = None):
    """v(x, t) for a sampler that calls it once per step in schedule order (pid.sampling's guarantee):
    `time_conds[k]` is step k's precomputed timestep work, so nothing here reads t back from the device."""
    steps = iter(time_conds)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        time_cond = next(steps, None)
        if time_cond is None:
            raise RuntimeError("the sampler asked for more velocities than its schedule has steps")
        return net.denoise(x, time_cond, text, cond, pixel_chunk=pixel_chunk)
    return velocity


def _shape(value):
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    return tuple(_shape(v) for v in value)


class _CapturedDecode:
    """One decode (conditioning and the whole sampling loop) captured in a CUDA graph for fixed shapes; a replay
    copies the new inputs into the graph's static buffers. Holds the time conditions it reads."""

    def __init__(self, sample, inputs: dict, time_conds: list):
        self.inputs = {k: _static_copy(v) for k, v in inputs.items()}
        self.time_conds = time_conds  # the graph reads their memory: keep them alive
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph: libraries' workspaces, kernel loading
            sample(**self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = sample(**self.inputs)
        log.info("captured a CUDA graph of the decode for %s", tuple(inputs["noise"].shape))

    def replay(self, inputs: dict) -> torch.Tensor:
        for name, value in inputs.items():
            _copy_into(self.inputs[name], value)
        self.graph.replay()
        return self.output.clone()


def _static_copy(value):
    if value is None or isinstance(value, torch.Tensor):
        return None if value is None else value.clone()
    return [v.clone() for v in value]


def _copy_into(static, value) -> None:
    if isinstance(static, torch.Tensor):
        static.copy_(value)
    elif static is not None:
        for s, v in zip(static, value):
            s.copy_(v)


class _Progress:
    """Sampler callback: a progress bar (tqdm, on stderr) when enabled, a debug log line per step, and one
    info line with the total time."""

    def __init__(self, name: str, steps: int, batch: int, height: int, width: int, enabled: bool = True):
        self.name, self.start = name, time.perf_counter()
        self.what = f"{batch} image(s) {width}x{height}"
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=steps, desc=f"pid {name}", unit="step", leave=False)

    def __call__(self, step: int, total: int, x: torch.Tensor) -> None:
        log.debug("%s step %d/%d", self.name, step + 1, total)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        log.info("decoded %s with the %s sampler in %.2f s", self.what, self.name, time.perf_counter() - self.start)


def _format_output(images: torch.Tensor, output: str):
    if output == "tensor":
        return images
    # The reference's image saving: (x + 1)·127.5 truncated to uint8.
    pixels = ((images.float() + 1) * 127.5).to(torch.uint8).permute(0, 2, 3, 1).cpu()
    if output == "numpy":
        return pixels.numpy()
    if output == "pil":
        try:
            from PIL import Image
        except ImportError as e:
            raise ImportError("output='pil' needs Pillow: pip install 'pid[images]'") from e
        return [Image.fromarray(p.numpy()) for p in pixels]
    raise ValueError(f"output must be 'tensor', 'numpy' or 'pil', got {output!r}")


def _precision_from(dtype, precision: Optional[str], device: torch.device) -> str:
    if dtype is not None:
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype.replace("torch.", ""), dtype)
        if dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"dtype {dtype} is not supported; use torch.float32 or torch.bfloat16, or choose "
                             f"precision= one of {PRECISIONS}")
        implied = "fast" if dtype == torch.bfloat16 else None
        if precision is not None and implied is not None and precision != implied:
            raise ValueError(f"dtype={dtype} and precision={precision!r} contradict each other: bf16 weights are "
                             "the 'fast' regime; pass only precision=")
        if precision is None:
            precision = implied
    if precision is None:
        precision = "reference" if device.type == "cuda" else "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def _check_precision(precision: Optional[str], device: torch.device, dtype: torch.dtype) -> str:
    if precision is None and dtype == torch.bfloat16:
        precision = "fast"
    precision = _precision_from(None, precision, device)  # the device default, validated
    if precision == "fast" and dtype != torch.bfloat16 or precision != "fast" and dtype != torch.float32:
        raise ValueError(f"precision {precision!r} needs {'bf16' if precision == 'fast' else 'float32'} weights, "
                         f"the network holds {dtype}: convert it with net.to(...) or use pid.load(precision=...)")
    return precision


def _check_device(device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was requested but this torch ({torch.__version__}) sees no CUDA GPU; "
                         "use device='cpu' or install a CUDA build of torch")
    return device
