"""The command line of the decode service: `pid serve` and `pid decode --server URL`.

The `pid` command registers these (pid/cli/main.py): `register(subparsers, fmt)` adds `pid serve`, whose body is
`run_serve(args)`; `add_server_arg(decode_parser)` adds `--server` to `pid decode` (pid/cli/decode.py), whose body
calls `decode_on_server(args)` when it is given.
"""

from __future__ import annotations

import logging
import signal
import socket
from typing import Callable

log = logging.getLogger("pid.serve")

# pid decode's options that select or run a local decoder: the server has its own
_LOCAL_DECODE_OPTIONS = {"checkpoint": None, "variant": None, "config": None, "revision": None, "token": None,
                         "sampler": None, "cfg_scale": None, "shift": None, "size": None, "device": "cpu",
                         "precision": None, "pixel_chunk": "auto", "force": False, "max_memory": None,
                         "parallel": None, "window": None, "attention": None}


def _error(message: str):
    from ..errors import PidError

    return PidError(message)


# ---------------------------------------------------------------------------------------------- pid serve
def register(sub, fmt) -> None:
    """Adds `pid serve` to the `pid` parser's subcommands, with the model options as `pid decode` takes them."""
    from ..cli.args import add_hub_args, add_model_args, checkpoint_source, load_config_arg

    def model_source(args):
        return checkpoint_source(args.checkpoint, args), load_config_arg(args.config)
    add_serve_parser(sub, add_model_args, add_hub_args, model_source, fmt)


def add_serve_parser(subparsers, add_model_args: Callable, add_hub_args: Callable, model_source: Callable,
                     formatter_class=None):
    """`pid serve`: the model options as `pid decode` takes them (`add_model_args`, `add_hub_args` are the pid
    command's; `model_source(args)` gives the checkpoint and config from them, checked as `pid decode` checks them),
    the server's address and limits."""
    from ..cli.args import PRECISION_CHOICES

    kwargs = {"formatter_class": formatter_class} if formatter_class is not None else {}
    p = subparsers.add_parser("serve", help="serve decodes over HTTP: diffusers' remote_decode protocol and pid's own "
                              "(pip install 'pid-decoder[serve]'; docs/serve.md)", **kwargs)
    p.add_argument("--checkpoint", help="model_ema_bf16.pth, .safetensors, or a variant name; without it, --variant's "
                   "released checkpoint")
    add_model_args(p)
    add_hub_args(p)
    p.add_argument("--precision", choices=PRECISION_CHOICES, help="as pid decode's (default: the "
                   "device's: fast on CUDA and on CPUs with native bfloat16, else float32)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (one server per GPU)")
    p.add_argument("--caption-embeds", help="caption embeddings (pid encode-caption) for requests that bring no caption "
                   "(default: the empty caption, from the caption cache or Gemma)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port; the log says which)")
    p.add_argument("--max-batch", type=int, default=4, help="samples decoded together (and per request)")
    p.add_argument("--max-queue", type=int, default=16, help="requests waiting beyond the running decode; one more "
                   "gets 503 with Retry-After")
    p.add_argument("--max-memory", help="memory budget (e.g. 20GB): decodes planned to fit it, batches capped by it, "
                   "requests beyond it refused (413); default: the device's memory")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a request that finds the device busy "
                   "may wait for others to batch with")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a request may take, queue and decode "
                   "together (504 after)")
    p.set_defaults(func=lambda args: run_serve(args, model_source))
    return p


