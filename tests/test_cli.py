"""The `pid` command line."""

import json
import subprocess
import sys

import numpy as np
import pytest

import pid
from pid.cli import main



def run_pid(*args: str) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a separate process."""
    return subprocess.run([sys.executable, "-m", "pid", *map(str, args)], capture_output=True, text=True)


def test_version_via_python_m():
    out = run_pid("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"pid-decoder {pid.__version__} (import name pid)"


def test_variants_json(capsys):
    assert main(["variants", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["siglip-2k"]["sr_scale"] == 8 and len(data) == 13


def test_info_with_config_and_errors(tiny_checkpoint):
    ckpt, config = tiny_checkpoint.pth, tiny_checkpoint.config_json
    out = run_pid("info", ckpt, "--config", config, "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["variant"] is None and info["parameters"] > 0 and info["config"]["hidden_size"] == 64
    # without a config the tiny network matches no released variant: a clear error, exit code 2
    out = run_pid("info", ckpt)
    assert out.returncode == 2 and "no released PiD variant matches" in out.stderr
    # an unknown --variant: tests/test_bad_input.py's CLI case "unknown variant"


def test_selftest():
    out = run_pid("selftest")
    assert out.returncode == 0, out.stderr
    assert "selftest passed" in out.stderr and "decodes a synthetic latent" in out.stderr


@pytest.fixture
def tiny_files(tiny_checkpoint, tmp_path):
    """The tiny network's checkpoint and config, a latent of 2 samples and caption embeddings, as files."""
    from safetensors.torch import save_file
    import torch

    g = torch.Generator().manual_seed(5)
    latent = torch.randn(2, 16, 2, 3, generator=g)
    y = torch.randn(12, 32, generator=g)
    save_file({"latent": latent}, str(tmp_path / "lat.safetensors"))
    save_file({"anything": y}, str(tmp_path / "y.safetensors"))
    return dict(latent=latent, y=y, ckpt=tiny_checkpoint.safetensors, config=tiny_checkpoint.config_json,
                kwargs=tiny_checkpoint.kwargs, latent_file=tmp_path / "lat.safetensors", y_file=tmp_path / "y.safetensors")


def test_decode_command_writes_pngs(tmp_path, tiny_files):
    from PIL import Image

    f = tiny_files
    out = run_pid("decode", f["latent_file"], "--checkpoint", f["ckpt"], "--config", f["config"],
                  "--caption-embeds", f["y_file"], "--sigma", "0,0.4", "--seed", "3", "--out", tmp_path / "out" / "img.png")
    assert out.returncode == 0, out.stderr
    import pid

    expected = pid.load(f["ckpt"], config=f["kwargs"]).decode(f["latent"], sigma=[0, 0.4], caption_embeds=f["y"], seed=3,
                                                               output="numpy", progress=False)
    for i in range(2):
        img = Image.open(tmp_path / "out" / f"img_{i}.png")
        assert img.size == (96, 64)
        assert np.array_equal(expected[i], np.asarray(img))


def test_decode_command_attention_options(tmp_path, tiny_files):
    # --window and --attention reach the network: the PNG equals the API decode with the same settings.
    from PIL import Image
    from safetensors.torch import save_file

    import pid

    f = tiny_files
    save_file({"latent": f["latent"][:1]}, str(tmp_path / "one.safetensors"))
    out = run_pid("decode", tmp_path / "one.safetensors", "--checkpoint", f["ckpt"], "--config", f["config"],
                  "--caption-embeds", f["y_file"], "--window", "2", "--attention", "sdpa", "--out", tmp_path / "w.png")
    assert out.returncode == 0, out.stderr
    decoder = pid.load(f["ckpt"], config=f["kwargs"], attention="sdpa")
    windowed = decoder.decode(f["latent"][:1], caption_embeds=f["y"], window=2, output="numpy", progress=False)
    plain = decoder.decode(f["latent"][:1], caption_embeds=f["y"], output="numpy", progress=False)
    got = np.asarray(Image.open(tmp_path / "w.png"))
    assert np.array_equal(windowed[0], got) and not np.array_equal(plain[0], got)


