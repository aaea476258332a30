"""What every backend and entry point shares: the α formula, the dtype/backend lists, input checks.

One home each (as Liger-Kernel's ``ops/utils.py``): the functional API, the registered op, its
fake kernels and the eager ``autograd.Function`` all validate through ``check_inputs``, and every
backend takes α from ``alpha_terms``.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Concrete backends the op dispatches to; "auto" is resolved by alphakern.functional.
BACKENDS = ("torch", "triton", "cuda", "cpu")
BACKEND_CHOICES = ("auto", *BACKENDS)
# dtypes the fused kernels take (math in fp32); the torch backend takes every floating dtype.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# One gate (γ) per layer, per channel (dim 1, like F.prelu's weight) or per element of a sample.
GRANULARITIES = ("layer", "channel", "element")


def alpha(gamma: Tensor, nu: Tensor) -> Tensor:
    """α = σ((σ(γ) − ½)·ν), in γ's dtype, differentiable w.r.t. γ."""
    return torch.sigmoid((torch.sigmoid(gamma) - 0.5) * nu)


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


def _scalar_problem(t: object) -> str | None:
    if not isinstance(t, Tensor):
        return type(t).__name__
    if t.numel() != 1 or not t.is_floating_point():
        return f"a {t.dtype} tensor of shape {tuple(t.shape)}"
    return None


def check_scalar(t: object, name: str) -> None:
    """γ and ν: 1-element floating tensors (any shape with one element)."""
    what = _scalar_problem(t)
    if what is not None:
        raise ValueError(f"{name} must be a 1-element floating-point tensor, got {what}")


def check_gamma(gamma: object) -> None:
    """γ of any shape (its granularity is checked against x by ``granularity``): floating point."""
    if not isinstance(gamma, Tensor) or not gamma.is_floating_point():
        what = f"a {gamma.dtype} tensor" if isinstance(gamma, Tensor) else type(gamma).__name__
        raise ValueError(f"gamma must be a floating-point tensor, got {what}")


def granularity(x: Tensor, gamma: Tensor) -> str:
    """ "layer", "channel" or "element": what γ's shape means for x (ValueError if nothing).

    A 1-element γ is one gate for the layer; shape (C,) with C = x.shape[1] one per channel;
    shape x.shape[1:] one per element of a sample, shared over the batch. For a 2-D x the last
    two coincide (and compute the same)."""
    if gamma.numel() == 1:
        return "layer"
    if x.dim() >= 2 and gamma.shape == x.shape[1:2]:
        return "channel"
    if x.dim() >= 2 and gamma.shape == x.shape[1:]:
        return "element"
    accepted = "1 element (per layer)"
    if x.dim() >= 2:
        accepted += f", {tuple(x.shape[1:2])} (per channel) or {tuple(x.shape[1:])} (per element)"
    else:
        accepted += " (per-channel and per-element gates need x with ≥ 2 dims)"
    raise ValueError(
        f"gamma of shape {tuple(gamma.shape)} does not fit x of shape {tuple(x.shape)}: "
        f"gamma must have {accepted}"
    )


def check_inputs(x: object, gamma: object, nu: object) -> None:
    """The op's contract, checked without a host sync: shape, dtype and device metadata only.

    Raises TypeError for a non-floating x, ValueError for a bad γ/ν or one on another device
    (a CPU γ read by a CUDA kernel would be a host pointer dereferenced on the GPU).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor (float32/float16/bfloat16/float64), got {x.dtype}"
        )
    check_gamma(gamma)
    if gamma.numel() == 0:
        check_scalar(gamma, "gamma")  # the per-layer message: a 1-element tensor was expected
    granularity(x, gamma)
    check_scalar(nu, "nu")
    for name, t in (("gamma", gamma), ("nu", nu)):
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")


def check_grad(dy: Tensor, x: Tensor) -> None:
    """The upstream gradient of the backward op: x's shape, dtype and device."""
    if not isinstance(dy, Tensor) or dy.shape != x.shape or dy.dtype != x.dtype or dy.device != x.device:
        what = f"{dy.dtype} {tuple(dy.shape)} on {dy.device}" if isinstance(dy, Tensor) else type(dy).__name__
        raise ValueError(f"dy must match x ({x.dtype} {tuple(x.shape)} on {x.device}), got {what}")


def check_backend(name: object, source: str = "backend", choices: tuple[str, ...] = BACKENDS) -> str:
    if name not in choices:
        raise ValueError(f"{source} must be one of {list(choices)}, got {name!r}")
    return name  # type: ignore[return-value]
