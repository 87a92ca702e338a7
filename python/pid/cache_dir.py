"""Where pid keeps what it computes once per machine (caption embeddings, attention timings): `$PID_CACHE_DIR`, else
`$XDG_CACHE_HOME/pid` (an absolute path, as the XDG specification asks), else `~/.cache/pid`."""

from __future__ import annotations

import os
from pathlib import Path


def pid_cache_dir() -> Path:
    if os.environ.get("PID_CACHE_DIR"):
        return Path(os.environ["PID_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "pid"
