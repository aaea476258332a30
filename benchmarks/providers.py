"""The implementations the benchmark compares: each computes R_α — or, for another activation f,
the gate x + α·(f(x) − x) — with α from (γ, ν).

Only alphakern's public API is used: ``alphakern.alpha``, ``alphakern.alpha_relu(...,
backend=...)`` and ``alphakern.gate(..., activation=f, backend=...)``; a backend is offered where
one tiny call on the device succeeds (a native backend without kernels for f is not).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

import alphakern

# fn(x, γ, ν, granularity=None): granularity "feature" (γ of shape (D,) over x's last dim) must be
# said, as alphakern.gate's; the others follow from γ's shape
Fn = Callable[..., torch.Tensor]


def _per_gate(a: torch.Tensor, x: torch.Tensor, granularity: str | None = None) -> torch.Tensor:
    """α broadcast over x: one per layer, per channel (1, C, 1, ...), per element (1, *x.shape[1:])
    or per feature ((D,) over the last dim, as broadcasting does by itself)."""
    if a.numel() == 1 or granularity == "feature":
        return a
    return a.reshape(1, -1, *([1] * (x.dim() - 2))) if a.shape == x.shape[1:2] else a.unsqueeze(0)


# PyTorch's own f per activation name (the names of alphakern.gate's ``activation``)
F_OF: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "relu6": F.relu6,
    "leaky_relu": F.leaky_relu,
    "gelu": F.gelu,
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
    "silu": F.silu,
    "hardswish": F.hardswish,
}


def eager(
    x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, granularity: str | None = None
) -> torch.Tensor:
    """The original study's expression (per channel: α.view(1, C, 1, 1), what a user would write)."""
    return x + _per_gate(alphakern.alpha(gamma, nu), x, granularity) * F.relu(-x)


def eager_gate(activation: str) -> Fn:
    """The blend a user would write for f: x + α·(F.f(x) − x) (ReLU: the study's ``eager``)."""
    if activation == "relu":
        return eager
    f = F_OF[activation]

    def fn(
        x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, granularity: str | None = None
    ) -> torch.Tensor:
        return x + _per_gate(alphakern.alpha(gamma, nu), x, granularity) * (f(x) - x)

    fn.__name__ = f"eager_{activation}"
    return fn


def prelu(
    x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, granularity: str | None = None
) -> torch.Tensor:
    """PyTorch's own fused kernel for the same function: PReLU with slope 1 − α (one, or (C,))."""
    return F.prelu(x, (1 - alphakern.alpha(gamma, nu)).to(x.dtype).reshape(-1))


def supports(provider: str, gates: str) -> bool:
    """F.prelu has no per-element or per-feature weight."""
    return not (gates in ("element", "feature") and provider == "prelu")


def fused(backend: str, activation: str = "relu") -> Fn:
    def fn(
        x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, granularity: str | None = None
    ) -> torch.Tensor:
        if activation == "relu":
            return alphakern.alpha_relu(x, gamma, nu, granularity=granularity, backend=backend)
        return alphakern.gate(x, gamma, nu, activation=activation, granularity=granularity, backend=backend)

    fn.__name__ = f"alphakern_{backend}_{activation}"
    return fn


def _runs(fn: Fn, device: str) -> str | None:
    """None if ``fn`` computes on ``device`` (building its backend if it must), else why not."""
    try:
        fn(torch.ones(4, device=device), torch.zeros((), device=device), torch.zeros((), device=device))
        return None
    except (RuntimeError, TypeError, ValueError) as e:
        return str(e).splitlines()[0]


def available(device: str, *, skip: tuple[str, ...] = (), activation: str = "relu") -> dict[str, Fn]:
    """Providers that can run on ``device`` for ``activation``, in table order ("compile" wraps
    the eager blend lazily; F.prelu computes ReLU's gate only)."""
    out: dict[str, Fn] = {"eager": eager_gate(activation)}
    if activation == "relu":
        out["prelu"] = prelu
    out["compile"] = out["eager"]
    out["alphakern-torch"] = fused("torch", activation)
    for backend in ("triton", "cuda") if device == "cuda" else ("cpu",):
        if f"alphakern-{backend}" in skip:
            continue
        fn = fused(backend, activation)
        why = _runs(fn, device)
        if why is None:
            out[f"alphakern-{backend}"] = fn
        else:
            print(f"[bench] alphakern-{backend} unavailable for {activation}: {why}")
    return out
