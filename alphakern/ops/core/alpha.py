"""The α formula, one home for every backend and entry point.

α = σ((σ(γ) − ½)·ν) per gate. ``alpha`` is the differentiable form (modules, budgets, reports);
``alpha_terms`` the fp64 constants the kernels multiply by. The native sources compute the same
terms in ``csrc/common/alpha_terms.h`` and the Triton kernels in ``backends/triton/common.py``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def alpha(gamma: Tensor, nu: Tensor) -> Tensor:
    """α = σ((σ(γ) − ½)·ν), in γ's dtype, differentiable w.r.t. γ."""
    return torch.sigmoid((torch.sigmoid(gamma) - 0.5) * nu)


def gamma_for(a: float, nu: float) -> float:
    """The γ at which α(γ, ν) = ``a``: logit(½ + logit(a)/ν). At ν = 0 every γ gives ½, and
    |logit(a)| must stay below ν/2 (σ(γ) − ½ lies in (−½, ½)); otherwise a ValueError."""
    if not 0 < a < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {a!r}")
    if a == 0.5:
        return 0.0
    z = math.log(a / (1 - a))
    if not abs(z) < nu / 2:
        reach = 1 / (1 + math.exp(-nu / 2)) if nu > 0 else 0.5
        raise ValueError(
            f"alpha = {a:g} is out of reach at nu = {nu:g}: alpha = σ((σ(γ) − ½)·nu) spans "
            f"({1 - reach:.4g}, {reach:.4g}); start nu above {2 * abs(z):.4g}"
        )
    s = 0.5 + z / nu
    return math.log(s / (1 - s))


def alpha_terms(gamma: Tensor, nu: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(α, 1 − α, dα/dγ) per gate as float64 tensors of γ's shape (0-dim for a 1-element γ) on γ's
    device, not differentiable.

    float64 makes α correctly rounded once it is cast to fp32 (the Triton and CUDA kernels do
    the same math in fp64, one scalar per program), and 1 − α is σ(−z), not a subtraction: near
    saturation (ν in the hundreds) ``1 - a`` in fp32 keeps almost no digits of the slope.
    dα/dγ = α(1 − α)·ν·σ(γ)σ(−γ).
    """
    g = gamma.detach().double()
    g = g.reshape(()) if g.numel() == 1 else g
    n = nu.detach().double().reshape(())
    s = torch.sigmoid(g)
    z = (s - 0.5) * n
    a, om = torch.sigmoid(z), torch.sigmoid(-z)
    return a, om, a * om * n * s * torch.sigmoid(-g)
