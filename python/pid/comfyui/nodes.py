"""PiD Loader and PiD Decode, in ComfyUI's V3 node API. Their node ids, input ids and types are a stable interface:
saved workflows name them."""

from __future__ import annotations

import logging
from typing import Optional

import torch
from comfy_api.latest import io

import comfy.model_management as mm

from ..errors import PidError
from ..variants import VARIANTS
from .latents import FAMILIES, TRAINED_SIGMA, family_of, to_comfy_image, to_pid_latent
from .memory import GIB, decode_within_memory
from .model import ATTENTION, PRECISIONS, PidModel, checkpoint_choices, load_pid_model

log = logging.getLogger(__name__)

CATEGORY = "pid"
PidDecoderType = io.Custom("PID_DECODER")


class PidLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PidLoader",
            display_name="PiD Loader",
            category=CATEGORY,
            description="Loads a PiD pixel-diffusion decoder (pid-decoder) for PiD Decode.",
            inputs=[
                io.Combo.Input("checkpoint", options=checkpoint_choices(),
                               tooltip="A file in models/pid (or a *pid* file in models/diffusion_models), or a "
                                       "released variant, hf:<name>: from the Hugging Face cache, else downloaded "
                                       "once (the weights are NSCLv1, non-commercial)."),
                io.Combo.Input("variant", options=["auto", *VARIANTS], default="auto",
                               tooltip="The released variant a file holds when its weights cannot tell (FLUX.1 and "
                                       "Qwen-Image v1.5 decoders have the same shapes); auto: from the file."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                               tooltip="fast: bf16 weights and math with pid's kernels (auto on a GPU); float32: "
                                       "float32 throughout; reference: the official float32 weights + bf16 math."),
                io.Combo.Input("attention", options=list(ATTENTION), default="default", advanced=True,
                               tooltip="Global-attention back end; default: the device's."),
            ],
            outputs=[PidDecoderType.Output(display_name="decoder")],
        )

    @classmethod
    def execute(cls, checkpoint: str, variant: str, precision: str, attention: str = "default") -> io.NodeOutput:
        return io.NodeOutput(load_pid_model(checkpoint, variant, precision, attention))


class PidDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PidDecode",
            display_name="PiD Decode",
            category=CATEGORY,
            description="Decodes an LDM's latent into an image 4x larger with PiD (in place of VAE Decode). A latent "
                        "from PiD Early-Stop KSampler or PiD Latent Noise Level brings its own noise level.",
            inputs=[
                PidDecoderType.Input("decoder"),
                io.Latent.Input("latent", tooltip="The LDM's latent, as a KSampler returns it."),
                io.Combo.Input("latent_format", options=["auto", *FAMILIES], default="auto",
                               tooltip="The LDM's latent space; auto: the decoder's variant's (flux: FLUX.1 and "
                                       "Z-Image)."),
                io.String.Input("caption", multiline=True, default="",
                                tooltip="The image's caption, encoded with Gemma-2 through pid's caption cache "
                                        "(pip install 'pid-decoder[text]'); empty: PiD's 'no caption'. Ignored "
                                        "when conditioning is connected."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                io.Float.Input("sigma", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="The latent's noise level in PiD's frame, typed by hand (0: a finished "
                                       "latent). Leave 0 for a latent from the PiD early-stop nodes: it carries "
                                       "its own."),
                io.Float.Input("max_memory_gb", default=0.0, min=0.0, max=4096.0, step=0.5,
                               tooltip="Memory the decode may use, weights included (GiB); it is split to fit. "
                                       "0: what ComfyUI has free after unloading what it can."),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="Caption embeddings from CLIPTextEncode with a pixeldit CLIP "
                                              "(Gemma-2), used in place of caption."),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, decoder: PidModel, latent: dict, latent_format: str, caption: str, seed: int, sigma: float,
                max_memory_gb: float, conditioning: Optional[list] = None) -> io.NodeOutput:
        mm.throw_exception_if_processing_interrupted()
        pid_decoder = decoder.decoder
        family = family_of(latent_format, pid_decoder)
        z, pid_sigma, record = to_pid_latent(latent, family, sigma)
        if record is not None:
            log.info("PiD Decode: latent stopped at step %d of %d, LDM sigma %.4f -> PiD sigma %.4f", record["step"],
                     record["steps"], record["sigma"], pid_sigma)
        if pid_sigma > TRAINED_SIGMA:
            log.warning("PiD Decode: sigma %.3f is above %.1f, the largest PiD was trained on: stop the LDM later",
                        pid_sigma, TRAINED_SIGMA)
        captions = caption_arguments(caption, conditioning, pid_decoder.config.txt_embed_dim)
        B, _, h, w = z.shape
        H, W = pid_decoder.config.output_size(h, w)

        def run(budget: int, callback) -> torch.Tensor:
            return pid_decoder.decode(z, sigma=pid_sigma, seed=seed, max_memory=budget, callback=callback,
                                      progress=False, **captions)

        images = decode_within_memory(decoder, run, height=H, width=W, batch=B,
                                      max_memory=int(max_memory_gb * GIB) if max_memory_gb > 0 else None)
        return io.NodeOutput(to_comfy_image(images).to(mm.intermediate_device()))


def caption_arguments(caption: str, conditioning: Optional[list], dim: int) -> dict:
    """`decode`'s caption keywords: the CONDITIONING's embeddings when connected, else the caption text."""
    if conditioning is None:
        return {"caption": caption}
    if not isinstance(conditioning, list) or len(conditioning) != 1:
        raise PidError(f"conditioning must hold one caption encoding (from one CLIPTextEncode), it holds "
                       f"{len(conditioning) if isinstance(conditioning, list) else type(conditioning).__name__}; "
                       "combined or concatenated conditionings are not captions PiD takes")
    embeds = conditioning[0][0]
    if not isinstance(embeds, torch.Tensor) or embeds.ndim != 3 or embeds.shape[-1] != dim:
        shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise PidError(f"the conditioning is {shape}, but PiD takes Gemma-2 caption embeddings [B, 300, {dim}]: "
                       "encode the caption with CLIPLoader type 'pixeldit' and CLIPTextEncode, or leave conditioning "
                       "unconnected and type the caption")
    if caption.strip():
        log.warning("PiD Decode: conditioning is connected, so the caption text is not used")
    return {"caption_embeds": embeds.detach().to("cpu", torch.float32)}


__all__ = ["CATEGORY", "PidDecode", "PidDecoderType", "PidLoader", "caption_arguments"]