def check_serve_args(args) -> None:
    """The cheap checks of `pid serve`, before anything is loaded."""
    from .extras import require_serve_extra

    require_serve_extra()
    if not 0 <= args.port <= 65535:
        raise _error(f"--port {args.port}: a port in 0..65535 (0: any free port)")
    for name, minimum in (("max_batch", 1), ("max_queue", 0)):
        if getattr(args, name) < minimum:
            raise _error(f"--{name.replace('_', '-')} must be at least {minimum}, got {getattr(args, name)}")
    if not args.batch_wait_ms >= 0:
        raise _error(f"--batch-wait-ms must be >= 0, got {args.batch_wait_ms}")
    if not args.timeout > 0:
        raise _error(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.max_memory is not None:
        from ..memory import parse_bytes

        parse_bytes(args.max_memory)
    if args.caption_embeds is not None:
        from pathlib import Path

        if not Path(args.caption_embeds).is_file():
            raise _error(f"--caption-embeds {args.caption_embeds!r} does not exist or is not a file")
    else:
        _check_empty_caption_available()


def _check_empty_caption_available() -> None:
    """Requests without a caption get the empty caption: its embeddings must be in the cache, or Gemma installed."""
    import importlib.util

    from ..captions import CaptionCache, default_cache_dir, encoder_cache_key

    if CaptionCache(default_cache_dir()).get(encoder_cache_key(), "") is not None:
        return
    if importlib.util.find_spec("transformers") is None:
        raise _error("requests without a caption are decoded with the empty caption, whose embeddings are not in the "
                     "caption cache and need Gemma (transformers, not installed): pass --caption-embeds made by "
                     "`pid encode-caption \"\" --out empty.safetensors`, or pip install 'pid-decoder[text]'")


def run_serve(args, model_source: Callable) -> int:
    """`pid serve`: bind the address, load the weights in the background (/health says 503 until then), serve until
    SIGTERM / Ctrl-C, finish the requests in flight, exit 0. `model_source(args)`: (checkpoint, config)."""
    check_serve_args(args)
    from ..decode import check_device

    device = check_device(args.device)
    source, config = model_source(args)
    sock = _bind(args.host, args.port)

    import uvicorn

    import pid

    from .app import create_app

    def load():
        return pid.load(source, variant=args.variant, config=config, device=device, precision=args.precision,
                        revision=args.revision, token=args.token)

    app = create_app(load, max_batch=args.max_batch, max_queue=args.max_queue, max_memory=args.max_memory,
                     batch_wait_ms=args.batch_wait_ms, timeout=args.timeout, caption_embeds=args.caption_embeds)
    host, port = sock.getsockname()[:2]
    log.info("pid serve: listening on http://%s:%d (POST / and /decode: diffusers' remote_decode; POST /v1/decode; "
             "GET /health, /metrics)", f"[{host}]" if ":" in host else host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=None))
    stopped_by = []
    # uvicorn stops gracefully on SIGTERM / SIGINT, then raises the signal again with the handlers it found: these,
    # so that a graceful stop exits 0 instead of dying of the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, frame: stopped_by.append(s))
    server.run(sockets=[sock])
    if stopped_by:
        log.info("pid serve: stopped (%s)", signal.Signals(stopped_by[0]).name)
    return 0 if server.started else 1


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise _error(f"cannot listen on {host}:{port} ({e.strerror}): choose another --port (0: any free one) or "
                     "--host") from None
    sock.set_inheritable(True)
    return sock


# ---------------------------------------------------------------------------------------------- pid decode --server
def add_server_arg(decode_parser) -> None:
    decode_parser.add_argument("--server", metavar="URL", help="decode on a `pid serve` server (e.g. "
                               "http://127.0.0.1:8000) instead of here: the latent, --sigma, --seed, --steps and the "
                               "caption go there, the images come back")


def decode_on_server(args):
    """`pid decode --server URL`: the images (float32 [B, 3, H, W]) the server decodes from the latent file with
    --sigma, --seed, --steps, --latent-format and --caption / --caption-embeds."""
    from .extras import require_serve_extra

    require_serve_extra(("httpx",), "pid decode --server")
    local = [name for name, default in _LOCAL_DECODE_OPTIONS.items() if getattr(args, name, default) != default]
    if local:
        raise _error(f"--server decodes with the server's model and settings; drop "
                     f"{', '.join('--' + n.replace('_', '-') for n in local)}")
    try:
        sigma = [float(s) for s in args.sigma.split(",")] if "," in args.sigma else float(args.sigma)
    except ValueError:
        raise _error(f"--sigma {args.sigma!r}: a number in [0, 1], or one per sample: 0.3,0.5") from None
    from ..cli.args import read_latent

    latent = read_latent(args.latent)
    embeds = None
    if args.caption_embeds is not None:
        from ..captions import load_caption_embeds

        embeds = load_caption_embeds(args.caption_embeds, dim=None, txt_len=None)[0]
    from .client import Client

    with Client(args.server) as client:
        return client.decode(latent, sigma=sigma, seed=args.seed, steps=args.steps, caption=args.caption,
                             caption_embeds=embeds, latent_format=args.latent_format)


__all__ = ["add_serve_parser", "add_server_arg", "check_serve_args", "decode_on_server", "register", "run_serve"]
