"""Hostile input: every user error is one line naming the problem and the fix (exit code 2 on the command line, no
traceback), nothing is lost on a failed or interrupted write, no NaN image. (No op returns uninitialised memory for
inputs on two devices: tests/test_ops_contract.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import pid
from pid.errors import (CaptionEmbedsError, CheckpointError, ConfigError, LatentError, MemoryBudgetError,
                        NonFiniteOutputError, PidError)

ENV = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")


def run_pid(*args, cwd=None, preexec_fn=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pid", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env or ENV, preexec_fn=preexec_fn)


@pytest.fixture(scope="module")
def files(tiny_checkpoint, tmp_path_factory):
    """The tiny network's files and a set of bad ones, in one folder (the commands run there)."""
    d = tmp_path_factory.mktemp("hostile")
    g = torch.Generator().manual_seed(2)
    save_file({"latent": torch.randn(1, 16, 2, 3, generator=g)}, str(d / "lat.safetensors"))
    save_file({"latent": torch.full((1, 16, 2, 3), 1e30)}, str(d / "huge.safetensors"))
    save_file({"a": torch.zeros(1, 16, 2, 3), "b": torch.zeros(1)}, str(d / "two.safetensors"))
    save_file({"y": torch.randn(12, 32, generator=g)}, str(d / "y.safetensors"))
    (d / "garbage.pt").write_text("not a tensor file")
    (d / "list.json").write_text("[1, 2]")
    (d / "null.json").write_text(json.dumps({"net_kwargs": {**tiny_checkpoint.kwargs, "hidden_size": None}}))
    (d / "broken.json").write_text("{not json")
    (d / "nan.safetensors").write_bytes(b"")
    save_file({"latent": torch.full((1, 16, 2, 3), float("nan"))}, str(d / "nan.safetensors"))
    (d / "old.png").write_bytes(b"the old image")
    torch.save({"latent": torch.zeros(1, 16, 2, 3), "code": _Code()}, d / "pickle.pt")
    return d


class _Code:  # not a tensor: weights_only refuses to unpickle it
    pass


CKPT = ["--checkpoint", "{ckpt}", "--config", "{config}"]
DECODE = ["decode", "lat.safetensors", *CKPT, "--caption-embeds", "y.safetensors"]

