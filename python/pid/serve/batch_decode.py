"""Decoding several requests in one `PidDecoder.decode` call, each request's images equal to its own decode.

Every request keeps its own σ (one per sample), caption and seed. Its noise is drawn from its own generator, seeded
with its seed, in the order `decode(seed=...)` draws it for that request alone: the initial [b, 3, H, W] state, then
one [b, 3, H, W] draw per re-noising step of the student sampler (pid.sampling). The batch's noise is these draws
concatenated, handed to `decode` as `noise=` and `step_noises=`. So a request's images are those of
`decoder.decode(its latent, sigma=..., caption_embeds=..., seed=..., steps=...)`: bit for bit when it decodes alone,
and within float rounding (the matrix products of a taller batch may round differently; docs/serve.md) in a batch.

Runs on the thread that owns the decoder (never on the event loop).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import PidError
from ..memory import OutOfMemoryError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class DecodeJob:
    """One request's decode: its normalised latent [b, C, h, w] (float32, CPU), σ per sample, seed, sampler steps
    (None: the variant's), and its caption: embeddings ([1 | b, L, D]), or text, or neither (the server's default)."""

    latent: torch.Tensor
    sigma: list[float]
    seed: int = 0
    steps: Optional[int] = None
    caption: Optional[str] = None
    caption_embeds: Optional[torch.Tensor] = None

    @property
    def samples(self) -> int:
        return self.latent.shape[0]

    def batch_key(self) -> tuple:
        """Requests with equal keys decode together: the same latent grid (so the same output shape) and sampler
        setting. (Captions of different lengths are split apart when they are resolved.)"""
        return (tuple(self.latent.shape[1:]), self.steps)


def noise_draws(decoder, job: DecodeJob, height: int, width: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The request's initial noise [b, 3, H, W] and the sampler's re-noising draws (`SamplerSettings.noise_draws`),
    from a generator on the decoder's device seeded with the request's seed, in decode's order."""
    settings = decoder.sampler_settings(height, width, steps=job.steps)
    generator = torch.Generator(decoder.device).manual_seed(int(job.seed))
    shape = (job.samples, 3, height, width)
    noise = torch.randn(shape, generator=generator, device=decoder.device, dtype=torch.float32)
    return noise, [torch.randn(shape, generator=generator, device=decoder.device, dtype=torch.float32)
                   for _ in range(settings.noise_draws())]


def caption_embeds_of(decoder, job: DecodeJob, default_embeds: Optional[torch.Tensor]) -> torch.Tensor:
    """The request's caption embeddings [b, L, D] float32: its own, its caption encoded through the decoder's caption
    cache (a miss loads Gemma), or the server's default (its --caption-embeds, else the empty caption)."""
    from ..captions import resolve_caption_embeds

    embeds, caption = job.caption_embeds, job.caption
    if embeds is None and caption is None:
        embeds, caption = default_embeds, (None if default_embeds is not None else "")
    embeds = resolve_caption_embeds(job.samples, caption=caption, caption_embeds=embeds,
                                    cache=decoder.caption_cache, dim=decoder.config.txt_embed_dim, txt_len=None,
                                    device=decoder.device)
    return embeds.float().cpu()


def decode_jobs(decoder, jobs: list[DecodeJob], *, default_embeds: Optional[torch.Tensor] = None,
                max_memory: Optional[int] = None) -> list["torch.Tensor | BaseException"]:
    """Each job's images (float32 [b, 3, H, W] on the CPU), or the exception its decode raised. Jobs are decoded in
    one call where their captions have one length; a batch that fails with bad input or out of memory is decoded
    again one job at a time, so one request cannot fail the others."""
    results: list = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    embeds: dict[int, torch.Tensor] = {}
    for i, job in enumerate(jobs):
        try:
            embeds[i] = caption_embeds_of(decoder, job, default_embeds)
        except Exception as e:  # this request's caption only
            results[i] = e
            continue
        groups.setdefault((job.batch_key(), tuple(embeds[i].shape[1:])), []).append(i)
    for members in groups.values():
        try:
            images = _decode_together(decoder, [jobs[i] for i in members], [embeds[i] for i in members], max_memory)
        except (PidError, OutOfMemoryError) as e:
            if len(members) == 1:
                results[members[0]] = e
                continue
            log.warning("a batch of %d requests failed (%s); decoding them one by one", len(members), e)
            images = []
            for i in members:
                try:
                    images += _decode_together(decoder, [jobs[i]], [embeds[i]], max_memory)
                except (PidError, OutOfMemoryError) as single:
                    images.append(single)
        except Exception as e:  # a bug: every request of the batch learns of it
            images = [e] * len(members)
        for i, result in zip(members, images):
            results[i] = result
    return results


def _decode_together(decoder, jobs: list[DecodeJob], embeds: list[torch.Tensor],
                     max_memory: Optional[int]) -> list[torch.Tensor]:
    _, _, h, w = jobs[0].latent.shape
    height, width = decoder.config.output_size(h, w)
    draws = [noise_draws(decoder, job, height, width) for job in jobs]
    step_noises = [torch.cat([d[1][k] for d in draws]) for k in range(len(draws[0][1]))]
    images = decoder.decode(torch.cat([job.latent for job in jobs]), sigma=[s for job in jobs for s in job.sigma],
                            caption_embeds=torch.cat(embeds), steps=jobs[0].steps,
                            noise=torch.cat([d[0] for d in draws]), step_noises=step_noises or None,
                            max_memory=max_memory, progress=False, output="tensor").cpu()
    out, start = [], 0
    for job in jobs:
        out.append(images[start:start + job.samples])
        start += job.samples
    return out
