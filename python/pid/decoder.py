"""`PidDecoder`: a loaded PiD network with its configuration, variant and execution plan, and its `decode`."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from . import sampling
from . import captions
from .config import PidConfig
from .errors import LatentError, MemoryBudgetError, NonFiniteOutputError, PidError
from .nn import PidNet
from .ops import AttentionAutotune
from .ops._attention import check_backend
from .parallel import DataParallel, SequenceParallel
from .plan import ExecutionPlan, resolve_precision
from .variants import Variant

log = logging.getLogger(__name__)

MAX_GRAPHS = 4  # captured decodes (cuda_graph=True) a decoder keeps


@dataclass(frozen=True)
class SamplerSettings:
    """The sampler of one decode: the 4-step student, or DPM-Solver++(2M) with guidance and shift."""

    name: str  # "student" or "dpm++2m"
    steps: int
    cfg_scale: float = 1.0  # dpm++2m only
    shift: float = 0.0  # dpm++2m only

    @property
    def guided(self) -> bool:
        return self.name != "student" and self.cfg_scale != 1.0

    def velocity_times(self) -> list[float]:
        """The flow times at which the sampler evaluates the network, in call order (each guidance pass)."""
        if self.name == "student":
            return sampling.student_velocity_times(self.steps)
        return sampling.dpm_velocity_times(self.steps, self.shift)


@dataclass
class DecodeInputs:
    """The tensors of one decode, validated and on the decoder's device (what a captured CUDA graph copies in)."""

    latent: torch.Tensor  # [B, C, h, w] normalised latent, rounded to bfloat16 values
    sigma: torch.Tensor  # [B] float32 noise level of the latent
    y: torch.Tensor  # [B, Ltxt, D] caption embeddings, float32
    null_y: Optional[torch.Tensor]  # [B, Ltxt, D] negative caption embeddings (guided teacher only)
    noise: torch.Tensor  # [B, 3, H, W] float32 initial state
    step_noises: Optional[list[torch.Tensor]]  # the student's re-noising draws, or None: drawn from the generator


