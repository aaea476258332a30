"""The Python side of the native backends (CPU and CUDA): their ops take one gate, or flat
tensors seen as [A, G] / [A·C, B] for gates per channel and element (``gate_layout``); this maps
any dense layout onto them and the per-gate sums back onto ∂L/∂γ.
"""

from __future__ import annotations

import torch

from alphakern.ops import gate_layout
from alphakern.ops._layout import dense_input, flat, like
from alphakern.ops.utils import alpha_terms, granularity


def _slopes(ops, p: gate_layout.GatePlan, nu: torch.Tensor) -> torch.Tensor:
    if p.gates.is_cpu:  # the CPU library computes them in one fp64 pass
        return ops.gate_terms(p.gates, nu)[0]
    return alpha_terms(p.gates, nu)[1].float().reshape(-1).contiguous()


def _dadg(ops, gamma: torch.Tensor, nu: torch.Tensor) -> torch.Tensor | None:
    return ops.gate_terms(gamma, nu)[1] if gamma.is_cpu else None


def forward(ops, x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """y through ``ops`` (a namespace with the ops of csrc/alpha_relu_schema.cpp)."""
    if gamma.numel() == 1:
        return ops.alpha_relu_fwd(x, gamma, nu)
    kind = granularity(x, gamma)
    xd = dense_input(x)  # the kernels allocate the (flat) output: no empty_like here
    if x.numel() == 0:
        return torch.empty_like(xd)
    if kind == "element" and not gate_layout.batch_outermost(xd):  # gather once
        return like(forward(ops, x.contiguous(), gamma, nu), xd)
    p = gate_layout.plan(xd, gamma, kind)
    if p.mode == "cols":
        out = ops.gates_cols_fwd(flat(xd), _slopes(ops, p, nu), p.A, p.G)
    else:
        out = ops.gates_rows_fwd(flat(xd), _slopes(ops, p, nu), p.G, p.B)
    return out.as_strided(xd.shape, xd.stride())  # the flat result in x's (dense) layout


def backward(
    ops, dy: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂L/∂x, ∂L/∂γ) through ``ops``."""
    if gamma.numel() == 1:
        return ops.alpha_relu_bwd(dy, x, gamma, nu)
    kind = granularity(x, gamma)
    xd = dense_input(x)
    if x.numel() == 0:
        return torch.empty_like(xd), torch.zeros_like(gamma)
    if kind == "element" and not gate_layout.batch_outermost(xd):
        dxc, dg = backward(ops, dy.contiguous(), x.contiguous(), gamma, nu)
        return like(dxc, xd), dg
    dyd = like(dy, xd)
    p = gate_layout.plan(xd, gamma, kind)
    if p.mode == "cols":
        dx_flat, sums = ops.gates_cols_bwd(flat(dyd), flat(xd), _slopes(ops, p, nu), p.A, p.G)
    else:
        dx_flat, sums = ops.gates_rows_bwd(flat(dyd), flat(xd), _slopes(ops, p, nu), p.G, p.B)
    dg = gate_layout.dgamma(sums, p, gamma, nu, _dadg(ops, gamma, nu))
    return dx_flat.as_strided(xd.shape, xd.stride()), dg
