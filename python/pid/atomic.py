"""Writing a file atomically: the new content goes to a temporary file in the target's folder, which replaces the
target only once it is complete. A failed write (disk full, file-size limit, an exception) or an interrupted one
(Ctrl-C, SIGTERM) leaves the old file as it was and no temporary file behind."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import uuid
from pathlib import Path
from typing import Iterator


class _Terminated(BaseException):
    """SIGTERM arrived while a file was being written (raised in the main thread, so that the write is undone)."""


@contextlib.contextmanager
def atomic_path(path: "str | os.PathLike") -> Iterator[Path]:
    """Yields a temporary path beside `path` (same folder, same suffix) to write to; when the block completes, the
    temporary file replaces `path` (os.replace: readers see the old file or the new one, never a part). If the
    block raises or is interrupted, the temporary file is removed and `path` is untouched. The target's folder
    must exist."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")  # one per writer
    with _sigterm_raises():
        try:
            yield tmp
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """In the main thread, where SIGTERM would end the process at once (its default action), it raises inside the
    block instead (as Ctrl-C does), so that the cleanup runs; the process then ends by the signal as before. A
    program that handles or ignores SIGTERM itself keeps its handling."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        raise _Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, previous)
        os.kill(os.getpid(), signal.SIGTERM)  # the cleanup is done: terminate as the signal asked
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
