"""`pid serve`: PiD as a batched HTTP decode service (`pip install 'pid-decoder[serve]'`).

    wire.py          the Remote VAE decode protocol of diffusers' `remote_decode`; query values, options, latent checks
    native.py        pid's native form, POST /v1/decode (a safetensors body)
    replies.py       the replies: JPEG / PNG, tensor bytes, safetensors
    batch_decode.py  several requests in one decode call, each equal to its own decode (seeds, σ, captions)
    batcher.py       the bounded queue and the worker thread that owns the decoder
    limits.py        the memory budget: 413 for what never fits, the batch cap
    metrics.py       Prometheus metrics
    app.py           `create_app(decoder, ...)`: the ASGI app (routes, health, lifecycle)
    client.py        `Client(url).decode(latent, ...)`
    ray.py           the same app as a Ray Serve deployment (`pid-decoder[ray]`)
    cli.py           `pid serve` and `pid decode --server URL`
    extras.py        the optional packages, checked before use

The server's dependencies are imported only here, so `import pid` stays lean; a missing one is a one-line error.
"""

from __future__ import annotations

from .extras import RAY_EXTRA, SERVE_EXTRA, require_serve_extra


def __getattr__(name: str):  # pid.serve.create_app / pid.serve.Client / ServerError without importing all up front
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("Client", "ServerError"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'pid.serve' has no attribute {name!r}")


__all__ = ["Client", "RAY_EXTRA", "SERVE_EXTRA", "ServerError", "create_app", "require_serve_extra"]
