"""The `pid` command line."""

import json
import subprocess
import sys

import pytest

import pid
from pid.cli import main

from conftest import SHARED


def test_version_via_python_m():
    out = subprocess.run([sys.executable, "-m", "pid", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"pid {pid.__version__}"


def test_variants_json(capsys):
    assert main(["variants", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["siglip-2k"]["sr_scale"] == 8 and len(data) == 13


def test_info_with_config_and_errors(capsys):
    folder = SHARED / "golden"
    if not (folder / "v15_net.ckpt.pth").is_file():
        pytest.skip("no golden folder")
    assert main(["info", str(folder / "v15_net.ckpt.pth"), "--config", str(folder / "v15_net.json"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["variant"] is None and info["parameters"] > 0 and info["config"]["hidden_size"] == 64
    # without a config the tiny golden network matches no released variant: a clear error, exit code 2
    assert main(["info", str(folder / "v15_net.ckpt.pth")]) == 2
    assert main(["info", str(folder / "v15_net.ckpt.pth"), "--variant", "nope"]) == 2


def test_selftest(capsys):
    assert main(["selftest"]) == 0
