"""The PiD node pack in a real ComfyUI, end to end: the example workflows run and their images equal pid's decode.

    python scripts/comfyui_e2e.py --comfyui /path/to/ComfyUI [--core-pid] [--report out.json]

Run it with the Python environment that runs ComfyUI (ComfyUI's requirements, and pid-decoder installed in it).
Without a ComfyUI checkout it refuses (exit 2); nothing in the checkout is modified. In a temporary folder it
writes a tiny random FLUX.1-style LDM (ComfyUI's own Flux class, 1 double + 1 single block, width 128), a tiny
random PiD network (pid.archs.TINY) in models/pid, and caption embeddings for the prompt in pid's caption cache;
it adds the pack (this repository's comfyui/ folder, linked) through --extra-model-paths-config, and starts
`python main.py --cpu --listen 127.0.0.1 --port P`.

Each example workflow (comfyui/example_workflows/api/) is first checked as it is against the server's /object_info
(every node and input exists), then run with these substitutions, because no released weights are used: the LDM
file, the PiD file (and latent_format "flux": a random network names no variant), a 64x64 latent, and the two text
encoders replaced by a test node that makes random conditioning of the tiny LDM's width; a SaveLatent is added after
the LDM sampler. The saved PNG is compared with pid's decode (same pid, same process kind) of the saved latent at
the σ ComfyUI's own KSampler schedule gives at the stop step, quantised as SaveImage does.

--core-pid (ComfyUI with core PiD: comfy/ldm/pixeldit) also decodes one latent with core's PiD (the official
template's wiring: PiDConditioning, lcm sampler, BasicScheduler simple 4 steps; and with ManualSigmas set to the
distilled 0.999, 0.866, 0.634, 0.342) and with the pack, on the same random full-size v1.5 weights, and reports
times and agreement. It needs ~12 GB of memory and several minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "comfyui" / "example_workflows" / "api"
NAMES = ("pid_flux_ksampler", "pid_flux_early_stop", "pid_flux_ksampler_advanced")
PACK_NODES = ("PidLoader", "PidDecode", "PidEarlyStopKSampler", "PidLatentNoiseLevel")
LDM_FILE, PID_FILE, CORE_PID_FILE = "tiny-flux-e2e.safetensors", "pid-tiny-e2e.safetensors", "pid-full-random.safetensors"
LDM_WIDTH = 32  # the tiny LDM's text and pooled widths (its txt_in / vector_in inputs)
OFFICIAL_SIGMAS = (0.999, 0.866, 0.634, 0.342, 0.0)

# A test-only node pack: random conditioning of the tiny LDM's width (in place of FLUX's CLIP-L + T5), and caption
# embeddings read from a file as a CONDITIONING (what CLIPTextEncode with a pixeldit CLIP would give).
TEST_NODES = '''
import torch, safetensors.torch

class PidE2EConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True})}}
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "testing"

    def encode(self, text):
        g = torch.Generator().manual_seed(len(text))
        return ([[torch.randn(1, 8, WIDTH, generator=g), {"pooled_output": torch.randn(1, WIDTH, generator=g)}]],)

class PidE2ECaptionEmbeds:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"path": ("STRING", {})}}
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, path):
        return ([[safetensors.torch.load_file(path)["embeds"], {}]],)

NODE_CLASS_MAPPINGS = {"PidE2EConditioning": PidE2EConditioning, "PidE2ECaptionEmbeds": PidE2ECaptionEmbeds}
'''.replace("WIDTH", str(LDM_WIDTH))


# ----------------------------------------------------------------------------------------- preparation
def comfy_python(comfyui: Path, code: str) -> str:
    """Runs `code` in a fresh Python with the ComfyUI checkout importable (as --cpu); returns its stdout."""
    prelude = (f"import sys\nsys.path.insert(0, {str(comfyui)!r})\nfrom comfy.cli_args import args\n"
               "args.cpu = True\n")
    result = subprocess.run([sys.executable, "-c", prelude + code], cwd=comfyui, capture_output=True, text=True,
                            timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"ComfyUI helper failed:\n{result.stderr[-3000:]}")
    return result.stdout


def make_tiny_flux(comfyui: Path, path: Path) -> None:
    """A FLUX.1-dev-shaped LDM (guidance embedding) that ComfyUI's model detection recognises, random weights."""
    comfy_python(comfyui, f"""
import torch, comfy.ops
from safetensors.torch import save_file
from comfy.ldm.flux.model import Flux
torch.manual_seed(0)
m = Flux(image_model="flux", in_channels=16, out_channels=16, vec_in_dim={LDM_WIDTH}, context_in_dim={LDM_WIDTH},
         hidden_size=128, mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56],
         theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[], dtype=torch.float32,
         device="cpu", operations=comfy.ops.disable_weight_init)
sd = {{}}
for k, v in m.state_dict().items():
    if k.endswith("bias"):
        sd[k] = torch.zeros(v.shape)
    elif "norm" in k or k.endswith("scale"):
        sd[k] = torch.ones(v.shape)
    else:
        sd[k] = torch.randn(v.shape) / max(1, v.shape[-1]) ** 0.5
save_file(sd, {str(path)!r})
""")


