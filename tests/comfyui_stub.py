"""A stand-in for exactly the ComfyUI surface the PiD node pack (pid.comfyui) uses, for tests without ComfyUI.

Mirrors Comfy-Org/ComfyUI at commit 0f1fa67ad8a68b62c65ebc97a7bf485df2459c3a (2026-08-15); each part names the file
it follows. When ComfyUI changes that surface, this file is the one to update. Behaviour is copied where the pack's
results depend on it (the V3 schema and its V1 form, the flow / EPS model sampling and its noise scaling, the
"simple" and "normal" schedulers, KSampler's sigma list and truncation at last_step, the Euler sampler,
ProgressBar's update_absolute, the interrupt flag, is_oom); the rest (model loading, free memory) is reduced to what
a CPU-only ComfyUI does, and records what it was asked.

`install(models_dir)` puts the modules into sys.modules: comfy_api, comfy_api.latest (io, ComfyExtension), comfy,
comfy.model_management, comfy.model_patcher, comfy.model_sampling, comfy.samplers, comfy.utils, folder_paths, nodes.
`CORE_NODES` holds the inputs and outputs of the core nodes the example workflows use (nodes.py, comfy_extras).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import types
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

COMMIT = "0f1fa67ad8a68b62c65ebc97a7bf485df2459c3a"
MODULES = ("comfy_api", "comfy_api.latest", "comfy", "comfy.model_management", "comfy.model_patcher",
           "comfy.model_sampling", "comfy.samplers", "comfy.utils", "folder_paths", "nodes")


# ------------------------------------------------------------------------- comfy_api/latest/_io.py (subset)
class _Input:
    Parent = None

    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, extra_dict=None,
                 raw_link=None, advanced=None):
        self.id, self.display_name, self.optional, self.tooltip = id, display_name, optional, tooltip
        self.lazy, self.extra_dict, self.rawLink, self.advanced = lazy, extra_dict or {}, raw_link, advanced

    @property
    def io_type(self):
        return self.Parent.io_type

    def as_dict(self):
        return _prune({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                       "lazy": self.lazy, "rawLink": self.rawLink, "advanced": self.advanced}) | self.extra_dict


class _WidgetInput(_Input):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                 socketless=None, widget_type=None, force_input=None, extra_dict=None, raw_link=None, advanced=None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
        self.default, self.socketless, self.widget_type, self.force_input = default, socketless, widget_type, force_input

    def as_dict(self):
        return super().as_dict() | _prune({"default": self.default, "socketless": self.socketless,
                                           "widgetType": self.widget_type, "forceInput": self.force_input})


class _Output:
    Parent = None

    def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name or id, tooltip, is_output_list

    @property
    def io_type(self):
        return self.Parent.io_type


def _prune(d):
    return {k: v for k, v in d.items() if v is not None}


def _comfytype(io_type, input_cls=_Input, output_cls=_Output, name=None):
    """A ComfyType: a class with io_type and its own Input / Output classes bound to it (as `comfytype` makes)."""
    cls = type(name or io_type.title(), (), {"io_type": io_type})
    cls.Input = type("Input", (input_cls,), {"Parent": cls})
    cls.Output = type("Output", (output_cls,), {"Parent": cls})
    return cls


class _IntInput(_WidgetInput):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                 max=None, step=None, control_after_generate=None, display_mode=None, socketless=None,
                 force_input=None, extra_dict=None, raw_link=None, advanced=None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                         extra_dict, raw_link, advanced)
        self.min, self.max, self.step = min, max, step
        self.control_after_generate, self.display_mode = control_after_generate, display_mode

    def as_dict(self):
        return super().as_dict() | _prune({"min": self.min, "max": self.max, "step": self.step,
                                           "control_after_generate": self.control_after_generate})


class _FloatInput(_WidgetInput):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                 max=None, step=None, round=None, display_mode=None, gradient_stops=None, socketless=None,
                 force_input=None, extra_dict=None, raw_link=None, advanced=None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                         extra_dict, raw_link, advanced)
        self.min, self.max, self.step, self.round = min, max, step, round

    def as_dict(self):
        return super().as_dict() | _prune({"min": self.min, "max": self.max, "step": self.step, "round": self.round})


class _StringInput(_WidgetInput):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, multiline=False,
                 placeholder=None, default=None, dynamic_prompts=None, socketless=None, force_input=None,
                 extra_dict=None, raw_link=None, advanced=None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                         extra_dict, raw_link, advanced)
        self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

    def as_dict(self):
        return super().as_dict() | _prune({"multiline": self.multiline, "placeholder": self.placeholder})


class _ComboInput(_WidgetInput):
    def __init__(self, id, options=None, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                 control_after_generate=None, upload=None, image_folder=None, remote=None, socketless=None,
                 extra_dict=None, raw_link=None, advanced=None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, None, extra_dict,
                         raw_link, advanced)
        self.multiselect, self.options, self.control_after_generate = False, options, control_after_generate

    def as_dict(self):
        return super().as_dict() | _prune({"multiselect": self.multiselect, "options": self.options,
                                           "control_after_generate": self.control_after_generate})


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    hidden: list = field(default_factory=list)
    description: str = ""
    search_aliases: list = field(default_factory=list)
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_dev_only: bool = False
    is_api_node: bool = False
    price_badge: Any = None
    not_idempotent: bool = False
    enable_expand: bool = False
    accept_all_inputs: bool = False
    essentials_category: str = None
    has_intermediate_output: bool = False

    def validate(self):
        ids = [i.id for i in self.inputs]
        out_ids = [o.id for o in self.outputs]
        if len(set(ids)) != len(ids) or len(set(out_ids)) != len(out_ids):
            raise ValueError(f"{self.node_id}: input and output ids must be unique")

    def finalize(self):
        for i, output in enumerate(self.outputs):
            if output.id is None:
                output.id = f"_{i}_{output.io_type}_"

    def get_v1_info(self):
        """The node as /object_info describes it (Schema.get_v1_info, create_input_dict_v1)."""
        inputs = {"required": {}}
        for i in self.inputs:
            d = i.as_dict()
            d.pop("optional", None)
            io_type = getattr(i, "widget_type", None) or i.io_type
            if io_type == "COMBO":  # V1 form of a combo: its options list in place of the type
                io_type = list(i.options)
            inputs.setdefault("optional" if i.optional else "required", {})[i.id] = (io_type, d)
        return {"input": inputs, "input_order": {k: list(v) for k, v in inputs.items()},
                "output": [o.io_type for o in self.outputs], "name": self.node_id,
                "display_name": self.display_name, "category": self.category}


class NodeOutput:
    def __init__(self, *args, ui=None, expand=None, block_execution=None):
        self.args, self.ui, self.expand, self.block_execution = args, ui, expand, block_execution

    @property
    def result(self):
        return self.args if self.args else None

    def __getitem__(self, index):
        return self.args[index]


class ComfyNode:
    SCHEMA = None

    @classmethod
    @abstractmethod
    def define_schema(cls):
        raise NotImplementedError

    @classmethod
    @abstractmethod
    def execute(cls, **kwargs):
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls):
        schema = cls.define_schema()
        schema.finalize()
        schema.validate()
        cls.SCHEMA = schema
        return schema


def _custom(io_type):
    return _comfytype(io_type, name="CustomComfyType")


def _make_io():
    io = types.ModuleType("comfy_api.latest.io")
    io.Schema, io.NodeOutput, io.ComfyNode, io.Custom = Schema, NodeOutput, ComfyNode, _custom
    io.Int = _comfytype("INT", _IntInput)
    io.Float = _comfytype("FLOAT", _FloatInput)
    io.String = _comfytype("STRING", _StringInput)
    io.Combo = _comfytype("COMBO", _ComboInput)
    for name, io_type in (("Image", "IMAGE"), ("Latent", "LATENT"), ("Conditioning", "CONDITIONING"),
                          ("Model", "MODEL"), ("Clip", "CLIP"), ("Vae", "VAE"), ("Mask", "MASK")):
        setattr(io, name, _comfytype(io_type, name=name))
    return io


class ComfyExtension(ABC):  # comfy_api/latest/__init__.py
    async def on_load(self) -> None:
        pass

    @abstractmethod
    async def get_node_list(self):
        ...


# ------------------------------------------------------------------------------ comfy/model_sampling.py
def time_snr_shift(alpha, t):
    if alpha == 1.0:
        return t
    return alpha * t / (1 + (alpha - 1) * t)


def _reshape_sigma(sigma, noise_dim):
    return sigma.view(()) if sigma.nelement() == 1 else sigma.view(sigma.shape[:1] + (1,) * (noise_dim - 1))


class EPS:
    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        sigma = _reshape_sigma(sigma, noise.ndim)
        noise = noise * torch.sqrt(1.0 + sigma ** 2.0) if max_denoise else noise * sigma
        noise += latent_image
        return noise

    def inverse_noise_scaling(self, sigma, latent):
        return latent


class CONST:
    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        sigma = _reshape_sigma(sigma, noise.ndim)
        s = getattr(self, "noise_scale", 1.0)
        return sigma * (s * noise) + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma, latent):
        sigma = _reshape_sigma(sigma, latent.ndim)
        return latent / (1.0 - sigma)


class ModelSamplingDiscreteFlow(torch.nn.Module):
    def __init__(self, shift=1.0, multiplier=1000):
        super().__init__()
        self.noise_scale = 1.0
        self.shift, self.multiplier = shift, multiplier
        self.register_buffer("sigmas", self.sigma((torch.arange(1, 1001, 1) / 1000) * multiplier))

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        return sigma * self.multiplier

    def sigma(self, timestep):
        return time_snr_shift(self.shift, timestep / self.multiplier)


class ModelSamplingDiscrete(torch.nn.Module):
    """The SD / SDXL discrete schedule ("linear" betas 0.00085 .. 0.012 over 1000 steps: make_beta_schedule)."""

    def __init__(self, linear_start=0.00085, linear_end=0.012, timesteps=1000):
        super().__init__()
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.sigma_data = 1.0
        self.register_buffer("sigmas", sigmas.float())
        self.register_buffer("log_sigmas", sigmas.log().float())

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    def sigma(self, timestep):
        t = torch.clamp(timestep.float().to(self.log_sigmas.device), min=0, max=(len(self.sigmas) - 1))
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp().to(timestep.device)


def model_sampling(sampling_cls, type_cls, **kwargs):
    """ComfyUI's model_base.model_sampling(): the sampling schedule class combined with the prediction type."""
    return type("ModelSampling", (sampling_cls, type_cls), {})(**kwargs)


