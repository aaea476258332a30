"""What both Triton kernel files share: the triton import, the fp64 α terms, the element math of
the gate, and the host checks. The element math (``_y``, ``_dx``, ``_dsum``, ReLU's ``_gate_*`` and
``_act_*`` for the other activations, chosen by the constexpr ACT) is the one place a new
activation changes in this backend.

α is computed in fp64 (exact exp and division, where fp32 ``tl.sigmoid`` compiles to approximate
ex2/rcp whose error ν would amplify) and the slope 1 − α as σ(−z), not by subtraction — the same
terms as ``ops.core.alpha.alpha_terms`` and ``csrc/common/alpha_terms.h``.
"""

from __future__ import annotations

import contextlib
import os

import torch

from alphakern.ops.core.activations import Activation
from alphakern.ops.core.checks import KERNEL_DTYPES

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None

# Triton decides at decoration time whether kernels are compiled or interpreted.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit
    def _sigmoid64(v):
        return 1.0 / (1.0 + tl.exp(-v))

    @triton.jit
    def _terms64(g, nu):
        """(α, 1 − α, σ(γ)) in fp64 for fp64 γ (a scalar or a block) and ν."""
        s = _sigmoid64(g)
        z = (s - 0.5) * nu
        return _sigmoid64(z), _sigmoid64(-z), s

    @triton.jit
    def _layer_terms(gamma_ptr, nu_ptr):
        """(α and 1 − α in fp32, dα/dγ in fp64) from the 1-element tensors γ and ν."""
        g = tl.load(gamma_ptr).to(tl.float64)
        nu = tl.load(nu_ptr).to(tl.float64)
        a, om, s = _terms64(g, nu)
        return a.to(tl.float32), om.to(tl.float32), a * om * nu * s * _sigmoid64(-g)

    @triton.jit
    def _weights(g, nu_ptr):
        """(α, 1 − α) in fp32 (computed in fp64) for a block (or scalar) of γ."""
        nu = tl.load(nu_ptr).to(tl.float64)
        a, om, _ = _terms64(g.to(tl.float64), nu)
        return a.to(tl.float32), om.to(tl.float32)

    @triton.jit
    def _gate_y(x, om):
        """PReLU with slope 1 − α: NaN propagates (x > 0 is False for NaN), −inf stays −inf."""
        return tl.where(x > 0.0, x, x * om)

    @triton.jit
    def _gate_dx(x, dy, om):
        """Slope 1 at x = ±0 (autograd of relu), 1 − α below zero and, as eager autograd gives, at NaN."""
        return tl.where(x >= 0.0, dy, dy * om)

    @triton.jit
    def _gate_dsum(x, dy):
        """dy·relu(−x): what ∂L/∂γ sums per gate (NaN kept in its gate)."""
        return dy * tl.where(x > 0.0, 0.0, -x)

    # Any activation f (ACT: ops.core.activations.CODES; NEG: leaky_relu's slope): fp32 forms of
    # f, f' (PyTorch's formulas, tanh written through σ: 1 + tanh(u) = 2σ(2u)) and h = f − x
    # (= −x·q for the smooth ones, 0 where q = 0, so x = +∞ gives 0, not ∞·0).

    @triton.jit
    def _sig(v):
        return 1.0 / (1.0 + tl.exp(-v))

    @triton.jit
    def _act_f(x, ACT: tl.constexpr, NEG: tl.constexpr):
        if ACT == 1:  # relu6, NaN kept
            f = tl.where(x < 0.0, 0.0, tl.where(x > 6.0, 6.0, x))
        elif ACT == 2:
            f = tl.where(x > 0.0, x, x * NEG)
        elif ACT == 3:
            f = x * 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))
        elif ACT == 4:
            u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
            f = x * _sig(2.0 * u)
        elif ACT == 5:
            f = x / (1.0 + tl.exp(-x))
        else:  # hardswish
            f = x * tl.where(x < -3.0, 0.0, tl.where(x > 3.0, 6.0, x + 3.0)) / 6.0
        return f

    @triton.jit
    def _act_df(x, ACT: tl.constexpr, NEG: tl.constexpr):
        if ACT == 1:  # 0 at the switch points 0 and 6, as hardtanh_backward; 1 at NaN
            d = tl.where((x <= 0.0) | (x >= 6.0), 0.0, 1.0)
        elif ACT == 2:
            d = tl.where(x > 0.0, 1.0, NEG)
        elif ACT == 3:
            cdf = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))
            d = cdf + x * 0.3989422804014327 * tl.exp(-0.5 * x * x)
        elif ACT == 4:
            t = 2.0 * _sig(1.5957691216057308 * (x + 0.044715 * x * x * x)) - 1.0
            d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * x * x)
        elif ACT == 5:
            s = _sig(x)
            d = s * (1.0 + x * (1.0 - s))
        else:  # as hardswish_backward: 0 up to −3 (included), x/3 + ½ below 3, 1 from 3 and at NaN
            d = tl.where(x <= -3.0, 0.0, tl.where(x < 3.0, x / 3.0 + 0.5, 1.0))
        return d

    @triton.jit
    def _act_h(x, ACT: tl.constexpr, NEG: tl.constexpr):
        if ACT == 1:
            h = _act_f(x, ACT, NEG) - x
        elif ACT == 2:
            h = tl.where(x > 0.0, 0.0, (NEG - 1.0) * x)
        else:
            if ACT == 3:
                q = 0.5 * (1.0 - tl.math.erf(x * 0.7071067811865476))
            elif ACT == 4:
                q = 1.0 / (1.0 + tl.exp(1.5957691216057308 * (x + 0.044715 * x * x * x)))
            elif ACT == 5:
                q = 1.0 / (1.0 + tl.exp(x))
            else:
                q = tl.where(x >= 3.0, 0.0, tl.where(x <= -3.0, 1.0, (3.0 - x) / 6.0))
            h = tl.where(q == 0.0, 0.0, -x * q)
        return h

    @triton.jit
    def _y(x, a, om, ACT: tl.constexpr, NEG: tl.constexpr):
        """G_α,f(x); f = relu is ``_gate_y`` bit for bit. Exactly f where 1 − α = 0, x where α = 0."""
        if ACT == 0:
            y = _gate_y(x, om)
        else:
            f = _act_f(x, ACT, NEG)
            # α·f + (1 − α)·x, not x + α·h: finite where f is and x = ±inf (relu6, leaky_relu)
            y = tl.where(om == 0.0, f, tl.where(a == 0.0, x, a * f + om * x))
        return y

    @triton.jit
    def _dx(x, dy, a, om, ACT: tl.constexpr, NEG: tl.constexpr):
        """dy·(1 − α + α·f'(x)); dy itself where α = 0."""
        if ACT == 0:
            dx = _gate_dx(x, dy, om)
        else:
            dx = dy * tl.where(a == 0.0, 1.0, om + a * _act_df(x, ACT, NEG))
        return dx

    @triton.jit
    def _dsum(x, dy, ACT: tl.constexpr, NEG: tl.constexpr):
        """dy·(f(x) − x): what ∂L/∂γ sums per gate."""
        if ACT == 0:
            v = _gate_dsum(x, dy)
        else:
            v = dy * _act_h(x, ACT, NEG)
        return v


def check_runnable(x: torch.Tensor) -> None:
    if triton is None:
        raise RuntimeError(
            "backend='triton' needs the 'triton' package: pip install triton "
            "(it ships with PyTorch's CUDA wheels on Linux), or use backend='torch'."
        )
    if x.device.type == "cpu" and not INTERPRET:
        raise RuntimeError(
            "backend='triton' got a CPU tensor: Triton kernels run on CUDA devices, or on the CPU "
            "under the interpreter — set TRITON_INTERPRET=1 before importing alphakern, "
            "or use backend='torch'."
        )
    if x.dtype not in KERNEL_DTYPES:
        raise TypeError(
            f"backend='triton' supports x of dtype float32, float16 or bfloat16, got {x.dtype}; "
            "use backend='torch' for other floating dtypes."
        )


def constexprs(act: Activation) -> dict:
    """The kernels' compile-time arguments for f: its code and leaky_relu's slope (one compiled
    kernel per f; the slope is a constant of the kernel, never an fp64 runtime argument)."""
    return {"ACT": act.code, "NEG": act.negative_slope if act.name == "leaky_relu" else 0.0}


def device_ctx(x: torch.Tensor):
    """Launch on x's GPU (Triton uses the current device); nothing to select for the interpreter."""
    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