def comfy_sigma(comfyui: Path, ldm: Path, sampler: str, scheduler: str, steps: int, step: int) -> float:
    """ComfyUI's own σ after `step` of `steps` for the LDM file (its KSampler sigma list)."""
    out = comfy_python(comfyui, f"""
import comfy.sd, comfy.samplers
model = comfy.sd.load_diffusion_model({str(ldm)!r})
print(repr(float(comfy.samplers.KSampler(model, {steps}, "cpu", {sampler!r}, {scheduler!r}, 1.0).sigmas[{step}])))
""")
    return float(out.strip().splitlines()[-1])


def prepare(work: Path, comfyui: Path, prompt: str, core_pid: bool) -> dict:
    import torch

    import pid
    from pid.archs import ARCHS, TINY, random_net
    from pid.captions import CaptionCache, encoder_cache_key
    from safetensors.torch import save_file

    models = work / "models"
    for sub in ("diffusion_models", "pid", "text_encoders"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("input", "custom_nodes", "user"):  # --base-directory: ComfyUI expects these there
        (work / sub).mkdir(exist_ok=True)
    pack_folder = work / "pack"
    pack_folder.mkdir()
    (pack_folder / "pid-decoder-nodes").symlink_to(REPO / "comfyui", target_is_directory=True)
    (pack_folder / "pid_e2e_testing").mkdir()
    (pack_folder / "pid_e2e_testing" / "__init__.py").write_text(TEST_NODES)
    yaml = work / "extra_model_paths.yaml"
    yaml.write_text(f"pid_e2e:\n    base_path: {work}\n    custom_nodes: pack\n    pid: models/pid\n")
    make_tiny_flux(comfyui, models / "diffusion_models" / LDM_FILE)
    pid.checkpoint.save_safetensors(pid.PidDecoder(random_net(TINY, seed=1)), models / "pid" / PID_FILE)
    cache = work / "pid-cache"
    embeds = torch.randn(300, TINY.txt_embed_dim, generator=torch.Generator().manual_seed(2)).bfloat16().float()
    CaptionCache(cache / "captions").put(encoder_cache_key(), prompt, embeds)
    out = {"yaml": yaml, "cache": cache, "caption_embeds": embeds}
    if core_pid:
        full = pid.PidDecoder(random_net(ARCHS["full"], seed=3))
        pid.checkpoint.save_safetensors(full, models / "diffusion_models" / CORE_PID_FILE)
        del full
        caption = torch.randn(1, 300, 2304, generator=torch.Generator().manual_seed(4)).bfloat16().float()
        save_file({"embeds": caption}, str(work / "core-caption.safetensors"))
        latent = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 + 0.1159
        save_file({"latent_tensor": latent, "latent_format_version_0": torch.tensor([])},
                  str(work / "input" / "core.latent"))
        out.update(core_caption=caption, core_latent=latent)
    return out


# --------------------------------------------------------------------------------------------- server
class Server:
    """`python main.py --cpu --listen 127.0.0.1 --port P` with the pack added; stopped on exit."""

    def __init__(self, comfyui: Path, work: Path, yaml: Path, env: dict):
        self.comfyui, self.work, self.yaml, self.env = comfyui, work, yaml, env
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.log = open(self.work / "server.log", "a")
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--extra-model-paths-config", str(self.yaml), "--base-directory", str(self.work),
               "--disable-auto-launch"]
        self.command = " ".join(cmd)
        self.process = subprocess.Popen(cmd, cwd=self.comfyui, stdout=self.log, stderr=subprocess.STDOUT,
                                        env=self.env)
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({self.process.returncode}); see {self.work / 'server.log'}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        raise RuntimeError(f"ComfyUI did not answer in 300 s; see {self.work / 'server.log'}")

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def run(self, graph: dict, timeout: float = 3600) -> dict:
        """POSTs the API-format graph, polls /history until it finished; its history entry, with wall seconds."""
        body = json.dumps({"prompt": graph, "client_id": str(uuid.uuid4())}).encode()
        request = urllib.request.Request(self.url + "/prompt", body, {"Content-Type": "application/json"})
        start = time.time()
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                prompt_id = json.loads(r.read())["prompt_id"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"/prompt refused the workflow: {e.read().decode()[:3000]}") from None
        while time.time() - start < timeout:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") != "success":
                    raise RuntimeError(f"the workflow failed: {json.dumps(entry['status'])[:3000]}")
                entry["wall_s"] = time.time() - start
                entry["exec_s"] = _execution_seconds(entry["status"])
                return entry
            time.sleep(0.5)
        raise RuntimeError(f"the workflow did not finish in {timeout} s")


