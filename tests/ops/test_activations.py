"""The gate for any activation f, G_α,f(x) = x + α·(f(x) − x): every backend that has f against a
float64 oracle built from PyTorch's own F.<f> (not from alphakern's forms of f), α = 1 is F.<f>
and α = 0 the identity at the switch points, ±0, ±inf and NaN, and the op's registration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alphakern
from alphakern.ops.core.activations import ACTIVATIONS, Activation
from alphakern.ops.gate import gate_backward_op, gate_op
from tests.reference import (
    backend_params,
    device_for,
    f64,
    gate_dgamma_scale,
    gate_reference,
    smooth,
    tolerance,
)
from tests.utils import DTYPES, GRANULARITIES, gates, layouts, make

NON_RELU = [a for a in ACTIVATIONS if a != "relu"]
BACKENDS = backend_params()


EPS32 = torch.finfo(torch.float32).eps
# f's own switch points (relu6: 0, 6; hardswish: ±3; leaky_relu, relu: 0) and the specials
EDGES = [0.0, -0.0, 6.0, -6.0, 3.0, -3.0, 1e-30, -1e-30, 0.5, -0.5, 12.0, -12.0, 40.0, -40.0]
SPECIALS = [float("inf"), float("-inf"), float("nan")]


def _within(got, want, scale, dtype, backend, what, ulps=8):
    """|got − want| ≤ the dtype's rounding of the result + ``ulps`` fp32 ulps of ``scale``
    (transcendentals in fp32: erf, exp, division)."""
    tol = tolerance(dtype, backend)
    got = got.double().cpu()
    want, scale = want.cpu(), scale.cpu()
    bound = tol["rtol"] * want.abs() + ulps * EPS32 * scale + tol["atol"]
    err = (got - want).abs()
    bad = ~(err <= bound)
    assert not bool(bad.any()), (
        f"{what}: {int(bad.sum())} of {err.numel()} off; worst got {got[bad][0].item()!r} "
        f"want {want[bad][0].item()!r} bound {bound[bad][0].item():.3g}"
    )


def _run(backend, name, x, gamma, nu, dy):
    act = Activation(name, 0.2)
    y = gate_op(x, gamma, nu, act.name, act.negative_slope, backend)
    dx, dg = gate_backward_op(dy, x, gamma, nu, act.name, act.negative_slope, backend)
    return y, dx, dg


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("name", NON_RELU)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gate_matches_float64_oracle(backend, name, granularity, dtype):
    x, dy = make((2, 3, 5, 7), dtype, device_for(backend), seed=3)
    x = x * 2  # reach past ±6 and ±3, where relu6 and hardswish switch
    gamma, nu = gates(granularity, x, seed=3), torch.tensor(6.0, device=device_for(backend))
    y, dx, dg = _run(backend, name, x, gamma, nu, dy)
    ry, rdx, rdg, ys, dxs = gate_reference(name, x, gamma, nu, dy)
    assert y.dtype == dx.dtype == dtype and dg.dtype == gamma.dtype and dg.shape == gamma.shape
    _within(y, ry, ys, dtype, backend, "y")
    _within(dx, rdx, dxs, dtype, backend, "dx")
    # dγ: an fp32 sum per gate of dy·(f − x), each term within a few ulps of |dy|·(|f| + |x|)
    _within(dg, rdg, gate_dgamma_scale(name, x, gamma, nu, dy), torch.float32, backend, "dγ", 64)


@pytest.mark.parametrize("layout", layouts("channels_last", "batch_inner", "strided", "expanded"))
@pytest.mark.parametrize("name", ["gelu", "hardswish"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_layouts_keep_the_result_and_empty_like_strides(backend, name, layout):
    x, dy = make((4, 3, 6, 5), torch.float32, device_for(backend), layout, seed=4)
    for granularity in GRANULARITIES:
        gamma, nu = gates(granularity, x, seed=4), torch.tensor(5.0, device=device_for(backend))
        y, dx, dg = _run(backend, name, x, gamma, nu, dy)
        assert y.stride() == torch.empty_like(x).stride() == dx.stride()
        yc, dxc, dgc = _run(backend, name, x.contiguous(), gamma, nu, dy.contiguous())
        # PyTorch's own CPU gelu rounds differently in its vector body and scalar tail, whose
        # extent depends on the layout: 4 ulps there; the fused kernels are position-independent
        exact = backend in ("triton", "cpu")
        rtol = 0 if exact else 4 * EPS32
        atol = 0 if exact else 4 * EPS32 * float(x.abs().max())  # ulps of |x|
        torch.testing.assert_close(y, yc, rtol=rtol, atol=atol)
        torch.testing.assert_close(dx, dxc, rtol=rtol, atol=atol)
        torch.testing.assert_close(dg, dgc, rtol=1e-5, atol=1e-6)


def _edges(device):
    return torch.tensor(EDGES + SPECIALS, device=device).reshape(1, -1)


@pytest.mark.parametrize("name", NON_RELU)
def test_alpha_one_is_pytorchs_f_exactly_and_alpha_zero_the_identity_on_the_torch_backend(name):
    """The torch backend blends PyTorch's own f and autograd: bit for bit, ±inf and NaN included."""
    x = _edges("cpu")
    dy = torch.linspace(-2, 2, x.numel()).reshape(x.shape)
    nu = torch.tensor(1e4)
    y, dx, _ = _run("torch", name, x, torch.tensor(30.0), nu, dy)
    xr = x.clone().requires_grad_()
    want = f64(name, xr.float()) if name != "leaky_relu" else F.leaky_relu(xr, 0.2)
    (want_dx,) = torch.autograd.grad(want, xr, dy)
    assert torch.equal(y.isnan(), want.isnan()) and torch.equal(y.nan_to_num(), want.detach().nan_to_num())
    assert torch.equal(dx.isnan(), want_dx.isnan()) and torch.equal(dx.nan_to_num(), want_dx.nan_to_num())
    y0, dx0, _ = _run("torch", name, x, torch.tensor(-30.0), nu, dy)
    assert torch.equal(y0.nan_to_num(), x.nan_to_num()) and torch.equal(dx0, dy)


