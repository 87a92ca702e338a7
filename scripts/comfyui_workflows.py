"""Writes the PiD node pack's example workflows, each in ComfyUI's two formats, from one description:

    comfyui/example_workflows/<name>.json       the UI (LiteGraph) format: the template browser lists these
    comfyui/example_workflows/api/<name>.json   the API format: POST {"prompt": ...} to a ComfyUI server's /prompt

(a) pid_flux_ksampler: FLUX.1-dev's KSampler (28 steps) -> PiD Decode (flux-v1.5, 1024² -> 4096²)
(b) pid_flux_early_stop: FLUX.1-dev stopped after 24 of 28 steps by PiD Early-Stop KSampler -> PiD Decode
(c) pid_flux_ksampler_advanced: KSamplerAdvanced (end_at_step 24 of 28, leftover noise) -> PiD Latent Noise
    Level -> PiD Decode; the same latent and noise level as (b)

    python scripts/comfyui_workflows.py           # (re)write the files
    python scripts/comfyui_workflows.py --check   # exit 1 if a file differs from what this script writes

The node inputs below are ComfyUI's (nodes.py, comfy_extras) and the pack's (pid.comfyui); tests/test_comfyui_workflows.py
checks both formats against them independently (tests/comfyui_stub.py). Edit this script, not the files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "comfyui" / "example_workflows"
PROMPT = ("a red fox standing in fresh snow at the edge of a birch forest, morning light, detailed fur, "
          "shallow depth of field")

# class_type -> (inputs in order: (name, type, kind), outputs: (name, type)). kind: "link" (a socket), "optional"
# (an optional socket), "widget", "seed" (a widget followed by the frontend's control_after_generate value).
NODE_TYPES = {
    "UNETLoader": ([("unet_name", "COMBO", "widget"), ("weight_dtype", "COMBO", "widget")], [("MODEL", "MODEL")]),
    "DualCLIPLoader": ([("clip_name1", "COMBO", "widget"), ("clip_name2", "COMBO", "widget"),
                        ("type", "COMBO", "widget"), ("device", "COMBO", "widget")], [("CLIP", "CLIP")]),
    "CLIPTextEncode": ([("clip", "CLIP", "link"), ("text", "STRING", "widget")], [("CONDITIONING", "CONDITIONING")]),
    "FluxGuidance": ([("conditioning", "CONDITIONING", "link"), ("guidance", "FLOAT", "widget")],
                     [("CONDITIONING", "CONDITIONING")]),
    "EmptySD3LatentImage": ([("width", "INT", "widget"), ("height", "INT", "widget"), ("batch_size", "INT", "widget")],
                            [("LATENT", "LATENT")]),
    "KSampler": ([("model", "MODEL", "link"), ("positive", "CONDITIONING", "link"),
                  ("negative", "CONDITIONING", "link"), ("latent_image", "LATENT", "link"), ("seed", "INT", "seed"),
                  ("steps", "INT", "widget"), ("cfg", "FLOAT", "widget"), ("sampler_name", "COMBO", "widget"),
                  ("scheduler", "COMBO", "widget"), ("denoise", "FLOAT", "widget")], [("LATENT", "LATENT")]),
    "KSamplerAdvanced": ([("model", "MODEL", "link"), ("positive", "CONDITIONING", "link"),
                          ("negative", "CONDITIONING", "link"), ("latent_image", "LATENT", "link"),
                          ("add_noise", "COMBO", "widget"), ("noise_seed", "INT", "seed"), ("steps", "INT", "widget"),
                          ("cfg", "FLOAT", "widget"), ("sampler_name", "COMBO", "widget"),
                          ("scheduler", "COMBO", "widget"), ("start_at_step", "INT", "widget"),
                          ("end_at_step", "INT", "widget"), ("return_with_leftover_noise", "COMBO", "widget")],
                         [("LATENT", "LATENT")]),
    "SaveImage": ([("images", "IMAGE", "link"), ("filename_prefix", "STRING", "widget")], []),
    "PidLoader": ([("checkpoint", "COMBO", "widget"), ("variant", "COMBO", "widget"), ("precision", "COMBO", "widget"),
                   ("attention", "COMBO", "widget")], [("decoder", "PID_DECODER")]),
    "PidDecode": ([("decoder", "PID_DECODER", "link"), ("latent", "LATENT", "link"),
                   ("conditioning", "CONDITIONING", "optional"), ("latent_format", "COMBO", "widget"),
                   ("caption", "STRING", "widget"), ("seed", "INT", "seed"), ("sigma", "FLOAT", "widget"),
                   ("max_memory_gb", "FLOAT", "widget")], [("IMAGE", "IMAGE")]),
    "PidEarlyStopKSampler": ([("model", "MODEL", "link"), ("positive", "CONDITIONING", "link"),
                              ("negative", "CONDITIONING", "link"), ("latent_image", "LATENT", "link"),
                              ("seed", "INT", "seed"), ("steps", "INT", "widget"), ("stop_at_step", "INT", "widget"),
                              ("cfg", "FLOAT", "widget"), ("sampler_name", "COMBO", "widget"),
                              ("scheduler", "COMBO", "widget")], [("LATENT", "LATENT")]),
    "PidLatentNoiseLevel": ([("model", "MODEL", "link"), ("latent", "LATENT", "link"),
                             ("sampler_name", "COMBO", "widget"), ("scheduler", "COMBO", "widget"),
                             ("steps", "INT", "widget"), ("end_at_step", "INT", "widget")], [("LATENT", "LATENT")]),
}


def _flux_front(graph: dict) -> None:
    """Nodes 1-6: FLUX.1-dev, its text encoders, the prompt (guidance 3.5), an empty negative, a 1024² latent."""
    graph[1] = ("UNETLoader", {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}, "Load FLUX.1-dev")
    graph[2] = ("DualCLIPLoader", {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors",
                                   "type": "flux", "device": "default"}, "FLUX text encoders")
    graph[3] = ("CLIPTextEncode", {"text": PROMPT, "clip": [2, 0]}, "Prompt")
    graph[4] = ("FluxGuidance", {"guidance": 3.5, "conditioning": [3, 0]}, "FluxGuidance")
    graph[5] = ("CLIPTextEncode", {"text": "", "clip": [2, 0]}, "Negative (unused at cfg 1)")
    graph[6] = ("EmptySD3LatentImage", {"width": 1024, "height": 1024, "batch_size": 1}, "1024x1024 latent")


def _pid_back(graph: dict, latent_node: int) -> None:
    """Nodes 8-10: PiD Loader (flux-v1.5 from the Hub), PiD Decode of `latent_node`'s LATENT, Save Image."""
    graph[8] = ("PidLoader", {"checkpoint": "hf:flux-v1.5", "variant": "auto", "precision": "auto",
                              "attention": "default"}, "PiD Loader")
    graph[9] = ("PidDecode", {"decoder": [8, 0], "latent": [latent_node, 0], "latent_format": "auto",
                              "caption": PROMPT, "seed": 0, "sigma": 0.0, "max_memory_gb": 0.0}, "PiD Decode (4x)")
    graph[10] = ("SaveImage", {"images": [9, 0], "filename_prefix": "pid"}, "Save Image")