# ----------------------------------------------------------------------------------- comfy/samplers.py
SAMPLER_NAMES = ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
                 "exp_heun_2_x0", "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive",
                 "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m",
                 "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun",
                 "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v",
                 "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
                 "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde",
                 "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2"]
SCHEDULER_NAMES = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                   "linear_quadratic", "kl_optimal"]


def simple_scheduler(model_sampling, steps):
    s = model_sampling
    sigs = []
    ss = len(s.sigmas) / steps
    for x in range(steps):
        sigs += [float(s.sigmas[-(1 + int(x * ss))])]
    sigs += [0.0]
    return torch.FloatTensor(sigs)


def normal_scheduler(model_sampling, steps, sgm=False, floor=False):
    s = model_sampling
    start, end = s.timestep(s.sigma_max), s.timestep(s.sigma_min)
    append_zero = True
    if math.isclose(float(s.sigma(end)), 0, abs_tol=0.00001):
        steps += 1
        append_zero = False
    timesteps = torch.linspace(start, end, steps)
    sigs = [float(s.sigma(ts)) for ts in timesteps]
    if append_zero:
        sigs += [0.0]
    return torch.FloatTensor(sigs)


def calculate_sigmas(model_sampling, scheduler_name, steps):
    handlers = {"simple": simple_scheduler, "normal": normal_scheduler}
    if scheduler_name not in handlers:
        raise ValueError(f"error invalid scheduler {scheduler_name} (this stand-in has: {', '.join(handlers)})")
    return handlers[scheduler_name](model_sampling, steps)


