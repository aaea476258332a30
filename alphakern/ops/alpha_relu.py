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

from alphakern.ops.core.activations import RELU
from alphakern.ops.core.checks import check_inputs
from alphakern.ops.gate import (
    ENV_VAR,
    apply_eager,
    auto_backend,
    define_ops,
    on_feature_rows,
    resolve_backend,
)

__all__ = [
    "ENV_VAR",
    "alpha_relu",
    "alpha_relu_backward_op",
    "alpha_relu_op",
    "auto_backend",
    "resolve_backend",
]


# y = x + α·relu(−x) and its (∂L/∂x, ∂L/∂γ): the gate's definition with f = relu, under its own name
alpha_relu_op, alpha_relu_backward_op = define_ops("alpha_relu", activation_args=False)


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
    return apply_eager(x, gamma, nu, name, granularity, RELU)