@pytest.mark.parametrize("name", NON_RELU)
@pytest.mark.parametrize("backend", BACKENDS)
def test_switch_points_and_specials_on_every_backend(backend, name):
    """α = 1: F.<f> at the switch points (exactly for the piecewise-linear f, within 8 fp32 ulps
    for the smooth ones), its gradient there as PyTorch's autograd defines it (relu6: 0 at 0 and
    6; hardswish: 0 at −3, 1 at 3; leaky_relu: the slope at 0), ±inf to their limits; α = 0 the
    identity exactly; NaN stays NaN in y."""
    x = _edges(device_for(backend))
    dy = torch.ones_like(x)
    nu = torch.tensor(1e4, device=device_for(backend))
    y, dx, _ = _run(backend, name, x, torch.tensor(30.0, device=device_for(backend)), nu, dy)
    fin = x.isfinite()
    xr = x[fin].double().requires_grad_()
    want = f64(name, xr)
    (want_dx,) = torch.autograd.grad(want, xr, torch.ones_like(want))
    ulps, k = (8, smooth(name)) if smooth(name) else (0, 0.0)
    xa = xr.detach().abs()
    _within(y[fin], want.detach(), want.detach().abs() + k * xa, torch.float32, backend, "y", ulps)
    _within(dx[fin], want_dx, want_dx.abs() + k * (1 + xa), torch.float32, backend, "dx", ulps)
    assert bool(y[x.isnan()].isnan().all())
    # ±inf: PyTorch's own F.<f> in fp32, wherever it is a number (gelu(+inf), hardswish(−inf)
    # and silu/gelu(−inf) are ∞·0 = NaN there; the kernels may give the limit instead)
    inf = x.isinf()
    torch_f = f64(name, x[inf].float())
    assert bool((torch_f.isnan() | (y[inf] == torch_f)).all()), (y[inf], torch_f)
    if backend != "torch":  # the fused kernels give f(+inf) its limit (PyTorch's CPU gelu: NaN)
        assert y[x == float("inf")].item() == (6.0 if name == "relu6" else float("inf"))
    y0, dx0, _ = _run(backend, name, x, torch.tensor(-30.0, device=device_for(backend)), nu, dy)
    assert torch.equal(y0[~x.isnan()], x[~x.isnan()]) and torch.equal(dx0, dy)
    # f(x) − x → 0 as x → +inf (all but relu6, whose f − x → −inf): dγ stays finite, not ∞·0
    if name != "relu6":
        dev = device_for(backend)
        xp = torch.tensor([[float("inf"), 1.0, -2.0]], device=dev)
        _, _, dg = _run(backend, name, xp, torch.tensor(0.5, device=dev), torch.tensor(3.0, device=dev),
                        torch.ones_like(xp))  # fmt: skip
        assert bool(dg.isfinite()), dg


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_stays_in_its_gate_and_results_are_deterministic(backend):
    x, dy = make((3, 4, 5, 6), torch.float32, device_for(backend), seed=5)
    x[1, 2, 3, 4] = float("nan")
    gamma, nu = gates("channel", x, seed=5), torch.tensor(4.0, device=device_for(backend))
    y, dx, dg = _run(backend, "silu", x, gamma, nu, dy)
    assert int(y.isnan().sum()) == 1 and bool(dg[2].isnan()) and int(dg.isnan().sum()) == 1
    again = _run(backend, "silu", x, gamma, nu, dy)
    for a, b in zip((y, dx, dg), again, strict=True):
        assert torch.equal(a.nan_to_num(), b.nan_to_num())


def test_relu_gate_is_alpha_relu_bit_for_bit():
    x, dy = make((2, 3, 4, 5), torch.float32, "cpu", seed=7)
    gamma = torch.tensor(0.4, requires_grad=True)
    nu = torch.tensor(3.0)
    y1 = alphakern.gate(x, gamma, nu)
    (g1,) = torch.autograd.grad(y1, gamma, dy)
    y2 = alphakern.alpha_relu(x, gamma, nu)
    (g2,) = torch.autograd.grad(y2, gamma, dy)
    assert torch.equal(y1, y2) and torch.equal(g1, g2)


