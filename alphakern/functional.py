"""Functional API: ``alpha``, ``alpha_relu`` and ``gate``; checks and backend choice live with the ops."""

from __future__ import annotations

from torch import Tensor

from alphakern.ops import alpha_relu as _op
from alphakern.ops import bn_gate as _bn
from alphakern.ops import gate as _gate
from alphakern.ops.alpha_relu import ENV_VAR, resolve_backend
from alphakern.ops.core import BACKEND_CHOICES, check_gamma, check_scalar
from alphakern.ops.core import alpha as _alpha
from alphakern.ops.core.activations import KINDS, Activation

# What ``backend=`` accepts ("auto" and the concrete backends, ops.core.checks.BACKEND_NAMES).
BACKENDS = BACKEND_CHOICES

__all__ = [
    "ACTIVATIONS", "BACKENDS", "ENV_VAR", "KINDS",
    "alpha", "alpha_relu", "bn_gate", "gate", "resolve_backend",
]  # fmt: skip
# Deprecated alias of KINDS (the six kinds of non-linearity a gate has): the name ACTIVATIONS means
# the op's activation names in ops.core.activations (seven: "gelu_tanh" too). Kept for callers of
# alphakern.ACTIVATIONS; use alphakern.KINDS.
ACTIVATIONS = KINDS


def alpha(gamma: Tensor, nu: Tensor) -> Tensor:
    """α = σ((σ(γ) − ½)·ν) per gate, γ's shape: 1 keeps a ReLU, 0 makes it the identity.
    Differentiable in γ; ν is one number for the layer."""
    check_gamma(gamma)
    check_scalar(nu, "nu")
    return _alpha(gamma, nu)


def alpha_relu(
    x: Tensor, gamma: Tensor, nu: Tensor, *, granularity: str | None = None, backend: str | None = None
) -> Tensor:
    """R_α(x) = x + α·relu(−x) with α = σ((σ(γ) − ½)·ν); differentiable w.r.t. x and γ.

    ``granularity``: what γ's shape means — "layer" (1 element), "channel" ((C,), C = x.shape[1]),
    "element" (x.shape[1:], shared over the batch) or "feature" ((D,), D = x.shape[-1], shared over
    every leading dim: a transformer's hidden features at every token). None (default) infers the
    first three from the shapes; "feature" is never inferred, since D can equal C.

    ``backend``: "auto" (default: triton on CUDA; on the CPU the native "cpu" kernels when they are
    built, else "torch"), "torch", "triton", "cuda" or "cpu"; the environment variable
    ALPHAKERN_BACKEND overrides the default.
    """
    return _op.alpha_relu(x, gamma, nu, backend, granularity)


def gate(
    x: Tensor,
    gamma: Tensor,
    nu: Tensor,
    *,
    activation: str = "relu",
    negative_slope: float = 0.01,
    approximate: str = "none",
    granularity: str | None = None,
    backend: str | None = None,
) -> Tensor:
    """G_α,f(x) = x + α·(f(x) − x) with α = σ((σ(γ) − ½)·ν): f where α = 1, x where α = 0;
    differentiable w.r.t. x and γ.

    ``activation``: "relu" (= ``alpha_relu``, bit for bit), "relu6", "leaky_relu"
    (``negative_slope``), "gelu" (``approximate`` "none" or "tanh", as F.gelu), "silu",
    "hardswish". ``granularity`` and ``backend`` as ``alpha_relu``'s (every backend has every f
    and granularity).
    """
    act = Activation.of(activation, negative_slope, approximate)
    if act.name == "relu":
        return _op.alpha_relu(x, gamma, nu, backend, granularity)
    return _gate.gate(x, gamma, nu, act, backend, granularity)


def bn_gate(
    x: Tensor,
    gamma: Tensor,
    nu: Tensor,
    *,
    activation: str = "relu",
    negative_slope: float = 0.01,
    approximate: str = "none",
    residual: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    backend: str | None = None,
) -> Tensor:
    """gate(F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps), γ, ν)
    as one fused op where a fused kernel exists (fp32/fp16/bf16, gates per layer or channel: the
    native CPU kernels, Triton on CUDA, the CUDA C++ kernels with backend="cuda"), the composition
    elsewhere. The running statistics, when
    given, are updated in place in training (unbiased variance, ``momentum`` the factor of the
    update), as F.batch_norm does. With a ``residual`` (x's shape, dtype and device) the gate takes
    BN(x) + residual: ``bn_add_gate``. Differentiable w.r.t. x, residual, weight, bias and γ."""
    act = Activation.of(activation, negative_slope, approximate)
    return _bn.bn_gate(x, gamma, nu, act, residual=residual, weight=weight, bias=bias,
                       running_mean=running_mean, running_var=running_var, training=training,
                       momentum=momentum, eps=eps, backend=backend)  # fmt: skip


def bn_add_gate(x: Tensor, residual: Tensor, gamma: Tensor, nu: Tensor, **kwargs) -> Tensor:
    """gate(F.batch_norm(x, ...) + residual, γ, ν) as one fused op: the tail of a residual block
    (BN → add(skip) → activation). Keyword arguments as ``bn_gate``'s."""
    return bn_gate(x, gamma, nu, residual=residual, **kwargs)
