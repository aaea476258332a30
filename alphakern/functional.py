"""Functional API: ``alpha`` and ``alpha_relu`` with argument checks and backend resolution."""

from __future__ import annotations

import os

import torch
from torch import Tensor

from alphakern.ops import alpha_relu as _op
from alphakern.ops import alpha_relu_torch, alpha_relu_triton

BACKENDS = ("auto", "torch", "triton", "cuda")
ENV_VAR = "ALPHAKERN_BACKEND"
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_scalar(t: object, name: str) -> None:
    if not isinstance(t, Tensor) or t.numel() != 1 or not t.is_floating_point():
        what = f"a {t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a 1-element floating-point tensor, got {what}")


def alpha(gamma: Tensor, nu: Tensor) -> Tensor:
    """α = σ((σ(γ) − ½)·ν): 1 keeps a ReLU, 0 makes the layer the identity. Differentiable in γ."""
    _check_scalar(gamma, "gamma")
    _check_scalar(nu, "nu")
    return alpha_relu_torch.alpha(gamma, nu)


def resolve_backend(backend: str | None, x: Tensor) -> str:
    """The concrete backend ("torch", "triton" or "cuda") that ``alpha_relu`` would use for x."""
    name = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    if name not in BACKENDS:
        source = "backend" if backend is not None else f"${ENV_VAR}"
        raise ValueError(f"{source} must be one of {list(BACKENDS)}, got {name!r}")
    if name != "auto":
        return name
    if x.is_cuda and x.dtype in _KERNEL_DTYPES and alpha_relu_triton.available():
        return "triton"
    return "torch"


def alpha_relu(x: Tensor, gamma: Tensor, nu: Tensor, *, backend: str | None = None) -> Tensor:
    """R_α(x) = x + α·relu(−x) with α = σ((σ(γ) − ½)·ν); differentiable w.r.t. x and γ.

    ``backend``: "auto" (default; triton on CUDA, torch elsewhere), "torch", "triton" or "cuda";
    the environment variable ALPHAKERN_BACKEND overrides the default.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor (float32/float16/bfloat16/float64), got {x.dtype}"
        )
    _check_scalar(gamma, "gamma")
    _check_scalar(nu, "nu")
    for name, t in (("gamma", gamma), ("nu", nu)):
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
    return _op.alpha_relu(x, gamma, nu, resolve_backend(backend, x))
