"""The oracles, one module: the plain formulas in float64 with autograd — the ReLU gate
(``reference``), the gate of any f (``gate_reference``, f PyTorch's own: ``f64``), BatchNorm then
the gate (``bn_gate_reference``) — the scales their rounding is measured against, and the
tolerance tables."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from alphakern.ops.backends import cpu_backend as cpu_ext
from alphakern.ops.backends import triton_backend as alpha_relu_triton
from tests.utils import per_gate

HAS_CUDA = torch.cuda.is_available()
TRITON_RUNS = alpha_relu_triton.available() and (HAS_CUDA or alpha_relu_triton.INTERPRET)
HAS_NVCC = shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")
DEVICE = "cuda" if HAS_CUDA else "cpu"


def _cpu_kernels() -> bool:
    """The native CPU kernels for this session: the build `make` left, or — in a fresh extension
    cache (a new TORCH_EXTENSIONS_DIR, changed sources) — built now, so their tests run rather
    than skip; a failed build fails the session. ALPHAKERN_TESTS_NO_NATIVE=1 skips them instead."""
    if cpu_ext.available(warn=False):
        return True
    if os.environ.get("ALPHAKERN_TESTS_NO_NATIVE") == "1":
        return False
    cpu_ext.build(notice=True)
    return True


CPU_KERNELS = _cpu_kernels()
needs_cpu_kernels = pytest.mark.skipif(
    not CPU_KERNELS, reason="ALPHAKERN_TESTS_NO_NATIVE=1: the native CPU kernels are not used"
)
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (none present)")


def backend_params(include_cuda: bool = True) -> list:
    """Backends as pytest params, each skipped with a reason where it cannot run."""
    return [
        pytest.param("torch", id="torch"),
        pytest.param(
            "triton",
            id="triton",
            marks=pytest.mark.skipif(not TRITON_RUNS, reason="triton needs a GPU or TRITON_INTERPRET=1"),
        ),
        pytest.param(
            "cuda",
            id="cuda",
            marks=pytest.mark.skipif(
                not (include_cuda and HAS_CUDA and HAS_NVCC),
                reason="the cuda backend needs a CUDA GPU and nvcc",
            ),
        ),
        pytest.param("cpu", id="cpu", marks=needs_cpu_kernels),
    ]


def device_for(backend: str) -> str:
    return {"cuda": "cuda", "cpu": "cpu"}.get(backend, DEVICE)


def reference(x, gamma, nu, dy, granularity=None):
    """(y, dx, dgamma) by float64 autograd of PReLU with slope 1 − α = σ(−z) per gate, from the
    (already rounded) inputs. For finite x this is x + α·relu(−x); at x = −inf it gives −inf
    where the study's expression gives NaN (−inf + inf)."""
    x64 = x.detach().double().requires_grad_()
    g64 = gamma.detach().double().requires_grad_()
    nu64 = nu.detach().double()
    z = (torch.sigmoid(per_gate(g64, x, gamma, granularity)) - 0.5) * nu64
    y = torch.where(x64 >= 0, x64, x64 * torch.sigmoid(-z))  # slope 1 at ±0, as autograd of relu
    dx, dg = torch.autograd.grad(y, (x64, g64), dy.double())
    return y.detach(), dx, dg


def dgamma_atol(x, gamma, nu, dy, rtol: float, granularity=None):
    """Allowed |error| of dγ per gate: fp32 accumulation, ∝ Σ|dy·relu(−x)|·|dα/dγ| over the gate's
    positions (the chain factor is computed in fp64 by every backend, so it adds nothing)."""
    x64, g64, nu64 = x.detach().double(), gamma.detach().double(), nu.double()
    ones = torch.ones_like(g64, requires_grad=True)
    weighted = (dy.double().abs() * torch.relu(-x64)).nan_to_num() * per_gate(ones, x, gamma, granularity)
    (total,) = torch.autograd.grad(weighted.sum(), ones)  # Σ over each gate's positions
    s = torch.sigmoid(g64)
    z = (s - 0.5) * nu64
    chain = (torch.sigmoid(z) * torch.sigmoid(-z) * nu64 * s * (1 - s)).abs()
    return total * rtol * chain + 1e-30