class KSampler:
    SCHEDULERS = SCHEDULER_NAMES
    SAMPLERS = SAMPLER_NAMES
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS = set(("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"))

    def __init__(self, model, steps, device, sampler=None, scheduler=None, denoise=None, model_options={}):
        self.model, self.device = model, device
        self.scheduler = scheduler if scheduler in self.SCHEDULERS else self.SCHEDULERS[0]
        self.sampler = sampler if sampler in self.SAMPLERS else self.SAMPLERS[0]
        self.set_steps(steps, denoise)

    def calculate_sigmas(self, steps):
        discard = self.sampler in self.DISCARD_PENULTIMATE_SIGMA_SAMPLERS
        sigmas = calculate_sigmas(self.model.get_model_object("model_sampling"), self.scheduler,
                                  steps + 1 if discard else steps)
        return torch.cat([sigmas[:-2], sigmas[-1:]]) if discard else sigmas

    def set_steps(self, steps, denoise=None):
        self.steps = steps
        if denoise is None or denoise > 0.9999:
            self.sigmas = self.calculate_sigmas(steps).to(self.device)
        else:
            self.sigmas = self.calculate_sigmas(int(steps / denoise)).to(self.device)[-(steps + 1):]


# ------------------------------------------- nodes.py common_ksampler (comfy/sample.py, samplers.py, k_diffusion)
def common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise=1.0,
                    disable_noise=False, start_step=None, last_step=None, force_full_denoise=False):
    """KSampler.sample's path for a stand-in model: sigmas, truncation at last_step, prepare_noise, process_in,
    noise_scaling (max_denoise at the largest σ), Euler steps (k_diffusion sample_euler: every sampler is Euler
    here) on `model.denoise(x, sigma)`, inverse_noise_scaling at the last σ, process_out."""
    latent_image = latent["samples"]
    noise = torch.randn(latent_image.size(), dtype=torch.float32, generator=torch.manual_seed(seed), device="cpu")
    if disable_noise:
        noise = torch.zeros_like(latent_image)
    sigmas = KSampler(model, steps, "cpu", sampler_name, scheduler, denoise).sigmas
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[:last_step + 1]
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None and start_step < len(sigmas) - 1:
        sigmas = sigmas[start_step:]
    ms = model.get_model_object("model_sampling")
    max_denoise = math.isclose(float(ms.sigma_max), float(sigmas[0]), rel_tol=1e-05) or float(sigmas[0]) > float(
        ms.sigma_max)
    x = ms.noise_scaling(sigmas[0], noise, model.process_latent_in(latent_image), max_denoise)
    for i in range(len(sigmas) - 1):
        denoised = model.denoise(x, sigmas[i])
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    x = ms.inverse_noise_scaling(sigmas[-1], x)
    out = dict(latent)
    out.pop("downscale_ratio_spacial", None)
    out["samples"] = model.process_latent_out(x.to(torch.float32))
    return (out,)


