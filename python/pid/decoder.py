"""`PidDecoder`: a loaded PiD network with its configuration, variant and execution plan, and its `decode`.

`decode` tells the single-device story: inputs checked (`pid.inputs`), the sampler chosen (`pid.sampling`), the call's
plan with its chunks (`pid.memory`), the timestep work done once per time, conditioning and sampling, the result
checked and formatted (`pid.images`). The other concerns are one call each: splitting across processes
(`pid.parallel`), CUDA-graph replay (`pid.cuda_graphs`), progress (`pid.progress`)."""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence

import torch

from . import captions, images, inputs, memory, sampling
from .config import PidConfig
from .cuda_graphs import DecodeGraphs, input_shapes
from .errors import NonFiniteOutputError, PidError
from .nn import PidNet, fp8
from .ops import AttentionAutotune
from .ops._attention import check_backend
from .parallel import DataParallel, SequenceParallel, on_every_rank, world_of
from .plan import ExecutionPlan, check_weights_dtype, default_precision
from .progress import DecodeProgress
from .variants import Variant

log = logging.getLogger(__name__)


class PidDecoder:
    """A PiD network ready for inference: `net` (a PidNet in eval mode), `config`, `variant` (the registry entry,
    or None for a network given only by its config), and how its network calls run:

    precision   "float32", "reference", "fast" or "fp8" (see `pid.load`; None: the default for the weights' dtype on
                their device, `pid.plan.default_precision`); "fp8" quantises the network's large Linears in place
                (`pid.nn.fp8`) and needs a GPU with fp8 tensor cores, or `fp8_emulation=True` (elsewhere: the exact,
                slow emulation, to measure the regime's quality);
    attention   the global-attention back end ("kernel", "sdpa", "fa4", "auto"; None: the device's default; "fa4"
                needs flash-attn-4 and an sm90/sm100 GPU);
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
                 parallel: "SequenceParallel | DataParallel | None" = None, fp8_emulation: bool = False):
        self.net = net
        self.config: PidConfig = net.config
        self.variant = variant
        self.source = source
        if precision is None:
            precision = default_precision(self.device, self.dtype)
        self.precision = check_weights_dtype(precision, self.dtype)
        self.attention = check_backend(attention, self.device)
        if self.attention == "fa4" and self.precision == "float32":
            raise PidError("attention='fa4' (FlashAttention-4) takes bfloat16 attention inputs, which precision "
                           "'float32' does not make: choose precision 'fast', 'fp8' or 'reference', or "
                           "attention='sdpa'")
        if self.precision == "fp8":  # last of the checks: it changes the caller's network
            fp8.check_device(self.device, fp8_emulation)
            fp8.quantize_linears(net, emulate=fp8_emulation)
        self.autotune = AttentionAutotune(path=AttentionAutotune.default_path())  # kept across processes
        self.caption_cache = _caption_cache(caption_cache)
        if parallel is not None and not isinstance(parallel, (SequenceParallel, DataParallel)):
            raise PidError(f"parallel must be a pid.parallel.SequenceParallel or DataParallel (pid.load(parallel="
                           f"'sequence' | 'data')), got {parallel!r}")
        if isinstance(parallel, SequenceParallel):
            parallel.check_heads(self.config.num_heads, self.config.pixel_num_heads)
        self.parallel = parallel
        self._times: dict = {}  # timestep conditions by network time, reused across steps and decodes
        self._graphs = DecodeGraphs()  # captured decodes (cuda_graph=True) by shapes and settings

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    @property
    def latent_space(self):
        """The latent space this decoder's variant decodes (a `pid.latents` object), None outside the registry."""
        return self.variant.latent if self.variant is not None else None

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
        (pid.memory; never a change of the network's function), else MemoryBudgetError; chunks and keep_gate_features
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
        images.check_output(output)
        if cuda_graph and self.device.type != "cuda":
            raise PidError(f"cuda_graph=True needs a decoder on a CUDA device, this one is on {self.device}")
        if callback is not None and self.parallel is not None:
            raise PidError("callback= is not supported with parallel decoding (a callback that raised on one rank would "
                           "leave the others waiting in a collective): leave it off")
        if cuda_graph and callback is not None:
            raise PidError("callback= is not supported with cuda_graph=True (a replayed graph has no steps to report)")
        if cuda_graph and self.parallel is not None:
            raise PidError("cuda_graph=True is not supported with parallel decoding: leave it off")
        latent = inputs.prepare_latent(latent, self.config, latent_format, self.device, latent_space=latent_space,
                                       default_space=self.latent_space)
        B, _, h, w = latent.shape
        H, W = inputs.output_size(self.config, self.variant, h, w, output_size)
        settings = self.sampler_settings(H, W, sampler=sampler, steps=steps, cfg_scale=cfg_scale, shift=shift)
        plan = self._call_plan(B, H, W, window=window, pixel_window=pixel_window, pixel_chunk=pixel_chunk,
                               token_chunk=token_chunk, keep_gate_features=keep_gate_features, max_memory=max_memory,
                               cuda_graph=cuda_graph)
        if check_memory:
            world, mode = world_of(self.parallel)
            on_every_rank(self.parallel, self.device, lambda: memory.check_fits(
                self.config, H, W, B, self.precision, self.device, pixel_chunk=plan.pixel_chunk,
                token_chunk=plan.token_chunk, keep_gate_features=plan.keep_gate_features, world_size=world,
                parallel=mode))
        if generator is None:
            generator = torch.Generator(self.device).manual_seed(int(seed))
        # A graph replays fixed buffers, and a data-parallel rank takes its samples of the whole batch's draws: the
        # re-noising is drawn up front then, in the order the loop would draw it.
        decode_inputs = inputs.prepare_inputs(
            latent, sigma, settings, (H, W), config=self.config, device=self.device, caption=caption,
            caption_embeds=caption_embeds, negative_caption_embeds=negative_caption_embeds, text_encoder=text_encoder,
            caption_cache=self.caption_cache, generator=generator, noise=noise, step_noises=step_noises,
            draw_step_noises=cuda_graph or isinstance(self.parallel, DataParallel))
        if settings.name != "student":
            log.info("DPM-Solver++(2M): %d steps, CFG %.2f, shift %.3f", settings.steps, settings.cfg_scale,
                     settings.shift)
        time_conds = self._time_conditions(settings.times(), B, plan)
        whole_latent = decode_inputs.latent  # of every sample (rank 0's, with parallel decoding): named in errors
        if self.parallel is not None:  # rank 0's inputs on every rank (a data-parallel rank: its samples)
            decode_inputs, time_conds, whole_latent = self.parallel.share_inputs(decode_inputs, time_conds, generator,
                                                                                 settings, self.device)
            progress = progress and self.parallel.rank == 0
        if cuda_graph:
            key = (settings, plan, *input_shapes(decode_inputs))
            out = self._graphs.run(key, lambda static: self._sample(static, settings, plan, time_conds, generator),
                                   decode_inputs, keep_alive=time_conds)
        elif decode_inputs.noise.shape[0] == 0:  # data parallel with fewer samples than ranks: nothing to do here
            out = decode_inputs.noise
        else:
            report = DecodeProgress(settings.name, settings.steps, decode_inputs.noise.shape[0], H, W, bar=progress,
                                    callback=callback)
            try:
                out = self._sample(decode_inputs, settings, plan, time_conds, generator, report)
            finally:
                report.close()
            report.finished()
        if self.parallel is not None:  # gathered first: every rank checks every sample, together
            out = self.parallel.gather_images(out, B)
        self._check_finite(out, whole_latent)
        return images.format_output(out.clamp_(-1, 1), output)  # in place: the sampler's state, owned here

    def sampler_settings(self, height: int, width: int, *, sampler: Optional[str] = None, steps: Optional[int] = None,
                         cfg_scale: Optional[float] = None, shift: Optional[float] = None) -> sampling.SamplerSettings:
        """The sampler a decode of a height × width output with these arguments runs: the variant's defaults applied
        (`SamplerSettings`: its step times, how many noises it draws)."""
        defaults = self.variant.sampler if self.variant is not None else None
        return sampling.settings_for(defaults, sampler, steps, cfg_scale, shift, height, width,
                                     teacher=self.variant is not None and self.variant.kind == "teacher")

    def release_graphs(self) -> None:
        """Drops the captured decodes of `cuda_graph=True` and their working memory."""
        self._graphs.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---- running a decode
    def _sample(self, decode_inputs: inputs.DecodeInputs, settings: sampling.SamplerSettings, plan: ExecutionPlan,
                time_conds: list, generator: torch.Generator, callback=None) -> torch.Tensor:
        """Conditioning and the whole sampling loop (what `cuda_graph=True` captures). The sampler names each step;
        its timestep work is `time_conds[step]`, computed ahead (nothing here reads t back from the device)."""
        net, x = self.net, decode_inputs
        H, W = x.noise.shape[-2:]
        grid = (H // self.config.patch_size, W // self.config.patch_size)
        with torch.no_grad(), plan.autocast(self.device.type):
            cond = net.encode_condition(x.latent, x.sigma, grid, plan=plan)

            def velocity_for(text):
                return lambda x_t, t, step: net.velocity(x_t, time_conds[step], text, cond, plan=plan)
            conditional = velocity_for(net.encode_text(x.y, plan=plan))
            unconditional = None if x.null_y is None else velocity_for(net.encode_text(x.null_y, plan=plan))
            # Guidance v_u + s·(v_c − v_u) is formed inside the fused sampler step (unconditional pass first).
            return sampling.sample(settings, conditional, x.noise, uncond_velocity_fn=unconditional,
                                   generator=generator, step_noises=x.step_noises, callback=callback,
                                   use_kernel=plan.kernels)

    def _time_conditions(self, times: Sequence[float], batch: int, plan: ExecutionPlan) -> list:
        """The timestep-only work (embedding, every block's modulation) at each sampler time, computed once per
        schedule and reused across guidance passes and decodes. The network takes t × 1000 in float32. Every sample
        of a decode is at the same time: computed for one and broadcast to `batch` (views), so it is the same
        whatever the batch size (a matrix product of one row may round differently from one of several)."""
        out = []
        with torch.no_grad(), plan.autocast(self.device.type):
            for t in times:
                key = (t, self.device, plan.precision)
                if key not in self._times:
                    if len(self._times) >= 64:
                        self._times.clear()
                    t_net = torch.full((1,), t, dtype=torch.float32, device=self.device) * 1000
                    self._times[key] = self.net.encode_time(t_net, plan=plan)
                out.append(self._times[key].expand(batch))
        return out

    def _call_plan(self, batch: int, H: int, W: int, *, window, pixel_window, pixel_chunk, token_chunk,
                   keep_gate_features, max_memory, cuda_graph: bool) -> ExecutionPlan:
        """The decoder's plan with this decode's windows, chunks and gate features (planned for max_memory)."""
        world, mode = world_of(self.parallel)
        pixel_chunk, token_chunk, keep = memory.decode_chunks(
            self.config, H, W, batch, self.precision, self.device, pixel_chunk=pixel_chunk, token_chunk=token_chunk,
            keep_gate_features=keep_gate_features, max_memory=max_memory, world_size=world, parallel=mode)
        plan = self.plan.replace(window=window, pixel_window=window if pixel_window == "same" else pixel_window,
                                 pixel_chunk=pixel_chunk, token_chunk=token_chunk, keep_gate_features=keep,
                                 autocast_cache=not cuda_graph)
        if (plan.window or plan.pixel_window) and self.device.type == "cuda":
            log.info("windowed attention (%s, %s): pid's kernels (bfloat16: tensor cores; float32: CUDA cores); it "
                     "changes the network's output, see docs/attention.md", plan.window, plan.pixel_window)
        return plan

    def _check_finite(self, out: torch.Tensor, latent: torch.Tensor) -> None:
        """NonFiniteOutputError naming the likely cause when the decode produced NaN or infinite values."""
        finite = torch.isfinite(out)
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
        raise NonFiniteOutputError(f"the decode produced {bad} NaN or infinite values of {out.numel()}, so no image "
                                   f"is returned: {cause}")

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