# Elementwise outputs: an fp32 product whose factor 1 − α is itself correctly rounded (fp64 math in
# every backend), so within 2 fp32 ulps, then one rounding to x's dtype: fp16/bf16 results are
# within half an ulp of the exact value, plus those 2 fp32 ulps (math done in fp16/bf16 is not).
# atol is the dtype's smallest subnormal, for results that round into the subnormal range.
_EPS32 = torch.finfo(torch.float32).eps


def _tol(dtype: torch.dtype, half_ulps: float) -> dict:
    f = torch.finfo(dtype)
    return dict(rtol=half_ulps * f.eps / 2 + 2 * _EPS32, atol=f.smallest_normal * f.eps)


TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-300),
    torch.float32: _tol(torch.float32, 4),
    torch.float16: _tol(torch.float16, 1),
    torch.bfloat16: _tol(torch.bfloat16, 1),
}
# dγ is a reduction accumulated in fp32; see dgamma_atol.
DGAMMA_RTOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-5, torch.bfloat16: 1e-5}


def assert_close_scaled(actual, expected, rtol, atol, what):
    """|actual − expected| ≤ rtol·|expected| + atol elementwise (atol may be a tensor); NaN and
    ±inf must match."""
    actual, expected = actual.double().cpu(), expected.cpu()
    if isinstance(atol, torch.Tensor):
        atol = atol.cpu().expand_as(expected)[~(expected.isnan() | expected.isinf())]
    nan_a, nan_e = actual.isnan(), expected.isnan()
    assert torch.equal(nan_a, nan_e), f"{what}: NaN positions differ"
    inf_e = expected.isinf()
    assert torch.equal(actual[inf_e], expected[inf_e]), f"{what}: ±inf differ"
    ok = ~(nan_e | inf_e)
    err = (actual[ok] - expected[ok]).abs()
    bound = rtol * expected[ok].abs() + atol
    if err.numel() and not bool((err <= bound).all()):
        i = int((err - bound).argmax())
        raise AssertionError(
            f"{what}: {int((err > bound).sum())} of {err.numel()} elements off; worst: got "
            f"{actual[ok][i].item()!r}, expected {expected[ok][i].item()!r} (bound {bound[i].item():.3g})"
        )


def tolerance(dtype: torch.dtype, backend: str | None) -> dict:
    if backend == "triton" and alpha_relu_triton.INTERPRET and dtype == torch.bfloat16:
        # The interpreter truncates fp32 -> bf16 (triton/runtime/interpreter.py, cast_impl calls
        # _convert_float without a rounding mode); the GPU rounds to nearest. One ulp here.
        return _tol(dtype, 2)
    return TOL[dtype]


def assert_matches_reference(x, gamma, nu, dy, y, dx, dg, backend: str | None = None, granularity=None):
    ry, rdx, rdg = reference(x, gamma, nu, dy, granularity)
    tol = tolerance(x.dtype, backend)
    assert y.dtype == x.dtype and dx.dtype == x.dtype and dg.dtype == gamma.dtype
    assert y.shape == x.shape and dx.shape == x.shape and dg.shape == gamma.shape
    assert_close_scaled(y, ry, what="y", **tol)
    assert_close_scaled(dx, rdx, what="dx", **tol)
    rtol = DGAMMA_RTOL[x.dtype]
    assert_close_scaled(dg, rdg, rtol, dgamma_atol(x, gamma, nu, dy, rtol, granularity), what="dgamma")


# -- the gate of any f, and BatchNorm then the gate ------------------------------------------------
def f64(name: str, x: torch.Tensor) -> torch.Tensor:
    """PyTorch's own f (leaky_relu's slope 0.2) of the op's activation ``name``: every oracle's f,
    not alphakern's forms of it."""
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "leaky_relu":
        return F.leaky_relu(x, 0.2)
    return getattr(F, name)(x)


