"""Triton kernels for R_α(x) = x + α·relu(−x), α = σ((σ(γ) − ½)·ν), and their host launchers.

γ and ν are read from device memory inside the kernels, so no launch syncs with the host and no
Python float (which Triton would treat as fp64) reaches a kernel. α is computed once per program
in fp64 (exact exp and division, where fp32 ``tl.sigmoid`` compiles to approximate ex2/rcp whose
error ν would amplify) and the slope 1 − α as σ(−z), not by subtraction. Element math is fp32;
offsets are int64, so tensors past 2³¹ elements work. The γ-gradient is a reduction: each backward
program writes one fp32 partial, and a one-program kernel sums the partials in a fixed order and
applies the chain rule — no atomics, and a grid that depends on the size only, so repeated
backward passes are bitwise identical on any GPU.
"""

from __future__ import annotations

import contextlib
import os

import torch

from alphakern.ops._layout import dense_input_and_output, flat, like
from alphakern.ops.utils import KERNEL_DTYPES

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None

# Triton decides at decoration time whether kernels are compiled or interpreted.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# 4096-element tiles over 8 warps compiled to 91-128 registers a thread (2 CTAs/SM); 2048 over 8
# warps stays near 40 (tests/aot_compile_triton.py prints the counts).
FWD_BLOCK = 2048
BWD_BLOCK = 2048
# The backward grid is capped (a grid-stride loop covers the rest) so the partial buffer and the
# final sum stay small; the cap does not depend on the device, so results are reproducible anywhere,
# and it is several waves on any GPU, so the last wave's imbalance costs little.
BWD_MAX_PROGRAMS = 8192
FINAL_BLOCK = 1024
NUM_WARPS = 8


