"""The native kernels of BatchNorm + gate seen from Python — csrc/cpu/bn_gate.cpp for CPU tensors,
csrc/cuda/bn_gate.cu for CUDA ones (one schema, ``schema.py``): the fused op's forward and backward,
each ONE native call (``alphakern_C::bn_gate``, ``bn_gate_backward``), whose host side (on host
arrays in csrc/cpu/bn_gate.cpp; as tensor ops in csrc/common/bn_gate_host.h for CUDA) lays out x,
makes the fp32 per-channel parameters and the α terms, and runs the passes — in Python those
were ~30 small tensor ops per call, as costly as the kernels' savings on ResNet-20's small
activations.

With a residual r the gated value is s = z + r and ∂L/∂r = ds: the apply pass writes it (on the CPU
in fp32 the sums pass does, and the apply pass reads it back instead of dy and r).
Training makes two passes over x forward (``bn_stats``; ``bn_gate_fwd``) and two backward
(``bn_gate_bwd_reduce``: Σ dz, Σ dz·x̂ and the gate's Σ dy·(f(z) − z) per channel in one pass over x
and dy, z recomputed from x and the batch statistics; ``bn_gate_bwd_apply``). Eval: one pass each
way, with the running statistics.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alphakern.ops.backends.native import cpu, cuda
from alphakern.ops.core.activations import Activation

DTYPES = cpu.DTYPES


def available(device: str = "cpu") -> bool:
    return cuda.available() if device == "cuda" else cpu.available()


def _ops(x: Tensor):
    """The library that holds x's device's kernels, built (CPU) or built and loaded (CUDA) once."""
    (cuda if x.is_cuda else cpu).build()
    return torch.ops.alphakern_C


def forward(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    gamma: Tensor,
    nu: Tensor,
    training: bool,
    eps: float,
    act: Activation,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, mean, biased var, invstd), the statistics fp32: the batch's (training) or copies of the
    running ones."""
    return _ops(x).bn_gate(
        x, residual, weight, bias, running_mean, running_var, gamma, nu, training, eps, act.code,
        act.negative_slope,
    )  # fmt: skip


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
    dx, dr, dw, db, dg = _ops(x).bn_gate_backward(
        dy, x, residual, weight, bias, mean, invstd, gamma, nu, training, act.code, act.negative_slope
    )
    return dx, None if residual is None else dr, dw, db, dg