def gate_reference(name, x, gamma, nu, dy, granularity=None):
    """(y, dx, dγ, scale of y, scale of dx) in float64 by autograd of α·f(x) + (1 − α)·x, with
    1 − α as σ(−z). The scales bound each result's rounding: |α·f| + |(1 − α)·x| and
    |dy|·((1 − α) + α·|f'|)."""
    x64 = x.detach().double().requires_grad_()
    g64 = gamma.detach().double().requires_grad_()
    z = (torch.sigmoid(per_gate(g64, x, gamma, granularity)) - 0.5) * nu.double()
    a, om = torch.sigmoid(z), torch.sigmoid(-z)
    fx = f64(name, x64)
    y = a * fx + om * x64
    dx, dg = torch.autograd.grad(y, (x64, g64), dy.double(), retain_graph=True)
    (df,) = torch.autograd.grad(fx, x64, torch.ones_like(fx))
    # fp32 f and f' round their intermediate terms, of the size of x (gelu's 1 + erf, tanh's
    # 1 − t² cancel): so the scale also holds a·|x| (y) and a·(1 + |x|) (dx)
    with torch.no_grad():
        ax = x64.abs()
        y_scale = (a * fx).abs() + (om * x64).abs() + smooth(name) * a * ax
        dx_scale = dy.double().abs() * (om + a * (df.abs() + smooth(name) * (1 + ax)))
        return y.detach(), dx, dg, y_scale, dx_scale


def smooth(name: str) -> float:
    """1 for the f computed through exp/erf (whose fp32 forms round like their inputs' size)."""
    return float(name in ("gelu", "gelu_tanh", "silu"))


def gate_dgamma_scale(name, x, gamma, nu, dy, granularity=None):
    """Σ per gate of |dy|·(|f(x)| + |x|)·|dα/dγ|: the scale of dγ's rounding."""
    x64, g64 = x.double(), gamma.detach().double()
    s = torch.sigmoid(g64)
    z = (s - 0.5) * nu.double()
    chain = (torch.sigmoid(z) * torch.sigmoid(-z) * nu.double() * s * (1 - s)).abs()
    w = dy.double().abs() * (f64(name, x64).abs() + x64.abs())
    ones = torch.ones_like(g64, requires_grad=True)
    (total,) = torch.autograd.grad((w * per_gate(ones, x, gamma, granularity)).sum(), ones)
    return total * chain


def bn_gate_reference(name, x, dy, gamma, nu, w, b, rm, rv, training, eps=1e-5, residual=None):
    """(y, dx, dw, db, dγ, scales of dw/db/dγ, dr) in float64: nn.BatchNorm2d's formula, the
    residual added (dr None without one), then α·f(z) + (1 − α)·z."""
    x64 = x.detach().double().requires_grad_()
    w64, b64, g64 = (t.detach().double().requires_grad_() for t in (w, b, gamma))
    r64 = None if residual is None else residual.detach().double().requires_grad_()
    z = F.batch_norm(x64, rm.double().clone(), rv.double().clone(), w64, b64, training, 0.1, eps)
    z = z if r64 is None else z + r64
    s = torch.sigmoid(g64)
    za = (s - 0.5) * nu.double()
    a, om = torch.sigmoid(za), torch.sigmoid(-za)
    view = (lambda t: t.reshape(())) if gamma.numel() == 1 else (lambda t: t.reshape(1, -1, 1, 1))
    fz = f64(name, z)
    y = view(a) * fz + view(om) * z
    wrt = (x64, w64, b64, g64) + (() if r64 is None else (r64,))
    dx, dw, db, dg, *dr = torch.autograd.grad(y, wrt, dy.double())
    with torch.no_grad():
        x64 = x.double()
        mean, var = (x64.mean((0, 2, 3)), x64.var((0, 2, 3), unbiased=False)) if training else (rm, rv)
        xh = (x64 - mean.double().view(1, -1, 1, 1)) / (var.double().view(1, -1, 1, 1) + eps).sqrt()
        chain = (a * om * nu.double() * s * (1 - s)).abs()
        dgs = (dy.double().abs() * (fz.abs() + z.abs())).sum((0, 2, 3))
        dgs = (dgs.sum() if gamma.numel() == 1 else dgs) * chain
        ref_dz = dy.double().abs() * (view(om) + view(a) * 4)  # |dz| bound (|f'| ≤ 1.2 here)
        dws = (ref_dz * xh.abs()).sum((0, 2, 3))
        dbs = ref_dz.sum((0, 2, 3))
    return y.detach(), dx, dw, db, dg, (dws, dbs, dgs), (dr[0] if dr else None)
