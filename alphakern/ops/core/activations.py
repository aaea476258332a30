"""The activations a gate can blend with the identity: G_α,f(x) = x + α·(f(x) − x) — ONE table.

A row per f (``ROWS``): its name (the op's ``activation`` argument and the kernels' code), the
kind counts and budgets call it, PyTorch's own forward and backward of it (what the torch backend
runs, so α = 1 reproduces ``F.<f>`` and its autograd exactly), h(x) = f(x) − x in a form that
stays finite where f(x) and x are both infinite (what ∂L/∂γ sums: Σ dy·h(x)·dα/dγ), and f's own
``torch.nn`` module (what ``discretize`` makes of a gate at α = 1). How networks spell each f —
module classes (``MODULE_FORMS``) and functional calls (``FUNCTION_FORMS``) — lives here too, so
that linearize, the counts and discretize read one table. The kernels' element math (Triton,
``csrc/``) follows the same rows by code.

For gelu, silu and hardswish h(x) = −x·q(x) with q ∈ [0, 1] (gelu: Φ(−x); its tanh form
σ(−2u), u = √(2/π)(x + 0.044715x³); silu: σ(−x); hardswish: clamp((3 − x)/6, 0, 1)), and h = 0
where q = 0 (x → +∞, where −x·q would be ∞·0). The fused kernels use the same forms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GELU_TANH_BETA = math.sqrt(2.0 / math.pi)
GELU_TANH_KAPPA = 0.044715
_aten = torch.ops.aten


def _smooth(q: Callable[[Tensor], Tensor]) -> Callable[[Tensor, float], Tensor]:
    """h = −x·q(x), and exactly 0 where q is (x → +∞: not ∞·0)."""

    def h(x: Tensor, slope: float) -> Tensor:
        qx = q(x)
        return torch.where(qx == 0, torch.zeros_like(x), -x * qx)

    return h


@dataclass(frozen=True)
class Row:
    """One f: ``f``, ``backward`` (dy·f'(x) as PyTorch's autograd computes it, differentiable) and
    ``h`` take leaky_relu's negative slope as their last argument (the others ignore it)."""

    name: str
    kind: str
    f: Callable[[Tensor, float], Tensor]
    backward: Callable[[Tensor, Tensor, float], Tensor]
    h: Callable[[Tensor, float], Tensor]
    module: Callable[[float], nn.Module]


ROWS: dict[str, Row] = {
    r.name: r
    for r in (
        Row("relu", "relu", lambda x, s: F.relu(x), lambda dy, x, s: _aten.threshold_backward(dy, x, 0),
            lambda x, s: torch.relu(-x), lambda s: nn.ReLU()),
        Row("relu6", "relu6", lambda x, s: F.relu6(x),
            lambda dy, x, s: _aten.hardtanh_backward(dy, x, 0.0, 6.0),
            lambda x, s: torch.clamp(x, 0.0, 6.0) - x, lambda s: nn.ReLU6()),
        Row("leaky_relu", "leaky_relu", lambda x, s: F.leaky_relu(x, s),
            lambda dy, x, s: _aten.leaky_relu_backward(dy, x, s, False),
            lambda x, s: (s - 1.0) * torch.clamp(x, max=0.0), lambda s: nn.LeakyReLU(s)),
        Row("gelu", "gelu", lambda x, s: F.gelu(x, approximate="none"),
            lambda dy, x, s: _aten.gelu_backward(dy, x, approximate="none"),
            _smooth(lambda x: 0.5 * torch.special.erfc(x * (1.0 / math.sqrt(2.0)))),
            lambda s: nn.GELU(approximate="none")),
        Row("gelu_tanh", "gelu", lambda x, s: F.gelu(x, approximate="tanh"),
            lambda dy, x, s: _aten.gelu_backward(dy, x, approximate="tanh"),
            _smooth(lambda x: torch.sigmoid(-2.0 * GELU_TANH_BETA * (x + GELU_TANH_KAPPA * x * x * x))),
            lambda s: nn.GELU(approximate="tanh")),
        Row("silu", "silu", lambda x, s: F.silu(x), lambda dy, x, s: _aten.silu_backward(dy, x),
            _smooth(lambda x: torch.sigmoid(-x)), lambda s: nn.SiLU()),
        Row("hardswish", "hardswish", lambda x, s: F.hardswish(x),
            lambda dy, x, s: _aten.hardswish_backward(dy, x),
            _smooth(lambda x: torch.clamp((3.0 - x) / 6.0, 0.0, 1.0)), lambda s: nn.Hardswish()),
    )
}  # fmt: skip

