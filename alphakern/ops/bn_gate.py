"""BatchNorm followed by the gate, as one op: y = G_α,f(BN(x)), the gate per layer or per BN channel —
or, with a residual r, y = G_α,f(BN(x) + r): the tail of a ResNet block (BN → add(skip) → gate).

Every gate alphakern puts into a CNN sits right after a BatchNorm (conv → BN → gate), and eager
PyTorch runs the two as separate passes over the activation. Fused, the gate rides on the passes
BN makes anyway (``backends/native/bn_gate.py``, ``backends/triton/bn_gate.py``): training
forward = statistics + one normalise-and-gate pass; backward = one reduction over x and dy that
also sums the gate's term (z recomputed, never stored) + one apply pass (that also writes ∂L/∂r,
which is the gradient at BN(x) + r). The running statistics
are updated exactly as ``nn.BatchNorm2d`` updates them (momentum or cumulative average, unbiased
variance).

Backends (``FUSED``): "cpu" and "cuda" (the native kernels, csrc/), and "triton" (CUDA tensors,
or CPU ones under TRITON_INTERPRET=1), fp32/fp16/bf16, contiguous or channels_last, gates per
layer or channel; "torch" — and every other case (element gates, float64) — is the composition
``F.batch_norm`` then ``gate`` on the gate's own backend. What ``auto`` takes, and why:
``ops.dispatch``. One registered op (``alphakern::bn_gate``, fake kernel and autograd) for
torch.compile; a lean autograd.Function in eager mode, as ``ops.gate``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from alphakern.ops.backends.native import bn_gate as native_bn
from alphakern.ops.backends.triton import bn_gate as triton_bn
from alphakern.ops.core.activations import Activation
from alphakern.ops.core.checks import BACKEND_CHOICES, check_choice, check_inputs
from alphakern.ops.dispatch import auto_bn_gate_backend, bn_gate_runs
from alphakern.ops.gate import gate as gate_op_entry
from alphakern.ops.gate import transforming

FUSED = {"cpu": native_bn, "cuda": native_bn, "triton": triton_bn}  # the backends with fused kernels


def resolve(backend: str | None, x: Tensor, granularity: str) -> str:
    """The fused kernels' backend ("cpu", "cuda", "triton") or "torch" (the composition) for this call;
    ``backend`` takes ``gate``'s names."""
    name = check_choice("auto" if backend is None else backend, "backend", BACKEND_CHOICES)
    if name in FUSED:
        if not bn_gate_runs(name, x, granularity):
            where = {
                "cpu": "CPU tensors",
                "cuda": "CUDA tensors",
                "triton": "CUDA tensors (CPU ones under TRITON_INTERPRET=1)",
            }[name]
            raise ValueError(
                f"bn_gate backend={name!r} takes fp32/fp16/bf16 {where} with a gate per layer or "
                f"channel, got {x.dtype} on {x.device} with {granularity} gates; use backend='auto'"
            )
        return name
    return auto_bn_gate_backend(x, granularity) if name == "auto" else "torch"