def _execution_seconds(status: dict) -> "float | None":
    stamps = {m[0]: m[1].get("timestamp") for m in status.get("messages", [])}
    if stamps.get("execution_start") and stamps.get("execution_success"):
        return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0
    return None


# ------------------------------------------------------------------------------------------- workflows
def literal_check(object_info: dict, graph: dict) -> list[str]:
    """Problems of the workflow as shipped: node types or inputs the server does not have."""
    problems = []
    for node_id, node in graph.items():
        info = object_info.get(node["class_type"])
        if info is None:
            problems.append(f"node {node_id}: no node type {node['class_type']}")
            continue
        known = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        problems += [f"node {node_id} ({node['class_type']}): no input {name}" for name in node["inputs"]
                     if name not in known]
    return problems


def for_tiny_models(graph: dict, name: str) -> dict:
    """The example workflow with the substitutions the module docstring lists."""
    g = json.loads(json.dumps(graph))
    g["1"]["inputs"]["unet_name"] = LDM_FILE
    del g["2"]  # DualCLIPLoader
    for node_id in ("3", "5"):
        g[node_id] = {"class_type": "PidE2EConditioning", "inputs": {"text": g[node_id]["inputs"]["text"]}}
    g["6"]["inputs"].update(width=64, height=64)
    g["8"]["inputs"]["checkpoint"] = PID_FILE
    g["9"]["inputs"]["latent_format"] = "flux"
    g["10"]["inputs"]["filename_prefix"] = f"e2e/{name}"
    sampler = "11" if "11" in g else "7"  # the node whose LATENT PiD Decode takes
    g["20"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0], "filename_prefix": f"e2e/{name}"}}
    return g


def _saved(work: Path, entry: dict, node_id: str, kind: str) -> Path:
    item = entry["outputs"][node_id][kind][0]
    return work / "output" / item.get("subfolder", "") / item["filename"]


def _png(path: Path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path))


def as_saved_png(images):
    """pid's images [B, 3, H, W] in [-1, 1] as PiD Decode's IMAGE, then as SaveImage writes its pixels."""
    import numpy as np

    comfy_image = ((images.float() + 1) * 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    return np.clip(255. * comfy_image.cpu().numpy(), 0, 255).astype(np.uint8)


def compare(a, b) -> dict:
    import numpy as np

    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"equal": bool((diff == 0).all()), "max_abs": int(diff.max()), "pixels_differing": int((diff > 0).sum())}


def run_examples(server: Server, comfyui: Path, work: Path, prep: dict, report: dict) -> None:
    import pid
    from pid.latents import FluxLatent
    from pid.plan import resolve_precision
    from safetensors.torch import load_file

    info = server.get("/object_info")
    report["pack_nodes_registered"] = [n for n in PACK_NODES if n in info]
    report["templates"] = server.get("/workflow_templates")
    decoder = pid.load(work / "models" / "pid" / PID_FILE, precision=resolve_precision(None, device="cpu"))
    report["pid_precision"], report["pid_kernels"] = decoder.precision, pid._extension.available()
    images = {}
    for name in NAMES:
        shipped = json.loads((WORKFLOWS / f"{name}.json").read_text())
        entry = server.run(for_tiny_models(shipped, name))
        latent = load_file(str(_saved(work, entry, "20", "latents")))["latent_tensor"]
        png = _png(_saved(work, entry, "10", "images"))
        sigma = 0.0
        if name != "pid_flux_ksampler":
            sigma = comfy_sigma(comfyui, work / "models" / "diffusion_models" / LDM_FILE, "euler", "simple", 28, 24)
        z = FluxLatent().normalize(latent.float()) * (1 - sigma)  # ComfyUI's x / (1 - σ) back to x
        expected = decoder.decode(z, sigma=sigma, caption_embeds=prep["caption_embeds"], seed=0, progress=False)
        images[name] = png
        report["workflows"][name] = {
            "as_shipped": literal_check(info, shipped) or "every node type and input exists",
            "ran": True, "exec_s": entry["exec_s"], "latent_shape": list(latent.shape), "ldm_sigma_at_stop": sigma,
            "image_shape": list(png.shape), "vs_pid_decode": compare(png, as_saved_png(expected)[0])}
        print(name, json.dumps(report["workflows"][name]), flush=True)
    report["early_stop_equals_ksampler_advanced"] = compare(images["pid_flux_early_stop"],
                                                            images["pid_flux_ksampler_advanced"])


