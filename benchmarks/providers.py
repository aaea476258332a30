"""The implementations the benchmark compares: each computes R_α with α from (γ, ν)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

import alphakern
from alphakern.ops import alpha_relu_torch, alpha_relu_triton, cuda_ext

Fn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def eager(x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """The original study's expression."""
    a = alpha_relu_torch.alpha(gamma, nu)
    return x + a * F.relu(-x)


def prelu(x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """PyTorch's own fused kernel for the same function: PReLU with slope 1 − α."""
    a = alpha_relu_torch.alpha(gamma, nu)
    return F.prelu(x, (1 - a).to(x.dtype).reshape(1))


def fused(backend: str) -> Fn:
    def fn(x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
        return alphakern.alpha_relu(x, gamma, nu, backend=backend)

    fn.__name__ = f"alphakern_{backend}"
    return fn


def available(device: str) -> dict[str, Fn]:
    """Providers that can run on ``device``, in table order ("compile" wraps eager lazily)."""
    out: dict[str, Fn] = {"eager": eager, "prelu": prelu, "compile": eager}
    out["alphakern-torch"] = fused("torch")
    if device == "cuda":
        if alpha_relu_triton.available():
            out["alphakern-triton"] = fused("triton")
        try:
            cuda_ext.build()
            out["alphakern-cuda"] = fused("cuda")
        except RuntimeError as e:
            print(f"[bench] alphakern-cuda unavailable: {str(e).splitlines()[0]}")
    return out
