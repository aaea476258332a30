"""Triton kernels for one gate per layer, and their host launchers.

γ and ν are read from device memory inside the kernels, so no launch syncs with the host and no
Python float (which Triton would treat as fp64) reaches a kernel; α once per program in fp64
(``common._layer_terms``). Offsets are int64, so tensors past 2³¹ elements work. The γ-gradient is
a reduction: each backward program writes one fp32 partial, and a one-program kernel sums the
partials in a fixed order and applies the chain rule — no atomics, and a grid that depends on the
size only, so repeated backward passes are bitwise identical on any GPU.
"""

from __future__ import annotations

import torch

from alphakern.ops.backends.triton.common import check_runnable, constexprs, device_ctx, tl, triton
from alphakern.ops.core.activations import RELU, Activation
from alphakern.ops.core.layout import dense_input_and_output, flat, like

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


if triton is not None:
    from alphakern.ops.backends.triton.common import _dsum, _dx, _layer_terms, _y

    # Full tiles load and store without a mask: with the mask, the compiler can only use 16-byte
    # accesses when n_elements is a multiple of 16; this way only the last tile is scalar.

    @triton.jit
    def _fwd_tile(
        x_ptr, y_ptr, offs, n_elements, a, om, MASKED: tl.constexpr, ACT: tl.constexpr, NEG: tl.constexpr
    ):
        if MASKED:
            x = tl.load(x_ptr + offs, mask=offs < n_elements).to(tl.float32)
        else:
            x = tl.load(x_ptr + offs).to(tl.float32)
        y = _y(x, a, om, ACT, NEG).to(y_ptr.dtype.element_ty)
        if MASKED:
            tl.store(y_ptr + offs, y, mask=offs < n_elements)
        else:
            tl.store(y_ptr + offs, y)

    @triton.jit
    def _layer_gate_fwd_kernel(
        x_ptr, y_ptr, gamma_ptr, nu_ptr, n_elements,
        BLOCK_SIZE: tl.constexpr, ACT: tl.constexpr, NEG: tl.constexpr,
    ):  # fmt: skip
        a, om, _ = _layer_terms(gamma_ptr, nu_ptr)
        start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
        offs = start + tl.arange(0, BLOCK_SIZE)
        if start + BLOCK_SIZE <= n_elements:
            _fwd_tile(x_ptr, y_ptr, offs, n_elements, a, om, MASKED=False, ACT=ACT, NEG=NEG)
        else:
            _fwd_tile(x_ptr, y_ptr, offs, n_elements, a, om, MASKED=True, ACT=ACT, NEG=NEG)

    @triton.jit
    def _bwd_tile(
        dy_ptr, x_ptr, dx_ptr, offs, n_elements, a, om,
        MASKED: tl.constexpr, ACT: tl.constexpr, NEG: tl.constexpr,
    ):  # fmt: skip
        """Writes dx for one tile; returns dy·(f(x) − x) per lane (0 in masked lanes)."""
        if MASKED:
            mask = offs < n_elements
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            x = tl.load(x_ptr + offs).to(tl.float32)
            dy = tl.load(dy_ptr + offs).to(tl.float32)
        dx = _dx(x, dy, a, om, ACT, NEG).to(dx_ptr.dtype.element_ty)
        if MASKED:
            tl.store(dx_ptr + offs, dx, mask=offs < n_elements)
        else:
            tl.store(dx_ptr + offs, dx)
        return _dsum(x, dy, ACT, NEG)

    @triton.jit
    def _layer_gate_bwd_kernel(
        dy_ptr,
        x_ptr,
        dx_ptr,
        partial_ptr,
        gamma_ptr,
        nu_ptr,
        n_elements,
        tiles_per_program,
        BLOCK_SIZE: tl.constexpr,
        ACT: tl.constexpr,
        NEG: tl.constexpr,
    ):
        a, om, _ = _layer_terms(gamma_ptr, nu_ptr)
        pid = tl.program_id(0)
        pid64 = pid.to(tl.int64)
        n_programs = tl.num_programs(0).to(tl.int64)
        acc = tl.zeros((BLOCK_SIZE,), dtype=tl.float32)
        # grid-stride over tiles; tiles past the end are fully masked
        for i in range(0, tiles_per_program):
            start = (pid64 + i * n_programs) * BLOCK_SIZE
            offs = start + tl.arange(0, BLOCK_SIZE)
            if start + BLOCK_SIZE <= n_elements:
                acc += _bwd_tile(dy_ptr, x_ptr, dx_ptr, offs, n_elements, a, om, False, ACT, NEG)
            else:
                acc += _bwd_tile(dy_ptr, x_ptr, dx_ptr, offs, n_elements, a, om, True, ACT, NEG)
        tl.store(partial_ptr + pid, tl.sum(acc, axis=0))

    @triton.jit
    def _alpha_relu_dgamma_kernel(
        partial_ptr, gamma_ptr, nu_ptr, dgamma_ptr, n_partials, BLOCK_SIZE: tl.constexpr
    ):
        _, _, dalpha_dgamma = _layer_terms(gamma_ptr, nu_ptr)
        acc = tl.zeros((BLOCK_SIZE,), dtype=tl.float32)
        for start in range(0, n_partials, BLOCK_SIZE):
            offs = start + tl.arange(0, BLOCK_SIZE)
            acc += tl.load(partial_ptr + offs, mask=offs < n_partials, other=0.0)
        total = tl.sum(acc, axis=0)
        tl.store(dgamma_ptr, (total.to(tl.float64) * dalpha_dgamma).to(dgamma_ptr.dtype.element_ty))


def forward(x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, act: Activation = RELU) -> torch.Tensor:
    """y = G_α,f(x), shaped and laid out like ``torch.empty_like(x)``."""
    check_runnable(x)
    xd, y = dense_input_and_output(x)
    n = x.numel()
    if n == 0:
        return y
    with device_ctx(x):
        grid = (triton.cdiv(n, FWD_BLOCK),)
        _layer_gate_fwd_kernel[grid](
            flat(xd), flat(y), gamma, nu, n, BLOCK_SIZE=FWD_BLOCK, num_warps=NUM_WARPS, **constexprs(act)
        )
    return y


def backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    gamma: torch.Tensor,
    nu: torch.Tensor,
    act: Activation = RELU,
    *,
    block_size: int = BWD_BLOCK,
    max_programs: int = BWD_MAX_PROGRAMS,
    final_block: int = FINAL_BLOCK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂L/∂x, ∂L/∂γ). The keywords exist so tests can force many programs and final-sum rounds."""
    check_runnable(x)
    xd, dx = dense_input_and_output(x)
    n = x.numel()
    if n == 0:
        return dx, torch.zeros_like(gamma)
    dyd = like(dy, dx)
    n_tiles = triton.cdiv(n, block_size)
    n_programs = min(n_tiles, max_programs)
    partials = torch.empty(n_programs, device=x.device, dtype=torch.float32)
    dgamma = torch.empty_like(gamma)
    with device_ctx(x):
        _layer_gate_bwd_kernel[(n_programs,)](
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
            **constexprs(act),
        )
        _alpha_relu_dgamma_kernel[(1,)](
            partials, gamma, nu, dgamma, n_programs, BLOCK_SIZE=final_block, num_warps=4
        )
    return dx, dgamma
