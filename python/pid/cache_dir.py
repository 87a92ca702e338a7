"""Where pid keeps what it computes once per machine (caption embeddings, attention timings): `$PID_CACHE_DIR`, else
`$XDG_CACHE_HOME/pid` (an absolute path, as the XDG specification asks), else `~/.cache/pid` (a per-user folder of the
temporary directory where there is no home directory)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def pid_cache_dir() -> Path:
    if os.environ.get("PID_CACHE_DIR"):
        return Path(os.environ["PID_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "pid"
    try:
        return Path.home() / ".cache" / "pid"
    except RuntimeError:  # no home directory (some containers): a per-user folder in the temporary directory
        return Path(tempfile.gettempdir()) / f"pid-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
