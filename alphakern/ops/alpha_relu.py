"""The ``alphakern::alpha_relu`` op: torch.library registration, fake kernels, autograd, dispatch.

One Python-defined op for every backend: ``torch.compile(fullgraph=True)`` sees an opaque op with
a fake (meta) kernel, so it never graph-breaks, and autograd is registered once for all backends.
The backend name travels as a string argument; ``alpha_relu`` below resolves "auto" before
calling, so the op only ever sees "torch", "triton", "cuda" or "cpu". Every entry — ``alpha_relu``, the
registered ops called directly, their fake kernels under torch.compile — validates its inputs with
``ops.core.checks.check_inputs`` (metadata only, no host sync) before any kernel runs; that check
also resolves γ's granularity, which every backend receives as ``kind`` (``ops.backends``).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from alphakern.ops import backends
from alphakern.ops.backends import cpu_backend, triton_backend
from alphakern.ops.core.checks import BACKEND_CHOICES, check_backend, check_grad, check_inputs
from alphakern.ops.core.granularity import granularity

ENV_VAR = "ALPHAKERN_BACKEND"


def auto_backend(device_type: str, dtype: torch.dtype) -> str:
    """What "auto" means: Triton for the dtypes it takes on a GPU, the native kernels on the CPU
    when they are built (``available`` never compiles), the torch backend elsewhere."""
    if device_type == "cuda" and dtype in triton_backend.DTYPES and triton_backend.available():
        return "triton"
    if device_type == "cpu" and dtype in cpu_backend.DTYPES and cpu_backend.available():
        return "cpu"
    return "torch"


def resolve_backend(backend: str | None, x: Tensor) -> str:
    """The concrete backend ("torch", "triton", "cuda" or "cpu") that ``alpha_relu`` would use for x."""
    if backend is None:
        name = check_backend(os.environ.get(ENV_VAR, "auto"), f"${ENV_VAR}", BACKEND_CHOICES)
    else:
        name = check_backend(backend, "backend", BACKEND_CHOICES)
    return auto_backend(x.device.type, x.dtype) if name == "auto" else name


@torch.library.custom_op("alphakern::alpha_relu", mutates_args=())
def alpha_relu_op(x: Tensor, gamma: Tensor, nu: Tensor, backend: str) -> Tensor:
    """y = x + α·relu(−x) with α = σ((σ(γ) − ½)·ν), on the named backend."""
    kind = check_inputs(x, gamma, nu)
    return backends.get(backend).forward(x, gamma, nu, kind)


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
    kind = check_inputs(x, gamma, nu)
    check_grad(dy, x)
    return backends.get(backend).backward(dy, x, gamma, nu, kind)


@alpha_relu_backward_op.register_fake
def _(dy: Tensor, x: Tensor, gamma: Tensor, nu: Tensor, backend: str) -> tuple[Tensor, Tensor]:
    check_inputs(x, gamma, nu)
    check_grad(dy, x)
    check_backend(backend)
    return torch.empty_like(x), torch.empty_like(gamma)


def _setup_context(ctx, inputs, output, kind: str | None = None) -> None:
    x, gamma, nu, backend = inputs
    ctx.save_for_backward(x, gamma, nu)  # only x is tensor-sized: y is never kept
    ctx.backend = backend
    ctx.kind = granularity(x, gamma) if kind is None else kind


def _differentiable_backward(dy: Tensor, x: Tensor, gamma: Tensor, nu: Tensor) -> tuple[Tensor, Tensor]:
    """(∂L/∂x, ∂L/∂γ) from differentiable torch ops: what double backward differentiates."""
    s = torch.sigmoid(gamma)
    z = (s - 0.5) * nu
    a, om = torch.sigmoid(z), torch.sigmoid(-z)
    dadg = a * om * nu * s * torch.sigmoid(-gamma)
    dx = torch.where(x >= 0, dy, dy * om.to(dy.dtype))
    acc = torch.promote_types(x.dtype, torch.float32)  # fp32 sums for fp16/bf16, as the kernels
    dgamma = (dy.to(acc) * torch.relu(-x.to(acc))).sum() * dadg
    return dx, dgamma.to(gamma.dtype).reshape(gamma.shape)


class _FusedBackward(torch.autograd.Function):
    """The backend's fused backward as a differentiable function (for ``create_graph=True``).

    First-order gradients come from the same kernels as without ``create_graph``; their own
    gradients (second order) come from autograd of ``_differentiable_backward``.
    """

    @staticmethod
    def forward(ctx, dy: Tensor, x: Tensor, gamma: Tensor, nu: Tensor, backend: str, kind: str):
        ctx.save_for_backward(dy, x, gamma, nu)
        return backends.get(backend).backward(dy, x, gamma, nu, kind)

    @staticmethod
    def backward(ctx, ddx: Tensor, ddgamma: Tensor):
        dy, x, gamma, nu = ctx.saved_tensors
        wanted = ctx.needs_input_grad[:3]
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_(w) for t, w in zip((dy, x, gamma), wanted, strict=True)]
            outs = _differentiable_backward(*inputs, nu)
            chosen = [t for t, w in zip(inputs, wanted, strict=True) if w]
            grads = iter(torch.autograd.grad(outs, chosen, (ddx, ddgamma), allow_unused=True))
        return (*(next(grads) if w else None for w in wanted), None, None, None)


def _grads(ctx, dy: Tensor, eager: bool):
    """(∂L/∂x, ∂L/∂γ, None, None): the registered backward op (what torch.compile traces) or, in
    eager mode, the backend directly."""
    x, gamma, nu = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: a graph, so higher derivatives work
        dx, dgamma = _FusedBackward.apply(dy, x, gamma, nu, ctx.backend, ctx.kind)
    elif eager:
        dx, dgamma = backends.get(ctx.backend).backward(dy, x, gamma, nu, ctx.kind)
    else:
        dx, dgamma = alpha_relu_backward_op(dy, x, gamma, nu, ctx.backend)
    return dx, dgamma, None, None


alpha_relu_op.register_autograd(lambda ctx, dy: _grads(ctx, dy, eager=False), setup_context=_setup_context)


class AlphaReLUFunction(torch.autograd.Function):
    """The same op for eager mode, without custom_op's Python dispatch (its per-call cost: see
    benchmarks/results/README.md).

    Reached through ``alpha_relu`` below, which has checked the inputs. Forward and backward call
    the backend directly; the saved tensors and double backward are shared with the registered
    op above, which is what torch.compile traces.
    """

    @staticmethod
    def forward(ctx, x: Tensor, gamma: Tensor, nu: Tensor, backend: str, kind: str) -> Tensor:
        # ctx-in-forward style: a separate setup_context makes apply() bind arguments with
        # inspect.signature on every call.
        y = backends.get(backend).forward(x, gamma, nu, kind)
        _setup_context(ctx, (x, gamma, nu, backend), y, kind)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        return (*_grads(ctx, dy, eager=True), None)


def alpha_relu(x: Tensor, gamma: Tensor, nu: Tensor, backend: str | None = None) -> Tensor:
    """Check, resolve the backend, then the registered op while torch.compile traces, the lean
    Function in eager mode."""
    kind = check_inputs(x, gamma, nu)
    name = resolve_backend(backend, x)
    if torch.compiler.is_compiling():
        return alpha_relu_op(x, gamma, nu, name)
    return AlphaReLUFunction.apply(x, gamma, nu, name, kind)
