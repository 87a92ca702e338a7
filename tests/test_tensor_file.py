"""One reader of tensor files (pid.tensor_file) behind checkpoints, latent files, caption embeddings and VAE / RAE
statistics: the same failure gets the same message everywhere, in each caller's error type (all PidErrors)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import pid
from pid.cli.args import read_latent
from pid.errors import CaptionEmbedsError, CheckpointError, LatentError, PidError, TensorFileError
from pid.latents import DINOv2Latent, Flux2Latent
from pid.tensor_file import read_tensor_file
from pid.captions import load_caption_embeds


class _Code:  # not a tensor: weights_only refuses to unpickle it
    pass


def _bad_files(tmp):
    (tmp / "junk.safetensors").write_bytes(b"\x00" * 20)
    (tmp / "notes.pt").write_text("hello")
    torch.save({"a": torch.zeros(2)}, tmp / "good.pt")
    (tmp / "cut.pt").write_bytes((tmp / "good.pt").read_bytes()[:100])  # a torch.save archive cut short
    torch.save({"a": torch.zeros(1), "obj": _Code()}, tmp / "code.pt")
    torch.save([torch.zeros(1)], tmp / "list.pt")
    return [
        ("missing.pt", "does not exist or is not a file"),
        ("junk.safetensors", "is not a readable safetensors file .*probably truncated"),
        ("notes.pt", "neither a .safetensors file nor a torch.save archive"),
        ("cut.pt", "damaged torch.save archive.*probably truncated"),
        ("code.pt", "cannot be loaded safely.*never unpickles arbitrary code"),
        ("list.pt", "holds a list, not a tensor or a dict of tensors"),
    ]


READERS = {  # caller -> (read the file, its error type, how it names the file)
    "checkpoint": (lambda p: pid.load(p), CheckpointError, "checkpoint"),
    "latent file": (read_latent, LatentError, "latent file"),
    "caption embeddings": (load_caption_embeds, CaptionEmbedsError, "caption embeddings file"),
    "FLUX.2 VAE": (Flux2Latent.from_vae_file, LatentError, "FLUX.2 VAE file"),
    "DINOv2 statistics": (DINOv2Latent.from_stats_file, LatentError, "DINOv2-RAE statistics file"),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_reports_every_failure_alike(tmp_path, reader):
    read, error, what = READERS[reader]
    for name, message in _bad_files(tmp_path):
        with pytest.raises(error, match=f"^{what} '.*{name}'.*{message}") as info:
            read(str(tmp_path / name))
        assert isinstance(info.value, PidError) and "\n" not in str(info.value)


def test_contents(tmp_path):
    save_file({"b": torch.ones(2), "a": torch.zeros(3)}, str(tmp_path / "t.safetensors"), metadata={"k": "v"})
    f = read_tensor_file(tmp_path / "t.safetensors", "file")
    assert sorted(f.tensors) == ["a", "b"] and f.metadata == {"k": "v"} and torch.equal(f.tensors["b"], torch.ones(2))
    torch.save(torch.arange(3), tmp_path / "bare.pt")
    assert torch.equal(read_tensor_file(tmp_path / "bare.pt", "file").tensors[""], torch.arange(3))
    torch.save({"vae": {"bn": {"running_mean": torch.ones(1)}}, "step": 7}, tmp_path / "nested.pt")
    assert list(read_tensor_file(tmp_path / "nested.pt", "file", nested=True).tensors) == ["vae.bn.running_mean"]
    with pytest.raises(TensorFileError, match=r"entries that are not tensors \(\['vae', 'step'\]\)"):
        read_tensor_file(tmp_path / "nested.pt", "file")
