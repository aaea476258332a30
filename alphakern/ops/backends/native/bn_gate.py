"""The native kernels of BatchNorm + gate seen from Python — csrc/cpu/bn_gate.cpp for CPU tensors,
csrc/cuda/bn_gate.cu for CUDA ones (one schema, ``schema.py``): the per-channel fp32 parameters
they take, and the forward/backward of the fused op on them.

With a residual r (``bn_add_gate_*``) the gated value is s = z + r, and the apply pass also writes
∂L/∂r = ds. Training makes two passes over x forward (``bn_stats``; ``bn_gate_fwd``) and two backward
(``bn_gate_bwd_reduce``: Σ dz, Σ dz·x̂ and the gate's Σ dy·(f(z) − z) per channel in one pass over x
and dy, z recomputed from x and the batch statistics; ``bn_gate_bwd_apply``). Eval: one pass each
way, with the running statistics.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alphakern.ops.backends.native import cpu, cuda, glue
from alphakern.ops.core import batchnorm as bn
from alphakern.ops.core.activations import Activation
from alphakern.ops.core.alpha import alpha_terms
from alphakern.ops.core.layout import like

DTYPES = cpu.DTYPES


def available(device: str = "cpu") -> bool:
    return cuda.available() if device == "cuda" else cpu.available()


def _ops(x: Tensor):
    """The library that holds x's device's kernels, built (CPU) or built and loaded (CUDA) once."""
    (cuda if x.is_cuda else cpu).build()
    return torch.ops.alphakern_C


def _kernel_inputs(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, gamma: Tensor, nu: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(x in the kernels' layout, weight and bias as fp32 [C], 1 − α per channel in fp32 — a layer
    gate's repeated —, dα/dγ in fp64 in γ's shape). The α terms: the CPU gate ops' (glue's
    ``cpu_gate_terms``), on a GPU the same fp64 formula in torch (ops.core.alpha)."""
    xd, _ = bn.kernel_layout(x)
    c = x.shape[1]
    w, b = bn.affine(weight, bias, c, x)
    if gamma.is_cuda:
        _, om, dadg = alpha_terms(gamma, nu)
        om = om.float()
    else:
        om, dadg = glue.cpu_gate_terms(torch.ops.alphakern_C, gamma.detach(), nu.detach())
    return xd, w, b, om.reshape(-1).expand(c).contiguous(), dadg


def _residual_args(residual: Tensor | None, xd: Tensor) -> tuple[Tensor, ...]:
    """The bn_add_gate ops' extra argument: the residual laid out as xd (none for bn_gate's)."""
    return () if residual is None else (like(residual, xd),)


def statistics(
    x: Tensor, training: bool, running_mean: Tensor | None, running_var: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, biased var, invstd) in fp32: of the batch (training) or the running ones."""
    if not training:
        return bn.running(running_mean, running_var, eps)
    mean, var = _ops(x).bn_stats(bn.kernel_layout(x)[0])
    return mean, var, torch.rsqrt(var + eps)


def forward(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    invstd: Tensor,
    gamma: Tensor,
    nu: Tensor,
    act: Activation,
) -> Tensor:
    ops = _ops(x)  # built before gate_terms is called
    xd, w, b, slopes, _ = _kernel_inputs(x, weight, bias, gamma, nu)
    fwd = ops.bn_gate_fwd if residual is None else ops.bn_add_gate_fwd
    y = fwd(xd, *_residual_args(residual, xd), mean, invstd, w, b, slopes, act.code, act.negative_slope)
    return bn.as_x(y, x)


def backward(
    dy: Tensor,
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    invstd: Tensor,
    gamma: Tensor,
    nu: Tensor,
    training: bool,
    act: Activation,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor]:
    """(∂L/∂x, ∂L/∂residual (None without one), ∂L/∂weight, ∂L/∂bias, ∂L/∂γ); the affine gradients
    in fp32 (ones/zeros' when None)."""
    ops = _ops(x)
    xd, w, b, slopes, dadg = _kernel_inputs(x, weight, bias, gamma, nu)
    dyd = like(dy, xd)
    f = (act.code, act.negative_slope)
    count = x.numel() // max(x.shape[1], 1)
    reduce, apply = (
        (ops.bn_gate_bwd_reduce, ops.bn_gate_bwd_apply)
        if residual is None
        else (ops.bn_add_gate_bwd_reduce, ops.bn_add_gate_bwd_apply)
    )
    rs = _residual_args(residual, xd)
    sums = reduce(dyd, xd, *rs, mean, invstd, w, b, slopes, *f)  # [3, C] fp64
    ca, cb = bn.centring(sums, training, count, mean)
    out = apply(dyd, xd, *rs, mean, invstd, w, b, slopes, ca, cb, *f)  # dx, or (dx, dr) with a residual
    dx, dr = (out, None) if residual is None else (out[0], bn.as_x(out[1], x))
    return (bn.as_x(dx, x), dr, *bn.affine_and_gate_grads(sums, gamma, dadg))
