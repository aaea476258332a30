"""Test set-up: without a GPU, Triton kernels run under the interpreter on CPU tensors.

TRITON_INTERPRET must be set before alphakern (and so its @triton.jit kernels) is imported.
"""

import atexit
import os
import shutil
import tempfile

# A fresh inductor cache per test session: a cache kept from an earlier run served compiled graphs
# of the code before a change (a custom op's autograd formula is not part of the cache key), so a
# compile test passed against the old code. Set before torch is imported; subprocesses inherit it.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="alphakern-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import torch  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.pop("ALPHAKERN_BACKEND", None)  # tests pick backends explicitly