# The names of the op's ``activation`` argument. "gelu_tanh" is F.gelu(approximate="tanh").
ACTIVATIONS = tuple(ROWS)
# What the counts (nonlinearity_count) and the trainer call each: the tanh GELU is a GELU.
KINDS = tuple(dict.fromkeys(r.kind for r in ROWS.values()))
# The kernels' compile-time code of each activation (Triton constexpr, C++ template argument).
CODES = {name: i for i, name in enumerate(ACTIVATIONS)}


@dataclass(frozen=True)
class Activation:
    """f by name, with leaky_relu's negative slope (ignored by the others)."""

    name: str = "relu"
    negative_slope: float = 0.01

    def __post_init__(self) -> None:
        if self.name not in ROWS:
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
    def row(self) -> Row:
        return ROWS[self.name]

    @property
    def kind(self) -> str:
        """The name counts and reports use (one for both GELUs)."""
        return self.row.kind

    @property
    def code(self) -> int:
        return CODES[self.name]

    def __str__(self) -> str:
        if self.name == "leaky_relu":
            return f"leaky_relu({self.negative_slope:g})"
        return self.name

    def f(self, x: Tensor) -> Tensor:
        """PyTorch's own f."""
        return self.row.f(x, self.negative_slope)

    def backward(self, dy: Tensor, x: Tensor) -> Tensor:
        """dy·f'(x) as PyTorch's autograd of f computes it (differentiable: double backward)."""
        return self.row.backward(dy, x, self.negative_slope)

    def h(self, x: Tensor) -> Tensor:
        """f(x) − x, finite wherever its limit is (differentiable)."""
        return self.row.h(x, self.negative_slope)

    def module(self) -> nn.Module:
        """The torch.nn module of f (what ``discretize`` makes of a gate with α = 1)."""
        return self.row.module(self.negative_slope)


RELU = Activation("relu")


# -- how networks spell each f ------------------------------------------------------------------
def relu6_bounds(min_val: float, max_val: float) -> bool:
    """Is a hardtanh with these bounds ReLU6 (nn.ReLU6 is an nn.Hardtanh(0, 6)), not another clamp?"""
    return (min_val, max_val) == (0.0, 6.0)


# Module classes, first match wins (nn.ReLU6 before its base class nn.Hardtanh): the f of an
# instance, or None for an instance that is no gated activation (a Hardtanh of other bounds).
MODULE_FORMS: list[tuple[type[nn.Module], Callable[[nn.Module], Activation | None]]] = [
    (nn.ReLU6, lambda m: Activation("relu6")),
    (nn.Hardtanh, lambda m: Activation("relu6") if relu6_bounds(m.min_val, m.max_val) else None),
    (nn.ReLU, lambda m: RELU),
    (nn.LeakyReLU, lambda m: Activation("leaky_relu", m.negative_slope)),
    (nn.GELU, lambda m: Activation.of("gelu", approximate=m.approximate)),
    (nn.SiLU, lambda m: Activation("silu")),
    (nn.Hardswish, lambda m: Activation("hardswish")),
]


