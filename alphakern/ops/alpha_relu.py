"""The ``alphakern::alpha_relu`` op: torch.library registration, fake kernels, autograd, dispatch.

One Python-defined op for every backend: ``torch.compile(fullgraph=True)`` sees an opaque op with
a fake (meta) kernel, so it never graph-breaks, and autograd is registered once for all backends.
The backend name travels as a string argument; ``alpha_relu`` below resolves "auto" before
calling, so the op only ever sees "torch", "triton", "cuda" or "cpu". Every entry — ``alpha_relu``, the
registered ops called directly, their fake kernels under torch.compile — validates its inputs with
``ops.core.checks.check_inputs`` (metadata only, no host sync) before any kernel runs; that check
also resolves γ's granularity, which every backend receives as ``granularity`` (``ops.backends``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from alphakern.ops import backends
from alphakern.ops.core.activations import RELU
from alphakern.ops.core.checks import check_backend, check_grad, check_inputs
from alphakern.ops.gate import (
    ENV_VAR,
    GateFunction,
    auto_backend,
    grads,
    on_feature_rows,
    resolve_backend,
    setup_context,
)

__all__ = [
    "ENV_VAR",
    "alpha_relu",
    "alpha_relu_backward_op",
    "alpha_relu_op",
    "auto_backend",
    "resolve_backend",
]


@torch.library.custom_op("alphakern::alpha_relu", mutates_args=())
def alpha_relu_op(x: Tensor, gamma: Tensor, nu: Tensor, backend: str) -> Tensor:
    """y = x + α·relu(−x) with α = σ((σ(γ) − ½)·ν), on the named backend."""
    granularity = check_inputs(x, gamma, nu)
    return backends.get(backend).forward(x, gamma, nu, granularity, RELU)


@alpha_relu_op.register_fake
def _(x: Tensor, gamma: Tensor, nu: Tensor, backend: str) -> Tensor:
    check_inputs(x, gamma, nu)
    check_backend(backend)
    return torch.empty_like(x)


@torch.library.custom_op("alphakern::alpha_relu_backward", mutates_args=())
def alpha_relu_backward_op(
    dy: Tensor, x: Tensor, gamma: Tensor, nu: Tensor, backend: str
) -> tuple[Tensor, Tensor]:
    """(∂L/∂x, ∂L/∂γ) of alpha_relu for the upstream gradient ``dy``."""
    granularity = check_inputs(x, gamma, nu)
    check_grad(dy, x)
    return backends.get(backend).backward(dy, x, gamma, nu, granularity, RELU)


@alpha_relu_backward_op.register_fake
def _(dy: Tensor, x: Tensor, gamma: Tensor, nu: Tensor, backend: str) -> tuple[Tensor, Tensor]:
    check_inputs(x, gamma, nu)
    check_grad(dy, x)
    check_backend(backend)
    return torch.empty_like(x), torch.empty_like(gamma)


def _setup(ctx, inputs, output) -> None:
    x, gamma, nu, backend = inputs
    setup_context(ctx, x, gamma, nu, backend, RELU, None)


def _grads(ctx, dy: Tensor):
    dx, dgamma = grads(ctx, dy, lambda *t: alpha_relu_backward_op(*t, ctx.backend))
    return dx, dgamma, None, None


alpha_relu_op.register_autograd(_grads, setup_context=_setup)


def alpha_relu(
    x: Tensor, gamma: Tensor, nu: Tensor, backend: str | None = None, granularity: str | None = None
) -> Tensor:
    """Check, resolve the backend, then the registered op while torch.compile traces, the lean
    Function in eager mode. ``granularity``: asked for, else inferred from the shapes."""
    granularity = check_inputs(x, gamma, nu, granularity)
    if granularity == "feature":
        return on_feature_rows(x, lambda rows: alpha_relu(rows, gamma, nu, backend, "element"))
    name = resolve_backend(backend, x)
    if torch.compiler.is_compiling():
        return alpha_relu_op(x, gamma, nu, name)
    return GateFunction.apply(x, gamma, nu, name, granularity, RELU)
