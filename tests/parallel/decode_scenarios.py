"""Decodes that tests/test_parallel.py runs in one process and, under torchrun, across 2 and 4 gloo processes:
`python decode_scenarios.py GOLDEN_DIR OUT_DIR` (launched by torchrun) writes each rank's images of every scenario
to OUT_DIR/<name>.rank<r>.safetensors; `run(name, golden_dir, parallel=None)` is the single-process decode."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import pid
from pid import golden

# name: (golden network, parallel mode, decode arguments, latent [B, h, w], output size, precision)
# Output sizes 80x112 make a 5 x 7 patch grid: 35 tokens, padded to 36 on 2 and 4 ranks.
SCENARIOS = {
    "v15_student_odd_grid_batch2": ("v15_net", "sequence", {}, (2, 3, 4), (80, 112), "float32"),
    "v1_teacher_cfg_odd_grid": ("v1_net", "sequence",
                                {"sampler": "dpm++2m", "steps": 3, "cfg_scale": 5.0, "negative": True},
                                (1, 3, 4), (80, 112), "float32"),
    "v15_flux2_natural_grid": ("v15_flux2_net", "sequence", {}, (1, 2, 3), None, "float32"),
    "v15_windowed_odd_grid": ("v15_net", "sequence", {"window": 3, "pixel_window": 3}, (1, 3, 4), (80, 112),
                              "float32"),
    # A 1 x 5 grid: on 4 ranks (2 tokens each) the last rank holds padding only.
    "v15_rank_without_tokens": ("v15_net", "sequence", {}, (1, 1, 3), (16, 80), "float32"),
    "v15_fast_odd_grid": ("v15_net", "sequence", {}, (1, 3, 4), (80, 112), "fast"),
    "v15_data_parallel_batch3": ("v15_net", "data", {}, (3, 3, 4), None, "float32"),
    "v1_teacher_data_parallel_batch3": ("v1_net", "data", {"sampler": "dpm++2m", "steps": 3, "cfg_scale": 5.0,
                                                           "negative": True}, (3, 2, 2), None, "float32"),
}


def run(name: str, golden_dir: Path, parallel=None, samples=None, seed: int = 3) -> torch.Tensor:
    """The scenario's decode; `samples=(start, stop)`: only those samples, with the noise of the whole batch's
    decode (what a data-parallel rank decodes)."""
    case_name, _, kwargs, (B, h, w), size, precision = SCENARIOS[name]
    case = golden.GoldenCase(case_name, Path(golden_dir))
    kw = case.meta["net_kwargs"]
    decoder = pid.load(case.weights(), config=kw, precision=precision, caption_cache=None, parallel=parallel)
    g = torch.Generator().manual_seed(7)
    cfg = decoder.config
    latent = torch.randn(B, cfg.lq_latent_channels, h, w, generator=g)
    y = torch.randn(B, cfg.txt_max_length, cfg.txt_embed_dim, generator=g)
    kwargs = dict(kwargs)
    if kwargs.pop("negative", False):
        kwargs["negative_caption_embeds"] = torch.randn(B, cfg.txt_max_length, cfg.txt_embed_dim, generator=g)
    sigma = torch.linspace(0, 0.4, B)
    if samples is not None:  # the whole batch's draws, in the decoder's order: initial noise, then re-noising
        start, stop = samples
        H, W = size or cfg.output_size(h, w)
        noise_g = torch.Generator().manual_seed(3)
        noise = torch.randn(B, 3, H, W, generator=noise_g)
        if kwargs.get("sampler", "student") == "student":
            kwargs["step_noises"] = [torch.randn_like(noise, generator=noise_g)[start:stop] for _ in range(3)]
        kwargs = {k: v[start:stop] if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        latent, y, sigma, kwargs["noise"] = latent[start:stop], y[start:stop], sigma[start:stop], noise[start:stop]
    return decoder.decode(latent, sigma=sigma, caption_embeds=y, output_size=size, seed=seed, progress=False, **kwargs)


# The per-rank memory cases: (precision, output size, pixel_chunk, token_chunk, keep_gate_features), a 4-head network
# (as tests/test_estimates.py's) with random weights, one student step.
MEMORY_CASES = [("float32", 512, None, None, True), ("fast", 640, 128, 128, False)]


def memory_config():
    from pid.config import PidConfig

    return PidConfig(hidden_size=256, num_heads=4, pixel_attn_hidden_size=192, pixel_num_heads=4, patch_depth=4,
                     txt_embed_dim=64, lq_hidden_dim=64, lq_num_res_blocks=2)


def memory_peak(case, parallel=None) -> int:
    """Weights + the tracked peak of the tensors a decode allocates (pid.memory.TensorMemoryTracker), in bytes."""
    from pid.archs import random_net
    from pid.memory import TensorMemoryTracker, parameter_bytes

    precision, size, pixel_chunk, token_chunk, keep = case
    net = random_net(memory_config())
    if precision == "fast":
        net = net.bfloat16()
    decoder = pid.PidDecoder(net, precision=precision, caption_cache=None, parallel=parallel)
    latent = torch.randn(1, 16, size // 32, size // 32, generator=torch.Generator().manual_seed(0))
    with TensorMemoryTracker() as tracker:
        decoder.decode(latent, caption_embeds=torch.zeros(1, 300, 64), steps=1, pixel_chunk=pixel_chunk,
                       token_chunk=token_chunk, keep_gate_features=keep, progress=False, check_memory=False)
    return parameter_bytes(net) + tracker.peak


def main() -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    golden_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo")
    for name, (_, mode, *_rest) in SCENARIOS.items():
        images = run(name, golden_dir, parallel=mode)
        save_file({"images": images.contiguous()}, str(out_dir / f"{name}.rank{dist.get_rank()}.safetensors"))
    from pid.parallel import parallel_info

    peaks = [memory_peak(case, parallel_info("sequence")) for case in MEMORY_CASES]
    (out_dir / f"memory.rank{dist.get_rank()}.json").write_text(json.dumps(peaks))
    # Generators in different states on the ranks would re-noise differently: refused on every rank.
    try:
        run("v15_student_odd_grid_batch2", golden_dir, parallel="sequence", seed=dist.get_rank())
        error = ""
    except pid.PidError as e:
        error = str(e)
    (out_dir / f"generator_error.rank{dist.get_rank()}.txt").write_text(error)
    dist.barrier()  # both ranks done before either tears gloo down (a rank torn down mid-exchange aborted once, loaded)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