# Other libraries' classes (transformers, timm) by qualified name, nothing of theirs imported:
# what each computes.
# Hugging Face transformers' GELUActivation and GELUTanh call F.gelu (α = 1 is them exactly, unless
# built with their *_python flag); NewGELU, FastGELU and AccurateGELU write the tanh GELU out with
# torch.tanh and pow — the same f, within fp32 rounding of it (tested: 1e-6 of the output's scale).
NAMED_FORMS: dict[str, Callable[[nn.Module], Activation]] = {
    "transformers.activations.GELUActivation": lambda m: Activation("gelu"),
    "transformers.activations.GELUTanh": lambda m: Activation("gelu_tanh"),
    "transformers.activations.PytorchGELUTanh": lambda m: Activation("gelu_tanh"),
    "transformers.activations.NewGELUActivation": lambda m: Activation("gelu_tanh"),
    "transformers.activations.FastGELUActivation": lambda m: Activation("gelu_tanh"),
    "transformers.activations.AccurateGELUActivation": lambda m: Activation("gelu_tanh"),
    "transformers.activations.SiLUActivation": lambda m: Activation("silu"),
    # BLOOM's own module: the tanh GELU written out (an autograd.Function with its own backward)
    "transformers.models.bloom.modeling_bloom.BloomGelu": lambda m: Activation("gelu_tanh"),
    # timm's own classes (timm.layers.activations, and the autograd.Function "Me" forms): GELU and
    # GELUTanh call F.gelu; Swish is x·sigmoid(x) and HardSwish x·relu6(x + 3)/6 written out —
    # silu and hardswish within fp32 rounding. As leaves they gate as one f: traced through,
    # HardSwish's inner relu6 would be gated as a ReLU6 of x + 3.
    "timm.layers.activations.GELU": lambda m: Activation("gelu"),
    "timm.layers.activations.GELUTanh": lambda m: Activation("gelu_tanh"),
    "timm.layers.activations.Swish": lambda m: Activation("silu"),
    "timm.layers.activations.HardSwish": lambda m: Activation("hardswish"),
    "timm.layers.activations_me.SwishMe": lambda m: Activation("silu"),
    "timm.layers.activations_me.HardSwishMe": lambda m: Activation("hardswish"),
}
# ... and those no gate blends, with the reason linearize's warning gives
UNGATED_NAMED: dict[str, str] = {
    "transformers.activations.QuickGELUActivation": "x·σ(1.702x) is no f a gate has",
    "transformers.activations.ReLUSquaredActivation": "relu(x)² is no f a gate has",
    "transformers.activations.ClippedGELUActivation": "a clipped GELU: α = 1 would not reproduce the clip",
    "transformers.activations.LaplaceActivation": "no f a gate has",
    "transformers.activations.SqrtSoftplusActivation": "no f a gate has",
    "transformers.activations.XIELUActivation": "no f a gate has",
    "transformers.activations.MishActivation": "no f a gate has",
    "timm.layers.activations.QuickGELU": "x·σ(1.702x) is no f a gate has",
    "timm.layers.activations.Mish": "no f a gate has",
    "timm.layers.activations.HardMish": "no f a gate has",
    "timm.layers.activations.PReLU": "a learned slope: no f a gate has",
    "timm.layers.activations.Sigmoid": "no f a gate has",
    "timm.layers.activations.Tanh": "no f a gate has",
    "timm.layers.activations.HardSigmoid": "no f a gate has",
    "timm.layers.activations_me.MishMe": "no f a gate has",
    "timm.layers.activations_me.HardMishMe": "no f a gate has",
    "timm.layers.activations_me.HardSigmoidMe": "no f a gate has",
}
# register_activation's classes, checked first
REGISTERED: list[tuple[type[nn.Module], Activation]] = []


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_activation(cls: type[nn.Module], kind: str, **params) -> None:
    """Teach linearize and the counts a module class: its instances compute ``kind`` — an op
    activation name ("relu", "relu6", "leaky_relu", "gelu", "gelu_tanh", "silu", "hardswish") —
    with ``params`` (``negative_slope`` for leaky_relu, ``approximate`` for gelu). Registered
    classes are checked before the built-in table; registering a class again replaces it."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_activation: cls must be a torch.nn.Module subclass, got {cls!r}")
    if kind not in ROWS:
        raise ValueError(f"register_activation: kind must be one of {list(ACTIVATIONS)}, got {kind!r}")
    unknown = set(params) - {"negative_slope", "approximate"}
    if unknown:
        raise ValueError(
            f"register_activation: params may be negative_slope and approximate, got {sorted(unknown)}"
        )
    act = Activation.of(kind, **params)
    REGISTERED[:] = [(c, a) for c, a in REGISTERED if c is not cls]
    REGISTERED.insert(0, (cls, act))


def library_activation(m: nn.Module | None) -> Activation | None:
    """f of a registered or other library's activation module (not torch.nn's), else None."""
    for cls, act in REGISTERED:
        if isinstance(m, cls):
            return act
    read = NAMED_FORMS.get(qualified_name(type(m)))
    return None if read is None else read(m)


def module_activation(m: nn.Module | None) -> tuple[Activation, bool] | None:
    """(f, whether the module works in place) of an activation module, or None."""
    act = library_activation(m)
    if act is not None:
        return act, bool(getattr(m, "inplace", False))
    for cls, read in MODULE_FORMS:
        if isinstance(m, cls):
            act = read(m)
            return None if act is None else (act, bool(getattr(m, "inplace", False)))
    return None


def ungated_reason(m: nn.Module | None) -> str | None:
    """Why an activation module is left without a gate (it computes no f a gate has), else None."""
    if isinstance(m, UNGATED_MODULES):
        return "no f a gate has"
    return UNGATED_NAMED.get(qualified_name(type(m)))


@dataclass(frozen=True)
class FunctionForm:
    """A functional call of f: its row's name ("hardtanh": ReLU6 only at the bounds 0 and 6) and
    whether the function always works in place (``call_activation`` reads the rest)."""

    name: str
    inplace: bool = False


FUNCTION_FORMS: dict[Callable, FunctionForm] = {
    F.relu: FunctionForm("relu"),
    torch.relu: FunctionForm("relu"),
    torch.relu_: FunctionForm("relu", inplace=True),
    F.relu_: FunctionForm("relu", inplace=True),
    F.relu6: FunctionForm("relu6"),
    F.hardtanh: FunctionForm("hardtanh"),
    F.hardtanh_: FunctionForm("hardtanh", inplace=True),
    F.leaky_relu: FunctionForm("leaky_relu"),
    F.leaky_relu_: FunctionForm("leaky_relu", inplace=True),
    F.gelu: FunctionForm("gelu"),
    F.silu: FunctionForm("silu"),
    F.hardswish: FunctionForm("hardswish"),
}
# Tensor methods (fx's call_method names and the callables TorchFunctionMode sees)
METHOD_FORMS: dict[str, FunctionForm] = {
    "relu": FunctionForm("relu"),
    "relu_": FunctionForm("relu", inplace=True),
}
METHOD_CALLABLES: dict[Callable, FunctionForm] = {
    getattr(torch.Tensor, n): f for n, f in METHOD_FORMS.items()
}


def arg_reader(args: tuple, kwargs: dict) -> Callable[[int, str, object], object]:
    """A call's argument by index among its positional arguments (the input is 0; −1: keyword
    only), else by keyword, else the default: how ``call_activation`` and ``call_kind`` read one."""
    return lambda i, name, default: args[i] if 0 <= i < len(args) else kwargs.get(name, default)


def call_activation(
    form: FunctionForm, arg: Callable[[int, str, object], object]
) -> tuple[Activation, bool] | None:
    """(f, whether the call works in place) of a functional call, its arguments read by
    ``arg(index, keyword, default)`` — the index among the positional arguments (the input is 0;
    −1: keyword only); None for a hardtanh that is another clamp."""
    inplace = form.inplace
    if form.name == "hardtanh":
        if not relu6_bounds(arg(1, "min_val", -1.0), arg(2, "max_val", 1.0)):
            return None
        return Activation("relu6"), inplace or bool(arg(3, "inplace", False))
    if form.name == "leaky_relu":
        slope = arg(1, "negative_slope", 0.01)
        return Activation("leaky_relu", slope), inplace or bool(arg(2, "inplace", False))
    if form.name == "gelu":
        return Activation.of("gelu", approximate=arg(-1, "approximate", "none")), False
    return Activation(form.name), inplace or bool(arg(-1, "inplace", False))


# Activations no gate blends (yet): listed in linearize's warning, so nobody thinks them gated.
UNGATED_MODULES = (nn.ELU, nn.PReLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.CELU, nn.SELU)
UNGATED_FUNCTIONS = {F.elu, F.mish, F.softplus, F.celu, F.selu, torch.tanh, torch.sigmoid}


def call_kind(form: FunctionForm, arg: Callable[[int, str, object], object]) -> str | None:
    """The kind a functional call counts as (what the counts need: no parameters read), or None
    for a hardtanh that is another clamp."""
    if form.name == "hardtanh":
        return "relu6" if relu6_bounds(arg(1, "min_val", -1.0), arg(2, "max_val", 1.0)) else None
    return ROWS[form.name].kind
