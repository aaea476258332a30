"""The ``alphakern::gate`` op family: G_α,f(x) = x + α·(f(x) − x) for any activation f of
``ops.core.activations``; torch.library registration, fake kernels, autograd, backend choice.

One Python-defined op for every backend, as ``alpha_relu`` (which is this op with f = relu, kept
under its own name): ``torch.compile(fullgraph=True)`` sees an opaque op with a fake kernel, so it
never graph-breaks. The activation travels as its name and leaky_relu's slope; the backend as a
name that ``gate`` below resolves ("auto") before calling. The autograd pieces here (saved tensors,
double backward, the eager Function) serve both ops.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from alphakern.ops import backends
from alphakern.ops.core.activations import RELU, Activation
from alphakern.ops.core.alpha import alpha
from alphakern.ops.core.checks import BACKEND_CHOICES, check_backend, check_grad, check_inputs
from alphakern.ops.core.granularity import feature_rows, gate_view, granularity_of
from alphakern.ops.core.layout import is_dense, like
from alphakern.ops.dispatch import auto_backend

ENV_VAR = "ALPHAKERN_BACKEND"


def resolve_backend(backend: str | None, x: Tensor, act: Activation = RELU) -> str:
    """The concrete backend ("torch", "triton", "cuda" or "cpu") a gate of f on x would use."""
    if backend is None:
        name = check_backend(os.environ.get(ENV_VAR, "auto"), f"${ENV_VAR}", BACKEND_CHOICES)
    else:
        name = check_backend(backend, "backend", BACKEND_CHOICES)
    name = auto_backend(x.device.type, x.dtype, act) if name == "auto" else name  # ops.dispatch
    check_activation(name, act)
    return name


def check_activation(backend: str, act: Activation) -> None:
    """A backend asked by name for an activation it has no kernel for: say which it has."""
    have = backends.get(backend).ACTIVATIONS
    if act.name not in have:
        raise ValueError(
            f"backend={backend!r} has kernels for activation in {list(have)}, got {act.name!r}; "
            "use backend='auto' or 'torch' (or 'triton' on a GPU)"
        )


def setup_context(
    ctx, x: Tensor, gamma: Tensor, nu: Tensor, backend: str, act: Activation, granularity: str | None
):
    ctx.save_for_backward(x, gamma, nu)  # only x is tensor-sized: y is never kept
    ctx.backend = backend
    ctx.act = act
    ctx.granularity = granularity_of(x, gamma) if granularity is None else granularity


def _gate_sum(t: Tensor, granularity: str) -> Tensor:
    """Σ over the positions that share a gate (differentiable)."""
    if granularity == "layer":
        return t.sum()
    return t.sum(dim=[d for d in range(t.dim()) if d != 1]) if granularity == "channel" else t.sum(dim=0)


def _differentiable_backward(
    dy: Tensor, x: Tensor, gamma: Tensor, nu: Tensor, act: Activation, granularity: str
) -> tuple[Tensor, Tensor]:
    """(∂L/∂x, ∂L/∂γ) from differentiable torch ops: what double backward differentiates."""
    s = torch.sigmoid(gamma)
    z = (s - 0.5) * nu
    a, om = torch.sigmoid(z), torch.sigmoid(-z)
    dadg = a * om * nu * s * torch.sigmoid(-gamma)
    a_x, om_x = (gate_view(t.to(dy.dtype), x, granularity) for t in (a, om))
    if act.name == "relu":
        dx = torch.where(x >= 0, dy, dy * om_x)
    else:
        dx = dy * om_x + a_x * act.backward(dy, x)
    acc = torch.promote_types(x.dtype, torch.float32)  # fp32 sums for fp16/bf16, as the kernels
    dgamma = _gate_sum(dy.to(acc) * act.h(x.to(acc)), granularity).reshape(gamma.shape) * dadg
    return dx, dgamma.to(gamma.dtype).reshape(gamma.shape)


class _FusedBackward(torch.autograd.Function):
    """The backend's fused backward as a differentiable function (for ``create_graph=True``).

    First-order gradients come from the same kernels as without ``create_graph``; their own
    gradients (second order) come from autograd of ``_differentiable_backward``.
    """

    @staticmethod
    def forward(
        ctx, dy: Tensor, x: Tensor, gamma: Tensor, nu: Tensor, backend: str, granularity: str, act: Activation
    ):  # noqa: E501
        ctx.save_for_backward(dy, x, gamma, nu)
        ctx.granularity, ctx.act = granularity, act
        return backends.get(backend).backward(dy, x, gamma, nu, granularity, act)

    @staticmethod
    def backward(ctx, ddx: Tensor, ddgamma: Tensor):
        dy, x, gamma, nu = ctx.saved_tensors
        wanted = ctx.needs_input_grad[:3]
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_(w) for t, w in zip((dy, x, gamma), wanted, strict=True)]
            outs = _differentiable_backward(*inputs, nu, ctx.act, ctx.granularity)
            chosen = [t for t, w in zip(inputs, wanted, strict=True) if w]
            grads = iter(torch.autograd.grad(outs, chosen, (ddx, ddgamma), allow_unused=True))
        return (*(next(grads) if w else None for w in wanted), None, None, None, None)


def grads(ctx, dy: Tensor, backward_op=None) -> tuple[Tensor, Tensor]:
    """(∂L/∂x, ∂L/∂γ): the registered backward op (``backward_op(dy, x, γ, ν)``, what
    torch.compile traces) or, in eager mode (None), the backend directly."""
    x, gamma, nu = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: a graph, so higher derivatives work
        return _FusedBackward.apply(dy, x, gamma, nu, ctx.backend, ctx.granularity, ctx.act)
    if backward_op is None:
        return backends.get(ctx.backend).backward(dy, x, gamma, nu, ctx.granularity, ctx.act)
    return backward_op(dy, x, gamma, nu)


def define_ops(name: str, activation_args: bool):
    """``alphakern::{name}`` and ``alphakern::{name}_backward`` — the checks, the backend call, the
    fake kernels and the autograd — from this one definition, for the gate of any f
    (``activation_args``: f's name and leaky_relu's slope travel as arguments: ``gate``) or of relu
    alone (``alpha_relu``). The schemas are written here, once; the backend is the last argument."""
    extra = ", str activation, float negative_slope" if activation_args else ""

    def act_of(rest: tuple) -> Activation:
        return Activation(rest[0], rest[1]) if activation_args else RELU

    def forward(x: Tensor, gamma: Tensor, nu: Tensor, *rest) -> Tensor:
        act, backend = act_of(rest), rest[-1]
        granularity = check_inputs(x, gamma, nu)
        check_activation(backend, act)
        return backends.get(backend).forward(x, gamma, nu, granularity, act)

    def forward_fake(x: Tensor, gamma: Tensor, nu: Tensor, *rest) -> Tensor:
        check_activation(check_backend(rest[-1]), act_of(rest))
        check_inputs(x, gamma, nu)
        return torch.empty_like(x)

    def backward(dy: Tensor, x: Tensor, gamma: Tensor, nu: Tensor, *rest) -> tuple[Tensor, Tensor]:
        act, backend = act_of(rest), rest[-1]
        granularity = check_inputs(x, gamma, nu)
        check_grad(dy, x)
        check_activation(backend, act)
        return backends.get(backend).backward(dy, x, gamma, nu, granularity, act)

    def backward_fake(dy: Tensor, x: Tensor, gamma: Tensor, nu: Tensor, *rest) -> tuple[Tensor, Tensor]:
        check_activation(check_backend(rest[-1]), act_of(rest))
        check_inputs(x, gamma, nu)
        check_grad(dy, x)
        return torch.empty_like(x), torch.empty_like(gamma)

    op = torch.library.custom_op(
        f"alphakern::{name}", forward, mutates_args=(),
        schema=f"(Tensor x, Tensor gamma, Tensor nu{extra}, str backend) -> Tensor",
    )  # fmt: skip
    op.register_fake(forward_fake)
    backward_op = torch.library.custom_op(
        f"alphakern::{name}_backward", backward, mutates_args=(),
        schema=f"(Tensor dy, Tensor x, Tensor gamma, Tensor nu{extra}, str backend) -> (Tensor, Tensor)",
    )  # fmt: skip
    backward_op.register_fake(backward_fake)

    def setup(ctx, inputs, output) -> None:
        x, gamma, nu, *rest = inputs
        setup_context(ctx, x, gamma, nu, rest[-1], act_of(rest), None)
        ctx.op_args = tuple(rest)

    def op_grads(ctx, dy: Tensor):
        dx, dgamma = grads(ctx, dy, lambda *t: backward_op(*t, *ctx.op_args))
        return (dx, dgamma, None, *(None for _ in ctx.op_args))

    op.register_autograd(op_grads, setup_context=setup)
    return op, backward_op


gate_op, gate_backward_op = define_ops("gate", activation_args=True)


class GateFunction(torch.autograd.Function):
    """The same ops for eager mode, without custom_op's Python dispatch (its per-call cost: see
    benchmarks/results/README.md).

    Reached through ``gate`` / ``alpha_relu``, which have checked the inputs. Forward and backward
    call the backend directly; the saved tensors and double backward are shared with the
    registered ops, which are what torch.compile traces.
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, gamma: Tensor, nu: Tensor, backend: str, granularity: str, act: Activation
    ) -> Tensor:
        # ctx-in-forward style: a separate setup_context makes apply() bind arguments with
        # inspect.signature on every call.
        y = backends.get(backend).forward(x, gamma, nu, granularity, act)
        setup_context(ctx, x, gamma, nu, backend, act, granularity)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        return (*grads(ctx, dy), None, None, None, None)


