"""Functional API: ``alpha`` and ``alpha_relu``; checks and backend choice live with the op."""

from __future__ import annotations

from torch import Tensor

from alphakern.ops import alpha_relu as _op
from alphakern.ops.alpha_relu import ENV_VAR, resolve_backend
from alphakern.ops.core import BACKEND_CHOICES, check_gamma, check_scalar
from alphakern.ops.core import alpha as _alpha

# What ``backend=`` accepts ("auto" and the concrete backends, ops.core.checks.BACKEND_NAMES).
BACKENDS = BACKEND_CHOICES

__all__ = ["BACKENDS", "ENV_VAR", "alpha", "alpha_relu", "resolve_backend"]


def alpha(gamma: Tensor, nu: Tensor) -> Tensor:
    """α = σ((σ(γ) − ½)·ν) per gate, γ's shape: 1 keeps a ReLU, 0 makes it the identity.
    Differentiable in γ; ν is one number for the layer."""
    check_gamma(gamma)
    check_scalar(nu, "nu")
    return _alpha(gamma, nu)


def alpha_relu(x: Tensor, gamma: Tensor, nu: Tensor, *, backend: str | None = None) -> Tensor:
    """R_α(x) = x + α·relu(−x) with α = σ((σ(γ) − ½)·ν); differentiable w.r.t. x and γ.

    ``backend``: "auto" (default: triton on CUDA; on the CPU the native "cpu" kernels when they are
    built, else "torch"), "torch", "triton", "cuda" or "cpu"; the environment variable
    ALPHAKERN_BACKEND overrides the default.
    """
    return _op.alpha_relu(x, gamma, nu, backend)
