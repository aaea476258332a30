"""The test session's own inductor cache, in the temporary directory, and the removal of those that
earlier sessions left when they died without running their exit handlers (a segfault — the planted
bugs of the 2**31 tests —, a kill, ``os._exit`` in a forked run). No torch import: conftest sets the
cache directory before torch is imported."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

PREFIX = "alphakern-inductor-"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove the caches under ``root`` (default: the temporary directory) named
    ``PREFIX<pid>-…`` whose process no longer runs — only directories (not links) this user owns.
    Returns what it removed."""
    removed = []
    for d in Path(root or tempfile.gettempdir()).glob(PREFIX + "*-*"):
        pid = d.name[len(PREFIX) :].split("-", 1)[0]
        try:
            st = d.lstat()
        except FileNotFoundError:  # removed meanwhile by its own session
            continue
        ours = pid.isdigit() and stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
        if not ours or _running(int(pid)):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def new_cache() -> str:
    """A fresh cache directory named after this process, for this session only."""
    remove_stale()
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
