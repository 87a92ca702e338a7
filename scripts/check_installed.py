"""Checks an installed (not editable) pid-decoder as a user gets it: run with the environment's Python, from a
folder outside the checkout (CI, .ci/run).

    cd "$(mktemp -d)" && /path/to/venv/bin/python /path/to/checkout/scripts/check_installed.py /path/to/checkout

Asserts: `pid` is imported from this environment's site-packages (not from the checkout), its compiled kernels
loaded from there, `pid --version` names the distribution, `pid selftest` passes, and `pid decode` of a tiny random
network writes the image that the Python API decodes. Exit 0 or an AssertionError naming what failed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path


def main(checkout: Path) -> None:
    import torch
    from safetensors.torch import save_file

    import pid
    from pid import _extension
    from pid.archs import TINY, random_net

    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    here = Path(pid.__file__).resolve()
    assert here.is_relative_to(site), f"pid imported from {here}, not from this environment's {site}"
    assert not here.is_relative_to(checkout.resolve()), f"pid imported from the checkout: {here}"
    so = Path(importlib.util.find_spec("pid._C").origin).resolve()
    assert so.is_relative_to(site), f"pid._C from {so}"
    assert _extension.available(), _extension.LOAD_ERROR
    dist = metadata.distribution("pid-decoder")
    assert dist.version == pid.__version__, (dist.version, pid.__version__)
    print(f"pid {pid.__version__} from {here.parent}; kernels {so.name}: CPU {_extension.cpu_capability()} "
          f"(runs: {','.join(_extension.cpu_capabilities())}), CUDA {_extension.has_cuda_kernels()}")

    cli = [str(Path(sys.executable).parent / "pid")]
    version = subprocess.run([*cli, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert version == f"pid-decoder {pid.__version__} (import name pid)", version
    selftest = subprocess.run([*cli, "selftest"], capture_output=True, text=True)
    assert selftest.returncode == 0 and "selftest passed" in selftest.stderr, selftest.stderr[-3000:]

    # A decode through the command line of a tiny random network, compared with the same decode in Python.
    work = Path.cwd()
    net = random_net(TINY)
    save_file({k: v.bfloat16().contiguous() for k, v in net.state_dict().items()}, str(work / "tiny.safetensors"))
    (work / "tiny.json").write_text(json.dumps({"net_kwargs": TINY.to_reference_kwargs()}))
    g = torch.Generator().manual_seed(5)
    latent, y = torch.randn(1, 16, 2, 3, generator=g), torch.randn(12, 32, generator=g)
    save_file({"latent": latent}, str(work / "latent.safetensors"))
    save_file({"y": y}, str(work / "y.safetensors"))
    out = subprocess.run([*cli, "decode", "latent.safetensors", "--checkpoint", "tiny.safetensors", "--config",
                          "tiny.json", "--caption-embeds", "y.safetensors", "--seed", "3", "--out", "image.safetensors"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    from safetensors.torch import load_file

    image = load_file(str(work / "image.safetensors"))["images"]
    expected = pid.load(str(work / "tiny.safetensors"), config=TINY.to_reference_kwargs()).decode(
        latent, caption_embeds=y, seed=3, output="tensor", progress=False)
    assert image.shape == (1, 3, 64, 96) and torch.equal(image, expected.float()), (image.shape, expected.shape)
    print(f"pid decode: {tuple(image.shape)} image, equal to the API's decode")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
