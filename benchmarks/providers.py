"""The implementations the benchmark compares: each computes R_α with α from (γ, ν).

Only alphakern's public API is used: ``alphakern.alpha`` and ``alphakern.alpha_relu(...,
backend=...)``; a backend is offered where one tiny call on the device succeeds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

import alphakern

Fn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _per_gate(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """α broadcast over x: one per layer, per channel (1, C, 1, ...) or per element (1, *x.shape[1:])."""
    if a.numel() == 1:
        return a
    return a.reshape(1, -1, *([1] * (x.dim() - 2))) if a.shape == x.shape[1:2] else a.unsqueeze(0)


def eager(x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """The original study's expression (per channel: α.view(1, C, 1, 1), what a user would write)."""
    return x + _per_gate(alphakern.alpha(gamma, nu), x) * F.relu(-x)


def prelu(x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """PyTorch's own fused kernel for the same function: PReLU with slope 1 − α (one, or (C,))."""
    return F.prelu(x, (1 - alphakern.alpha(gamma, nu)).to(x.dtype).reshape(-1))


def supports(provider: str, gates: str) -> bool:
    """F.prelu has no per-element weight."""
    return not (gates == "element" and provider == "prelu")


def fused(backend: str) -> Fn:
    def fn(x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
        return alphakern.alpha_relu(x, gamma, nu, backend=backend)

    fn.__name__ = f"alphakern_{backend}"
    return fn


def _runs(backend: str, device: str) -> str | None:
    """None if the backend computes on ``device`` (building it if it must), else why not."""
    try:
        x = torch.ones(4, device=device)
        alphakern.alpha_relu(
            x, torch.zeros((), device=device), torch.zeros((), device=device), backend=backend
        )
        return None
    except (RuntimeError, TypeError) as e:
        return str(e).splitlines()[0]


def available(device: str, *, skip: tuple[str, ...] = ()) -> dict[str, Fn]:
    """Providers that can run on ``device``, in table order ("compile" wraps eager lazily)."""
    out: dict[str, Fn] = {"eager": eager, "prelu": prelu, "compile": eager}
    out["alphakern-torch"] = fused("torch")
    for backend in ("triton", "cuda") if device == "cuda" else ("cpu",):
        if f"alphakern-{backend}" in skip:
            continue
        why = _runs(backend, device)
        if why is None:
            out[f"alphakern-{backend}"] = fused(backend)
        else:
            print(f"[bench] alphakern-{backend} unavailable: {why}")
    return out
