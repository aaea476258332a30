"""The activations a gate can blend with the identity: G_α,f(x) = x + α·(f(x) − x).

One home for what every backend and tool needs to know about f: its name and parameter
(``Activation``), PyTorch's own forward and backward of it (what the torch backend runs, so
α = 1 reproduces ``F.<f>`` and its autograd exactly), and h(x) = f(x) − x in a form that stays
finite where f(x) and x are both infinite (what ∂L/∂γ sums: Σ dy·h(x)·dα/dγ).

For gelu, silu and hardswish h(x) = −x·q(x) with q ∈ [0, 1] (gelu: Φ(−x); its tanh form
σ(−2u), u = √(2/π)(x + 0.044715x³); silu: σ(−x); hardswish: clamp((3 − x)/6, 0, 1)), and h = 0
where q = 0 (x → +∞, where −x·q would be ∞·0). The fused kernels use the same forms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The names of the op's ``activation`` argument. "gelu_tanh" is F.gelu(approximate="tanh").
ACTIVATIONS = ("relu", "relu6", "leaky_relu", "gelu", "gelu_tanh", "silu", "hardswish")
# What the counts (nonlinearity_count) and the trainer call each: the tanh GELU is a GELU.
KINDS = ("relu", "relu6", "leaky_relu", "gelu", "silu", "hardswish")
# The kernels' compile-time code of each activation (Triton constexpr, C++ template argument).
CODES = {name: i for i, name in enumerate(ACTIVATIONS)}
GELU_TANH_BETA = math.sqrt(2.0 / math.pi)
GELU_TANH_KAPPA = 0.044715


@dataclass(frozen=True)
class Activation:
    """f by name, with leaky_relu's negative slope (ignored by the others)."""

    name: str = "relu"
    negative_slope: float = 0.01

    def __post_init__(self) -> None:
        if self.name not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {self.name!r}")
        if not isinstance(self.negative_slope, (int, float)) or not math.isfinite(self.negative_slope):
            raise ValueError(f"negative_slope must be a finite number, got {self.negative_slope!r}")
        # one canonical value per f, so equal activations compare (and cache kernels) equal
        if self.name != "leaky_relu":
            object.__setattr__(self, "negative_slope", 0.01)
        else:
            object.__setattr__(self, "negative_slope", float(self.negative_slope))

    @classmethod
    def of(cls, activation: str, negative_slope: float = 0.01, approximate: str = "none") -> Activation:
        """From the public arguments (``approximate`` as F.gelu's: "none" or "tanh")."""
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        if approximate == "tanh" and activation not in ("gelu", "gelu_tanh"):
            raise ValueError(f"approximate='tanh' applies to activation='gelu', got {activation!r}")
        name = "gelu_tanh" if activation == "gelu" and approximate == "tanh" else activation
        return cls(name, negative_slope)

    @property
    def kind(self) -> str:
        """The name counts and reports use (one for both GELUs)."""
        return "gelu" if self.name == "gelu_tanh" else self.name

    @property
    def code(self) -> int:
        return CODES[self.name]

    def __str__(self) -> str:
        if self.name == "leaky_relu":
            return f"leaky_relu({self.negative_slope:g})"
        return self.name

    def f(self, x: Tensor) -> Tensor:
        """PyTorch's own f."""
        if self.name == "relu":
            return F.relu(x)
        if self.name == "relu6":
            return F.relu6(x)
        if self.name == "leaky_relu":
            return F.leaky_relu(x, self.negative_slope)
        if self.name in ("gelu", "gelu_tanh"):
            return F.gelu(x, approximate="tanh" if self.name == "gelu_tanh" else "none")
        if self.name == "silu":
            return F.silu(x)
        return F.hardswish(x)

    def backward(self, dy: Tensor, x: Tensor) -> Tensor:
        """dy·f'(x) as PyTorch's autograd of f computes it (differentiable: double backward)."""
        aten = torch.ops.aten
        if self.name == "relu":
            return aten.threshold_backward(dy, x, 0)
        if self.name == "relu6":
            return aten.hardtanh_backward(dy, x, 0.0, 6.0)
        if self.name == "leaky_relu":
            return aten.leaky_relu_backward(dy, x, self.negative_slope, False)
        if self.name in ("gelu", "gelu_tanh"):
            return aten.gelu_backward(dy, x, approximate="tanh" if self.name == "gelu_tanh" else "none")
        if self.name == "silu":
            return aten.silu_backward(dy, x)
        return aten.hardswish_backward(dy, x)

    def h(self, x: Tensor) -> Tensor:
        """f(x) − x, finite wherever its limit is (differentiable)."""
        if self.name == "relu":
            return torch.relu(-x)
        if self.name == "relu6":
            return torch.clamp(x, 0.0, 6.0) - x
        if self.name == "leaky_relu":
            return (self.negative_slope - 1.0) * torch.clamp(x, max=0.0)
        if self.name == "gelu":
            q = 0.5 * torch.special.erfc(x * (1.0 / math.sqrt(2.0)))
        elif self.name == "gelu_tanh":
            q = torch.sigmoid(-2.0 * GELU_TANH_BETA * (x + GELU_TANH_KAPPA * x * x * x))
        elif self.name == "silu":
            q = torch.sigmoid(-x)
        else:
            q = torch.clamp((3.0 - x) / 6.0, 0.0, 1.0)
        return torch.where(q == 0, torch.zeros_like(x), -x * q)

    def module(self) -> nn.Module:
        """The torch.nn module of f (what ``discretize`` makes of a gate with α = 1)."""
        if self.name == "relu":
            return nn.ReLU()
        if self.name == "relu6":
            return nn.ReLU6()
        if self.name == "leaky_relu":
            return nn.LeakyReLU(self.negative_slope)
        if self.name in ("gelu", "gelu_tanh"):
            return nn.GELU(approximate="tanh" if self.name == "gelu_tanh" else "none")
        if self.name == "silu":
            return nn.SiLU()
        return nn.Hardswish()


RELU = Activation("relu")
