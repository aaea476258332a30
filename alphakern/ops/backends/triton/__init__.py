"""The "triton" backend: ``layer`` (one gate) and ``gates`` (per channel / element) kernels over
``common``'s α terms and element math. Element math fp32, int64 offsets; ∂L/∂γ from fp32
per-program partials summed in a fixed order (no atomics)."""

from __future__ import annotations

import torch

from alphakern.ops.backends.triton import gates, layer
from alphakern.ops.backends.triton.common import INTERPRET, available
from alphakern.ops.core.activations import ACTIVATIONS, RELU, Activation
from alphakern.ops.core.checks import KERNEL_DTYPES

NAME = "triton"
DTYPES = KERNEL_DTYPES

__all__ = ["ACTIVATIONS", "DTYPES", "INTERPRET", "NAME", "available", "backward", "forward", "gates", "layer"]


def forward(
    x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, granularity: str, act: Activation = RELU
) -> torch.Tensor:
    if granularity == "layer":
        return layer.forward(x, gamma, nu, act)
    return gates.forward(x, gamma, nu, granularity, act)


def backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    gamma: torch.Tensor,
    nu: torch.Tensor,
    granularity: str,
    act: Activation = RELU,
) -> tuple[torch.Tensor, torch.Tensor]:
    if granularity == "layer":
        return layer.backward(dy, x, gamma, nu, act)
    return gates.backward(dy, x, gamma, nu, granularity, act)
