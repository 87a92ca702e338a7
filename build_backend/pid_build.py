"""pid-decoder's build backend: scikit-build-core's, plus finding the torch that pid's kernels will run with.

pid/_C is compiled against one torch's headers and libraries and loads only with that torch, so torch is not a
build requirement (pip would put some other torch, often a 5 GB CUDA one, into its isolated build environment).
Instead, a build with pip's isolation (a plain ``pip install .``) looks for torch in the environment being installed
into: the site-packages of the interpreter running this backend (pip runs it with the target's Python and hides only
the target's packages, not its paths). Found, the build compiles against that torch, in place (cmake/PidTorch.cmake
reads ``PID_TARGET_SITE``); not found, it stops at once with the command to use. A build without isolation
(``pip install --no-build-isolation .``, scripts/setup.sh) imports torch as before.
"""

from __future__ import annotations

import importlib.util
import os
import site
import sys
import sysconfig
from importlib import metadata

from scikit_build_core import build as _skbuild
from scikit_build_core.build import (  # noqa: F401  (the hooks this backend passes through unchanged)
    build_sdist,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

FIX = "install it first, then build again: pip install torch && pip install ."
ENV = "PID_TARGET_SITE"  # os.pathsep-separated site-packages folders where cmake/PidTorch.cmake looks for torch


def _target_sites() -> list[str]:
    paths = sysconfig.get_paths()
    sites = [paths["purelib"], paths["platlib"]]
    if site.ENABLE_USER_SITE and sys.prefix == sys.base_prefix:  # a user-site torch (no venv)
        sites.append(site.getusersitepackages())
    return [s for i, s in enumerate(sites) if s not in sites[:i] and os.path.isdir(s)]


def _torch_sites() -> list[str] | None:
    """None when this Python imports torch itself (a build without isolation). Else the target's site-packages
    folders, when torch is installed there; exits with the fix when it is not."""
    if importlib.util.find_spec("torch") is not None:
        return None
    sites = _target_sites()
    torch = next((d for d in metadata.distributions(path=sites) if (d.metadata["Name"] or "").lower() == "torch"), None)
    if torch is None:
        print(f"pid-decoder: torch is not installed in {sys.prefix}; {FIX}\n"
              "  (pid's kernels are compiled against the torch they will run with: README.md, Set-up)",
              file=sys.stderr)
        raise SystemExit(1)
    print(f"pid-decoder: compiling the kernels against torch {torch.version} in {sites[0]}", file=sys.stderr)
    return sites


def _with_target_torch(hook, *args, **kwargs):
    sites = _torch_sites()
    if sites is not None:
        os.environ[ENV] = os.pathsep.join(sites)
    return hook(*args, **kwargs)


def get_requires_for_build_wheel(config_settings=None):
    _torch_sites()  # fail before pip installs anything
    return _skbuild.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings=None):
    _torch_sites()
    return _skbuild.get_requires_for_build_editable(config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _with_target_torch(_skbuild.build_wheel, wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _with_target_torch(_skbuild.build_editable, wheel_directory, config_settings, metadata_directory)
