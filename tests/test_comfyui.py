"""The PiD node pack (pid.comfyui) against a stand-in for ComfyUI's surface (tests/comfyui_stub.py): registration,
PiD Decode equal to `decoder.decode` bit for bit in every ComfyUI latent layout, the early-stop nodes' latent and σ,
memory (ComfyUI asked to make room, one replan on out-of-memory, clear errors), progress and Cancel."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import pid
from pid import golden
from pid.archs import TINY, random_net
from pid.captions import CaptionCache, default_cache_dir, encoder_cache_key
from pid.errors import MemoryBudgetError, PidError
from pid.latents import add_noise, euler_to_vp

sys.path.insert(0, str(Path(__file__).parent))
import comfyui_stub  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GIB = 2.0**30
NODE_IDS = {"PidLoader", "PidDecode", "PidEarlyStopKSampler", "PidLatentNoiseLevel"}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, golden_dir):
    """The stand-in ComfyUI, with models/pid holding the golden networks (16- and 128-channel) and a tiny SDXL one."""
    models = tmp_path_factory.mktemp("models")
    (models / "pid").mkdir()
    for case_name, file in (("v15_net", "golden-v15.safetensors"), ("v15_flux2_net", "golden-v15-flux2.safetensors")):
        case = golden.GoldenCase(case_name, golden_dir)
        save_file({k: v.contiguous() for k, v in case.weights().items()}, str(models / "pid" / file),
                  metadata={"pid.config": json.dumps(case.meta["net_kwargs"])})
    sdxl = pid.PidDecoder(random_net(TINY.replace(lq_latent_channels=4)))
    pid.checkpoint.save_safetensors(sdxl, models / "pid" / "tiny-sdxl.safetensors")
    (models / "diffusion_models").mkdir()
    (models / "diffusion_models" / "flux1-dev.safetensors").write_bytes(b"")  # not a PiD file: not listed
    stub = comfyui_stub.install(models)
    stub.models = models
    yield stub
    comfyui_stub.uninstall()
    for name in [n for n in sys.modules if n.startswith("pid.comfyui.")]:
        del sys.modules[name]


@pytest.fixture()
def stub(comfy):
    comfy.mm.interrupt_processing = False
    comfy.mm.load_calls.clear()
    comfy.mm.free_bytes = 64 * 2**30
    comfy.utils.PROGRESS_BAR_HOOK = None
    return comfy


@pytest.fixture()
def nodes(stub):
    from pid.comfyui import early_stop, extension, nodes

    return extension.NODES, nodes, early_stop


def _load(nodes, checkpoint):
    _, node_module, _ = nodes
    return node_module.PidLoader.execute(checkpoint=checkpoint, variant="auto", precision="float32")[0]


def _decode(nodes, model, latent, *, latent_format="auto", caption="", seed=0, sigma=0.0, max_memory_gb=0.0,
            conditioning=None):
    _, node_module, _ = nodes
    return node_module.PidDecode.execute(decoder=model, latent=latent, latent_format=latent_format, caption=caption,
                                         seed=seed, sigma=sigma, max_memory_gb=max_memory_gb,
                                         conditioning=conditioning)[0]


def _image(images):
    """PiD's [-1, 1] images as ComfyUI's IMAGE, spelled out: [B, H, W, 3] in [0, 1]."""
    return ((images + 1) * 0.5).clamp(0, 1).permute(0, 2, 3, 1)


def _embeds(dim=32, rows=10, seed=3):
    return torch.randn(1, rows, dim, generator=torch.Generator().manual_seed(seed))


def _randn(*shape, seed=5):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ registration
def test_the_pack_registers_its_nodes(stub):
    import pid.comfyui

    extension = asyncio.run(pid.comfyui.comfy_entrypoint())
    assert isinstance(extension, stub.ComfyExtension)
    asyncio.run(extension.on_load())
    schemas = [n.GET_SCHEMA() for n in asyncio.run(extension.get_node_list())]
    assert {s.node_id for s in schemas} == NODE_IDS
    outputs = {s.node_id: [o.io_type for o in s.outputs] for s in schemas}
    assert outputs == {"PidLoader": ["PID_DECODER"], "PidDecode": ["IMAGE"], "PidEarlyStopKSampler": ["LATENT"],
                       "PidLatentNoiseLevel": ["LATENT"]}
    decode = {i.id: (i.io_type, i.optional) for i in schemas[1].inputs}
    assert decode["decoder"] == ("PID_DECODER", False) and decode["latent"] == ("LATENT", False)
    assert decode["conditioning"] == ("CONDITIONING", True)
    assert stub.folder_paths.get_folder_paths("pid") == [str(stub.models / "pid")]


def test_loader_lists_pid_files_and_released_variants(nodes, stub):
    _, node_module, _ = nodes
    from pid.comfyui.model import checkpoint_source

    (stub.models / "diffusion_models" / "pid_flux1_1024_to_4096_4step_bf16.safetensors").write_bytes(b"")
    try:
        options = node_module.PidLoader.GET_SCHEMA().inputs[0].options
        assert options[:4] == ["golden-v15-flux2.safetensors", "golden-v15.safetensors", "tiny-sdxl.safetensors",
                               "pid_flux1_1024_to_4096_4step_bf16.safetensors"]
        assert options[4:] == ["hf:" + name for name in pid.VARIANTS]
        assert checkpoint_source("hf:flux-v1.5") == "flux-v1.5"  # pid.load's variant name: the Hub, when run
        assert checkpoint_source("tiny-sdxl.safetensors") == str(stub.models / "pid" / "tiny-sdxl.safetensors")
    finally:
        (stub.models / "diffusion_models" / "pid_flux1_1024_to_4096_4step_bf16.safetensors").unlink()
    with pytest.raises(PidError, match="not in models/pid"):
        checkpoint_source("missing.safetensors")


def test_loader_wraps_the_network_for_comfyui(nodes, stub):
    model = _load(nodes, "golden-v15.safetensors")
    assert model.patcher.model is model.decoder.net
    assert model.patcher.load_device == torch.device("cpu") and model.decoder.precision == "float32"
    assert model.patcher.model_size() == sum(p.nbytes for p in model.decoder.net.parameters())


# ------------------------------------------------------------------------------- decode = decoder.decode
@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_decode_equals_the_decoder_on_comfyuis_raw_latent(nodes, stub, family):
    model = _load(nodes, "golden-v15.safetensors")
    reference = pid.load(stub.models / "pid" / "golden-v15.safetensors", precision="float32")
    raw = _randn(1, 16, 2, 3)
    shift, scale = {"flux": (0.1159, 0.3611), "sd3": (0.0609, 1.5305)}[family]  # comfy.latent_formats process_in
    y = _embeds()
    image = _decode(nodes, model, {"samples": raw}, latent_format=family, seed=7, sigma=0.25,
                    conditioning=[[y, {"pooled_output": None}]])
    expected = reference.decode((raw - shift) * scale, sigma=0.25, caption_embeds=y, seed=7, progress=False)
    assert image.shape == (1, 64, 96, 3) and image.dtype == torch.float32
    assert torch.equal(image, _image(expected))


def test_decode_equals_the_decoder_on_a_flux2_latent(nodes, stub):
    model = _load(nodes, "golden-v15-flux2.safetensors")
    reference = pid.load(stub.models / "pid" / "golden-v15-flux2.safetensors", precision="float32")
    z = _randn(1, 128, 1, 2)  # ComfyUI's FLUX.2 LATENT is packed and batch-normalised already
    y = _embeds()
    image = _decode(nodes, model, {"samples": z}, latent_format="flux2", seed=3, conditioning=[[y, {}]])
    assert torch.equal(image, _image(reference.decode(z, caption_embeds=y, seed=3, progress=False)))


def test_decode_equals_the_decoder_on_a_qwen_image_video_layout_latent(nodes, stub):
    model = _load(nodes, "golden-v15.safetensors")
    reference = pid.load(stub.models / "pid" / "golden-v15.safetensors", precision="float32")
    raw = _randn(1, 16, 1, 2, 3)  # ComfyUI's Wan21 format: [B, C, T, h, w]
    y = _embeds()
    image = _decode(nodes, model, {"samples": raw}, latent_format="qwenimage", conditioning=[[y, {}]])
    expected = reference.decode(raw[:, :, 0], latent_format="raw", latent_space="qwenimage", caption_embeds=y,
                                progress=False)
    assert torch.equal(image, _image(expected))
    # and that normalisation is ComfyUI's Wan21 process_in, (x - mean) * 1.0 / std, to rounding
    from pid.comfyui.latents import normalised_latent
    from pid.latents import QWENIMAGE_MEAN, QWENIMAGE_STD

    mean, std = torch.tensor(QWENIMAGE_MEAN).view(1, 16, 1, 1, 1), torch.tensor(QWENIMAGE_STD).view(1, 16, 1, 1, 1)
    torch.testing.assert_close(normalised_latent(raw, "qwenimage"), ((raw - mean) * 1.0 / std)[:, :, 0],
                               rtol=1e-6, atol=1e-6)


def test_decode_of_a_batch_and_of_sdxl(nodes, stub):
    model = _load(nodes, "tiny-sdxl.safetensors")
    reference = pid.load(stub.models / "pid" / "tiny-sdxl.safetensors", precision="float32")
    raw = _randn(2, 4, 2, 3)
    y = _embeds(rows=12)
    image = _decode(nodes, model, {"samples": raw}, latent_format="sdxl", seed=11, conditioning=[[y, {}]])
    expected = reference.decode(raw * 0.13025, caption_embeds=y, seed=11, progress=False)
    assert image.shape == (2, 64, 96, 3) and torch.equal(image, _image(expected))


def test_caption_text_goes_through_pids_caption_cache(nodes, stub):
    model = _load(nodes, "golden-v15.safetensors")
    reference = pid.load(stub.models / "pid" / "golden-v15.safetensors", precision="float32")
    embeds = _randn(300, 32, seed=9)  # what Gemma would give, for a network of 32 caption features
    CaptionCache(default_cache_dir()).put(encoder_cache_key(), "a red fox in the snow", embeds)
    raw = _randn(1, 16, 2, 3)
    image = _decode(nodes, model, {"samples": raw}, latent_format="flux", caption="a red fox in the snow", seed=2)
    expected = reference.decode((raw - 0.1159) * 0.3611, caption_embeds=embeds, seed=2, progress=False)
    assert torch.equal(image, _image(expected))


def test_decode_input_errors(nodes, stub):
    model = _load(nodes, "golden-v15.safetensors")
    raw = {"samples": _randn(1, 16, 2, 3)}
    with pytest.raises(PidError, match="names no released variant"):
        _decode(nodes, model, raw, conditioning=[[_embeds(), {}]])
    with pytest.raises(PidError, match=r"Gemma-2 caption embeddings \[B, 300, 32\]"):
        _decode(nodes, model, raw, latent_format="flux", conditioning=[[_embeds(dim=4096), {}]])
    with pytest.raises(PidError, match="one caption encoding"):
        _decode(nodes, model, raw, latent_format="flux", conditioning=[[_embeds(), {}], [_embeds(), {}]])
    with pytest.raises(PidError, match="takes 16-channel latents"):
        _decode(nodes, model, {"samples": _randn(1, 4, 4, 6)}, latent_format="sdxl", conditioning=[[_embeds(), {}]])
    stopped = dict(raw, pid_noise={"sigma": 0.3, "sampling": "flow", "step": 24, "steps": 28})
    with pytest.raises(PidError, match="set sigma to 0"):
        _decode(nodes, model, stopped, latent_format="flux", sigma=0.3, conditioning=[[_embeds(), {}]])


# ------------------------------------------------------------------------------------ early stop
class StandInLDM:
    """A ModelPatcher-like LDM for the stand-in sampler: its denoiser predicts a fixed clean latent x0, for which
    Euler steps are exact, so the latent after step K has a closed form."""

    def __init__(self, sampling, process_in, process_out, x0):
        self.sampling, self.process_latent_in, self.process_latent_out, self.x0 = sampling, process_in, process_out, x0
        self.model_options, self.load_device = {}, torch.device("cpu")

    def get_model_object(self, name):
        return {"model_sampling": self.sampling}[name]

    def denoise(self, x, sigma):
        return self.x0.expand_as(x)


def _flux_ldm(stub, x0):
    ms = comfyui_stub.model_sampling(stub.model_sampling.ModelSamplingDiscreteFlow, stub.model_sampling.CONST,
                                     shift=3.0)
    return StandInLDM(ms, lambda x: (x - 0.1159) * 0.3611, lambda x: x / 0.3611 + 0.1159, x0)


def _sdxl_ldm(stub, x0):
    ms = comfyui_stub.model_sampling(stub.model_sampling.ModelSamplingDiscrete, stub.model_sampling.EPS)
    return StandInLDM(ms, lambda x: x * 0.13025, lambda x: x / 0.13025, x0)


def test_early_stop_ksampler_hands_pid_the_flow_latent_and_its_sigma(nodes, stub):
    _, _, early_stop = nodes
    from pid.comfyui.latents import to_pid_latent

    x0 = _randn(1, 16, 2, 3, seed=1)
    ldm = _flux_ldm(stub, x0)
    out = early_stop.PidEarlyStopKSampler.execute(model=ldm, seed=42, steps=28, stop_at_step=24, cfg=1.0,
                                                  sampler_name="euler", scheduler="simple", positive=[], negative=[],
                                                  latent_image={"samples": torch.zeros(1, 16, 2, 3)})[0]
    record = out["pid_noise"]
    # simple scheduler, shift 3: step 24 of 28 is ComfyUI's sigmas[142] = σ(0.143) = 3·0.143 / (1 + 2·0.143)
    assert record == {"sigma": pytest.approx(3 * 0.143 / (1 + 2 * 0.143), rel=1e-6), "sampling": "flow", "step": 24,
                      "steps": 28}
    z, sigma, _ = to_pid_latent(out, "flux")
    eps = torch.randn(1, 16, 2, 3, generator=torch.manual_seed(42))  # comfy.sample.prepare_noise
    assert sigma == record["sigma"]
    torch.testing.assert_close(z, add_noise(x0, sigma, frame="flow", noise=eps), rtol=0, atol=2e-6)


def test_early_stop_ksampler_on_sdxl_moves_latent_and_sigma_to_the_vp_frame(nodes, stub):
    _, _, early_stop = nodes
    from pid.comfyui.latents import to_pid_latent

    x0 = _randn(1, 4, 4, 6, seed=1)
    ldm = _sdxl_ldm(stub, x0)
    out = early_stop.PidEarlyStopKSampler.execute(model=ldm, seed=42, steps=28, stop_at_step=24, cfg=1.0,
                                                  sampler_name="euler", scheduler="normal", positive=[], negative=[],
                                                  latent_image={"samples": torch.zeros(1, 4, 4, 6)})[0]
    sigmas = stub.samplers.KSampler(ldm, 28, "cpu", "euler", "normal").sigmas
    s0, sk = float(sigmas[0]), float(sigmas[24])
    assert out["pid_noise"]["sampling"] == "eps" and out["pid_noise"]["sigma"] == sk
    eps = torch.randn(1, 4, 4, 6, generator=torch.manual_seed(42))
    x_k = x0 + ((1 + s0 ** 2) ** 0.5 * eps - x0) * (sk / s0)  # Euler from x = x0 + ... at the max σ, exact here
    z, sigma, _ = to_pid_latent(out, "sdxl")
    expected, expected_sigma = euler_to_vp(x_k, sk)  # what pid.diffusers does with an SDXL pipeline's latent
    assert sigma == pytest.approx(expected_sigma, rel=1e-12)
    torch.testing.assert_close(z, expected, rtol=0, atol=2e-6)


def test_latent_noise_level_labels_a_ksampleradvanced_latent_as_the_early_stop_ksampler_does(nodes, stub):
    _, _, early_stop = nodes
    ldm = _flux_ldm(stub, _randn(1, 16, 2, 3, seed=1))
    empty = {"samples": torch.zeros(1, 16, 2, 3)}
    # KSamplerAdvanced(noise_seed 42, steps 28, end_at_step 24, return_with_leftover_noise enable)
    (advanced,) = stub.nodes.common_ksampler(ldm, 42, 28, 1.0, "euler", "simple", [], [], empty, start_step=0,
                                             last_step=24, force_full_denoise=False)
    labelled = early_stop.PidLatentNoiseLevel.execute(model=ldm, latent=advanced, sampler_name="euler",
                                                      scheduler="simple", steps=28, end_at_step=24)[0]
    stopped = early_stop.PidEarlyStopKSampler.execute(model=ldm, seed=42, steps=28, stop_at_step=24, cfg=1.0,
                                                      sampler_name="euler", scheduler="simple", positive=[],
                                                      negative=[], latent_image=empty)[0]
    assert labelled["pid_noise"] == stopped["pid_noise"] and torch.equal(labelled["samples"], stopped["samples"])
    assert "pid_noise" not in advanced  # the input LATENT is not changed
    to_the_end = early_stop.PidLatentNoiseLevel.execute(model=ldm, latent=advanced, sampler_name="euler",
                                                        scheduler="simple", steps=28, end_at_step=10000)[0]
    assert to_the_end["pid_noise"]["sigma"] == 0.0 and to_the_end["pid_noise"]["step"] == 28


def test_decode_of_an_early_stopped_latent(nodes, stub):
    _, _, early_stop = nodes
    model = _load(nodes, "golden-v15.safetensors")
    reference = pid.load(stub.models / "pid" / "golden-v15.safetensors", precision="float32")
    ldm = _flux_ldm(stub, _randn(1, 16, 2, 3, seed=1))
    stopped = early_stop.PidEarlyStopKSampler.execute(model=ldm, seed=4, steps=8, stop_at_step=7, cfg=1.0,
                                                      sampler_name="euler", scheduler="simple", positive=[],
                                                      negative=[], latent_image={"samples": torch.zeros(1, 16, 2, 3)})[0]
    y = _embeds()
    image = _decode(nodes, model, stopped, latent_format="flux", seed=5, conditioning=[[y, {}]])
    sigma = stopped["pid_noise"]["sigma"]
    latent = (stopped["samples"] - 0.1159) * 0.3611 * (1 - sigma)  # ComfyUI's x / (1 - σ), back to x
    expected = reference.decode(latent, sigma=sigma, caption_embeds=y, seed=5, progress=False)
    assert torch.equal(image, _image(expected))


def test_early_stop_errors(nodes, stub):
    _, _, early_stop = nodes
    ldm = _flux_ldm(stub, torch.zeros(1, 16, 2, 2))
    with pytest.raises(PidError, match="choose a step from 1 to 28"):
        early_stop.stop_sigma(ldm, "euler", "simple", 28, 0)
    other = StandInLDM(object(), None, None, None)
    with pytest.raises(PidError, match="neither flow matching"):
        early_stop.model_sampling_kind(other)


# ------------------------------------------------------------------------------- memory, progress, cancel
def _golden_inputs(nodes, stub):
    model = _load(nodes, "golden-v15.safetensors")
    return model, {"samples": _randn(1, 16, 2, 3)}, [[_embeds(), {}]]


def test_comfyui_makes_room_and_the_budget_is_what_it_has_free(nodes, stub):
    model, latent, cond = _golden_inputs(nodes, stub)
    stub.mm.free_bytes = 3 * 2**30
    budgets = []
    decode = model.decoder.decode
    model.decoder.decode = lambda *a, **k: budgets.append(k["max_memory"]) or decode(*a, **k)
    _decode(nodes, model, latent, latent_format="flux", conditioning=cond)
    whole = pid.estimate_memory(model.decoder.config, 64, 96, 1, "float32")
    assert stub.mm.load_calls == [{"models": [model.patcher], "memory_required": whole.peak - whole.weights,
                                   "force_full_load": True}]
    assert budgets == [whole.weights + 3 * 2**30 - stub.mm.EXTRA_RESERVED_VRAM]


def test_progress_bar_sees_one_update_per_step(nodes, stub):
    model, latent, cond = _golden_inputs(nodes, stub)
    updates = []
    stub.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: updates.append((value, total)))
    _decode(nodes, model, latent, latent_format="flux", conditioning=cond)
    assert updates == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_cancel_stops_the_decode_between_steps(nodes, stub):
    model, latent, cond = _golden_inputs(nodes, stub)
    calls = []
    velocity = model.decoder.net.velocity
    model.decoder.net.velocity = lambda *a, **k: calls.append(1) or velocity(*a, **k)

    def press_cancel_during_step_two(value, total, preview, node_id=None):
        if value == 1:
            stub.mm.interrupt_current_processing(True)

    stub.utils.set_progress_bar_global_hook(press_cancel_during_step_two)
    try:
        with pytest.raises(comfyui_stub.InterruptProcessingException):
            _decode(nodes, model, latent, latent_format="flux", conditioning=cond)
    finally:
        del model.decoder.net.velocity
    assert len(calls) == 1  # the step that was running finished; no other began
    assert not stub.mm.processing_interrupted()


def test_out_of_memory_replans_for_half_the_working_memory_then_errors(nodes, stub, caplog):
    model, latent, cond = _golden_inputs(nodes, stub)
    reference = pid.load(stub.models / "pid" / "golden-v15.safetensors", precision="float32")
    weights = pid.estimate_memory(model.decoder.config, 64, 96, 1, "float32").weights
    budgets, failures = [], [1]
    decode = model.decoder.decode
    model.decoder.decode = lambda *a, **k: budgets.append(k["max_memory"]) or decode(*a, **k)

    def run_out_of_memory(value, total, preview, node_id=None):
        if failures:
            failures.pop()
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    stub.utils.set_progress_bar_global_hook(run_out_of_memory)
    with caplog.at_level(logging.WARNING, logger="pid.comfyui.memory"):
        image = _decode(nodes, model, latent, latent_format="flux", max_memory_gb=1.0, seed=1, conditioning=cond)
    smaller = weights + (2**30 - weights) // 2
    assert budgets == [2**30, smaller]
    assert "ran out of memory planned for 1.00 GiB" in caplog.text
    expected = reference.decode((latent["samples"] - 0.1159) * 0.3611, caption_embeds=cond[0][0], seed=1,
                                max_memory=smaller, progress=False)
    assert torch.equal(image, _image(expected))

    failures.extend([1, 1])
    with pytest.raises(MemoryBudgetError, match="ran out of memory twice.*set max_memory_gb below"):
        _decode(nodes, model, latent, latent_format="flux", max_memory_gb=1.0, conditioning=cond)


def test_a_hopeless_budget_errors_before_any_step(nodes, stub):
    model, latent, cond = _golden_inputs(nodes, stub)
    updates = []
    stub.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: updates.append(value))
    with pytest.raises(MemoryBudgetError, match=r"PiD Decode cannot fit 0\.00 GiB \(max_memory_gb\).*needs at least"):
        _decode(nodes, model, latent, latent_format="flux", max_memory_gb=0.001, conditioning=cond)
    assert updates == []


# ------------------------------------------------------------------------------ the pack folder itself
def _import_pack(code: str) -> subprocess.CompletedProcess:
    """Imports comfyui/__init__.py as ComfyUI's load_custom_node does (spec_from_file_location), after `code`."""
    script = (f"import sys, importlib.util\n{code}\n"
              f"spec = importlib.util.spec_from_file_location('pid_pack', {str(REPO / 'comfyui' / '__init__.py')!r})\n"
              "module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)\n"
              "print('entrypoint', callable(module.comfy_entrypoint))\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_the_pack_without_pid_says_how_to_install_it():
    result = _import_pack("sys.modules['pid'] = None")
    assert result.returncode != 0
    assert "ImportError: the PiD nodes need the pid-decoder package" in result.stderr
    assert "pip install pid-decoder" in result.stderr


def test_the_pack_imports_and_lists_its_nodes_without_the_network(tmp_path):
    setup = (f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\nimport comfyui_stub, socket, asyncio\n"
             f"comfyui_stub.install({str(tmp_path)!r})\n"
             "def offline(*args, **kwargs):\n    raise OSError('no network in this test')\n"
             "socket.socket.connect = socket.getaddrinfo = socket.create_connection = offline\n")
    result = _import_pack(setup)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "entrypoint True"
    result = subprocess.run([sys.executable, "-c", setup + (
        "import pid.comfyui as p\next = asyncio.run(p.comfy_entrypoint()); asyncio.run(ext.on_load())\n"
        "print(sorted(n.GET_SCHEMA().node_id for n in asyncio.run(ext.get_node_list())))\n"
        "print('huggingface_hub' in sys.modules)\n")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == [str(sorted(NODE_IDS)), "False"]
