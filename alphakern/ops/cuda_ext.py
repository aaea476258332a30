"""The "cuda" backend: csrc/ compiled with torch.utils.cpp_extension (ninja), JIT on first use.

The build is cached by torch's extension builder (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``) and only redone when the sources or flags change. It targets sm_80
and sm_90 unless ``TORCH_CUDA_ARCH_LIST`` says otherwise. A failed build raises RuntimeError with
the compiler's output; nothing falls back silently.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

import torch

from alphakern.ops import gate_layout
from alphakern.ops._layout import dense_input, flat, like
from alphakern.ops.utils import alpha_terms, granularity

NAME = "alphakern_cuda"
DEFAULT_ARCH_LIST = "8.0;9.0"
SOURCES = ("alpha_relu_ops.cpp", "alpha_relu_kernels.cu", "alpha_relu_gates.cu")
HEADERS = ("elementwise.cuh",)
# A build of csrc/ takes about a minute on 2 cores; a lock older than this was left by a killed one.
STALE_LOCK_S = 600.0
_loaded: str | None = None


def csrc_dir() -> Path:
    """alphakern/csrc: package data, so an installed wheel can build the backend too."""
    src = Path(__file__).resolve().parent.parent / "csrc"
    missing = [s for s in (*SOURCES, *HEADERS) if not (src / s).is_file()]
    if missing:
        raise RuntimeError(f"alphakern's CUDA sources {missing} are missing from {src}: reinstall alphakern")
    return src


def _clear_stale_lock(build_dir: Path, max_age_s: float = STALE_LOCK_S) -> None:
    """torch's extension builder waits forever on a lock left by a killed build: remove an old one."""
    lock = build_dir / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > max_age_s:
        warnings.warn(f"removing {lock}, left {age:.0f} s ago by a build that did not finish", stacklevel=3)
        lock.unlink(missing_ok=True)


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
    from torch.utils import cpp_extension

    cpp_extension.CUDA_HOME = cuda_home  # read at import time, before our CUDA_HOME was set
    src = csrc_dir()
    _clear_stale_lock(Path(cpp_extension._get_build_directory(NAME, False)))
    try:
        path = cpp_extension.load(
            name=NAME,
            sources=[str(src / s) for s in SOURCES],
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3", "--expt-relaxed-constexpr"],
            is_python_module=False,
            verbose=verbose,
        )
    except Exception as e:  # the builder raises RuntimeError/CalledProcessError with the log
        raise RuntimeError(
            f"building alphakern's CUDA backend from {src} failed (CUDA_HOME={cuda_home}, "
            f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}):\n{e}\n"
            "Fix the toolkit (CUDA_HOME, nvcc matching torch's CUDA major version, ninja "
            "installed) or use backend='triton' or 'torch'."
        ) from e
    _loaded = str(path) if path else str(Path(cpp_extension._get_build_directory(NAME, False)))
    return _loaded


def _ops():
    build()
    return torch.ops.alphakern_cuda


def _check(x: torch.Tensor) -> None:
    if not x.is_cuda:
        raise RuntimeError(f"backend='cuda' needs x on a CUDA device, got {x.device}")


def forward(x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    _check(x)
    if gamma.numel() != 1:
        return _gated_forward(x, gamma, nu)
    return _ops().alpha_relu_fwd(x, gamma, nu)


def backward(
    dy: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    _check(x)
    if gamma.numel() != 1:
        return _gated_backward(dy, x, gamma, nu)
    return _ops().alpha_relu_bwd(dy, x, gamma, nu)


# Per-channel / per-element gates: the layout plan and the chain rule are shared with the Triton
# backend (ops/gate_layout.py); the slopes 1 − α per gate come from fp64 torch ops.


def _slopes(p: gate_layout.GatePlan, nu: torch.Tensor) -> torch.Tensor:
    return alpha_terms(p.gates, nu)[1].float().reshape(-1).contiguous()


def _gated_forward(x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    kind = granularity(x, gamma)
    xd = dense_input(x)  # the kernels allocate the (flat) output: no empty_like here
    if x.numel() == 0:
        return torch.empty_like(xd)
    if kind == "element" and not gate_layout.batch_outermost(xd):  # gather once
        return like(_gated_forward(x.contiguous(), gamma, nu), xd)
    p = gate_layout.plan(xd, gamma, kind)
    ops = _ops()
    if p.mode == "cols":
        out = ops.gates_cols_fwd(flat(xd), _slopes(p, nu), p.A, p.G)
    else:
        out = ops.gates_rows_fwd(flat(xd), _slopes(p, nu), p.G, p.B)
    return out.as_strided(xd.shape, xd.stride())  # the flat result in x's (dense) layout


def _gated_backward(
    dy: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    kind = granularity(x, gamma)
    xd = dense_input(x)
    if x.numel() == 0:
        return torch.empty_like(xd), torch.zeros_like(gamma)
    if kind == "element" and not gate_layout.batch_outermost(xd):
        dxc, dg = _gated_backward(dy.contiguous(), x.contiguous(), gamma, nu)
        return like(dxc, xd), dg
    dyd = like(dy, xd)
    p = gate_layout.plan(xd, gamma, kind)
    ops = _ops()
    if p.mode == "cols":
        dx_flat, sums = ops.gates_cols_bwd(flat(dyd), flat(xd), _slopes(p, nu), p.A, p.G)
    else:
        dx_flat, sums = ops.gates_rows_bwd(flat(dyd), flat(xd), _slopes(p, nu), p.G, p.B)
    return dx_flat.as_strided(xd.shape, xd.stride()), gate_layout.dgamma(sums, p, gamma, nu)
