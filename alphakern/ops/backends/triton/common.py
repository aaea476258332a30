"""What both Triton kernel files share: the triton import, the fp64 α terms, the element math of
the gate, and the host checks. The element math (``_gate_y``, ``_gate_dx``, ``_gate_dsum``) is
the one place a new activation changes in this backend.

α is computed in fp64 (exact exp and division, where fp32 ``tl.sigmoid`` compiles to approximate
ex2/rcp whose error ν would amplify) and the slope 1 − α as σ(−z), not by subtraction — the same
terms as ``ops.core.alpha.alpha_terms`` and ``csrc/common/alpha_terms.h``.
"""

from __future__ import annotations

import contextlib
import os

import torch

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
        """(1 − α in fp32, dα/dγ in fp64) from the 1-element tensors γ and ν."""
        g = tl.load(gamma_ptr).to(tl.float64)
        nu = tl.load(nu_ptr).to(tl.float64)
        a, om, s = _terms64(g, nu)
        return om.to(tl.float32), a * om * nu * s * _sigmoid64(-g)

    @triton.jit
    def _slope(g, nu_ptr):
        """1 − α in fp32 (computed in fp64) for a block (or scalar) of γ."""
        nu = tl.load(nu_ptr).to(tl.float64)
        _, om, _ = _terms64(g.to(tl.float64), nu)
        return om.to(tl.float32)

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


def device_ctx(x: torch.Tensor):
    """Launch on x's GPU (Triton uses the current device); nothing to select for the interpreter."""
    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