def available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit
    def _sigmoid64(v):
        return 1.0 / (1.0 + tl.exp(-v))

    @triton.jit
    def _alpha_terms(gamma_ptr, nu_ptr):
        """(1 − α in fp32, dα/dγ in fp64) from the 1-element tensors γ and ν, computed in fp64."""
        g = tl.load(gamma_ptr).to(tl.float64)
        nu = tl.load(nu_ptr).to(tl.float64)
        s = _sigmoid64(g)
        z = (s - 0.5) * nu
        a = _sigmoid64(z)
        om = _sigmoid64(-z)
        return om.to(tl.float32), a * om * nu * s * _sigmoid64(-g)

    # Full tiles load and store without a mask: with the mask, the compiler can only use 16-byte
    # accesses when n_elements is a multiple of 16; this way only the last tile is scalar.

    @triton.jit
    def _fwd_tile(x_ptr, y_ptr, offs, n_elements, om, MASKED: tl.constexpr):
        if MASKED:
            x = tl.load(x_ptr + offs, mask=offs < n_elements).to(tl.float32)
        else:
            x = tl.load(x_ptr + offs).to(tl.float32)
        # PReLU with slope 1 − α: NaN propagates (x > 0 is False for NaN), −inf stays −inf
        y = tl.where(x > 0.0, x, x * om).to(y_ptr.dtype.element_ty)
        if MASKED:
            tl.store(y_ptr + offs, y, mask=offs < n_elements)
        else:
            tl.store(y_ptr + offs, y)

    @triton.jit
    def _alpha_relu_fwd_kernel(x_ptr, y_ptr, gamma_ptr, nu_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
        om, _ = _alpha_terms(gamma_ptr, nu_ptr)
        start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
        offs = start + tl.arange(0, BLOCK_SIZE)
        if start + BLOCK_SIZE <= n_elements:
            _fwd_tile(x_ptr, y_ptr, offs, n_elements, om, MASKED=False)
        else:
            _fwd_tile(x_ptr, y_ptr, offs, n_elements, om, MASKED=True)

    @triton.jit
    def _bwd_tile(dy_ptr, x_ptr, dx_ptr, offs, n_elements, om, MASKED: tl.constexpr):
        """Writes dx for one tile; returns dy·relu(−x) per lane (0 in masked lanes)."""
        if MASKED:
            mask = offs < n_elements
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            x = tl.load(x_ptr + offs).to(tl.float32)
            dy = tl.load(dy_ptr + offs).to(tl.float32)
        # Slope 1 at x = ±0 (autograd of relu), 1 − α below zero and, as eager autograd gives,
        # at NaN.
        dx = tl.where(x >= 0.0, dy, dy * om).to(dx_ptr.dtype.element_ty)
        if MASKED:
            tl.store(dx_ptr + offs, dx, mask=offs < n_elements)
        else:
            tl.store(dx_ptr + offs, dx)
        return dy * tl.where(x > 0.0, 0.0, -x)

    @triton.jit
    def _alpha_relu_bwd_kernel(
        dy_ptr,
        x_ptr,
        dx_ptr,
        partial_ptr,
        gamma_ptr,
        nu_ptr,
        n_elements,
        tiles_per_program,
        BLOCK_SIZE: tl.constexpr,
    ):
        om, _ = _alpha_terms(gamma_ptr, nu_ptr)
        pid = tl.program_id(0)
        pid64 = pid.to(tl.int64)
        n_programs = tl.num_programs(0).to(tl.int64)
        acc = tl.zeros((BLOCK_SIZE,), dtype=tl.float32)
        # grid-stride over tiles; tiles past the end are fully masked
        for i in range(0, tiles_per_program):
            start = (pid64 + i * n_programs) * BLOCK_SIZE
            offs = start + tl.arange(0, BLOCK_SIZE)
            if start + BLOCK_SIZE <= n_elements:
                acc += _bwd_tile(dy_ptr, x_ptr, dx_ptr, offs, n_elements, om, MASKED=False)
            else:
                acc += _bwd_tile(dy_ptr, x_ptr, dx_ptr, offs, n_elements, om, MASKED=True)
        tl.store(partial_ptr + pid, tl.sum(acc, axis=0))

    @triton.jit
    def _alpha_relu_dgamma_kernel(
        partial_ptr, gamma_ptr, nu_ptr, dgamma_ptr, n_partials, BLOCK_SIZE: tl.constexpr
    ):
        _, dalpha_dgamma = _alpha_terms(gamma_ptr, nu_ptr)
        acc = tl.zeros((BLOCK_SIZE,), dtype=tl.float32)
        for start in range(0, n_partials, BLOCK_SIZE):
            offs = start + tl.arange(0, BLOCK_SIZE)
            acc += tl.load(partial_ptr + offs, mask=offs < n_partials, other=0.0)
        total = tl.sum(acc, axis=0)
        tl.store(dgamma_ptr, (total.to(tl.float64) * dalpha_dgamma).to(dgamma_ptr.dtype.element_ty))


def _check_runnable(x: torch.Tensor) -> None:
    if triton is None:
        raise RuntimeError(
            "backend='triton' needs the 'triton' package: pip install triton "
            "(it ships with PyTorch's CUDA wheels on Linux), or use backend='torch'."
        )
    if x.device.type == "cpu" and not INTERPRET:
        raise RuntimeError(
            "backend='triton' got a CPU tensor: Triton kernels run on CUDA devices, or on the CPU "
            "under the interpreter — set TRITON_INTERPRET=1 before importing alphakern, "
            "or use backend='torch'."
        )
    if x.dtype not in KERNEL_DTYPES:
        raise TypeError(
            f"backend='triton' supports x of dtype float32, float16 or bfloat16, got {x.dtype}; "
            "use backend='torch' for other floating dtypes."
        )


def _device_ctx(x: torch.Tensor):
    """Launch on x's GPU (Triton uses the current device); nothing to select for the interpreter."""
    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()


def forward(x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """y = R_α(x), shaped and laid out like ``torch.empty_like(x)``."""
    if gamma.numel() != 1:
        return alpha_relu_triton_gates.forward(x, gamma, nu)
    _check_runnable(x)
    xd, y = dense_input_and_output(x)
    n = x.numel()
    if n == 0:
        return y
    with _device_ctx(x):
        grid = (triton.cdiv(n, FWD_BLOCK),)
        _alpha_relu_fwd_kernel[grid](
            flat(xd), flat(y), gamma, nu, n, BLOCK_SIZE=FWD_BLOCK, num_warps=NUM_WARPS
        )
    return y


def backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    gamma: torch.Tensor,
    nu: torch.Tensor,
    *,
    block_size: int = BWD_BLOCK,
    max_programs: int = BWD_MAX_PROGRAMS,
    final_block: int = FINAL_BLOCK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂L/∂x, ∂L/∂γ). The keywords exist so tests can force many programs and final-sum rounds."""
    if gamma.numel() != 1:
        return alpha_relu_triton_gates.backward(dy, x, gamma, nu)
    _check_runnable(x)
    xd, dx = dense_input_and_output(x)
    n = x.numel()
    if n == 0:
        return dx, torch.zeros_like(gamma)
    dyd = like(dy, dx)
    n_tiles = triton.cdiv(n, block_size)
    n_programs = min(n_tiles, max_programs)
    partials = torch.empty(n_programs, device=x.device, dtype=torch.float32)
    dgamma = torch.empty_like(gamma)
    with _device_ctx(x):
        _alpha_relu_bwd_kernel[(n_programs,)](
            flat(dyd),
            flat(xd),
            flat(dx),
            partials,
            gamma,
            nu,
            n,
            triton.cdiv(n_tiles, n_programs),
            BLOCK_SIZE=block_size,
            num_warps=NUM_WARPS,
        )
        _alpha_relu_dgamma_kernel[(1,)](
            partials, gamma, nu, dgamma, n_programs, BLOCK_SIZE=final_block, num_warps=4
        )
    return dx, dgamma


# per-channel / per-element gates: their kernels build on the helpers above
from alphakern.ops import alpha_relu_triton_gates  # noqa: E402
