"""The Python side of the native backends (CPU and CUDA): their ops take one gate, or flat
tensors seen as [A, G] / [A·C, B] for gates per channel and element (``gate_layout``); this maps
any dense layout onto them and the per-gate sums back onto ∂L/∂γ.
"""

from __future__ import annotations

import torch

from alphakern.ops import gate_layout
from alphakern.ops._layout import dense_input, flat, like
from alphakern.ops.utils import alpha_terms, granularity


def _plan(ops, xd: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, kind: str):
    """(plan, fp32 slopes in the plan's order, dα/dγ in γ's order or None). On the CPU the α terms
    come from one fp64 pass over γ's own gates, then the slopes are laid out by the same plan
    (repeats included); elsewhere from alpha_terms on the plan's gates."""
    if gamma.is_cpu:
        om, dadg = ops.gate_terms(gamma, nu)
        p = gate_layout.plan(xd, om, kind)
        return p, p.gates.contiguous(), dadg
    p = gate_layout.plan(xd, gamma, kind)
    return p, alpha_terms(p.gates, nu)[1].float().reshape(-1).contiguous(), None


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
    p, slopes, _ = _plan(ops, xd, gamma, nu, kind)
    if p.mode == "cols":
        out = ops.gates_cols_fwd(flat(xd), slopes, p.A, p.G)
    else:
        out = ops.gates_rows_fwd(flat(xd), slopes, p.G, p.B)
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
    p, slopes, dadg = _plan(ops, xd, gamma, nu, kind)
    if p.mode == "cols":
        dx_flat, sums = ops.gates_cols_bwd(flat(dyd), flat(xd), slopes, p.A, p.G)
    else:
        dx_flat, sums = ops.gates_rows_bwd(flat(dyd), flat(xd), slopes, p.G, p.B)
    dg = gate_layout.dgamma(sums, p, gamma, nu, dadg)
    return dx_flat.as_strided(xd.shape, xd.stride()), dg
