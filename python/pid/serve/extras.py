"""The optional packages of pid serve (`pid-decoder[serve]`, `pid-decoder[ray]`): checked before use, so a missing
one is a one-line error naming the install command."""

from __future__ import annotations

import importlib.util

SERVE_EXTRA = "pip install 'pid-decoder[serve]'"
RAY_EXTRA = "pip install 'pid-decoder[ray]'"
SERVER_MODULES = ("starlette", "uvicorn", "prometheus_client")


def require_serve_extra(modules=SERVER_MODULES, what: str = "pid serve", install: str = SERVE_EXTRA) -> None:
    """ImportError naming the install command unless `modules` are installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                          f"installed: {install}")