# ------------------------------------------------------------------------- comfy/model_management.py
class InterruptProcessingException(BaseException):
    pass


class _ModelManagement(types.ModuleType):
    """comfy.model_management as a CPU-only ComfyUI (--cpu) runs it. `free_bytes` sets what get_free_memory
    reports; `load_calls` records load_models_gpu's arguments."""

    OOM_EXCEPTION = torch.cuda.OutOfMemoryError
    InterruptProcessingException = InterruptProcessingException
    EXTRA_RESERVED_VRAM = 400 * 1024 * 1024

    def __init__(self, name):
        super().__init__(name)
        self.interrupt_processing = False
        self.interrupt_processing_mutex = threading.RLock()
        self.current_loaded_models = []
        self.load_calls = []
        self.free_bytes = 64 * 2**30

    def get_torch_device(self):
        return torch.device("cpu")

    def unet_offload_device(self):
        return torch.device("cpu")

    def intermediate_device(self):
        return torch.device("cpu")

    def intermediate_dtype(self):
        return torch.float32

    def extra_reserved_memory(self):
        return self.EXTRA_RESERVED_VRAM

    def minimum_inference_memory(self):
        return (1024 * 1024 * 1024) * 0.8 + self.extra_reserved_memory()

    def get_free_memory(self, dev=None, torch_free_too=False):
        return (self.free_bytes, self.free_bytes) if torch_free_too else self.free_bytes

    def module_size(self, module):
        return sum(t.nbytes for t in module.state_dict().values())

    def load_models_gpu(self, models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        self.load_calls.append({"models": list(models), "memory_required": memory_required,
                                "force_full_load": force_full_load})
        for m in models:
            m.model.to(m.load_device)
            m.model.device = m.load_device
            if m not in self.current_loaded_models:
                self.current_loaded_models.insert(0, m)

    def free_memory(self, memory_required, device, keep_loaded=[], for_dynamic=False, pins_required=0,
                    ram_required=0):
        return []

    def soft_empty_cache(self, force=False):
        pass  # cpu_mode(): nothing to empty

    def is_oom(self, e):
        return isinstance(e, self.OOM_EXCEPTION)

    def interrupt_current_processing(self, value=True):
        with self.interrupt_processing_mutex:
            self.interrupt_processing = value

    def processing_interrupted(self):
        with self.interrupt_processing_mutex:
            return self.interrupt_processing

    def throw_exception_if_processing_interrupted(self):
        with self.interrupt_processing_mutex:
            if self.interrupt_processing:
                self.interrupt_processing = False
                raise InterruptProcessingException()


# ----------------------------------------------------------------------------------- comfy/model_patcher.py
class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.size, self.model = size, model
        if not hasattr(self.model, "device"):
            self.model.device = offload_device
        self.load_device, self.offload_device = load_device, offload_device
        self.model_options = {"transformer_options": {}}
        self.parent = None
        if not hasattr(self.model, "model_loaded_weight_memory"):
            self.model.model_loaded_weight_memory = 0

    def is_dynamic(self):
        return False

    def model_size(self):
        if self.size > 0:
            return self.size
        self.size = sys.modules["comfy.model_management"].module_size(self.model)
        return self.size

    def loaded_size(self):
        return self.model.model_loaded_weight_memory

    def current_loaded_device(self):
        return self.model.device

    def detach(self, unpatch_all=True):
        self.model.to(self.offload_device)
        self.model.device = self.offload_device
        return self.model


# ------------------------------------------------------------------------------------------ comfy/utils.py
class _Utils(types.ModuleType):
    def __init__(self, name):
        super().__init__(name)
        self.PROGRESS_BAR_ENABLED = True
        self.PROGRESS_BAR_HOOK = None
        utils = self

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total, self.current, self.hook, self.node_id = total, 0, utils.PROGRESS_BAR_HOOK, node_id

            def update_absolute(self, value, total=None, preview=None):
                if total is not None:
                    self.total = total
                if value > self.total:
                    value = self.total
                self.current = value
                if self.hook is not None:
                    self.hook(self.current, self.total, preview, node_id=self.node_id)

            def update(self, value):
                self.update_absolute(self.current + value)

        self.ProgressBar = ProgressBar

    def set_progress_bar_global_hook(self, function):
        self.PROGRESS_BAR_HOOK = function


# ------------------------------------------------------------------------------------------ folder_paths.py
class _FolderPaths(types.ModuleType):
    supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

    def __init__(self, name, models_dir):
        super().__init__(name)
        self.models_dir = str(models_dir)
        self.folder_names_and_paths = {
            "diffusion_models": ([os.path.join(self.models_dir, "unet"), os.path.join(self.models_dir,
                                                                                      "diffusion_models")],
                                 self.supported_pt_extensions),
            "text_encoders": ([os.path.join(self.models_dir, "text_encoders")], self.supported_pt_extensions),
            "custom_nodes": ([], set()),
        }

    def add_model_folder_path(self, folder_name, full_folder_path, is_default=False):
        if folder_name in self.folder_names_and_paths:
            paths = self.folder_names_and_paths[folder_name][0]
            if full_folder_path not in paths:
                paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)
        else:
            self.folder_names_and_paths[folder_name] = ([full_folder_path], set())

    def get_folder_paths(self, folder_name):
        return self.folder_names_and_paths[folder_name][0][:]

    def get_filename_list(self, folder_name):
        paths, extensions = self.folder_names_and_paths[folder_name]
        found = set()
        for folder in paths:
            for dirpath, _, filenames in os.walk(folder, followlinks=True):
                for f in filenames:
                    rel = os.path.relpath(os.path.join(dirpath, f), folder)
                    if not extensions or os.path.splitext(rel)[-1].lower() in extensions:
                        found.add(rel)
        return sorted(found)

    def get_full_path(self, folder_name, filename):
        if folder_name not in self.folder_names_and_paths:
            return None
        filename = os.path.relpath(os.path.join("/", filename), "/")
        for folder in self.folder_names_and_paths[folder_name][0]:
            full_path = os.path.join(folder, filename)
            if os.path.isfile(full_path):
                return full_path
        return None

    def get_full_path_or_raise(self, folder_name, filename):
        path = self.get_full_path(folder_name, filename)
        if path is None:
            raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
        return path


