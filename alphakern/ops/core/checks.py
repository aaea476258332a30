"""Input checks of the op and its entry points (metadata only: no host sync), and the names they
accept. The native libraries check their own arguments again in ``csrc/common/checks.h``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from alphakern.ops.core.granularity import granularity_of

# The concrete backends a call can run on; "auto" is resolved by ops.alpha_relu.resolve_backend.
BACKEND_NAMES = ("torch", "triton", "cuda", "cpu")
# What ``backend=`` and $ALPHAKERN_BACKEND accept.
BACKEND_CHOICES = ("auto", *BACKEND_NAMES)
# dtypes the fused kernels take (math in fp32); the torch backend takes every floating dtype.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def is_finite_number(v: object) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite: what a hyperparameter must be."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_module(value: object, name: str = "model") -> None:
    """The graph tools' model: an nn.Module. Without this check a wrong object fails deep inside
    with Python's AttributeError (or, in ``unfuse_bn``, comes back unchanged)."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")


def check_tensor(value: object, name: str = "example_input") -> None:
    """A tensor argument of the graph tools (the example input a model is run or traced on)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


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


def check_inputs(x: object, gamma: object, nu: object, granularity: str | None = None) -> str:
    """The op's contract, checked without a host sync: shape, dtype and device metadata only.
    Returns γ's granularity for x (``granularity``: the one asked for, else inferred).

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
    granularity = granularity_of(x, gamma, granularity)
    check_scalar(nu, "nu")
    for name, t in (("gamma", gamma), ("nu", nu)):
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
    return granularity


def check_grad(dy: Tensor, x: Tensor) -> None:
    """The upstream gradient of the backward op: x's shape, dtype and device."""
    if not isinstance(dy, Tensor) or dy.shape != x.shape or dy.dtype != x.dtype or dy.device != x.device:
        what = f"{dy.dtype} {tuple(dy.shape)} on {dy.device}" if isinstance(dy, Tensor) else type(dy).__name__
        raise ValueError(f"dy must match x ({x.dtype} {tuple(x.shape)} on {x.device}), got {what}")


def check_choice(name: object, source: str, choices: tuple[str, ...]) -> str:
    """``name`` if it is one of ``choices``, else a ValueError naming ``source`` and the choices."""
    if name not in choices:
        raise ValueError(f"{source} must be one of {list(choices)}, got {name!r}")
    return name  # type: ignore[return-value]


def check_backend(name: object, source: str = "backend", choices: tuple[str, ...] = BACKEND_NAMES) -> str:
    return check_choice(name, source, choices)
