"""Triton kernels for per-channel and per-element gates (γ of shape (C,) or x.shape[1:]).

The gate of an element follows from its logical index, whatever x's dense layout: x is seen as
[A, G] ("cols") or [A, C, B] ("rows"), see ops/core/gate_layout.py.

- "cols": a program takes a [BLOCK_A, BLOCK_G] tile and computes 1 − α for its BLOCK_G gates
  once; its backward keeps one fp32 partial per column, and a grid-stride loop over row blocks
  bounds the partials.
- "rows": a program takes a chunk of one row of B elements, all of one channel, so 1 − α is one
  scalar per program and the backward partial one number, stored so that the channel is the
  column.

Either way ∂L/∂γ is a fixed-order column sum of the partials (no atomics; the partition depends
on the shapes only), then the chain rule in fp64. α terms and element math from ``common``
(fp64 α, 1 − α as σ(−z); fp32 element math), int64 offsets.
"""

from __future__ import annotations

import torch

from alphakern.ops.backends.triton.common import check_runnable, constexprs, device_ctx, tl, triton
from alphakern.ops.core.activations import RELU, Activation
from alphakern.ops.core.gate_layout import batch_outermost, dgamma, layout_gates
from alphakern.ops.core.layout import dense_input_and_output, flat, like

TILE = 2048  # elements per program tile
MAX_PROGRAMS = 8192  # backward: caps the partials, independent of the device
FINAL_BLOCK_K = 32
FINAL_BLOCK_G = 64

