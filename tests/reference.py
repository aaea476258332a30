"""The oracle: the plain formula in float64 with autograd, and the tolerance tables."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from alphakern.ops import alpha_relu_triton

HAS_CUDA = torch.cuda.is_available()
TRITON_RUNS = alpha_relu_triton.available() and (HAS_CUDA or alpha_relu_triton.INTERPRET)
HAS_NVCC = shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")
DEVICE = "cuda" if HAS_CUDA else "cpu"

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
    ]


def device_for(backend: str) -> str:
    return "cuda" if backend == "cuda" else DEVICE


def reference(x, gamma, nu, dy):
    """(y, dx, dgamma) of x + α·relu(−x) by float64 autograd, from the (already rounded) inputs."""
    x64 = x.detach().double().requires_grad_()
    g64 = gamma.detach().double().requires_grad_()
    nu64 = nu.detach().double()
    a = torch.sigmoid((torch.sigmoid(g64) - 0.5) * nu64)
    y = x64 + a * torch.relu(-x64)
    dx, dg = torch.autograd.grad(y, (x64, g64), dy.double())
    return y.detach(), dx, dg


def dgamma_atol(x, gamma, nu, dy, rtol: float, alpha_eps: float) -> float:
    """Allowed |error| of dγ: fp32 accumulation (∝ Σ|dy·relu(−x)|·|dα/dγ|) plus the chain factor
    α(1 − α)ν·σ'(γ) computed in fp32, whose absolute error is ∝ alpha_eps·ν·σ'(γ)."""
    x64, g64, nu64 = x.detach().double(), gamma.double(), nu.double()
    s = torch.sigmoid(g64)
    a = torch.sigmoid((s - 0.5) * nu64)
    total = (dy.double().abs() * torch.relu(-x64)).nan_to_num().sum()
    chain = (a * (1 - a) * nu64 * s * (1 - s)).abs()
    return float(total * (rtol * chain + 2 * alpha_eps * nu64.abs() * s * (1 - s))) + 1e-30


# Elementwise outputs are rounded once to x's dtype from fp32 (fp64 for the torch backend on fp64).
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-14),
    torch.float32: dict(rtol=2e-6, atol=1e-7),
    torch.float16: dict(rtol=1e-3, atol=1e-6),
    torch.bfloat16: dict(rtol=8e-3, atol=1e-5),
}
# dγ is a reduction accumulated in fp32; see dgamma_atol.
DGAMMA_RTOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-5, torch.bfloat16: 1e-5}


# α itself is computed in fp32 (by every backend unless x is fp64): an absolute error of a few
# fp32 ulps in α moves y by that much times |x| (and dx by that times |dy|), which is large relative
# to y = (1 − α)·x where α ≈ 1.
ALPHA_EPS = {torch.float64: 1e-15}
ALPHA_EPS_DEFAULT = 4 * torch.finfo(torch.float32).eps


def assert_close_scaled(actual, expected, scale, rtol, atol, what):
    """|actual − expected| ≤ rtol·|expected| + atol + scale elementwise; NaN and ±inf must match."""
    actual, expected, scale = actual.double().cpu(), expected.cpu(), scale.double().cpu()
    nan_a, nan_e = actual.isnan(), expected.isnan()
    assert torch.equal(nan_a, nan_e), f"{what}: NaN positions differ"
    inf_e = expected.isinf()
    assert torch.equal(actual[inf_e], expected[inf_e]), f"{what}: ±inf differ"
    ok = ~(nan_e | inf_e)
    err = (actual[ok] - expected[ok]).abs()
    bound = rtol * expected[ok].abs() + atol + scale[ok]
    if err.numel() and not bool((err <= bound).all()):
        i = int((err - bound).argmax())
        raise AssertionError(
            f"{what}: {int((err > bound).sum())} of {err.numel()} elements off; worst: got "
            f"{actual[ok][i].item()!r}, expected {expected[ok][i].item()!r} (bound {bound[i].item():.3g})"
        )


def assert_matches_reference(x, gamma, nu, dy, y, dx, dg):
    ry, rdx, rdg = reference(x, gamma, nu, dy)
    tol = TOL[x.dtype]
    aeps = ALPHA_EPS.get(x.dtype, ALPHA_EPS_DEFAULT)
    assert y.dtype == x.dtype and dx.dtype == x.dtype and dg.dtype == gamma.dtype
    assert y.shape == x.shape and dx.shape == x.shape and dg.shape == gamma.shape
    assert_close_scaled(y, ry, aeps * x.detach().double().abs().nan_to_num(), what="y", **tol)
    assert_close_scaled(dx, rdx, aeps * dy.double().abs(), what="dx", **tol)
    rtol = DGAMMA_RTOL[x.dtype]
    atol = dgamma_atol(x, gamma, nu, dy, rtol, aeps)
    assert_close_scaled(dg, rdg, torch.zeros_like(rdg), rtol, atol, what="dgamma")