# ------------------------------------------------------------------------------------ core PiD vs the pack
def core_graph(sigma: float, seed: int, manual_sigmas: "str | None") -> dict:
    """The official template's wiring (Comfy-Org/workflow_templates utility_pid_latent_upscale_dit) on our files."""
    g = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": CORE_PID_FILE, "weight_dtype": "default"}},
        "2": {"class_type": "PidE2ECaptionEmbeds", "inputs": {"path": "CAPTION"}},
        "3": {"class_type": "LoadLatent", "inputs": {"latent": "core.latent"}},
        "4": {"class_type": "PiDConditioning", "inputs": {"positive": ["2", 0], "latent": ["3", 0],
                                                           "latent_format": "flux", "degrade_sigma": sigma}},
        "5": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}},
        "6": {"class_type": "EmptyChromaRadianceLatentImage", "inputs": {"width": 256, "height": 256,
                                                                          "batch_size": 1}},
        "7": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "lcm"}},
        "8": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": 4,
                                                          "denoise": 1.0}},
        "9": {"class_type": "SamplerCustom", "inputs": {"model": ["1", 0], "add_noise": True, "noise_seed": seed,
                                                         "cfg": 1.0, "positive": ["4", 0], "negative": ["5", 0],
                                                         "sampler": ["7", 0], "sigmas": ["8", 0],
                                                         "latent_image": ["6", 0]}},
        "10": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["10", 0]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "core/core"}},
    }
    if manual_sigmas is not None:
        g["8"] = {"class_type": "ManualSigmas", "inputs": {"sigmas": manual_sigmas}}
    return g


