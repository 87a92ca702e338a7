import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from pid import _extension, golden

REPO = Path(__file__).resolve().parents[1]

needs_ext = pytest.mark.skipif(not _extension.available(), reason=f"no compiled pid._C: {_extension.LOAD_ERROR}")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
SHARED = REPO.parent / "shared"

# Decoders keep caption embeddings in $PID_CACHE_DIR/captions: the tests' (and their subprocesses') go to a temporary
# folder, removed at exit, never to the user's cache. Set before any test module is imported (some copy os.environ).
_CACHE_DIR = tempfile.TemporaryDirectory(prefix="pid-tests-cache-")
os.environ["PID_CACHE_DIR"] = _CACHE_DIR.name

if os.environ.get("PID_FATAL_STACKS") == "1":
    # C++ stack traces of every thread on SIGSEGV and the like (benchmarks/device/run.sh sets this: a crash
    # seen once on a GPU left only a Python traceback).
    torch._C._set_print_stack_traces_on_fatal_signal(True)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    folder = golden.find_golden_dir(SHARED / "golden")
    if folder is None or not folder.is_dir():
        pytest.skip(f"golden parity data not found (looked in ${golden.ENV_VAR} and {SHARED / 'golden'})")
    return folder


@pytest.fixture(scope="session")
def shapes_file() -> Path:
    path = SHARED / "spec" / "pid_state_dict_shapes.json"
    if not path.is_file():
        pytest.skip(f"state-dict shapes file not found at {path}")
    return path


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def run_without_extension(tmp_path: Path, inputs, body: str):
    """Runs `body` in a fresh Python with PID_DISABLE_EXTENSION=1 (the PyTorch fallback of every op). `body` sees
    the tensors `inputs` as `inp` (and `torch`, `pid.ops`), sets `out`; returns out."""
    torch.save(inputs, tmp_path / "in.pt")
    code = ("import sys, torch, pid._extension as e, pid.ops\n"
            "assert not e.available(), 'extension loaded despite PID_DISABLE_EXTENSION=1'\n"
            "inp = torch.load(sys.argv[1])\n" + body + "\ntorch.save(out, sys.argv[2])\n")
    env = dict(os.environ, PID_DISABLE_EXTENSION="1")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "in.pt"), str(tmp_path / "out.pt")], env=env, check=True)
    return torch.load(tmp_path / "out.pt")


@dataclass(frozen=True)
class TinyCheckpoint:
    """The tiny test network (pid.archs.TINY, random weights holding bf16 values) in the released file layouts."""

    weights: dict  # float32 state dict with reference names, including the training-only aux-head keys
    kwargs: dict  # the reference PidNet constructor arguments
    pth: Path  # `net.`-prefixed bf16 tensors in a torch.save file, as model_ema_bf16.pth
    safetensors: Path  # the same, un-prefixed, as .safetensors
    config_json: Path  # {"net_kwargs": kwargs}, as a golden case's JSON


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> TinyCheckpoint:
    from safetensors.torch import save_file

    from pid.archs import TINY, random_net

    weights = dict(random_net(TINY).state_dict())
    hd = TINY.lq_hidden_dim  # the aux RGB head that training exports keep and inference never reads
    g = torch.Generator().manual_seed(1)
    weights.update({"lq_proj.lq_aux_rgb_head.0.weight": torch.randn(hd, generator=g),
                    "lq_proj.lq_aux_rgb_head.3.weight": torch.randn(TINY.aux_rgb_channels, hd, generator=g)})
    weights = {k: v.bfloat16().float() for k, v in weights.items()}
    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    torch.save({"net." + k: v.bfloat16() for k, v in weights.items()}, folder / "model_ema_bf16.pth")
    save_file({k: v.bfloat16().contiguous() for k, v in weights.items()}, str(folder / "tiny.safetensors"))
    kwargs = TINY.to_reference_kwargs()
    (folder / "tiny.json").write_text(json.dumps({"net_kwargs": kwargs}))
    return TinyCheckpoint(weights, kwargs, folder / "model_ema_bf16.pth", folder / "tiny.safetensors",
                          folder / "tiny.json")
