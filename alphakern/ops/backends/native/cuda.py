"""The "cuda" backend: csrc/ compiled with torch.utils.cpp_extension (ninja), JIT on first use.

Its kernels are the CUDA ones of the alphakern_C ops, whose schemas ``schema`` defines (the CPU
library is not needed). Builds are cached (``build``) and only redone when sources or flags
change. It targets sm_80 and sm_90 unless ``TORCH_CUDA_ARCH_LIST`` says otherwise. A failed
build raises RuntimeError with the compiler's output; nothing falls back silently.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from alphakern.ops.backends.native import build as native_build
from alphakern.ops.backends.native import glue
from alphakern.ops.backends.native.schema import ops as _namespace
from alphakern.ops.core import activations
from alphakern.ops.core.activations import RELU, Activation
from alphakern.ops.core.checks import KERNEL_DTYPES

NAME = "cuda"
LIBRARY = "alphakern_cuda"
ACTIVATIONS = activations.ACTIVATIONS  # every f: a template argument of the one kernel source
DTYPES = KERNEL_DTYPES
DEFAULT_ARCH_LIST = "8.0;9.0"
CFLAGS = ("-O3",)  # the host compiler's, for the .cpp sources
CUDA_CFLAGS = ("-O3", "--expt-relaxed-constexpr")  # nvcc's (torch's extension builder adds its own)
SOURCES = ("cuda/gate.cpp", "cuda/layer_kernels.cu", "cuda/gate_kernels.cu", "cuda/bn_gate.cu")
HEADERS = (
    "cuda/elementwise.cuh",
    "common/checks.h",
    "common/alpha_terms.h",
    "common/act_codes.h",
    "common/bn_gate_host.h",
    "common/bn_shift.h",
    "common/cuda_utils.cuh",
)
_loaded: str | None = None


def csrc_dir() -> Path:
    """The CUDA sources (``build.csrc_dir``: the wheel's alphakern/_csrc or the tree's csrc/)."""
    return native_build.csrc_dir((*SOURCES, *HEADERS))


def _find_cuda_home() -> str | None:
    """CUDA_HOME, else the toolkit behind nvcc (a wrapper script in /usr/local/bin fools torch)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    for cand in ("/usr/local/cuda",):
        if Path(cand, "bin", "nvcc").exists():
            return cand
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = Path(nvcc).resolve()
        if real.parent.name == "bin" and (real.parent.parent / "include" / "cuda.h").exists():
            return str(real.parent.parent)
    return None


def build(verbose: bool = False) -> str:
    """Compile (or reuse the cached build of) csrc/ and load it; returns the library's path."""
    global _loaded
    if _loaded is not None:
        return _loaded
    cuda_home = _find_cuda_home()
    if cuda_home is None:
        raise RuntimeError(
            "backend='cuda' needs the CUDA toolkit (nvcc) to build csrc/: none was found. Install "
            "it and set CUDA_HOME to it, or use backend='triton' or 'torch'."
        )
    os.environ["CUDA_HOME"] = cuda_home
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
    native_build.cpp_extension().CUDA_HOME = cuda_home  # read at import time, maybe before ours was set
    src = csrc_dir()
    try:
        path = native_build.compile_library(
            LIBRARY,
            [src / s for s in SOURCES],
            verbose,
            extra_cflags=list(CFLAGS),
            extra_cuda_cflags=list(CUDA_CFLAGS),
        )
    except Exception as e:  # the builder raises RuntimeError/CalledProcessError with the log
        raise RuntimeError(
            f"building alphakern's CUDA backend from {src} failed (CUDA_HOME={cuda_home}, "
            f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}):\n{e}\n"
            "Fix the toolkit (CUDA_HOME, nvcc matching torch's CUDA major version, ninja "
            "installed) or use backend='triton' or 'torch'."
        ) from e
    _loaded = str(path)
    return _loaded


@torch.compiler.assume_constant_result  # a constant of a compiled graph (as cpu.available)
def available() -> bool:
    """A CUDA device and a toolkit to build for it (the build itself happens at first use)."""
    return torch.cuda.is_available() and _find_cuda_home() is not None


def _ops():
    build()
    return _namespace()


def _check(x: torch.Tensor) -> None:
    if not x.is_cuda:
        raise RuntimeError(f"backend='cuda' needs x on a CUDA device, got {x.device}")


def forward(
    x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, granularity: str, act: Activation = RELU
) -> torch.Tensor:
    _check(x)
    return glue.forward(_ops(), x, gamma, nu, granularity, act)


def backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    gamma: torch.Tensor,
    nu: torch.Tensor,
    granularity: str,
    act: Activation = RELU,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check(x)
    return glue.backward(_ops(), dy, x, gamma, nu, granularity, act)