def test_convert_round_trip(tmp_path, tiny_checkpoint):
    import pid
    import torch

    out = tmp_path / "custom.safetensors"
    proc = run_pid("convert", tiny_checkpoint.pth, out, "--config", tiny_checkpoint.config_json)
    assert proc.returncode == 0, proc.stderr
    a = pid.load(tiny_checkpoint.pth, config=tiny_checkpoint.kwargs)
    b = pid.load(out)  # the config travels in the metadata
    assert b.config == a.config
    for (k, va), (_, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert torch.equal(va, vb), k  # the .pth values are bf16 already: lossless


def test_bench_command(tmp_path):
    from pid.archs import ARCHS
    from pid.flops import decode_flops
    from pid.memory import estimate_memory
    from pid.nn import PidNet

    bf16_weights = 2 * sum(p.numel() for p in PidNet(ARCHS["tiny"]).parameters())

    out = run_pid("bench", "--arch", "tiny", "--sizes", "64,96", "--repeats", "2", "--warmup", "0",
                  "--json", tmp_path / "bench.json")
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["precision"] == "fast" and [r["size"] for r in data["rows"]] == [64, 96]
    for r in data["rows"]:
        assert r["tflop"] == pytest.approx(decode_flops(ARCHS["tiny"], r["size"], r["size"], 4) / 1e12)
        assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["estimate_gib"] == pytest.approx(estimate_memory(ARCHS["tiny"], r["size"], r["size"], 1, "fast").peak
                                                  / 2**30)
        assert r["peak_gib"] * 2**30 > bf16_weights  # the bf16 weights plus the decode's tensors
    assert " 96 " in out.stdout and "peak GiB" in out.stdout
    assert data["attention"] == "kernel" and data["window"] is None  # the CPU defaults
    out = run_pid("bench", "--arch", "tiny", "--sizes", "64", "--repeats", "1", "--warmup", "0", "--no-memory",
                  "--window", "2", "--attention", "auto", "--json", tmp_path / "bench2.json")
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "bench2.json").read_text())
    assert data["attention"] == "auto" and data["window"] == 2 and "attention auto, window 2" in out.stdout
    # --sizes 100: tests/test_bad_input.py's CLI case "bench sizes"
    bad = run_pid("bench", "--arch", "tiny", "--sizes", "64", "--cuda-graph")
    assert bad.returncode == 2 and "--cuda-graph needs --device cuda" in bad.stderr


def test_compare_command(tmp_path, tiny_files):
    """pid compare: each regime against the baseline with identical noise; the baseline against itself is exact, the
    others are the decodes pid.load(precision=...) gives."""
    f = tiny_files
    out = run_pid("compare", f["latent_file"], "--checkpoint", f["ckpt"], "--config", f["config"], "--caption-embeds",
                  f["y_file"], "--precisions", "fast,float32", "--seed", "2", "--json", tmp_path / "c.json")
    assert out.returncode == 0, out.stderr
    rows = {r["precision"]: r for r in json.loads((tmp_path / "c.json").read_text())["rows"]}
    assert list(rows) == ["reference", "fast", "float32"] and rows["reference"]["psnr_db"] == float("inf")
    from pid.compare import psnr

    decode = {p: pid.load(f["ckpt"], config=f["kwargs"], precision=p).decode(f["latent"], caption_embeds=f["y"], seed=2,
                                                                              progress=False)
              for p in rows}
    for p in ("fast", "float32"):
        assert rows[p]["psnr_db"] == pytest.approx(psnr(decode[p], decode["reference"]))
        assert 20 < rows[p]["psnr_db"] < float("inf")
    assert "PSNR dB" in out.stdout
    bad = run_pid("compare", f["latent_file"], "--checkpoint", f["ckpt"], "--caption-embeds", f["y_file"],
                  "--precisions", "int8")
    assert bad.returncode == 2 and "precision 'int8'" in bad.stderr