@pytest.mark.parametrize("name", ["gelu", "relu6", "leaky_relu"])
def test_opcheck(name):
    x, _ = make((2, 3, 4, 5), torch.float32, "cpu", seed=8)
    act = Activation(name, 0.2)
    for granularity in ("layer", "channel"):
        gamma, nu = gates(granularity, x, seed=8).requires_grad_(), torch.tensor(5.0)
        torch.library.opcheck(gate_op, (x.requires_grad_(), gamma, nu, act.name, act.negative_slope, "torch"))


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_double_backward_against_autograd_of_the_formula(granularity):
    """create_graph: second-order gradients through the registered backward, per layer and per
    channel (the per-channel broadcast of α is what a flat broadcast would get wrong)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    m = alphakern.AlphaGate(activation="gelu", granularity=granularity, backend="torch").double()
    m(x.detach())
    with torch.no_grad():
        m.gamma.uniform_(-1, 1)
        m.nu.fill_(3.0)
    m.eval()
    gx, gg = torch.autograd.grad((m(x) ** 2).sum(), (x, m.gamma), create_graph=True)
    hx = torch.autograd.grad((gx**2).sum() + gg.sum(), (x, m.gamma))

    def formula(x, gamma):
        a = alphakern.alpha(gamma, m.nu)
        a = a.reshape(1, -1, 1, 1) if granularity == "channel" else a
        return x + a * (F.gelu(x) - x)

    xr, gr = x.detach().requires_grad_(), m.gamma.detach().clone().requires_grad_()
    rx, rg = torch.autograd.grad((formula(xr, gr) ** 2).sum(), (xr, gr), create_graph=True)
    want = torch.autograd.grad((rx**2).sum() + rg.sum(), (xr, gr))
    for got, ref in zip(hx, want, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


def test_compile_fullgraph_has_no_graph_break():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), alphakern.AlphaGate(activation="silu", granularity="channel"))
    x = torch.randn(2, 3, 8, 8)
    m(x)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), m(x), rtol=0, atol=0)
    compiled(x).sum().backward()


def test_a_backend_without_f_refuses_it(monkeypatch):
    """Every backend has every f today; one that lacks an f (a new activation landing backend by
    backend) says which it has instead of running another f's kernel."""
    from alphakern.ops.backends import cuda_backend

    monkeypatch.setattr(cuda_backend, "ACTIVATIONS", ("relu",))
    x, g, nu = torch.randn(2, 3), torch.tensor(0.0), torch.tensor(1.0)
    with pytest.raises(
        ValueError, match=r"backend='cuda' has kernels for activation in \['relu'\], got 'gelu'"
    ):
        alphakern.gate(x, g, nu, activation="gelu", backend="cuda")


def test_bad_arguments_name_what_was_expected():
    x, g, nu = torch.randn(2, 3), torch.tensor(0.0), torch.tensor(1.0)
    with pytest.raises(ValueError, match=r"activation must be one of \[.*'hardswish'\], got 'tanh'"):
        alphakern.gate(x, g, nu, activation="tanh")
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh', got 'fast'"):
        alphakern.gate(x, g, nu, activation="gelu", approximate="fast")
    with pytest.raises(ValueError, match="negative_slope must be a finite number"):
        alphakern.AlphaGate(activation="leaky_relu", negative_slope=float("nan"))


# below about −88.7, exp(−x) overflows fp32: σ(x) = 1/(1 + inf) = 0 and q = e·σ = inf·0 — the
# kernels must take q = 1 there (f − x = −x), not NaN; a vector's worth and a tail of them
DEEP_NEGATIVE = [-80.0, -88.0, -88.8, -89.0, -90.0, -100.0, -200.0, -1e3, -1e4, -3e4, -40.0, -1.0]


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "silu"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_deep_negative_inputs_give_finite_results_against_the_oracle(backend, name):
    """x far below where exp overflows: y, dx and dγ against the float64 oracle, all finite."""
    dev = device_for(backend)
    x = torch.tensor(DEEP_NEGATIVE * 2, device=dev).reshape(1, -1)  # 24: past a vector, with a tail
    dy = torch.linspace(0.5, 1.5, x.numel(), device=dev).reshape(x.shape)
    gamma, nu = torch.tensor(0.5, device=dev), torch.tensor(3.0, device=dev)
    y, dx, dg = _run(backend, name, x, gamma, nu, dy)
    assert bool(y.isfinite().all() and dx.isfinite().all() and dg.isfinite().all()), (y, dx, dg)
    ry, rdx, rdg, ys, dxs = gate_reference(name, x.cpu(), gamma.cpu(), nu.cpu(), dy.cpu())
    _within(y, ry, ys, torch.float32, backend, "y")
    _within(dx, rdx, dxs, torch.float32, backend, "dx")
    scale = gate_dgamma_scale(name, x.cpu(), gamma.cpu(), nu.cpu(), dy.cpu())
    _within(dg, rdg, scale, torch.float32, backend, "dγ", 64)
