"""Building and loading alphakern's native libraries (csrc/) with torch.utils.cpp_extension.

Both libraries (CPU: always buildable; CUDA: where nvcc is) are cached by torch's extension builder
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``) and rebuilt only when sources or
flags change. After a successful build a stamp (hash of sources, flags and torch version → the
library's path) lets a later process load the library directly, and lets ``backend="auto"`` know
whether a current build exists without compiling anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from pathlib import Path

import torch

from alphakern.files import atomic_write

# A build of csrc/ takes about a minute on 2 cores; a lock older than this was left by a killed one.
STALE_LOCK_S = 600.0
STAMP = "alphakern-build.json"


def csrc_dir(sources: tuple[str, ...]) -> Path:
    """Where the native sources are: the source tree's top-level csrc/ (a checkout or an editable
    install; first, so a stale copy never shadows an edit), else the copy an installed wheel
    carries (alphakern/_csrc, see setup.py)."""
    pkg = Path(__file__).resolve().parents[3]  # alphakern/
    places = (pkg.parent / "csrc", pkg / "_csrc")
    for src in places:
        if all((src / s).is_file() for s in sources):
            return src
    raise RuntimeError(
        f"alphakern's native sources {list(sources)} are in none of {[str(p) for p in places]}: reinstall it"
    )


def cpp_extension():
    """torch.utils.cpp_extension, imported without the warning its import logs on a machine with
    nvcc and no GPU ("No CUDA runtime is found", from its CUDA_HOME guess): the CPU backend never
    uses CUDA_HOME, and the cuda backend sets it before building. Every CLI call printed it here."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension as ext
    finally:
        log.setLevel(level)
    return ext


def build_dir(name: str) -> Path:
    return Path(cpp_extension()._get_build_directory(name, False))


def clear_stale_lock(name: str, max_age_s: float = STALE_LOCK_S) -> None:
    """torch's extension builder waits forever on a lock left by a killed build: remove an old one."""
    lock = build_dir(name) / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > max_age_s:
        warnings.warn(f"removing {lock}, left {age:.0f} s ago by a build that did not finish", stacklevel=3)
        lock.unlink(missing_ok=True)


def fingerprint(files: list[Path], flags: list[str]) -> str:
    """What decides a build: the sources' and headers' bytes, the flags, torch's version."""
    h = hashlib.sha256(torch.__version__.encode())
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update("\0".join(flags).encode())
    return h.hexdigest()


def cached_library(name: str, digest: str) -> Path | None:
    """The library a finished build with this fingerprint left, or None."""
    try:
        stamp = json.loads((build_dir(name) / STAMP).read_text())
    except (OSError, ValueError):
        return None
    lib = Path(stamp.get("library", ""))
    return lib if stamp.get("fingerprint") == digest and lib.is_file() else None


def write_stamp(name: str, digest: str, library: Path) -> None:
    stamp = json.dumps({"fingerprint": digest, "library": str(library)})
    atomic_write(build_dir(name) / STAMP, lambda p: p.write_text(stamp))


def compile_library(name: str, sources: list[Path], verbose: bool, **flags) -> Path:
    """cpp_extension.load (compiles only what changed), returning the loaded library's path."""
    clear_stale_lock(name)
    path = cpp_extension().load(
        name=name, sources=[str(s) for s in sources], is_python_module=False, verbose=verbose, **flags
    )
    if path and Path(path).is_file():
        return Path(path)
    found = sorted(build_dir(name).glob(f"{name}*.so"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise RuntimeError(f"the build of {name} left no library in {build_dir(name)}")
    return found[-1]  # a changed build is named name_v1.so, name_v2.so, ...