def _sampler_inputs(**extra) -> dict:
    return {"model": [1, 0], "positive": [4, 0], "negative": [5, 0], "latent_image": [6, 0], "cfg": 1.0,
            "sampler_name": "euler", "scheduler": "simple", **extra}


def workflows() -> dict[str, dict]:
    """name -> {node id: (class_type, inputs, title)}; an input [node, slot] is a link."""
    out = {}
    graph: dict = {}
    _flux_front(graph)
    graph[7] = ("KSampler", _sampler_inputs(seed=0, steps=28, denoise=1.0), "KSampler (28 steps)")
    _pid_back(graph, 7)
    out["pid_flux_ksampler"] = graph
    graph = {}
    _flux_front(graph)
    graph[7] = ("PidEarlyStopKSampler", _sampler_inputs(seed=0, steps=28, stop_at_step=24),
                "PiD Early-Stop KSampler (24 of 28)")
    _pid_back(graph, 7)
    out["pid_flux_early_stop"] = graph
    graph = {}
    _flux_front(graph)
    graph[7] = ("KSamplerAdvanced", _sampler_inputs(add_noise="enable", noise_seed=0, steps=28, start_at_step=0,
                                                    end_at_step=24, return_with_leftover_noise="enable"),
                "KSamplerAdvanced (stops at 24 of 28)")
    graph[11] = ("PidLatentNoiseLevel", {"model": [1, 0], "latent": [7, 0], "sampler_name": "euler",
                                         "scheduler": "simple", "steps": 28, "end_at_step": 24},
                 "PiD Latent Noise Level")
    _pid_back(graph, 11)
    out["pid_flux_ksampler_advanced"] = graph
    return out


def api_format(graph: dict) -> dict:
    return {str(i): {"inputs": {k: ([str(v[0]), v[1]] if isinstance(v, list) else v) for k, v in inputs.items()},
                     "class_type": cls, "_meta": {"title": title}} for i, (cls, inputs, title) in sorted(graph.items())}


def ui_format(graph: dict) -> dict:
    """LiteGraph's format (what ComfyUI's Save writes): nodes with their sockets and widget values, and links
    [id, from node, from slot, to node, to socket, type]."""
    links, outputs_links, nodes = [], {}, []
    for n, (i, (cls, inputs, title)) in enumerate(sorted(graph.items())):
        spec_inputs, spec_outputs = NODE_TYPES[cls]
        sockets, widgets = [], []
        for name, io_type, kind in spec_inputs:
            if kind in ("link", "optional"):
                socket = {"name": name, "type": io_type, "link": None}
                if name in inputs:
                    src, slot = inputs[name]
                    socket["link"] = len(links) + 1
                    links.append([socket["link"], src, slot, i, len(sockets), NODE_TYPES[graph[src][0]][1][slot][1]])
                    outputs_links.setdefault((src, slot), []).append(socket["link"])
                if kind == "optional":
                    socket["shape"] = 7  # the frontend's mark of an optional socket
                sockets.append(socket)
            else:
                widgets.append(inputs[name])
                if kind == "seed":
                    widgets.append("fixed")
        nodes.append({"id": i, "type": cls, "pos": [40 + 380 * (n % 4), 60 + 320 * (n // 4)], "size": [340, 260],
                      "flags": {}, "order": n, "mode": 0, "title": title, "inputs": sockets,
                      "outputs": [{"name": name, "type": io_type, "slot_index": slot}
                                  for slot, (name, io_type) in enumerate(spec_outputs)],
                      "properties": {"Node name for S&R": cls}, "widgets_values": widgets})
    for node in nodes:
        for slot, output in enumerate(node["outputs"]):
            output["links"] = outputs_links.get((node["id"], slot), [])
    return {"last_node_id": max(graph), "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4}


def files() -> dict[Path, str]:
    out = {}
    for name, graph in workflows().items():
        out[FOLDER / f"{name}.json"] = json.dumps(ui_format(graph), indent=1) + "\n"
        out[FOLDER / "api" / f"{name}.json"] = json.dumps(api_format(graph), indent=1) + "\n"
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the files instead of writing them")
    args = parser.parse_args(argv)
    stale = []
    for path, text in files().items():
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{path.relative_to(REPO)} differs from what scripts/comfyui_workflows.py writes", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