# (id, argv, message): each must exit with code 2 and one line on stderr containing the message, no traceback.
CLI_CASES = [
    ("latent file missing", ["decode", "missing.pt", *CKPT, "--caption-embeds", "y.safetensors"],
     "latent file 'missing.pt' does not exist"),
    ("latent file garbage", ["decode", "garbage.pt", *CKPT, "--caption-embeds", "y.safetensors"],
     "neither a .safetensors file nor a torch.save archive"),
    ("latent file with code", ["decode", "pickle.pt", *CKPT, "--caption-embeds", "y.safetensors"],
     "cannot be loaded safely"),
    ("latent file with two tensors", ["decode", "two.safetensors", *CKPT, "--caption-embeds", "y.safetensors"],
     "holds 2 tensors"),
    ("latent with NaN", ["decode", "nan.safetensors", *CKPT, "--caption-embeds", "y.safetensors"], "NaN or Inf"),
    ("caption file missing", ["decode", "lat.safetensors", *CKPT, "--caption-embeds", "nope.safetensors"],
     "caption embeddings file 'nope.safetensors' does not exist"),
    ("checkpoint missing", ["decode", "lat.safetensors", "--checkpoint", "nope.pth", "--caption-embeds",
                            "y.safetensors"], "checkpoint 'nope.pth' does not exist"),
    ("checkpoint garbage", ["info", "garbage.pt"], "neither a .safetensors file nor a torch.save archive"),
    ("zero size", [*DECODE, "--size", "0"], "--size '0': width and height must be positive"),
    ("negative size", [*DECODE, "--size", "64x-32"], "width and height must be positive"),
    ("size not a number", [*DECODE, "--size", "big"], "expected N or WxH (width x height)"),
    ("size not a multiple of 16", [*DECODE, "--size", "100x64"],
     "output size 100x64 (width x height) must be a positive multiple of 16"),
    ("size too large for memory", [*DECODE, "--size", "100000"], "needs about"),
    ("config not an object", ["decode", "lat.safetensors", "--checkpoint", "{ckpt}", "--config", "list.json",
                              "--caption-embeds", "y.safetensors"], "holds a JSON list, not an object"),
    ("config not JSON", ["info", "{ckpt}", "--config", "broken.json"], "is not valid JSON"),
    ("config with null", ["info", "{ckpt}", "--config", "null.json"], "'hidden_size' must be an int, got None"),
    ("config that does not fit", ["info", "{ckpt}", "--config", "{wide}"],
     "does not fit the given config (hidden_size: checkpoint 64, config 128)"),
    ("unknown variant", ["info", "{ckpt}", "--variant", "flux-v3"], "unknown PiD variant 'flux-v3'"),
    ("unknown device", [*DECODE, "--device", "gpu0"], "unknown device 'gpu0'"),
    ("CUDA without a GPU", [*DECODE, "--device", "cuda"], "sees no CUDA GPU"),
    ("bench on CUDA without a GPU", ["bench", "--arch", "tiny", "--device", "cuda"], "sees no CUDA GPU"),
    ("unknown output format", [*DECODE, "--out", "image.bmpx"], "unknown format '.bmpx'"),
    ("output folder not writable", [*DECODE, "--out", "/proc/image.png"], "cannot write in the folder '/proc'"),
    ("output is a folder", [*DECODE, "--out", "."], "unknown format"),
    ("convert to .pth", ["convert", "{ckpt}", "model.pth", "--config", "{config}"], "unknown format '.pth'"),
    ("bad sigma", [*DECODE, "--sigma", "high"], "--sigma 'high'"),
    ("sigma out of range", [*DECODE, "--sigma", "1.5"], "sigma must lie in [0, 1]"),
    ("bad pixel chunk", [*DECODE, "--pixel-chunk", "0"], "--pixel-chunk '0'"),
    ("no steps", [*DECODE, "--steps", "0"], "steps must be >= 1"),
    ("NaN guidance", [*DECODE, "--sampler", "dpm++2m", "--cfg-scale", "nan"], "cfg_scale must be a finite number"),
    ("negative shift", [*DECODE, "--sampler", "dpm++2m", "--shift", "-1"], "shift must be a positive number"),
    ("window zero", [*DECODE, "--window", "0"], "window must be a positive int"),
    ("max memory unit", [*DECODE, "--max-memory", "6 parsecs"], "max_memory '6 parsecs': a number of bytes or a size"),
    ("max memory too small", [*DECODE, "--max-memory", "1MB"], "more than max_memory 0.00 GiB"),
    ("bench repeats", ["bench", "--arch", "tiny", "--repeats", "0"], "--repeats must be at least 1"),
    ("bench sizes", ["bench", "--arch", "tiny", "--sizes", "100"], "size 100 must be a multiple of 32"),
    ("bench zero size", ["bench", "--arch", "tiny", "--sizes", "0"], "--sizes '0': positive square output sides"),
    ("latent overflows the network", ["decode", "huge.safetensors", *CKPT, "--caption-embeds", "y.safetensors"],
     "the decode produced 18432 NaN or infinite values"),
    ("golden folder missing", ["selftest", "--golden-dir", "no-such-folder"], "is not a folder of golden cases"),
    ("caption without transformers", ["decode", "lat.safetensors", *CKPT, "--caption", "a fox"],
     "--caption (encoding with Gemma-2) needs transformers, which is not installed"),
    ("encode-caption without transformers", ["encode-caption", "a fox", "--out", "e.safetensors"],
     "encode-caption needs transformers"),
]


def _argv(argv, files, tiny_checkpoint):
    wide = files / "wide.json"
    wide.write_text(json.dumps({**tiny_checkpoint.kwargs, "hidden_size": 128}))
    sub = {"ckpt": str(tiny_checkpoint.safetensors), "config": str(tiny_checkpoint.config_json), "wide": str(wide)}
    return [a.format(**sub) for a in argv]


_NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


def _marks(case_id: str) -> list:
    return [_NO_GPU] if "CUDA" in case_id else []


@pytest.fixture(scope="module")
def without_transformers(tmp_path_factory):
    """An environment in which `import transformers` fails, whether or not it is installed."""
    d = tmp_path_factory.mktemp("no_transformers")
    (d / "sitecustomize.py").write_text("import sys\nsys.modules['transformers'] = None  # the import fails\n")
    return dict(ENV, PYTHONPATH=os.pathsep.join([str(d), ENV.get("PYTHONPATH", "")]))


@pytest.mark.parametrize("argv,message", [pytest.param(*c[1:], id=c[0], marks=_marks(c[0])) for c in CLI_CASES])
def test_cli_user_errors(files, tiny_checkpoint, without_transformers, argv, message):
    env = without_transformers if "transformers" in message else None
    out = run_pid(*_argv(argv, files, tiny_checkpoint), cwd=files, env=env)
    errors = [line for line in out.stderr.splitlines() if line.startswith("ERROR")]
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len(errors) == 1 and message in errors[0], out.stderr[-2000:]
    assert not list(files.glob(".*.tmp*")), "a temporary file was left"


