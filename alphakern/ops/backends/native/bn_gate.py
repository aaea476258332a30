"""The native CPU kernels of BatchNorm + gate (csrc/cpu/bn_gate.cpp) seen from Python: the
per-channel fp32 parameters they take, and the forward/backward of the fused op on them.

Training makes two passes over x forward (``bn_stats``; ``bn_gate_fwd``) and two backward
(``bn_gate_bwd_reduce``: Σ dz, Σ dz·x̂ and the gate's Σ dy·(f(z) − z) per channel in one pass over x
and dy, z recomputed from x and the batch statistics; ``bn_gate_bwd_apply``). Eval: one pass each
way, with the running statistics.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alphakern.ops.backends.native import cpu
from alphakern.ops.core.activations import Activation
from alphakern.ops.core.layout import dense_input, like

NAME = "cpu"
DTYPES = cpu.DTYPES


def available() -> bool:
    return cpu.available()


def _ops():
    cpu.build()
    return torch.ops.alphakern_C


def _dense(x: Tensor) -> Tensor:
    """x as the kernels take it: contiguous, or channels_last for a 4-D x already in that format."""
    xd = dense_input(x)
    if xd.is_contiguous() or (xd.dim() == 4 and xd.is_contiguous(memory_format=torch.channels_last)):
        return xd
    return xd.contiguous()


def _affine(weight: Tensor | None, bias: Tensor | None, c: int, like_t: Tensor) -> tuple[Tensor, Tensor]:
    w = like_t.new_ones(c, dtype=torch.float32) if weight is None else weight.detach().float().contiguous()
    b = like_t.new_zeros(c, dtype=torch.float32) if bias is None else bias.detach().float().contiguous()
    return w, b


def _slopes(gamma: Tensor, nu: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """(1 − α per channel in fp32 — a layer gate's repeated — and dα/dγ in fp64, γ's shape)."""
    om, dadg = _ops().gate_terms(gamma.detach(), nu.detach())
    return om.reshape(-1).expand(c).contiguous(), dadg


def statistics(
    x: Tensor, training: bool, running_mean: Tensor | None, running_var: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, biased var, invstd) in fp32: of the batch (training) or the running ones."""
    if training:
        mean, var = _ops().bn_stats(_dense(x))
    else:
        mean, var = running_mean.detach().float().clone(), running_var.detach().float().clone()
    return mean, var, torch.rsqrt(var + eps)


def forward(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    invstd: Tensor,
    gamma: Tensor,
    nu: Tensor,
    act: Activation,
) -> Tensor:
    xd = _dense(x)
    c = x.shape[1]
    w, b = _affine(weight, bias, c, x)
    slopes, _ = _slopes(gamma, nu, c)
    return _as_x(_ops().bn_gate_fwd(xd, mean, invstd, w, b, slopes, act.code, act.negative_slope), x)


def _as_x(t: Tensor, x: Tensor) -> Tensor:
    """t (computed on the kernels' layout of x) laid out as empty_like(x), as the fake kernels say."""
    return t if t.stride() == x.stride() else like(t, torch.empty_like(x))


def backward(
    dy: Tensor,
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    invstd: Tensor,
    gamma: Tensor,
    nu: Tensor,
    training: bool,
    act: Activation,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(∂L/∂x, ∂L/∂weight, ∂L/∂bias, ∂L/∂γ); the affine gradients in fp32 (ones/zeros' when None)."""
    ops, xd = _ops(), _dense(x)
    dyd = like(dy, xd)
    c = x.shape[1]
    w, b = _affine(weight, bias, c, x)
    slopes, dadg = _slopes(gamma, nu, c)
    f = (act.code, act.negative_slope)
    sums = ops.bn_gate_bwd_reduce(dyd, xd, mean, invstd, w, b, slopes, *f)  # [3, C] fp64
    if training:  # dx = w·invstd·(dz − mean(dz) − x̂·mean(dz·x̂))
        m = max(x.numel() // max(c, 1), 1)
        ca, cb = (sums[0] / m).float(), (sums[1] / m).float()
    else:
        ca = cb = torch.zeros_like(mean)
    dx = ops.bn_gate_bwd_apply(dyd, xd, mean, invstd, w, b, slopes, ca, cb, *f)
    gate_sums = sums[2].sum() if gamma.numel() == 1 else sums[2]  # channels in index order
    dgamma = (gate_sums.reshape(gamma.shape) * dadg).to(gamma.dtype)
    return _as_x(dx, x), sums[1].float(), sums[0].float(), dgamma