# ------------------------------------------------------------------------------------------------ install
def install(models_dir) -> types.SimpleNamespace:
    """Puts the stand-in modules into sys.modules (replacing earlier ones) and returns them by short name."""
    comfy_api = types.ModuleType("comfy_api")
    latest = types.ModuleType("comfy_api.latest")
    latest.io, latest.ComfyExtension = _make_io(), ComfyExtension
    comfy_api.latest = latest
    comfy = types.ModuleType("comfy")
    mm = _ModelManagement("comfy.model_management")
    patcher = types.ModuleType("comfy.model_patcher")
    patcher.ModelPatcher = ModelPatcher
    sampling = types.ModuleType("comfy.model_sampling")
    for cls in (EPS, CONST, ModelSamplingDiscreteFlow, ModelSamplingDiscrete):
        setattr(sampling, cls.__name__, cls)
    sampling.time_snr_shift = time_snr_shift
    samplers = types.ModuleType("comfy.samplers")
    samplers.KSampler, samplers.calculate_sigmas = KSampler, calculate_sigmas
    samplers.SAMPLER_NAMES, samplers.SCHEDULER_NAMES = SAMPLER_NAMES, SCHEDULER_NAMES
    utils = _Utils("comfy.utils")
    for name, module in (("model_management", mm), ("model_patcher", patcher), ("model_sampling", sampling),
                         ("samplers", samplers), ("utils", utils)):
        setattr(comfy, name, module)
    folder_paths = _FolderPaths("folder_paths", models_dir)
    nodes = types.ModuleType("nodes")
    nodes.common_ksampler, nodes.MAX_RESOLUTION = common_ksampler, 16384
    modules = {"comfy_api": comfy_api, "comfy_api.latest": latest, "comfy": comfy, "comfy.model_management": mm,
               "comfy.model_patcher": patcher, "comfy.model_sampling": sampling, "comfy.samplers": samplers,
               "comfy.utils": utils, "folder_paths": folder_paths, "nodes": nodes}
    sys.modules.update(modules)
    return types.SimpleNamespace(io=latest.io, mm=mm, utils=utils, folder_paths=folder_paths, samplers=samplers,
                                 model_sampling=sampling, nodes=nodes, ComfyExtension=ComfyExtension)


