import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pid import _extension, golden

REPO = Path(__file__).resolve().parents[1]

needs_ext = pytest.mark.skipif(not _extension.available(), reason=f"no compiled pid._C: {_extension.LOAD_ERROR}")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
SHARED = REPO.parent / "shared"

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
