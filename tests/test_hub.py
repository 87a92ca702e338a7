"""Released checkpoints by variant name, from the Hugging Face Hub (pid.hub): a temporary Hugging Face cache laid out
as huggingface_hub lays it out, holding the tiny test network under a released experiment's folder; nothing is
downloaded (hf_hub_download is replaced wherever a download could happen)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import pid
from pid import hub
from pid.archs import TINY
from pid.errors import CheckpointError, PidError

FLUX = pid.VARIANTS["flux-v1.5"]
MAIN = "a" * 40  # the commit refs/main points at
OLD = "b" * 40  # another commit, tagged v0
NOT_CACHED = "qwenimage-v1.5"


def _put_in_cache(cache: Path, commit: str, filename: str, data: bytes, refs: tuple[str, ...] = ()) -> Path:
    """One file of nvidia/PiD as huggingface_hub's hf_hub_download stores it (file_download.py): the content in
    blobs/<etag> (an LFS file's etag is its sha256), snapshots/<commit>/<filename> a relative symlink to the blob,
    refs/<ref> the commit hash (no newline). Returns the snapshot path."""
    repo = cache / "models--nvidia--PiD"
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    pointer = repo / "snapshots" / commit / filename
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    for ref in refs:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return pointer


@pytest.fixture(scope="module")
def cache(tiny_checkpoint, tmp_path_factory):
    """A Hugging Face cache holding the tiny network as flux-v1.5's released file at main, and other weights (the
    tiny network negated) at the commit tagged v0."""
    folder = tmp_path_factory.mktemp("hf") / "hub"
    _put_in_cache(folder, MAIN, hub.hub_filename(FLUX), tiny_checkpoint.pth.read_bytes(), refs=("main",))
    other = tmp_path_factory.mktemp("other") / "model_ema_bf16.pth"
    torch.save({"net." + k: (-v).bfloat16() for k, v in tiny_checkpoint.weights.items()}, other)
    _put_in_cache(folder, OLD, hub.hub_filename(FLUX), other.read_bytes(), refs=("v0",))
    return folder


def _snapshot(cache: Path, commit: str) -> str:
    return str(cache / "models--nvidia--PiD" / "snapshots" / commit / hub.hub_filename(FLUX))


@pytest.fixture
def hf(cache, monkeypatch):
    """huggingface_hub pointed at the temporary cache (HF_HUB_CACHE; huggingface_hub reads it once, when imported, so
    its constant is set too), online, with a hf_hub_download that fails: a cache hit must not call it. The licence
    is not yet named in this process."""
    hf = pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def no_download(*args, **kwargs):
        raise AssertionError(f"hf_hub_download called: {args} {kwargs}")

    monkeypatch.setattr(hf, "hf_hub_download", no_download)
    monkeypatch.setattr(hub, "_licence_named", False)
    return hf


def _weights(decoder) -> dict:
    return {k: v.float() for k, v in decoder.net.state_dict().items()}


def test_the_cache_is_laid_out_as_huggingface_hub_lays_it_out(hf, cache):
    info = hf.scan_cache_dir(cache)
    assert not info.warnings, info.warnings
    (repo,) = info.repos
    assert repo.repo_id == "nvidia/PiD" and repo.repo_type == "model"
    refs = {r.commit_hash: set(r.refs) for r in repo.revisions}
    assert refs == {MAIN: {"main"}, OLD: {"v0"}}
    assert hf.try_to_load_from_cache("nvidia/PiD", hub.hub_filename(FLUX)) == _snapshot(cache, MAIN)


@pytest.mark.parametrize("name", ["flux-v1.5", FLUX.experiment, "flux/2kto4k_v1pt5", "zimage-turbo/2kto4k_v1pt5"])
def test_a_variant_name_loads_from_the_cache(hf, cache, tiny_checkpoint, name, caplog):
    # The tiny network does not fit flux-v1.5's config, so config= gives its shape; the name decides the variant.
    with caplog.at_level(logging.INFO, logger="pid"):
        decoder = pid.load(name, config=tiny_checkpoint.kwargs)
    assert decoder.variant is FLUX
    assert decoder.source == _snapshot(cache, MAIN)
    assert all(torch.equal(v, tiny_checkpoint.weights[k]) for k, v in _weights(decoder).items())
    assert "NSCLv1" not in caplog.text  # nothing downloaded: the licence was named when it was


def test_the_name_decides_the_variant(hf, tiny_checkpoint):
    # Without config= the name's variant is checked against the weights: they are not flux-v1.5's.
    with pytest.raises(CheckpointError, match=r"variant='flux-v1.5' names variant 'flux-v1.5', but the weights "
                                              r"are a custom network: LQ width 32"):
        pid.load("flux-v1.5")
    assert pid.load("flux-v1.5", variant="flux/2kto4k_v1pt5", config=tiny_checkpoint.kwargs).variant is FLUX
    with pytest.raises(CheckpointError, match="'flux-v1.5' is the released checkpoint of variant 'flux-v1.5', but "
                                              "variant='qwenimage-v1.5' names 'qwenimage-v1.5'"):
        pid.load("flux-v1.5", variant="qwenimage-v1.5", config=tiny_checkpoint.kwargs)


@pytest.mark.parametrize("revision", ["v0", OLD])
def test_revision_selects_another_snapshot(hf, cache, tiny_checkpoint, revision):
    decoder = pid.load("flux-v1.5", config=tiny_checkpoint.kwargs, revision=revision)
    assert decoder.variant is FLUX and decoder.source == _snapshot(cache, OLD)
    assert all(torch.equal(v, -tiny_checkpoint.weights[k]) for k, v in _weights(decoder).items())


def test_an_existing_file_wins_over_a_variant_name(hf, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("flux-v1.5").write_bytes(tiny_checkpoint.pth.read_bytes())
    decoder = pid.load("flux-v1.5", config=tiny_checkpoint.kwargs)
    assert decoder.source == "flux-v1.5" and decoder.variant is None


def test_offline_and_not_cached(hf, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read by huggingface_hub when imported
    experiment = pid.VARIANTS[NOT_CACHED].experiment
    with pytest.raises(CheckpointError) as info:
        pid.load(NOT_CACHED)
    message = str(info.value)
    assert "is not in the Hugging Face cache" in message and "HF_HUB_OFFLINE=1" in message
    assert f"run `pid download {NOT_CACHED}` (or `hf download nvidia/PiD checkpoints/{experiment}/" \
           "model_ema_bf16.pth`)" in message
    with pytest.raises(CheckpointError, match="`pid download flux-v1.5 --revision v9`"):
        pid.load("flux-v1.5", revision="v9")  # cached at main and v0, not at v9
    assert pid.load("flux-v1.5", config=TINY).variant is FLUX  # offline, cached: fine


def test_download(hf, tiny_checkpoint, monkeypatch, caplog):
    """Not cached and online: hf_hub_download gets the repo, the one file, the revision and the token; the licence
    is named once, before the first download."""
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        assert sum("NSCLv1" in r.getMessage() for r in caplog.records) == 1  # named before it starts
        return str(tiny_checkpoint.pth)

    monkeypatch.setattr(hf, "hf_hub_download", fake_download)
    with caplog.at_level(logging.INFO, logger="pid"):
        decoder = pid.load("qwenimage-v1.5", config=tiny_checkpoint.kwargs, revision="v1", token="hf_secret")
        assert hub.checkpoint_path("sd3-2k") == tiny_checkpoint.pth
    assert decoder.variant is pid.VARIANTS["qwenimage-v1.5"] and decoder.source == str(tiny_checkpoint.pth)
    assert calls == [
        ("nvidia/PiD", f"checkpoints/{pid.VARIANTS['qwenimage-v1.5'].experiment}/model_ema_bf16.pth",
         {"revision": "v1", "token": "hf_secret"}),
        ("nvidia/PiD", f"checkpoints/{pid.VARIANTS['sd3-2k'].experiment}/model_ema_bf16.pth",
         {"revision": None, "token": None})]
    licence = [r for r in caplog.records if "NSCLv1" in r.getMessage()]
    assert len(licence) == 1 and licence[0].levelno == logging.WARNING
    message = licence[0].getMessage()
    assert "non-commercial" in message and "https://huggingface.co/nvidia/PiD" in message


def test_no_connection(hf, monkeypatch):
    def unreachable(*args, **kwargs):
        raise hf.utils.LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")

    monkeypatch.setattr(hf, "hf_hub_download", unreachable)
    with pytest.raises(CheckpointError, match="the Hugging Face Hub cannot be reached .* Retry with network access "
                                              r"\(`pid download qwenimage-v1.5`\)"):
        pid.load(NOT_CACHED)


def test_without_huggingface_hub(tiny_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` raises ImportError
    with pytest.raises(PidError, match=r"needs huggingface_hub, which is not installed: pip install 'pid-decoder\[hub\]'"):
        pid.load("flux-v1.5")
    assert pid.load(str(tiny_checkpoint.pth), config=tiny_checkpoint.kwargs).variant is None  # files still work


def test_import_pid_does_not_import_huggingface_hub(tiny_checkpoint):
    code = ("import sys, pid\n"
            f"pid.load({str(tiny_checkpoint.pth)!r}, config={tiny_checkpoint.kwargs!r})\n"
            "assert 'huggingface_hub' not in sys.modules, 'imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


API_CASES = [
    ("neither a file nor a variant", lambda: pid.load("flux-v3"), CheckpointError,
     "checkpoint 'flux-v3' does not exist or is not a file; a released variant's name (e.g. 'flux-v1.5', see "
     "`pid variants`) also works"),
    ("revision with a file", lambda: pid.load(__file__, revision="v0"), PidError,
     f"revision 'v0' selects a version of a released checkpoint on the Hugging Face Hub, but {__file__!r} names a "
     "file: name a variant instead, or drop the revision"),
    ("revision with a missing file", lambda: pid.load("nope.pth", revision="v0"), CheckpointError,
     "checkpoint 'nope.pth' does not exist"),
    ("revision with a state dict", lambda: pid.load({}, revision="v0"), PidError, "the checkpoint is a state dict"),
    ("unknown variant to download", lambda: hub.checkpoint_path("flux-v3"), PidError, "unknown PiD variant 'flux-v3'"),
]


@pytest.mark.parametrize("call,error,message", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_user_errors(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


# ---- the command line: subprocesses, with the temporary cache and HF_HUB_OFFLINE=1 ------------------------------
@pytest.fixture(scope="module")
def cli(cache, tiny_checkpoint, tmp_path_factory):
    """A folder with a latent and caption embeddings, and `run(*argv)`: `pid` there, offline, on the cache."""
    pytest.importorskip("huggingface_hub")
    folder = tmp_path_factory.mktemp("cli")
    g = torch.Generator().manual_seed(7)
    save_file({"latent": torch.randn(1, 16, 2, 3, generator=g)}, str(folder / "lat.safetensors"))
    save_file({"y": torch.randn(12, 32, generator=g)}, str(folder / "y.safetensors"))
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")

    def run(*argv, **env_changes) -> subprocess.CompletedProcess:
        """`pid *argv`; env_changes: variables to set, or to remove (None)."""
        run_env = {k: v for k, v in {**env, **env_changes}.items() if v is not None}
        return subprocess.run([sys.executable, "-m", "pid", *map(str, argv)], capture_output=True, text=True,
                              cwd=folder, env=run_env)

    run.folder = folder
    return run


def test_cli_download_prints_the_cached_path(cli, cache):
    out = cli("download", "flux-v1.5")
    assert out.returncode == 0, out.stderr
    assert out.stdout == _snapshot(cache, MAIN) + "\n" and "NSCLv1" not in out.stderr
    out = cli("download", FLUX.experiment, "--revision", "v0")
    assert out.returncode == 0 and out.stdout == _snapshot(cache, OLD) + "\n", out.stderr
    out = cli("download", "flux-v1.5", HF_HUB_CACHE=None, HF_HOME=str(cache.parent))  # the cache is $HF_HOME/hub
    assert out.returncode == 0 and out.stdout == _snapshot(cache, MAIN) + "\n", out.stderr


def test_cli_decode_info_convert_by_variant(cli, cache, tiny_checkpoint):
    config = tiny_checkpoint.config_json
    out = cli("decode", "lat.safetensors", "--variant", "flux-v1.5", "--config", config, "--caption-embeds",
              "y.safetensors", "--seed", "4", "--out", "images.safetensors")
    assert out.returncode == 0, out.stderr
    expected = pid.load(tiny_checkpoint.pth, variant="flux-v1.5", config=tiny_checkpoint.kwargs).decode(
        load_file(str(cli.folder / "lat.safetensors"))["latent"],
        caption_embeds=load_file(str(cli.folder / "y.safetensors"))["y"], seed=4, progress=False)
    assert torch.equal(load_file(str(cli.folder / "images.safetensors"))["images"], expected)

    out = cli("info", "flux/2kto4k_v1pt5", "--config", config, "--revision", "v0", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["variant"] == "flux-v1.5" and info["source"] == _snapshot(cache, OLD)

    out = cli("convert", "flux-v1.5", "converted.safetensors", "--config", config)
    assert out.returncode == 0, out.stderr
    from safetensors import safe_open

    with safe_open(str(cli.folder / "converted.safetensors"), "pt") as f:
        assert f.metadata()["pid.variant"] == "flux-v1.5"
    converted = pid.load(cli.folder / "converted.safetensors", config=tiny_checkpoint.kwargs)
    assert all(torch.equal(v, tiny_checkpoint.weights[k]) for k, v in _weights(converted).items())


# (id, argv, message): exit code 2, one line on stderr containing the message, no traceback.
CLI_CASES = [
    ("decode with neither --checkpoint nor --variant", ["decode", "lat.safetensors", "--caption-embeds",
                                                        "y.safetensors"], "give --checkpoint FILE, or --variant NAME"),
    ("neither a file nor a variant", ["info", "flux-v3"],
     "checkpoint 'flux-v3' does not exist or is not a file; a released variant's name"),
    ("download an unknown variant", ["download", "flux-v3"], "unknown PiD variant 'flux-v3'"),
    ("offline and not cached", ["download", NOT_CACHED], f"run `pid download {NOT_CACHED}`"),
    ("decode offline and not cached", ["decode", "lat.safetensors", "--variant", NOT_CACHED, "--caption-embeds",
                                       "y.safetensors"], "offline mode (HF_HUB_OFFLINE=1) forbids downloading it"),
    ("a variant that disagrees", ["info", "flux-v1.5", "--variant", "qwenimage-v1.5"],
     "variant='qwenimage-v1.5' names 'qwenimage-v1.5'"),
    ("revision with a file", ["info", "y.safetensors", "--revision", "v0"], "'y.safetensors' names a file"),
    # cheap checks first: the bad output format is reported, not the missing download
    ("output format before the download", ["decode", "lat.safetensors", "--variant", NOT_CACHED, "--out", "x.bmpx"],
     "unknown format '.bmpx'"),
    ("latent before the download", ["decode", "missing.safetensors", "--variant", NOT_CACHED],
     "latent file 'missing.safetensors' does not exist"),
]


@pytest.mark.parametrize("argv,message", [pytest.param(*c[1:], id=c[0]) for c in CLI_CASES])
def test_cli_user_errors(cli, argv, message):
    out = cli(*argv)
    errors = [line for line in out.stderr.splitlines() if line.startswith("ERROR")]
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len(errors) == 1 and message in errors[0], out.stderr[-2000:]


def test_cli_without_huggingface_hub(cli):
    code = ("import sys; sys.modules['huggingface_hub'] = None\n"
            "from pid.cli import main; sys.exit(main(sys.argv[1:]))")
    out = subprocess.run([sys.executable, "-c", code, "download", "flux-v1.5"], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "needs huggingface_hub, which is not installed: pip install 'pid-decoder[hub]'" in out.stderr
