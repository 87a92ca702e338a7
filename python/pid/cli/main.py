"""The `pid` command line (also `python -m pid`), built on the public API only.

A user error ends a command with one line on stderr that names the problem and the fix, and exit code 2 (a
traceback only with --debug or PID_DEBUG=1). The cheap checks (input files, the output's folder and format, sizes,
device, optional dependencies) run before a checkpoint is loaded or downloaded (`args.py`). Every output is written
atomically. The commands live by subject: `decode.py` (decode, generate, compare), `models.py` (info, convert,
download, variants, memory), `captions.py` (encode-caption), `bench.py` (bench, selftest).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Optional, Sequence

from . import bench, captions, decode, models
from .args import HelpFormatter

log = logging.getLogger("pid.cli")


def build_parser() -> argparse.ArgumentParser:
    import pid

    fmt = HelpFormatter
    parser = argparse.ArgumentParser(prog="pid", description="PiD pixel-diffusion decoder engine", formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"pid-decoder {pid.__version__} (import name pid)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="a traceback for every error (also PID_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    from pid.serve import cli as serve  # pid serve (issue 22): its own module, its optional packages imported late

    for commands in (decode, models, captions, bench, serve):
        commands.register(sub, fmt)
    return parser


def _user_errors() -> tuple:
    """Exceptions that are the user's to fix: bad input (pid.errors.PidError and other ValueErrors), files and
    folders (OSError), a missing optional model or package, and running out of memory."""
    from pid.captions import TextEncoderUnavailable
    from pid.memory import OutOfMemoryError

    return ValueError, OSError, ImportError, TextEncoderUnavailable, OutOfMemoryError


def _one_line(e: BaseException) -> str:
    from pid.errors import one_line

    text = one_line(e)
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text += f": {e.filename}"
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("PID_DEBUG", "") not in ("", "0")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        log.error("interrupted")
        return 130
    except _user_errors() as e:
        if debug:
            raise
        from pid.memory import OutOfMemoryError

        message = _one_line(e)
        if isinstance(e, OutOfMemoryError):
            message = ("out of memory: " + message.split(". ")[0] + ". Try --pixel-chunk with a smaller N, --window, "
                       "a smaller --size or another --device (pid.estimate_memory gives the peak)")
        log.error("%s", message)
        return 2