@torch.library.custom_op("alphakern::bn_gate", mutates_args=())
def bn_gate_op(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    gamma: Tensor,
    nu: Tensor,
    training: bool,
    eps: float,
    activation: str,
    negative_slope: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """(y, mean, biased var): the statistics used (the batch's, or copies of the running ones)."""
    act = Activation(activation, negative_slope)
    y, mean, var, _ = FUSED[backend].forward(
        x, residual, weight, bias, running_mean, running_var, gamma, nu, training, eps, act
    )
    return y, mean, var


@bn_gate_op.register_fake
def _(x, *_):  # (residual, weight, … backend): the shapes follow from x
    c = x.shape[1]
    return torch.empty_like(x), x.new_empty((c,), dtype=torch.float32), x.new_empty((c,), dtype=torch.float32)


@torch.library.custom_op("alphakern::bn_gate_backward", mutates_args=())
def bn_gate_backward_op(
    dy: Tensor,
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    gamma: Tensor,
    nu: Tensor,
    training: bool,
    eps: float,
    activation: str,
    negative_slope: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(∂L/∂x, ∂L/∂residual — empty without one: an op returns tensors —, ∂L/∂weight, ∂L/∂bias in
    fp32, ∂L/∂γ)."""
    act = Activation(activation, negative_slope)
    invstd = torch.rsqrt(var + eps)
    dx, dr, *rest = FUSED[backend].backward(
        dy, x, residual, weight, bias, mean, invstd, gamma, nu, training, act
    )
    return dx, x.new_empty((0,)) if dr is None else dr, *rest


@bn_gate_backward_op.register_fake
def _(
    dy, x, residual, weight, bias, mean, var, gamma, nu, training, eps, activation, negative_slope, backend
):
    c = x.shape[1]
    f32 = dict(dtype=torch.float32)
    dr = x.new_empty((0,)) if residual is None else torch.empty_like(x)
    return (
        torch.empty_like(x),
        dr,
        x.new_empty((c,), **f32),
        x.new_empty((c,), **f32),
        torch.empty_like(gamma),
    )


def _cast(g: Tensor, like_t: Tensor | None) -> Tensor | None:
    return None if like_t is None else g.to(like_t.dtype)


def _setup(ctx, inputs, output) -> None:
    x, residual, weight, bias, _, _, gamma, nu, training, eps, activation, negative_slope, backend = inputs
    _, mean, var = output
    ctx.save_for_backward(x, residual, weight, bias, mean, var, gamma, nu)
    ctx.training, ctx.eps, ctx.op_args = training, eps, (activation, negative_slope, backend)


def _grads(ctx, dy: Tensor, _dmean, _dvar):
    x, residual, weight, bias, mean, var, gamma, nu = ctx.saved_tensors
    dx, dr, dw, db, dg = bn_gate_backward_op(
        dy, x, residual, weight, bias, mean, var, gamma, nu, ctx.training, ctx.eps, *ctx.op_args
    )
    dr = None if residual is None else dr
    return dx, dr, _cast(dw, weight), _cast(db, bias), None, None, dg, None, None, None, None, None, None


bn_gate_op.register_autograd(_grads, setup_context=_setup)


class _BNGateFunction(torch.autograd.Function):
    """The fused kernels in eager mode without custom_op's per-call dispatch (as ops.gate's)."""

    @staticmethod
    def forward(
        ctx, x, residual, weight, bias, running_mean, running_var, gamma, nu, training, eps, act, backend
    ):
        fused = FUSED[backend]
        y, mean, var, invstd = fused.forward(
            x, residual, weight, bias, running_mean, running_var, gamma, nu, training, eps, act
        )
        ctx.save_for_backward(x, residual, weight, bias, mean, invstd, gamma, nu)
        ctx.training, ctx.act, ctx.fused = training, act, fused
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        if torch.is_grad_enabled():
            raise RuntimeError("bn_gate's fused backward is first-order only; use backend='torch'")
        x, residual, weight, bias, mean, invstd, gamma, nu = ctx.saved_tensors
        dx, dr, dw, db, dg = ctx.fused.backward(
            dy, x, residual, weight, bias, mean, invstd, gamma, nu, ctx.training, ctx.act
        )
        return dx, dr, _cast(dw, weight), _cast(db, bias), None, None, dg, None, None, None, None, None


def _update_running(
    running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, factor: float, count: int
) -> None:
    """nn.BatchNorm's update: (1 − f)·running + f·batch, the variance unbiased (× n/(n − 1))."""
    with torch.no_grad():
        running_mean.mul_(1 - factor).add_(mean.to(running_mean.dtype), alpha=factor)
        running_var.mul_(1 - factor).add_(var.to(running_var.dtype), alpha=factor * count / (count - 1))


def _check_bn_args(x: Tensor, residual: Tensor | None, weight: Tensor | None, bias: Tensor | None) -> None:
    """A residual like x (shape, dtype, device) — the fused kernels add it element by element —
    and BN's affine parameters both or neither, as nn.BatchNorm has them."""
    if residual is not None:
        if not isinstance(residual, Tensor):
            raise TypeError(f"residual must be a Tensor or None, got {type(residual).__name__}")
        if residual.shape != x.shape or residual.dtype != x.dtype or residual.device != x.device:
            raise ValueError(
                f"residual must have x's shape {tuple(x.shape)}, dtype {x.dtype} and device {x.device}, "
                f"got {tuple(residual.shape)}, {residual.dtype} on {residual.device}"
            )
    if (weight is None) != (bias is None):
        given, missing = ("weight", "bias") if bias is None else ("bias", "weight")
        raise ValueError(f"{given} given without {missing}: BatchNorm's affine parameters come as a pair")


def bn_gate(
    x: Tensor,
    gamma: Tensor,
    nu: Tensor,
    act: Activation,
    *,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    backend: str | None,
) -> Tensor:
    """G_α,f(F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps) [+ residual]):
    the running statistics (when given) are updated in place in training, as F.batch_norm does;
    ``momentum`` is the factor of this update (nn.BatchNorm passes 1/num_batches for None). Every
    argument is given: the defaults live in one place, ``alphakern.functional.bn_gate``."""
    granularity = check_inputs(x, gamma, nu)
    _check_bn_args(x, residual, weight, bias)
    if training and x.numel() // max(x.shape[1], 1) == 1:
        # F.batch_norm's own check: no variance from one value per channel
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}"
        )
    name = resolve(backend, x, granularity)
    compiling = torch.compiler.is_compiling()
    # an empty batch: F.batch_norm's empty answer; under torch.func: PyTorch's ops, which it transforms
    if name == "torch" or x.numel() == 0 or (not compiling and transforming()):
        z = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
        z = z if residual is None else z + residual
        gate_backend = None if backend in (None, "auto") else backend
        return gate_op_entry(z, gamma, nu, act, gate_backend)
    use_batch = training or running_mean is None
    if compiling:
        y, mean, var = bn_gate_op(
            x,
            residual,
            weight,
            bias,
            running_mean,
            running_var,
            gamma,
            nu,
            use_batch,
            eps,
            act.name,
            act.negative_slope,
            name,
        )
    else:
        y, mean, var = _BNGateFunction.apply(
            x, residual, weight, bias, running_mean, running_var, gamma, nu, use_batch, eps, act, name
        )
    if training and running_mean is not None:
        _update_running(running_mean, running_var, mean, var, momentum, x.numel() // x.shape[1])
    return y