def uninstall() -> None:
    for name in MODULES:
        sys.modules.pop(name, None)


# ------------------------------------------------------- core nodes the example workflows use (V1 /object_info)
_SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True})
CORE_NODES = {
    "UNETLoader": {  # nodes.py
        "required": {"unet_name": ("FILES:diffusion_models", {}),
                     "weight_dtype": (["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"], {})},
        "output": ["MODEL"]},
    "DualCLIPLoader": {  # nodes.py
        "required": {"clip_name1": ("FILES:text_encoders", {}), "clip_name2": ("FILES:text_encoders", {}),
                     "type": (["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image",
                               "hunyuan_video_15", "kandinsky5", "kandinsky5_image", "ltxv", "newbie", "ace"], {})},
        "optional": {"device": (["default", "cpu"], {})},
        "output": ["CLIP"]},
    "CLIPTextEncode": {  # nodes.py
        "required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP", {})},
        "output": ["CONDITIONING"]},
    "FluxGuidance": {  # comfy_extras/nodes_flux.py
        "required": {"conditioning": ("CONDITIONING", {}),
                     "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0})},
        "output": ["CONDITIONING"]},
    "EmptySD3LatentImage": {  # comfy_extras/nodes_sd3.py
        "required": {"width": ("INT", {"default": 1024, "min": 16, "max": 16384, "step": 16}),
                     "height": ("INT", {"default": 1024, "min": 16, "max": 16384, "step": 16}),
                     "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096})},
        "output": ["LATENT"]},
    "KSampler": {  # nodes.py
        "required": {"model": ("MODEL", {}), "seed": _SEED, "steps": ("INT", {"min": 1, "max": 10000}),
                     "cfg": ("FLOAT", {"min": 0.0, "max": 100.0}), "sampler_name": (SAMPLER_NAMES, {}),
                     "scheduler": (SCHEDULER_NAMES, {}), "positive": ("CONDITIONING", {}),
                     "negative": ("CONDITIONING", {}), "latent_image": ("LATENT", {}),
                     "denoise": ("FLOAT", {"min": 0.0, "max": 1.0})},
        "output": ["LATENT"]},
    "KSamplerAdvanced": {  # nodes.py
        "required": {"model": ("MODEL", {}), "add_noise": (["enable", "disable"], {}),
                     "noise_seed": _SEED, "steps": ("INT", {"min": 1, "max": 10000}),
                     "cfg": ("FLOAT", {"min": 0.0, "max": 100.0}), "sampler_name": (SAMPLER_NAMES, {}),
                     "scheduler": (SCHEDULER_NAMES, {}), "positive": ("CONDITIONING", {}),
                     "negative": ("CONDITIONING", {}), "latent_image": ("LATENT", {}),
                     "start_at_step": ("INT", {"min": 0, "max": 10000}),
                     "end_at_step": ("INT", {"min": 0, "max": 10000}),
                     "return_with_leftover_noise": (["disable", "enable"], {})},
        "output": ["LATENT"]},
    "SaveImage": {  # nodes.py
        "required": {"images": ("IMAGE", {}), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
        "output": [], "output_node": True},
}