def pack_graph(sigma: float, seed: int) -> dict:
    return {
        "1": {"class_type": "PidLoader", "inputs": {"checkpoint": CORE_PID_FILE, "variant": "auto",
                                                     "precision": "float32", "attention": "default"}},
        "2": {"class_type": "PidE2ECaptionEmbeds", "inputs": {"path": "CAPTION"}},
        "3": {"class_type": "LoadLatent", "inputs": {"latent": "core.latent"}},
        "4": {"class_type": "PidDecode", "inputs": {"decoder": ["1", 0], "latent": ["3", 0], "latent_format": "flux",
                                                     "caption": "", "seed": seed, "sigma": sigma,
                                                     "max_memory_gb": 0.0, "conditioning": ["2", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "core/pack"}},
    }


def run_core_comparison(comfyui: Path, work: Path, prep: dict, env: dict, report: dict) -> None:
    import numpy as np

    sigma, seed = 0.2, 0
    caption = str(work / "core-caption.safetensors")
    runs = {"core_template_simple_4": core_graph(sigma, seed, None),
            "core_official_sigmas": core_graph(sigma, seed, ", ".join(map(str, OFFICIAL_SIGMAS))),
            "pack_pid_decode": pack_graph(sigma, seed)}
    images, out = {}, {}
    for name, graph in runs.items():
        graph["2"]["inputs"]["path"] = caption
        seed_node = "9" if name.startswith("core") else "4"
        again = json.loads(json.dumps(graph))
        again[seed_node]["inputs"]["noise_seed" if name.startswith("core") else "seed"] = seed + 1
        with Server(comfyui, work, prep["yaml"], env) as server:  # a fresh process each: one model in memory
            entry = server.run(graph)  # loads the weights, then decodes
            second = server.run(again)  # only the sampler / decode nodes run again: the decode alone
        node = "12" if name.startswith("core") else "5"
        images[name] = _png(_saved(work, entry, node, "images")).astype(np.float64)
        out[name] = {"first_run_exec_s": entry["exec_s"], "decode_only_exec_s": second["exec_s"]}
        print(name, out[name], flush=True)
    direct = pid_direct_decodes(work, prep, sigma, seed)
    out["pid_direct_float32_s"] = direct.pop("pid_seed_s")
    images.update(direct)
    pairs = [("pack_pid_decode", "pid_seed"), ("core_official_sigmas", "pid_with_cores_noise"),
             ("core_template_simple_4", "pid_with_cores_noise"), ("core_template_simple_4", "core_official_sigmas"),
             ("core_official_sigmas", "pack_pid_decode")]
    out["agreement"] = {f"{a} vs {b}": _agreement(images[a], images[b]) for a, b in pairs}
    out["core_sigmas_simple_4"] = [float(s) for s in json.loads(comfy_python(comfyui, f"""
import json, comfy.sd, comfy.samplers
model = comfy.sd.load_diffusion_model({str(work / 'models' / 'diffusion_models' / CORE_PID_FILE)!r})
print(json.dumps(comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 4).tolist()))
""").strip().splitlines()[-1])]
    out["official_sigmas"] = list(OFFICIAL_SIGMAS)
    report["core_pid"] = out


def pid_direct_decodes(work: Path, prep: dict, sigma: float, seed: int) -> dict:
    """pid's own decode of the core comparison's latent (float32): with its seed (what the pack's node must equal),
    and with the noise core's SamplerCustom + lcm draw for `seed` (comfy.sample.prepare_noise for the start, then
    k_diffusion's default_noise_sampler, seeded seed + 1 on the CPU, once per re-noising), so that what remains
    between core and pid is the schedule and the arithmetic."""
    import numpy as np
    import torch

    import pid
    from pid.latents import FluxLatent

    decoder = pid.load(work / "models" / "diffusion_models" / CORE_PID_FILE, precision="float32")
    z = FluxLatent().normalize(prep["core_latent"])
    shape = (1, 3, 256, 256)
    start = torch.randn(shape, dtype=torch.float32, generator=torch.manual_seed(seed), device="cpu")
    g = torch.Generator(device="cpu").manual_seed(seed + 1)
    renoise = [torch.randn(shape, dtype=torch.float32, generator=g) for _ in range(3)]
    out = {}
    t = time.perf_counter()
    out["pid_seed"] = decoder.decode(z, sigma=sigma, caption_embeds=prep["core_caption"], seed=seed, progress=False)
    out["pid_seed_s"] = time.perf_counter() - t
    out["pid_with_cores_noise"] = decoder.decode(z, sigma=sigma, caption_embeds=prep["core_caption"], noise=start,
                                                 step_noises=renoise, progress=False)
    return {k: (as_saved_png(v)[0].astype(np.float64) if not k.endswith("_s") else v) for k, v in out.items()}


def _agreement(a, b) -> dict:
    import numpy as np

    d = np.abs(a - b)
    mse = float((d ** 2).mean())
    return {"mean_abs_px": float(d.mean()), "max_abs_px": float(d.max()),
            "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))}


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_ROOT"),
                        help="a ComfyUI checkout (main.py, comfy/); default $COMFYUI_ROOT")
    parser.add_argument("--core-pid", action="store_true", help="also compare with ComfyUI's core PiD")
    parser.add_argument("--report", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    args = parser.parse_args(argv)
    if args.comfyui is None or not (Path(args.comfyui) / "main.py").is_file() or not (
            Path(args.comfyui) / "comfy").is_dir():
        print("comfyui_e2e: needs a ComfyUI checkout: --comfyui /path/to/ComfyUI (or $COMFYUI_ROOT); skipped",
              file=sys.stderr)
        return 2
    comfyui = Path(args.comfyui).resolve()
    prompt = json.loads((WORKFLOWS / f"{NAMES[0]}.json").read_text())["9"]["inputs"]["caption"]
    work = Path(tempfile.mkdtemp(prefix="pid-comfyui-e2e-"))
    report: dict = {"comfyui": str(comfyui), "python": sys.executable, "workflows": {}}
    try:
        import torch

        import pid

        report["torch"], report["pid"] = torch.__version__, pid.__version__
        prep = prepare(work, comfyui, prompt, args.core_pid)
        env = dict(os.environ, PID_CACHE_DIR=str(prep["cache"]), HF_HUB_OFFLINE="1")
        with Server(comfyui, work, prep["yaml"], env) as server:
            report["command"] = server.command
            run_examples(server, comfyui, work, prep, report)
        if args.core_pid:
            run_core_comparison(comfyui, work, prep, env, report)
    finally:
        if args.report:
            args.report.write_text(json.dumps(report, indent=1, default=str) + "\n")
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    ok = all(w.get("vs_pid_decode", {}).get("equal") for w in report["workflows"].values()) and \
        len(report["workflows"]) == len(NAMES)
    print(json.dumps(report, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