def test_cli_checks_cheap_things_before_loading(files):
    # A bad output format is reported although the checkpoint does not exist: nothing was loaded first.
    out = run_pid("decode", "lat.safetensors", "--checkpoint", "missing.pth", "--out", "x.bmpx", cwd=files)
    assert out.returncode == 2 and "unknown format '.bmpx'" in out.stderr and "missing.pth" not in out.stderr


def test_cli_debug_shows_the_traceback(files):
    out = run_pid("--debug", "decode", "garbage.pt", "--checkpoint", "x.pth", cwd=files)
    assert out.returncode == 1 and "Traceback" in out.stderr and "pid.errors.PidError: checkpoint 'x.pth'" in out.stderr


def test_cli_help_shows_defaults():
    out = run_pid("decode", "--help")
    assert out.returncode == 0 and "(default: 0)" in out.stdout and "(default: pid.png)" in out.stdout


def test_cli_no_carriage_returns_in_logs(files, tiny_checkpoint):
    out = run_pid(*_argv([*DECODE, "--out", "ok.png"], files, tiny_checkpoint), cwd=files)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr  # no progress bar on a stderr that is not a terminal
    assert (files / "ok.png").is_file()


# ---- writes: atomic, nothing lost -----------------------------------------------------------------------------
def test_failed_write_keeps_the_old_file(files, tiny_checkpoint):
    """A file-size limit makes the write fail midway: the old file is intact, no temporary file is left."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # the PNG (~20 KB) cannot be written

    before = (files / "old.png").read_bytes()
    out = run_pid(*_argv([*DECODE, "--out", "old.png"], files, tiny_checkpoint), cwd=files, preexec_fn=limit)
    assert out.returncode == 2 and "could not write 'old.png'" in out.stderr and "Traceback" not in out.stderr
    assert (files / "old.png").read_bytes() == before
    assert not list(files.glob(".*.tmp*"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_write_keeps_the_old_file(tmp_path, sig):
    """A signal in the middle of a write (the writer signals itself halfway): the old file is intact, no temporary
    file is left, and the process still ends by the signal (SIGTERM) or as interrupted (SIGINT)."""
    target = tmp_path / "images.safetensors"
    target.write_bytes(b"old content")
    code = (
        "import os, signal, sys\n"
        "from pid.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    with open(tmp, 'wb') as f:\n"
        "        f.write(b'half of the new')\n"
        "        f.flush()\n"
        f"        os.kill(os.getpid(), {int(sig)})\n"
        "        f.write(b' content')\n"
        "print('not reached')\n")
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, env=ENV)
    assert "not reached" not in out.stdout
    assert out.returncode != 0
    if sig == signal.SIGTERM:
        assert out.returncode == -signal.SIGTERM
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.safetensors"]


def test_every_writer_is_atomic(tmp_path, tiny_checkpoint):
    """convert, caption embeddings, decode outputs: the file appears whole, under its name, and nothing else."""
    from pid.checkpoint import save_safetensors
    from pid.captions import save_caption_embeds

    decoder = pid.load(tiny_checkpoint.pth, config=tiny_checkpoint.kwargs)
    save_safetensors(decoder, tmp_path / "model.safetensors")
    save_caption_embeds(tmp_path / "e.safetensors", torch.randn(300, 8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.safetensors", "model.safetensors"]
    with pytest.raises(CheckpointError, match="name it 'model.safetensors'"):
        save_safetensors(decoder, tmp_path / "model.pth")


@pytest.mark.parametrize("writer", ["convert", "caption embeddings"])
def test_a_full_disk_leaves_each_writers_old_file(tmp_path, tiny_checkpoint, monkeypatch, writer):
    """The disk fills halfway through each writer: the file written before is intact and no temporary is left."""
    import safetensors.torch

    from pid.checkpoint import save_safetensors
    from pid.captions import load_caption_embeds, save_caption_embeds

    decoder = pid.load(tiny_checkpoint.pth, config=tiny_checkpoint.kwargs)
    embeds = torch.randn(300, 8)
    save_safetensors(decoder, tmp_path / "model.safetensors")
    save_caption_embeds(tmp_path / "e.safetensors", embeds)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 100)  # a part of the file, then the error
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        if writer == "convert":
            save_safetensors(decoder, tmp_path / "model.safetensors")
        else:
            save_caption_embeds(tmp_path / "e.safetensors", torch.randn(300, 8))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert torch.equal(load_caption_embeds(tmp_path / "e.safetensors", dim=8)[0], embeds[None])


def test_convert_into_a_new_folder(files, tiny_checkpoint):
    out = run_pid("convert", tiny_checkpoint.pth, "new/folder/model.safetensors", "--config",
                  tiny_checkpoint.config_json, cwd=files)
    assert out.returncode == 0, out.stderr
    assert pid.load(files / "new/folder/model.safetensors").config == pid.load(
        tiny_checkpoint.pth, config=tiny_checkpoint.kwargs).config


def test_raw_image_output(files, tiny_checkpoint):
    from safetensors.torch import load_file

    out = run_pid(*_argv([*DECODE, "--out", "images.safetensors", "--seed", "4"], files, tiny_checkpoint),
                  cwd=files)
    assert out.returncode == 0, out.stderr
    images = load_file(str(files / "images.safetensors"))["images"]
    expected = pid.load(tiny_checkpoint.safetensors, config=tiny_checkpoint.kwargs).decode(
        load_file(str(files / "lat.safetensors"))["latent"], caption_embeds=load_file(str(files / "y.safetensors"))["y"],
        seed=4, progress=False)
    assert images.dtype == torch.float32 and torch.equal(images, expected)  # lossless


# ---- the API --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def decoder(tiny_checkpoint):
    return pid.load(tiny_checkpoint.pth, config=tiny_checkpoint.kwargs)


def _latent():
    return torch.randn(1, 16, 2, 3, generator=torch.Generator().manual_seed(3))


Y = torch.randn(12, 32, generator=torch.Generator().manual_seed(4))

API_CASES = [
    ("latent overflows bfloat16", lambda d: d.decode(torch.full((1, 16, 2, 3), 1e300, dtype=torch.float64),
                                                     caption_embeds=Y), LatentError, "overflow bfloat16"),
    ("finite latent, non-finite result", lambda d: d.decode(torch.full((1, 16, 2, 3), 1e30), caption_embeds=Y),
     NonFiniteOutputError, "the largest |latent| value is 1e+30"),
    ("memory", lambda d: d.decode(_latent(), caption_embeds=Y, output_size=100000), MemoryBudgetError,
     "100000x100000 decode of 1 image(s) needs about"),
    ("output size", lambda d: d.decode(_latent(), caption_embeds=Y, output_size=(64, 0)), ValueError,
     "output size 0x64 (width x height)"),
    ("caption embeds file", lambda d: d.decode(_latent(), caption_embeds="nope.safetensors"), CaptionEmbedsError,
     "does not exist"),
    ("device", lambda d: pid.load({}, device="tpu:9"), PidError, "unknown device 'tpu:9'"),
    ("config type", lambda d: pid.load(d.net.state_dict(), config={"hidden_size": "big"}), ConfigError,
     "'hidden_size' must be an int, got 'big'"),
    ("precision", lambda d: pid.load(d.net.state_dict(), config=d.config, precision="int8"), PidError,
     "precision must be one of"),
    ("window", lambda d: d.decode(_latent(), caption_embeds=Y, window=-1), PidError, "window must be a positive int"),
    ("sampler", lambda d: d.decode(_latent(), caption_embeds=Y, sampler="euler"), PidError, "sampler must be"),
    ("empty latent", lambda d: d.decode(torch.randn(0, 16, 2, 3), caption_embeds=Y), PidError,
     "latent (0, 16, 2, 3) is empty"),
    ("estimate by name", lambda d: pid.estimate_memory("flux-v9", 1024, 1024), PidError, "unknown PiD variant"),
]


@pytest.mark.parametrize("call,error,message", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_user_errors(decoder, call, error, message):
    with pytest.raises(error) as info:
        call(decoder)
    assert isinstance(info.value, PidError) and message in str(info.value)


def test_nan_weights_are_named(tiny_checkpoint):
    weights = dict(tiny_checkpoint.weights)
    weights["patch_blocks.1.mlp_x.w2.weight"] = weights["patch_blocks.1.mlp_x.w2.weight"].clone()
    weights["patch_blocks.1.mlp_x.w2.weight"][0, 0] = float("nan")
    dec = pid.load(weights, config=tiny_checkpoint.kwargs)
    with pytest.raises(NonFiniteOutputError, match="patch_blocks.1.mlp_x.w2.weight.*damaged"):
        dec.decode(_latent(), caption_embeds=Y, progress=False)


def test_estimate_memory_takes_a_variant_name():
    assert pid.estimate_memory("flux-v1.5", 1024, 1024) == pid.estimate_memory(pid.VARIANTS["flux-v1.5"], 1024, 1024)
