"""The Python side of the native backends (CPU and CUDA): their ops (``schema``) take one gate,
or flat tensors seen as [A, G] / [A·C, B] for gates per channel and element (``core.gate_layout``);
this maps any dense layout onto them and the per-gate sums back onto ∂L/∂γ.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from alphakern.ops.core import gate_layout
from alphakern.ops.core.activations import RELU, Activation
from alphakern.ops.core.alpha import alpha_terms
from alphakern.ops.core.layout import dense_input, flat, like

# gate_terms kept per γ while γ and ν hold the same values: a per-element gate's terms (65,536 at
# 64×32×32) cost a fifth of its forward, and they stay the same between optimiser steps (every
# forward of an eval loop; a training step's backward after its forward). A hit is decided on values
# — a copy of γ compared with torch.equal, ν's value — never on version counters, which writes
# through ``.data`` bypass. Fewer gates than TERMS_MIN: computing costs no more than checking.
TERMS_MIN = 4096
TERMS_MAX_BYTES = 64 * 2**20  # γ copy + 1 − α + dα/dγ of the cached gates, least recent out first
_terms: OrderedDict[tuple, tuple] = OrderedDict()


def cpu_gate_terms(ops, gamma: torch.Tensor, nu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ops.gate_terms(gamma, nu)`` (1 − α in fp32, dα/dγ in fp64), from the cache when γ and ν
    hold the values they had when it was computed. The results are shared: read-only."""
    if gamma.numel() < TERMS_MIN:
        return ops.gate_terms(gamma, nu)
    key = (gamma.data_ptr(), tuple(gamma.shape), gamma.stride(), gamma.dtype)
    nu_value = float(nu)
    hit = _terms.get(key)
    if hit is not None and hit[1] == nu_value and torch.equal(hit[0], gamma):
        _terms.move_to_end(key)
        return hit[2], hit[3]
    om, dadg = ops.gate_terms(gamma, nu)
    _terms[key] = (gamma.detach().clone(), nu_value, om, dadg)
    _terms.move_to_end(key)
    while len(_terms) > 1 and sum(16 * e[0].numel() for e in _terms.values()) > TERMS_MAX_BYTES:
        _terms.popitem(last=False)
    return om, dadg


def _slopes(ops, xd: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, granularity: str):
    """(layout, fp32 slopes in the layout's order, dα/dγ in γ's order or None). On the CPU the α
    terms come from one fp64 pass over γ's own gates (``cpu_gate_terms``), then the slopes are laid
    out by the same layout (repeats included); elsewhere from alpha_terms on the laid-out γ."""
    if gamma.is_cpu:
        om, dadg = cpu_gate_terms(ops, gamma, nu)
        lay = gate_layout.layout_gates(xd, om, granularity)
        return lay, lay.ordered.contiguous(), dadg
    lay = gate_layout.layout_gates(xd, gamma, granularity)
    return lay, alpha_terms(lay.ordered, nu)[1].float().reshape(-1).contiguous(), None


def forward(
    ops, x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, granularity: str, act: Activation = RELU
) -> torch.Tensor:
    """y through ``ops`` (the namespace of ``schema``); f's code and slope go with every call."""
    f = (act.code, act.negative_slope)
    if granularity == "layer":
        return ops.layer_gate_fwd(x, gamma, nu, *f)
    xd = dense_input(x)  # the kernels allocate the (flat) output: no empty_like here
    if x.numel() == 0:
        return torch.empty_like(xd)
    if granularity == "element" and not gate_layout.batch_outermost(xd):  # gather once
        return like(forward(ops, x.contiguous(), gamma, nu, granularity, act), xd)
    p, slopes, _ = _slopes(ops, xd, gamma, nu, granularity)
    if p.mode == "cols":
        out = ops.gates_cols_fwd(flat(xd), slopes, p.A, p.G, *f)
    else:
        out = ops.gates_rows_fwd(flat(xd), slopes, p.G, p.B, *f)
    return out.as_strided(xd.shape, xd.stride())  # the flat result in x's (dense) layout


def backward(
    ops,
    dy: torch.Tensor,
    x: torch.Tensor,
    gamma: torch.Tensor,
    nu: torch.Tensor,
    granularity: str,
    act: Activation = RELU,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂L/∂x, ∂L/∂γ) through ``ops``."""
    f = (act.code, act.negative_slope)
    if granularity == "layer":
        return ops.layer_gate_bwd(dy, x, gamma, nu, *f)
    xd = dense_input(x)
    if x.numel() == 0:
        return torch.empty_like(xd), torch.zeros_like(gamma)
    if granularity == "element" and not gate_layout.batch_outermost(xd):
        dxc, dg = backward(ops, dy.contiguous(), x.contiguous(), gamma, nu, granularity, act)
        return like(dxc, xd), dg
    dyd = like(dy, xd)
    p, slopes, dadg = _slopes(ops, xd, gamma, nu, granularity)
    if p.mode == "cols":
        dx_flat, sums = ops.gates_cols_bwd(flat(dyd), flat(xd), slopes, p.A, p.G, *f)
    else:
        dx_flat, sums = ops.gates_rows_bwd(flat(dyd), flat(xd), slopes, p.G, p.B, *f)
    dg = gate_layout.dgamma(sums, p, gamma, nu, dadg)
    return dx_flat.as_strided(xd.shape, xd.stride()), dg