def transforming() -> bool:
    """Is a torch.func transform (grad, vmap, jacrev, functional per-sample gradients) running?
    Its wrapped tensors reach an autograd.Function only through ``setup_context`` and a vmap rule,
    which the fused Function does not have (its ctx-in-forward style keeps eager calls cheap).
    Eager mode only: callers ask it after their ``torch.compiler.is_compiling()`` branch."""
    return torch._C._functorch.peek_interpreter_stack() is not None


def composite(x: Tensor, gamma: Tensor, nu: Tensor, act: Activation, granularity: str) -> Tensor:
    """G in differentiable PyTorch ops, which every torch.func transform takes: lerp(x, f(x), α) in
    x's dtype promoted to fp32 at least, f(x) and x themselves where α is exactly 1 or 0 (as the
    kernels: also at ±inf, where the blend would be inf − inf)."""
    dt = torch.promote_types(x.dtype, torch.float32)
    xc = x.to(dt)
    a = gate_view(alpha(gamma, nu), x, granularity).to(dt)
    fx = act.row.f(xc, act.negative_slope)
    y = torch.where(a == 1, fx, torch.where(a == 0, xc, torch.lerp(xc, fx, a)))
    return y.to(x.dtype)


def apply_eager(
    x: Tensor, gamma: Tensor, nu: Tensor, backend: str, granularity: str, act: Activation
) -> Tensor:
    """The lean Function, or under a torch.func transform the composite form."""
    if transforming():
        return composite(x, gamma, nu, act, granularity)
    return GateFunction.apply(x, gamma, nu, backend, granularity, act)


def on_feature_rows(x: Tensor, gate_rows) -> Tensor:
    """Per-feature gates: ``gate_rows`` (per-element gates) on x's (numel / D, D) rows, the result
    back in x's shape and dense layout."""
    y = gate_rows(feature_rows(x)).reshape(x.shape)
    return y if not is_dense(x) or y.stride() == x.stride() else like(y, torch.empty_like(x))


def gate(
    x: Tensor,
    gamma: Tensor,
    nu: Tensor,
    act: Activation,
    backend: str | None = None,
    granularity: str | None = None,
) -> Tensor:
    """Check, resolve the backend, then the registered op while torch.compile traces, the lean
    Function in eager mode (f = relu: ``alpha_relu`` is its own op; functional.gate routes it).
    ``granularity``: asked for (``ops.core.granularity``), else inferred from the shapes."""
    granularity = check_inputs(x, gamma, nu, granularity)
    if granularity == "feature":
        return on_feature_rows(x, lambda rows: gate(rows, gamma, nu, act, backend, "element"))
    name = resolve_backend(backend, x, act)
    if torch.compiler.is_compiling():
        return gate_op(x, gamma, nu, act.name, act.negative_slope, name)
    return apply_eager(x, gamma, nu, name, granularity, act)