class PidDecoder:
    """A PiD network ready for inference: `net` (a PidNet in eval mode), `config`, `variant` (the registry entry,
    or None for a network given only by its config), and how its network calls run:

    precision   "float32", "reference" or "fast" (see `pid.load`);
    attention   the global-attention back end ("kernel", "sdpa", "auto"; None: the device's default);
    autotune    what attention="auto" measured, in memory and in the machine's file (AttentionAutotune.default_path());
    caption_cache  caption embeddings by text encoder and caption (`pid.captions.CaptionCache`): by default in memory
                and in `pid.captions.default_cache_dir()`, so a caption encoded once (the empty one above all) never
                needs Gemma again, in any process; another `CaptionCache`, or None (memory only, nothing on disk).
    parallel    None (this process decodes alone), or how a decode is split across the ranks of a torch.distributed
                process group (`pid.parallel`): `SequenceParallel` (the image tokens) or `DataParallel` (the
                samples). Every rank calls `decode` with the same arguments; rank 0's inputs and noise are used,
                and every rank returns the whole result.

    `plan` combines them into the ExecutionPlan of a network call; `decode` adds its window and pixel chunks."""

    def __init__(self, net: PidNet, variant: Optional[Variant] = None, source: Optional[str] = None,
                 precision: Optional[str] = None, attention: Optional[str] = None,
                 caption_cache: "captions.CaptionCache | str | None" = "default",
                 parallel: "SequenceParallel | DataParallel | None" = None):
        self.net = net
        self.config: PidConfig = net.config
        self.variant = variant
        self.source = source
        self.precision = resolve_precision(precision, device=self.device, weights_dtype=self.dtype)
        self.attention = check_backend(attention)
        self.autotune = AttentionAutotune(path=AttentionAutotune.default_path())  # kept across processes
        self.caption_cache = _caption_cache(caption_cache)
        if parallel is not None and not isinstance(parallel, (SequenceParallel, DataParallel)):
            raise PidError(f"parallel must be a pid.parallel.SequenceParallel or DataParallel (pid.load(parallel="
                           f"'sequence' | 'data')), got {parallel!r}")
        if isinstance(parallel, SequenceParallel):
            parallel.check_heads(self.config.num_heads, self.config.pixel_num_heads)
        self.parallel = parallel
        self._times: dict = {}  # timestep conditions by network time, reused across steps and decodes
        self._graphs: dict = {}  # captured decodes (cuda_graph=True) by shapes and settings

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    @property
    def plan(self) -> ExecutionPlan:
        """The plan of this decoder's network calls: its precision regime (with the fused norm kernels in the fast
        regime), its attention back end and autotune memory; global attention, no pixel chunks."""
        sp = self.parallel if isinstance(self.parallel, SequenceParallel) else None
        return ExecutionPlan.for_precision(self.precision, attention=self.attention, autotune=self.autotune,
                                           sequence_parallel=sp)

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
               window: Optional[int] = None, pixel_window: "int | str | None" = "same",
               pixel_chunk: "int | str | None" = "auto", token_chunk: "int | str | None" = "auto",
               keep_gate_features: Optional[bool] = None, max_memory: "int | str | None" = None,
               cuda_graph: bool = False, check_memory: bool = True,
               callback: Optional[Callable[[int, int, torch.Tensor], None]] = None):
        """Decode a latent [B, C, h, w] (or [C, h, w]) into images.

        sigma: the latent's noise level (0 for a clean latent), one value or one per sample, in the variant's
        frame (flow; VP for SDXL). Captions: `caption_embeds` ([300, 2304] or [B, 300, 2304], or a file) or
        `caption` text (encodings are kept in `caption_cache`; a miss needs the optional Gemma encoder: `text_encoder`,
        left where it is, or else the default one, created on this decoder's device and released before the decode
        runs, so that its ~5 GB never sit beside the decode; `pid.captions.encoder_session`). Sampler defaults
        come from the variant: 4-step student, or for the teachers DPM-Solver++ with CFG 5 and the dynamic shift.
        Randomness: `noise` (the initial [B, 3, H, W] state) and `step_noises`, else `generator`, else a generator
        on the decoder's device seeded with `seed` — the reference's draw order (initial noise, then one draw per
        re-noise).

        `window` (patches): opt-in windowed attention over w × w patch neighbourhoods for very large outputs; it
        changes the model's function (docs/attention.md). `pixel_window` sets the pixel blocks' ("same": `window`).
        `pixel_chunk` bounds the memory of the pixel blocks (patches per chunk; "auto" chooses from the free GPU
        memory, None never chunks). `token_chunk` does the same for the MMDiT blocks' per-token work ("auto": none,
        unless max_memory asks for it), and `keep_gate_features=False` keeps only the latent CNN's features, making
        each gate's feature at each step (default: kept, unless max_memory asks otherwise). `max_memory` (bytes, or
        "6GB", "5.5GiB") plans the decode to fit: the least chunking whose estimated peak, weights included, fits
        (pid.budget; never a change of the network's function), else MemoryBudgetError; chunks and keep_gate_features
        given explicitly are kept. `cuda_graph=True` (CUDA only, opt-in) captures the whole decode in a CUDA graph on
        the first call for a given shape and setting and replays it afterwards, which removes the per-kernel launch
        cost; the graph keeps its working memory between calls (the last MAX_GRAPHS = 4 are kept;
        `release_graphs()` frees them). `output_size`: N, or (height, width), the default the latent's natural size.

        Before anything is allocated, the decode's peak memory is estimated (`pid.estimate_memory`) and compared with
        what the device has free: too much raises MemoryBudgetError with the options that fit (`check_memory=False`
        tries anyway). A result with NaN or infinite values raises NonFiniteOutputError, never returns.
        `callback(step, steps, x)`, if given, runs after each sampler step (step counts from 0; x is the sampler's
        state, not to be modified): a progress display, or a cancel, which raises to stop the decode between steps.
        Returns [B, 3, H, W] in [-1, 1] (`output="tensor"`), uint8 [B, H, W, 3] (`"numpy"`) or PIL images."""
        if output not in ("tensor", "numpy", "pil"):
            raise PidError(f"output must be 'tensor', 'numpy' or 'pil', got {output!r}")
        if cuda_graph and self.device.type != "cuda":
            raise PidError(f"cuda_graph=True needs a decoder on a CUDA device, this one is on {self.device}")
        if cuda_graph and callback is not None:
            raise PidError("callback= is not supported with cuda_graph=True (a replayed graph has no steps to report)")
        if cuda_graph and self.parallel is not None:
            raise PidError("cuda_graph=True is not supported with parallel decoding: leave it off")
        latent = self._prepare_latent(latent, latent_format, latent_space)
        B, _, h, w = latent.shape
        H, W = self._output_size(h, w, output_size)
        settings = self._sampler_settings(sampler, steps, cfg_scale, shift, H, W)
        plan = self._call_plan(window, pixel_window, pixel_chunk, token_chunk, keep_gate_features, max_memory, B, H,
                               W, cuda_graph)
        if check_memory:
            _on_every_rank(self.parallel, self.device, lambda: self._check_memory(B, H, W, plan))
        if generator is None:
            generator = torch.Generator(self.device).manual_seed(int(seed))
        inputs = self._prepare_inputs(latent, sigma, caption, caption_embeds, negative_caption_embeds, text_encoder,
                                      settings, generator, noise, step_noises, (H, W), cuda_graph)
        if settings.name != "student":
            log.info("DPM-Solver++(2M): %d steps, CFG %.2f, shift %.3f", settings.steps, settings.cfg_scale,
                     settings.shift)
        with torch.no_grad(), plan.autocast(self.device.type):
            time_conds = self._time_conditions(settings.velocity_times(), B, plan)
        if self.parallel is not None:
            inputs = _broadcast_inputs(inputs, self.parallel)  # rank 0's inputs and noise on every rank
            progress = progress and self.parallel.rank == 0
            if isinstance(self.parallel, SequenceParallel) and settings.name == "student" and inputs.step_noises is None:
                _check_same_generator(generator, self.parallel, self.device)
        whole_latent = inputs.latent  # of every sample (rank 0's, with parallel decoding): named in errors
        if isinstance(self.parallel, DataParallel):
            start, stop, _ = self.parallel.samples(B)
            inputs, time_conds = _take_samples(inputs, start, stop), [c.take(start, stop) for c in time_conds]
        if cuda_graph:
            images = self._replay(inputs, settings, plan, time_conds, generator)
        elif inputs.noise.shape[0] == 0:  # data parallel with fewer samples than ranks: nothing to do here
            images = inputs.noise
        else:
            report = _Progress(settings.name, settings.steps, inputs.noise.shape[0], H, W, enabled=progress,
                               callback=callback)
            try:
                images = self._sample(inputs, settings, plan, time_conds, generator, report)
            finally:
                report.close()
        if isinstance(self.parallel, DataParallel):  # gathered first: every rank checks every sample, together
            images = self.parallel.gather_samples(images, B)
        self._check_finite(images, whole_latent)
        return _format_output(images.clamp_(-1, 1), output)  # in place: the sampler's state, owned here

    def release_graphs(self) -> None:
        """Drops the captured decodes of `cuda_graph=True` and their working memory."""
        self._graphs.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---- running a decode
    def _sample(self, inputs: DecodeInputs, settings: SamplerSettings, plan: ExecutionPlan, time_conds: list,
                generator: torch.Generator, callback=None) -> torch.Tensor:
        """Conditioning and the whole sampling loop (what `cuda_graph=True` captures)."""
        net = self.net
        H, W = inputs.noise.shape[-2:]
        grid = (H // self.config.patch_size, W // self.config.patch_size)
        with torch.no_grad(), plan.autocast(self.device.type):
            cond = net.encode_condition(inputs.latent, inputs.sigma, grid, plan)
            velocity = _velocity_fn(net, net.encode_text(inputs.y, plan), cond, time_conds, plan)
            if settings.name == "student":
                return sampling.sample_student(velocity, inputs.noise, steps=settings.steps, generator=generator,
                                               step_noises=inputs.step_noises, callback=callback,
                                               use_kernel=plan.kernels)
            unconditional = None if inputs.null_y is None else \
                _velocity_fn(net, net.encode_text(inputs.null_y, plan), cond, time_conds, plan)
            # Guidance v_u + s·(v_c − v_u) is formed inside the fused sampler step (unconditional pass first).
            return sampling.sample_dpmpp_2m(velocity, inputs.noise, steps=settings.steps, shift=settings.shift,
                                            callback=callback, uncond_velocity_fn=unconditional,
                                            cfg_scale=settings.cfg_scale, use_kernel=plan.kernels)

    def _replay(self, inputs: DecodeInputs, settings: SamplerSettings, plan: ExecutionPlan, time_conds: list,
                generator: torch.Generator) -> torch.Tensor:
        key = (settings, plan, *[_shape(v) for v in vars(inputs).values()])
        if key not in self._graphs:
            if len(self._graphs) >= MAX_GRAPHS:  # each holds its working memory: drop the oldest
                del self._graphs[next(iter(self._graphs))]
            self._graphs[key] = _CapturedDecode(
                lambda static: self._sample(static, settings, plan, time_conds, generator), inputs, time_conds)
        return self._graphs[key].replay(inputs)

    def _time_conditions(self, times: Sequence[float], batch: int, plan: ExecutionPlan) -> list:
        """The timestep-only work (embedding, every block's modulation) at each sampler time, computed once per
        schedule and reused across guidance passes and decodes. The network takes t × 1000 in float32. Every sample
        of a decode is at the same time: computed for one and broadcast to `batch` (views), so it is the same
        whatever the batch size (a matrix product of one row may round differently from one of several)."""
        out = []
        for t in times:
            key = (t, self.device, plan.precision)
            if key not in self._times:
                if len(self._times) >= 64:
                    self._times.clear()
                t_net = torch.full((1,), t, dtype=torch.float32, device=self.device) * 1000
                self._times[key] = self.net.encode_time(t_net, plan)
            out.append(self._times[key].expand(batch))
        return out

    # ---- preparing a decode
    def _prepare_inputs(self, latent, sigma, caption, caption_embeds, negative_caption_embeds, text_encoder,
                        settings: SamplerSettings, generator, noise, step_noises, size, cuda_graph) -> DecodeInputs:
        B = latent.shape[0]
        H, W = size
        with captions.encoder_session(text_encoder, self.device) as encoder:  # one default encoder at most, freed here
            y = self._caption_embeds(B, caption, caption_embeds, encoder, "caption_embeds")
            null_y = None
            if settings.guided:
                default = captions.DEFAULT_NEGATIVE_PROMPT if negative_caption_embeds is None else None
                null_y = self._caption_embeds(B, default, negative_caption_embeds, encoder, "negative_caption_embeds")
        if noise is None:
            noise = torch.randn((B, 3, H, W), generator=generator, device=self.device, dtype=torch.float32)
        elif tuple(noise.shape) != (B, 3, H, W):
            raise PidError(f"noise must have shape {(B, 3, H, W)}, got {tuple(noise.shape)}")
        noise = self._to_device(noise, "noise").float()
        data_parallel = isinstance(self.parallel, DataParallel)
        if (cuda_graph or data_parallel) and settings.name == "student" and step_noises is None:
            # A graph replays fixed buffers, and a data-parallel rank takes its samples of the whole batch's draws:
            # draw the re-noising noises now, in the order the loop would.
            draws = sum(1 for t in sampling.student_schedule(settings.steps).tolist()[1:] if t > 0)
            step_noises = [torch.randn_like(noise, generator=generator) for _ in range(draws)]
        if step_noises is not None:
            step_noises = [self._to_device(e, "step_noises").float() for e in step_noises]
        return DecodeInputs(latent, _sigma_tensor(sigma, B, self.device), y, null_y, noise, step_noises)

    def _caption_embeds(self, batch: int, caption, caption_embeds, text_encoder, what: str) -> torch.Tensor:
        embeds = captions.resolve_caption_embeds(batch, caption=caption, caption_embeds=caption_embeds,
                                                 encoder=text_encoder, cache=self.caption_cache,
                                                 dim=self.config.txt_embed_dim, txt_len=None)
        return self._to_device(embeds, what).float()

    def _prepare_latent(self, latent, latent_format, latent_space) -> torch.Tensor:
        from . import latents as latent_spaces

        if not isinstance(latent, torch.Tensor):
            raise TypeError(f"latent must be a torch.Tensor, got {type(latent).__name__}")
        if latent.ndim == 3:
            latent = latent[None]
        if latent.ndim != 4 or not latent.is_floating_point():
            raise PidError(f"latent must be a floating-point [B, C, h, w] tensor, got {latent.dtype} "
                           f"{tuple(latent.shape)}")
        if latent.numel() == 0:
            raise PidError(f"latent {tuple(latent.shape)} is empty: a latent has at least one sample and one cell")
        latent = self._to_device(latent, "latent")
        if not torch.isfinite(latent).all():
            raise PidError("latent contains NaN or Inf values: check the LDM output (e.g. a VAE run in float16)")
        if latent_format not in ("normalized", "raw"):
            raise PidError(f"latent_format must be 'normalized' or 'raw', got {latent_format!r}")
        space = latent_space
        if space is None and self.variant is not None:
            space = self.variant.latent
        elif space is not None:
            space = latent_spaces.get_latent_space(space)
        if latent_format == "raw":
            if space is None:
                raise PidError("latent_format='raw' needs the latent space: load a registry variant or pass "
                                 "latent_space= (a pid.latents object)")
            latent = space.normalize(latent)
        if space is not None:
            latent_spaces.check_latent(latent, space)
        C = self.config.lq_latent_channels
        if latent.shape[1] != C:
            raise PidError(f"this decoder takes {C}-channel latents, got {latent.shape[1]} channels")
        # The reference entry points hand PiD a bf16 latent; the network up-casts it.
        rounded = latent.to(torch.bfloat16).to(torch.float32)
        if not torch.isfinite(rounded).all():
            raise LatentError(f"latent values up to {latent.abs().max().item():.3g} overflow bfloat16 (largest finite "
                              "value 3.39e38), the dtype PiD takes latents in: a normalised latent is of order 1, so "
                              "check its normalisation (latent_format='raw' for raw VAE moments)")
        return rounded

    def _to_device(self, t: torch.Tensor, what: str) -> torch.Tensor:
        """CPU tensors move to the decoder's device; a tensor on another accelerator is an error."""
        if t.device.type != "cpu" and t.device != self.device:
            raise PidError(f"{what} is on {t.device} but the decoder is on {self.device}: move it with "
                             f".to({str(self.device)!r}), or load the decoder with device={str(t.device)!r}")
        return t.to(self.device)

    def _output_size(self, h: int, w: int, output_size) -> tuple[int, int]:
        cfg = self.config
        natural = cfg.output_size(h, w)
        if output_size is None:
            H, W = natural
        else:
            H, W = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
            p = cfg.patch_size
            if H < p or W < p or H % p or W % p:
                raise PidError(f"output size {W}x{H} (width x height) must be a positive multiple of {p} in both "
                                 f"sides, e.g. {max(p, W // p * p)}x{max(p, H // p * p)}")
            if (H, W) != natural:
                log.warning("output size %dx%d (width x height) differs from the latent's natural %dx%d: the latent "
                            "features are nearest-resized to the patch grid, which is outside what PiD was trained on",
                            W, H, natural[1], natural[0])
        if self.variant is not None and not self.variant.in_trained_envelope(H, W):
            log.warning("%dx%d is outside the sizes %s was trained at (%s); quality is not characterised there",
                        W, H, self.variant.name, "see Variant.trained_sizes" if self.variant.trained_sizes
                        else f"sides {self.variant.trained_side_range}")
        return H, W

    def _check_memory(self, batch: int, H: int, W: int, plan: ExecutionPlan) -> None:
        """MemoryBudgetError when the estimated peak (beyond the resident weights) exceeds the device's free memory."""
        from .cost import estimate_memory, pixel_chunk_for_budget
        from .memory import available_bytes

        free = available_bytes(self.device)
        if free is None:
            return
        world, mode = self._world()
        est = estimate_memory(self.config, H, W, batch, self.precision, plan.pixel_chunk, token_chunk=plan.token_chunk,
                              keep_gate_features=plan.keep_gate_features, world_size=world, parallel=mode)
        need = est.peak - est.weights
        if need <= free:
            return
        gib = 2.0**30
        options = []
        if est.stage in ("pixel blocks", "final layer"):
            chunk = pixel_chunk_for_budget(self.config, free // 2, self.precision)
            chunked = estimate_memory(self.config, H, W, batch, self.precision, chunk, token_chunk=plan.token_chunk,
                                      keep_gate_features=plan.keep_gate_features, world_size=world, parallel=mode)
            if chunked.peak - chunked.weights <= free:
                options.append(f"pixel_chunk={chunk} (CLI --pixel-chunk {chunk}: "
                               f"{(chunked.peak - chunked.weights) / gib:.2f} GiB)")
        fits = f"{(est.weights + 0.9 * free) / gib:.1f}GiB"
        options.append(f"max_memory='{fits}' (CLI --max-memory {fits}: chunks planned to fit)")
        if batch > 1:
            options.append("a smaller batch")
        options += ["a smaller output size", "another device"]
        raise MemoryBudgetError(
            f"a {W}x{H} decode of {batch} image(s) needs about {need / gib:.2f} GiB beyond the weights "
            f"({est.stage} at its peak; pid.estimate_memory) but {self.device} has {free / gib:.2f} GiB free. "
            f"Options: {'; '.join(options)}; or check_memory=False (CLI --force) to try anyway")

    def _check_finite(self, images: torch.Tensor, latent: torch.Tensor) -> None:
        """NonFiniteOutputError naming the likely cause when the decode produced NaN or infinite values."""
        finite = torch.isfinite(images)
        if bool(finite.all()):
            return
        bad = int((~finite).sum())
        weights = [name for name, p in self.net.named_parameters() if not bool(torch.isfinite(p).all())]
        if weights:
            cause = (f"the network's weights hold NaN or Inf ({len(weights)} tensors, e.g. {weights[0]}): the "
                     "checkpoint is damaged; download it again")
        else:
            cause = (f"the largest |latent| value is {latent.abs().max().item():.3g}, and the network overflowed: a "
                     "normalised latent is of order 1, so check its normalisation (latent_format='raw' for raw VAE "
                     "moments)")
        if self.precision != "float32" and not weights:
            cause += f"; or {self.precision} precision overflowed where float32 would not (precision='float32')"
        raise NonFiniteOutputError(f"the decode produced {bad} NaN or infinite values of {images.numel()}, so no image "
                                   f"is returned: {cause}")

    def _call_plan(self, window, pixel_window, pixel_chunk, token_chunk, keep_gate_features, max_memory, batch: int,
                   H: int, W: int, cuda_graph: bool) -> ExecutionPlan:
        """The decoder's plan with this decode's windows, chunks and gate features (planned for max_memory)."""
        if pixel_window == "same":
            pixel_window = window
        for name, value in (("pixel_chunk", pixel_chunk), ("token_chunk", token_chunk)):
            if value not in ("auto", None) and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise PidError(f"{name} must be a positive number of {'patches' if name == 'pixel_chunk' else 'tokens'}"
                               f", 'auto' or None, got {value!r}")
        if keep_gate_features not in (None, True, False):
            raise PidError(f"keep_gate_features must be True, False or None, got {keep_gate_features!r}")
        if max_memory is not None:
            from .budget import parse_bytes, plan_for_budget

            world, mode = self._world()
            planned = plan_for_budget(self.config, H, W, batch, self.precision, parse_bytes(max_memory),
                                      pixel_chunk=pixel_chunk, token_chunk=token_chunk,
                                      keep_gate_features=keep_gate_features, world_size=world, parallel=mode)
            pixel_chunk, token_chunk = planned.pixel_chunk, planned.token_chunk
            keep_gate_features = planned.keep_gate_features
            log.info("max_memory %s: pixel_chunk %s, token_chunk %s, gate features %s; %s", max_memory, pixel_chunk,
                     token_chunk, "kept" if keep_gate_features else "made at each step", planned.estimate)
        if pixel_chunk == "auto":
            patches = batch * (H // self.config.patch_size) * (W // self.config.patch_size)
            pixel_chunk = self._auto_pixel_chunk(patches)
        if token_chunk == "auto":
            token_chunk = None
        plan = self.plan.replace(window=window, pixel_window=pixel_window, pixel_chunk=pixel_chunk,
                                 token_chunk=token_chunk, keep_gate_features=keep_gate_features is not False,
                                 autocast_cache=not cuda_graph)
        if (plan.window or plan.pixel_window) and self.device.type == "cuda":
            log.info("windowed attention (%s, %s): pid's kernels (bfloat16: tensor cores; float32: CUDA cores); it "
                     "changes the network's output, see docs/attention.md", plan.window, plan.pixel_window)
        return plan

    def _world(self) -> tuple[int, str]:
        """(world size, "sequence" | "data") of this decoder's parallel decodes; (1, "sequence") alone."""
        if self.parallel is None:
            return 1, "sequence"
        return self.parallel.world_size, "sequence" if isinstance(self.parallel, SequenceParallel) else "data"

    def _auto_pixel_chunk(self, patches: int) -> Optional[int]:
        """On CUDA, chunks whose pixel-stage work fits a quarter of the free memory; elsewhere none."""
        if self.device.type != "cuda":
            return None
        from .cost import pixel_chunk_for_budget

        free, _ = torch.cuda.mem_get_info(self.device)
        chunk = pixel_chunk_for_budget(self.config, free // 4, self.precision)
        return None if chunk >= patches else chunk

    def _sampler_settings(self, sampler: Optional[str], steps: Optional[int], cfg_scale, shift, H: int,
                          W: int) -> SamplerSettings:
        defaults = self.variant.sampler if self.variant is not None else None
        name = sampler or (defaults.sampler if defaults else "student")
        if name not in ("student", "dpm++2m"):
            raise PidError(f"sampler must be 'student' or 'dpm++2m', got {name!r}")
        if steps is None:
            steps = defaults.steps if defaults and defaults.sampler == name else (4 if name == "student" else 25)
        if steps < 1:
            raise PidError(f"steps must be >= 1, got {steps}")
        if name == "student":
            if cfg_scale is not None or shift is not None:
                log.warning("cfg_scale and shift are ignored by the distilled 4-step student sampler")
            return SamplerSettings(name, int(steps))
        teacher = self.variant.sampler if self.variant is not None and self.variant.kind == "teacher" else None
        if cfg_scale is None:
            cfg_scale = teacher.cfg_scale if teacher else 1.0
        if shift is None:
            if teacher and teacher.dynamic_shift:
                shift = sampling.dynamic_shift(H, W, *teacher.dynamic_shift)
            else:
                shift = teacher.shift if teacher else 6.0
        if not math.isfinite(cfg_scale):
            raise PidError(f"cfg_scale must be a finite number (1: no guidance; the teachers' default 5), got {cfg_scale}")
        if not (math.isfinite(shift) and shift > 0):
            raise PidError(f"shift must be a positive number (the flow schedule's; the teachers' default 6 at 2048²), "
                           f"got {shift}")
        return SamplerSettings(name, int(steps), float(cfg_scale), float(shift))

    def __repr__(self) -> str:
        name = self.variant.name if self.variant else "custom"
        return (f"PidDecoder({name}, {self.num_parameters() / 1e6:.1f}M params, device={self.device}, "
                f"precision={self.precision})")


def _caption_cache(cache) -> "captions.CaptionCache":
    """A decoder's caption cache from its `caption_cache=` argument."""
    if isinstance(cache, captions.CaptionCache):
        return cache
    if cache is None:
        return captions.CaptionCache()
    if cache == "default":
        return captions.CaptionCache(captions.default_cache_dir())
    raise PidError(f"caption_cache must be 'default' (the folder of pid.captions.default_cache_dir()), a "
                   f"pid.captions.CaptionCache (e.g. CaptionCache('/some/folder')) or None (memory only), got {cache!r}")


def _sigma_tensor(sigma, batch: int, device) -> torch.Tensor:
    """The network's per-sample σ [B], validated for a decode: σ ∈ [0, 1]."""
    sigma = PidNet.sigma_per_sample(sigma, batch, device)
    if not torch.isfinite(sigma).all() or (sigma < 0).any() or (sigma > 1).any():
        raise PidError(f"sigma must lie in [0, 1] (0 = clean latent), got {sigma.tolist()}")
    return sigma


def _velocity_fn(net: PidNet, text, cond, time_conds: Sequence, plan: ExecutionPlan):
    """v(x, t) for a sampler that calls it once per step in schedule order (pid.sampling's guarantee):
    `time_conds[k]` is step k's precomputed timestep work, so nothing here reads t back from the device."""
    steps = iter(time_conds)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        time_cond = next(steps, None)
        if time_cond is None:
            raise RuntimeError("the sampler asked for more velocities than its schedule has steps")
        return net.velocity(x, time_cond, text, cond, plan)
    return velocity


def _broadcast_inputs(inputs: DecodeInputs, group) -> DecodeInputs:
    """Rank 0's decode inputs on every rank of `group` (shapes agree: every rank prepared the same decode). The other
    ranks receive into new tensors: their own inputs (the caller's tensors, cache entries) are left as they were."""
    import torch.distributed as dist

    src = dist.get_global_rank(group.group, 0) if group.group is not None else 0

    def bcast(t):
        if t is None:
            return None
        if isinstance(t, list):
            return [bcast(v) for v in t]
        t = t.contiguous() if group.rank == 0 else torch.empty_like(t, memory_format=torch.contiguous_format)
        dist.broadcast(t, src=src, group=group.group)
        return t
    return DecodeInputs(**{k: bcast(v) for k, v in vars(inputs).items()})


def _on_every_rank(parallel, device: torch.device, check: Callable[[], None]) -> None:
    """Runs a check that may raise PidError; with parallel decoding every rank learns whether any failed and all raise
    together (a rank that stopped alone would leave the others waiting in a collective)."""
    if parallel is None:
        return check()
    import torch.distributed as dist

    error = None
    try:
        check()
    except PidError as e:
        error = e
    failed = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=_collective_device(parallel, device))
    dist.all_reduce(failed, op=dist.ReduceOp.MAX, group=parallel.group)
    if error is not None:
        raise error
    if int(failed.item()):
        raise PidError("another rank of this parallel decode refused it (its error is in its log); no rank decoded")


def _collective_device(parallel, device: torch.device) -> torch.device:
    """Where small tensors for a collective go: the decoder's GPU for NCCL, the CPU for gloo."""
    import torch.distributed as dist

    return device if dist.get_backend(parallel.group) == "nccl" else torch.device("cpu")


def _check_same_generator(generator: torch.Generator, group, device: torch.device) -> None:
    """A sequence-parallel decode draws the student's re-noising on every rank: the generators must agree."""
    import torch.distributed as dist

    import hashlib

    digest = hashlib.sha256(generator.get_state().cpu().numpy().tobytes()).digest()
    digest = torch.tensor([int.from_bytes(digest[i:i + 8], "little", signed=True) for i in range(0, 32, 8)])
    device = _collective_device(group, device)
    digests = [torch.empty_like(digest, device=device) for _ in range(group.world_size)]
    dist.all_gather(digests, digest.to(device), group=group.group)
    if any(not torch.equal(d, digests[0]) for d in digests):
        raise PidError("the ranks' random generators differ, so their re-noising would too: pass the same seed (or "
                       "a generator in the same state, or step_noises) on every rank")


def _take_samples(inputs: DecodeInputs, start: int, stop: int) -> DecodeInputs:
    """Samples [start, stop) of every per-sample tensor of a decode."""
    def take(t):  # copies: the whole batch's tensors are not kept alive by views
        if t is None:
            return None
        return [v[start:stop].clone() for v in t] if isinstance(t, list) else t[start:stop].clone()
    return DecodeInputs(**{k: take(v) for k, v in vars(inputs).items()})


def _shape(value):
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    return tuple(_shape(v) for v in value)


class _CapturedDecode:
    """One decode (conditioning and the whole sampling loop) captured in a CUDA graph for fixed shapes; a replay
    copies the new inputs into the graph's static buffers. Holds the time conditions it reads."""

    def __init__(self, sample: Callable[[DecodeInputs], torch.Tensor], inputs: DecodeInputs, time_conds: list):
        self.inputs = DecodeInputs(**{k: _static_copy(v) for k, v in vars(inputs).items()})
        self.time_conds = time_conds  # the graph reads their memory: keep them alive
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph: libraries' workspaces, kernel loading
            sample(self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = sample(self.inputs)
        log.info("captured a CUDA graph of the decode for %s", tuple(inputs.noise.shape))

    def replay(self, inputs: DecodeInputs) -> torch.Tensor:
        for name, value in vars(inputs).items():
            _copy_into(getattr(self.inputs, name), value)
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
    """Sampler callback: a progress bar (tqdm, on stderr) when enabled and stderr is a terminal (no carriage-return
    noise in logs), a debug log line per step, and one info line with the total time."""

    def __init__(self, name: str, steps: int, batch: int, height: int, width: int, enabled: bool = True,
                 callback: Optional[Callable[[int, int, torch.Tensor], None]] = None):
        self.name, self.start, self.callback = name, time.perf_counter(), callback
        self.what = f"{batch} image(s) {width}x{height}"
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=steps, desc=f"pid {name}", unit="step", leave=False, disable=None)  # None: TTY only

    def __call__(self, step: int, total: int, x: torch.Tensor) -> None:
        log.debug("%s step %d/%d", self.name, step + 1, total)
        if self.bar is not None:
            self.bar.update(1)
        if self.callback is not None:
            self.callback(step, total, x)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        log.info("decoded %s with the %s sampler in %.2f s", self.what, self.name, time.perf_counter() - self.start)


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """Images [B, 3, H, W] in [-1, 1] → uint8 pixels [B, H, W, 3] on the CPU, as the reference saves them:
    (x + 1)·127.5 truncated."""
    return ((images.float() + 1) * 127.5).to(torch.uint8).permute(0, 2, 3, 1).cpu()


def _format_output(images: torch.Tensor, output: str):
    if output == "tensor":
        return images
    pixels = to_pixels(images)
    if output == "numpy":
        return pixels.numpy()
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("output='pil' needs Pillow: pip install 'pid-decoder[images]'") from e
    return [Image.fromarray(p.numpy()) for p in pixels]
