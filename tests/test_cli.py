"""The `pid` command line."""

import json
import subprocess
import sys

import numpy as np
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


@pytest.fixture
def golden_files():
    folder = SHARED / "golden"
    if not (folder / "v15_net.weights.safetensors").is_file():
        pytest.skip("no golden folder")
    return folder


def test_decode_command_writes_pngs(tmp_path, golden_files):
    from PIL import Image
    from safetensors.torch import load_file, save_file

    io = load_file(str(golden_files / "v15_student.io.safetensors"))
    save_file({"latent": io["lq_latent"]}, str(tmp_path / "lat.safetensors"))
    save_file({"anything": io["y"][0].contiguous()}, str(tmp_path / "y.safetensors"))
    args = ["decode", str(tmp_path / "lat.safetensors"), "--checkpoint", str(golden_files / "v15_net.weights.safetensors"),
            "--config", str(golden_files / "v15_net.json"), "--caption-embeds", str(tmp_path / "y.safetensors"),
            "--sigma", "0,0.4", "--seed", "3", "--out", str(tmp_path / "out" / "img.png")]
    assert main(args) == 0
    import pid

    expected = pid.load(golden_files / "v15_net.weights.safetensors", config=json.loads(
        (golden_files / "v15_net.json").read_text())["net_kwargs"]).decode(
        io["lq_latent"], sigma=[0, 0.4], caption_embeds=io["y"][0], seed=3, output="numpy", progress=False)
    for i in range(2):
        img = Image.open(tmp_path / "out" / f"img_{i}.png")
        assert img.size == (96, 64)
        assert np.array_equal(expected[i], np.asarray(img))


def test_convert_round_trip(tmp_path, golden_files):
    import pid
    import torch

    out = tmp_path / "custom.safetensors"
    assert main(["convert", str(golden_files / "v15_net.ckpt.pth"), str(out), "--config",
                 str(golden_files / "v15_net.json")]) == 0
    a = pid.load(golden_files / "v15_net.ckpt.pth", config=json.loads((golden_files / "v15_net.json").read_text())["net_kwargs"])
    b = pid.load(out)  # the config travels in the metadata
    assert b.config == a.config
    for (k, va), (_, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert torch.equal(va, vb), k  # the .ckpt.pth values are bf16 already: lossless
