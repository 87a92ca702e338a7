#!/usr/bin/env bash
# Creates .venv in this checkout (unless it exists) and installs pid into it, editable, with its
# compiled kernels and the dev, images, text, diffusers, serve and ray extras (the tests use them all). Re-run after
# changing C++/CUDA code or adding, moving or removing a Python module (the editable install maps module
# files; incremental).
#
#   bash scripts/setup.sh
#
# Environment: PYTHON   interpreter for a new venv (default python3)
#              TORCH    torch requirement (default torch==2.13.0, the CPU build; a CUDA torch such as
#                       torch==2.14.1 also gets the CUTLASS headers and CUDA kernels)
#              PID_CUDA AUTO (default) | ON | OFF;  PID_CUDA_ARCHS (default 80;90a)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
VENV=.venv
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# Build requirements first: the extension is built without isolation, against this torch
# (numpy only silences torch's "Failed to initialize NumPy" warning during the build).
pip install --progress-bar off "$TORCH" "scikit-build-core>=0.10" "ninja>=1.11" numpy
if ! command -v cmake >/dev/null && [ ! -x "$VENV/bin/cmake" ]; then
  pip install --progress-bar off "cmake>=3.18"
fi
if "$VENV/bin/python" -c 'import sys, torch; sys.exit(torch.version.cuda is None)'; then
  # Headers only; --no-deps keeps its generator's dependencies (and a cuda-bindings downgrade) out.
  pip install --progress-bar off --no-deps nvidia-cutlass==4.2.0.0
fi
# This checkout was installed as the distribution "pid" before it was renamed pid-decoder: drop that old editable
# install, or both would map `import pid` (only ours: a "pid" installed from elsewhere is left alone).
if pip show pid 2>/dev/null | grep -qx "Editable project location: $PWD"; then
  pip uninstall -y pid
fi
pip install --progress-bar off --no-build-isolation -e '.[dev,images,text,diffusers,serve,ray]'
"$VENV/bin/python" -c 'import pid._extension as e; print("pid: compiled kernels loaded:", e.available(), "| CUDA kernels:", e.has_cuda_kernels())'
