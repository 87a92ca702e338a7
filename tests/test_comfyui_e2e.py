"""scripts/comfyui_e2e.py: the pack in a real ComfyUI. It runs only where a ComfyUI checkout is given
($COMFYUI_ROOT, with ComfyUI's requirements and pid installed in this Python; ComfyUI is not on PyPI, so CI has
none); without one the script refuses with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "comfyui_e2e.py"


def test_the_script_refuses_without_a_comfyui_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_ROOT"}
    result = subprocess.run([sys.executable, str(SCRIPT), "--comfyui", str(tmp_path)], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 2 and "needs a ComfyUI checkout" in result.stderr


@pytest.mark.skipif(not os.environ.get("COMFYUI_ROOT"), reason="set COMFYUI_ROOT to a ComfyUI checkout to run the "
                    "example workflows in a real ComfyUI")
def test_example_workflows_in_a_real_comfyui(tmp_path):
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--report", str(report)], capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    workflows = json.loads(report.read_text())["workflows"]
    assert len(workflows) == 3 and all(w["vs_pid_decode"]["equal"] for w in workflows.values())
