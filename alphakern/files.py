"""Files written whole or not at all: the one atomic writer every file the library writes goes through.

``atomic_write`` writes a temporary file of its own beside the target, then renames it over the
target: a reader (or a process resumed after a kill) sees the old file or the new one, never half.
The temporary name is new for every write and created exclusively (``O_CREAT | O_EXCL``), so two
processes writing one target at once never share a file, and a name planted in the directory — a
link to someone else's file, a leftover of a killed write — is never opened, let alone written
through. Only the standard library is imported: every layer (native build, data, trainer,
benchmarks) can use it.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path

_ATTEMPTS = 100  # names tried before giving up (each collision is a 1 in 2**32 chance, or a planted name)
_TOKEN_BYTES = 4


def new_token() -> str:
    """A random hex token for a new file's name (8 digits)."""
    return secrets.token_hex(_TOKEN_BYTES)


def _exclusive_temp(path: Path) -> Path:
    """A new, empty file ``.NAME.TOKEN.tmp`` beside ``path``, created by this call (mode 0666 less the
    umask, as the target would have had from ``open``)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL  # with O_EXCL, a link at the name fails too (POSIX)
    for _ in range(_ATTEMPTS):
        tmp = path.with_name(f".{path.name}.{new_token()}.tmp")
        try:
            os.close(os.open(tmp, flags, 0o666))
            return tmp
        except FileExistsError:
            continue
        except FileNotFoundError:  # else the error names the temporary file, not what was asked for
            msg = f"cannot write {path.name}: no such directory"
            raise FileNotFoundError(errno.ENOENT, msg, str(path.parent)) from None
    raise FileExistsError(f"could not create a temporary file beside {path} ({_ATTEMPTS} names taken)")


def leftover_temps(path: str | Path, older_than_s: float = 0.0) -> list[Path]:
    """The temporary files of writes of ``path`` that never finished (a killed process's), last
    modified at least ``older_than_s`` ago. Only a caller that knows no write of ``path`` is in
    flight (the run directory's one writer) may remove them all; others pass an age no write takes.
    Regular files only: a link at such a name is not ours."""
    path = Path(path)
    pattern = f".{glob.escape(path.name)}." + "[0-9a-f]" * (2 * _TOKEN_BYTES) + ".tmp"
    now = time.time()
    found = []
    for p in path.parent.glob(pattern):
        try:
            st = p.lstat()
        except FileNotFoundError:  # its write just finished
            continue
        if stat.S_ISREG(st.st_mode) and now - st.st_mtime >= older_than_s:  # lstat: a link is not
            found.append(p)
    return sorted(found)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)  # a file or, on POSIX, a directory
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` into a new temporary file beside ``path``, flushed to disk, then renamed over
    ``path``. If ``write`` raises, the temporary file is removed and ``path`` is as it was."""
    path = Path(path)
    tmp = _exclusive_temp(path)
    try:
        write(tmp)
        _fsync(tmp)  # the data is on disk before the name points at it (a crash leaves old or new)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename itself made durable, where the platform allows
        _fsync(path.parent)