if triton is not None:
    from alphakern.ops.backends.triton.common import _dsum, _dx, _weights, _y

    @triton.jit
    def _cols_fwd_kernel(
        x_ptr, y_ptr, gate_ptr, nu_ptr, A, G,
        BLOCK_A: tl.constexpr, BLOCK_G: tl.constexpr, ACT: tl.constexpr, NEG: tl.constexpr,
    ):  # fmt: skip
        cols = tl.program_id(1) * BLOCK_G + tl.arange(0, BLOCK_G)
        cmask = cols < G
        a, om = _weights(tl.load(gate_ptr + cols, mask=cmask, other=0.0), nu_ptr)
        rows = tl.program_id(0).to(tl.int64) * BLOCK_A + tl.arange(0, BLOCK_A)
        offs = rows[:, None] * G + cols[None, :]
        mask = (rows < A)[:, None] & cmask[None, :]
        x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
        y = _y(x, a[None, :], om[None, :], ACT, NEG)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _cols_bwd_kernel(
        dy_ptr,
        x_ptr,
        dx_ptr,
        partial_ptr,
        gate_ptr,
        nu_ptr,
        A,
        G,
        row_blocks_per_program,
        BLOCK_A: tl.constexpr,
        BLOCK_G: tl.constexpr,
        ACT: tl.constexpr,
        NEG: tl.constexpr,
    ):
        pid_a = tl.program_id(0)
        n_a = tl.num_programs(0)
        cols = tl.program_id(1) * BLOCK_G + tl.arange(0, BLOCK_G)
        cmask = cols < G
        a, om = _weights(tl.load(gate_ptr + cols, mask=cmask, other=0.0), nu_ptr)
        acc = tl.zeros((BLOCK_A, BLOCK_G), dtype=tl.float32)
        for i in range(0, row_blocks_per_program):  # grid-stride over row blocks
            rows = (pid_a + i * n_a).to(tl.int64) * BLOCK_A + tl.arange(0, BLOCK_A)
            offs = rows[:, None] * G + cols[None, :]
            mask = (rows < A)[:, None] & cmask[None, :]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dx = _dx(x, dy, a[None, :], om[None, :], ACT, NEG)
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
            acc += _dsum(x, dy, ACT, NEG)
        tl.store(partial_ptr + pid_a.to(tl.int64) * G + cols, tl.sum(acc, axis=0), mask=cmask)

    @triton.jit
    def _rows_fwd_kernel(
        x_ptr, y_ptr, gamma_ptr, nu_ptr, C, B, n_chunks,
        BLOCK: tl.constexpr, ACT: tl.constexpr, NEG: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0).to(tl.int64)
        row = pid // n_chunks
        a, om = _weights(tl.load(gamma_ptr + row % C), nu_ptr)
        in_row = (pid % n_chunks) * BLOCK + tl.arange(0, BLOCK)
        mask = in_row < B
        offs = row * B + in_row
        x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
        y = _y(x, a, om, ACT, NEG)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _rows_bwd_kernel(
        dy_ptr, x_ptr, dx_ptr, partial_ptr, gamma_ptr, nu_ptr, C, B, n_chunks,
        BLOCK: tl.constexpr, ACT: tl.constexpr, NEG: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0).to(tl.int64)
        row = pid // n_chunks
        chunk = pid % n_chunks
        c = row % C
        a, om = _weights(tl.load(gamma_ptr + c), nu_ptr)
        in_row = chunk * BLOCK + tl.arange(0, BLOCK)
        mask = in_row < B
        offs = row * B + in_row
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dx = _dx(x, dy, a, om, ACT, NEG)
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        part = tl.sum(_dsum(x, dy, ACT, NEG), axis=0)
        # partials as [A·n_chunks, C]: the channel is the column the final sum runs down
        tl.store(partial_ptr + ((row // C) * n_chunks + chunk) * C + c, part)

    @triton.jit
    def _colsum_kernel(partial_ptr, out_ptr, K, G, BLOCK_K: tl.constexpr, BLOCK_G: tl.constexpr):
        """out[g] = Σ_k partial[k, g] in a fixed order: BLOCK_K running sums per column, added
        pairwise at the end (a single running sum over tens of thousands of partials would lose
        digits). The deterministic half of every per-gate γ-gradient."""
        cols = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)
        cmask = cols < G
        acc = tl.zeros((BLOCK_K, BLOCK_G), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rows = (k0 + tl.arange(0, BLOCK_K)).to(tl.int64)
            mask = (rows < K)[:, None] & cmask[None, :]
            acc += tl.load(partial_ptr + rows[:, None] * G + cols[None, :], mask=mask, other=0.0)
        tl.store(out_ptr + cols, tl.sum(acc, axis=0), mask=cmask)


def _cols_blocks(G: int) -> tuple[int, int]:
    block_g = min(triton.next_power_of_2(G), 256)
    return max(1, TILE // block_g), block_g


def _rows_block(B: int) -> int:
    return min(TILE, triton.next_power_of_2(B))


def _rows_warps(block: int, element_size: int) -> int:
    """Warps for a 1-D row chunk: 16 bytes per thread (a 1024-element fp16 chunk over 8 warps
    would be 8-byte accesses)."""
    return max(1, min(8, block * element_size // (32 * 16)))


def forward(
    x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, granularity: str, act: Activation = RELU
) -> torch.Tensor:
    check_runnable(x)
    xd, y = dense_input_and_output(x)
    if x.numel() == 0:
        return y
    if granularity == "element" and not batch_outermost(xd):  # gather once; the result keeps x's layout
        return like(forward(x.contiguous(), gamma, nu, granularity, act), y)
    p = layout_gates(xd, gamma, granularity)
    with device_ctx(x):
        if p.mode == "cols":
            block_a, block_g = _cols_blocks(p.G)
            grid = (triton.cdiv(p.A, block_a), triton.cdiv(p.G, block_g))
            _cols_fwd_kernel[grid](
                flat(xd),
                flat(y),
                p.ordered,
                nu,
                p.A,
                p.G,
                BLOCK_A=block_a,
                BLOCK_G=block_g,
                num_warps=8,
                **constexprs(act),
            )
        else:
            block = _rows_block(p.B)
            n_chunks = triton.cdiv(p.B, block)
            _rows_fwd_kernel[(p.A * p.G * n_chunks,)](
                flat(xd), flat(y), p.ordered, nu, p.G, p.B, n_chunks, BLOCK=block,
                num_warps=_rows_warps(block, x.element_size()), **constexprs(act),
            )  # fmt: skip
    return y


def _column_sums(partials: torch.Tensor, K: int, G: int) -> torch.Tensor:
    sums = torch.empty(G, device=partials.device, dtype=torch.float32)
    _colsum_kernel[(triton.cdiv(G, FINAL_BLOCK_G),)](
        partials, sums, K, G, BLOCK_K=FINAL_BLOCK_K, BLOCK_G=FINAL_BLOCK_G, num_warps=4
    )
    return sums


def backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    gamma: torch.Tensor,
    nu: torch.Tensor,
    granularity: str,
    act: Activation = RELU,
    *,
    max_programs: int = MAX_PROGRAMS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂L/∂x, ∂L/∂γ), ∂L/∂γ of γ's shape and dtype. ``max_programs`` lets tests force the
    grid-stride loop over row blocks."""
    check_runnable(x)
    xd, dx = dense_input_and_output(x)
    if x.numel() == 0:
        return dx, torch.zeros_like(gamma)
    if granularity == "element" and not batch_outermost(xd):
        dxc, dg = backward(
            dy.contiguous(), x.contiguous(), gamma, nu, granularity, act, max_programs=max_programs
        )
        return like(dxc, dx), dg
    dyd = like(dy, dx)
    p = layout_gates(xd, gamma, granularity)
    with device_ctx(x):
        if p.mode == "cols":
            block_a, block_g = _cols_blocks(p.G)
            n_g = triton.cdiv(p.G, block_g)
            row_blocks = triton.cdiv(p.A, block_a)
            n_a = min(row_blocks, max(1, max_programs // n_g))
            partials = torch.empty(n_a, p.G, device=x.device, dtype=torch.float32)
            _cols_bwd_kernel[(n_a, n_g)](
                flat(dyd), flat(xd), flat(dx), partials, p.ordered, nu, p.A, p.G,
                triton.cdiv(row_blocks, n_a), BLOCK_A=block_a, BLOCK_G=block_g, num_warps=8,
                **constexprs(act),
            )  # fmt: skip
            sums = _column_sums(partials, n_a, p.G)
        else:
            block = _rows_block(p.B)
            n_chunks = triton.cdiv(p.B, block)
            partials = torch.empty(p.A * n_chunks, p.G, device=x.device, dtype=torch.float32)
            _rows_bwd_kernel[(p.A * p.G * n_chunks,)](
                flat(dyd), flat(xd), flat(dx), partials, p.ordered, nu, p.G, p.B, n_chunks,
                BLOCK=block, num_warps=_rows_warps(block, x.element_size()), **constexprs(act),
            )  # fmt: skip
            sums = _column_sums(partials, p.A * n_chunks, p.G)
    return dx, dgamma(sums, p, gamma, nu)
