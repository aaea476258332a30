"""Test set-up: without a GPU, Triton kernels run under the interpreter on CPU tensors.

TRITON_INTERPRET must be set before alphakern (and so its @triton.jit kernels) is imported.
"""

import atexit
import os
import shutil

from tests import session_cache

# A fresh inductor cache per test session: a cache kept from an earlier run served compiled graphs
# of the code before a change (a custom op's autograd formula is not part of the cache key), so a
# compile test passed against the old code. Set before torch is imported; subprocesses inherit it.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    _cache = session_cache.new_cache()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import torch  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.pop("ALPHAKERN_BACKEND", None)  # tests pick backends explicitly

import fcntl  # noqa: E402

import pytest  # noqa: E402


def _available_gib() -> float:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 2**20


@pytest.fixture
def big_memory(tmp_path_factory):
    """For the tests that fill most of the machine's memory (inputs past 2**31 elements): they run
    one at a time, each holding an exclusive lock on a file in the directory the xdist workers of a
    run share, for the whole test — two at once would need twice the memory. Call it with the GiB
    the test needs: it skips when less is free once the lock is held."""
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("reads the free memory from /proc/meminfo")
    shared = tmp_path_factory.getbasetemp().parent  # pytest-N/ under xdist (popen-gwK/ each), private
    with open(shared / "big-memory.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, after the test

        def need(gib: float, what: str) -> None:
            if _available_gib() < gib:
                pytest.skip(f"needs {gib:g} GiB of free memory ({what})")

        yield need
