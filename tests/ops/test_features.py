"""Per-feature gates (γ of shape (D,), one gate per position of x's last dim, shared over every
other dim): every backend and activation against the float64 oracle, which broadcasts γ over the
last dim itself; any rank, dtypes, layouts, switch points, determinism, compile and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import alphakern
from alphakern.ops.alpha_relu import alpha_relu_backward_op, alpha_relu_op
from alphakern.ops.core.activations import ACTIVATIONS
from tests.reference import (
    assert_matches_reference,
    backend_params,
    device_for,
    gate_dgamma_scale,
    gate_reference,
    tolerance,
)
from tests.utils import DTYPES, LAYOUTS, gates, layouts, make, run_public

BACKENDS = backend_params()
NON_RELU = [a for a in ACTIVATIONS if a != "relu"]
EPS32 = torch.finfo(torch.float32).eps
# rank 1 to 4; D odd, 1, and past a vector width; D equal to dim 1 (where "channel" would also fit)
SHAPES = [(7,), (1, 1), (5, 6), (2, 5, 7), (3, 6, 6), (2, 3, 4, 33), (1, 9, 130)]


def _feature(x, seed=0):
    return gates("feature", x, seed=seed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_relu_gates_match_the_float64_oracle(backend, dtype, shape):
    device = device_for(backend)
    x, dy = make(shape, dtype, device)
    gamma, nu = _feature(x), torch.tensor(10.0, device=device)
    y, dx, dg = run_public(backend, x, gamma, nu, dy, "feature")
    assert_matches_reference(x, gamma, nu, dy, y, dx, dg, backend=backend, granularity="feature")


def _within(got, want, scale, dtype, backend, what, ulps=8):
    tol = tolerance(dtype, backend)
    got, want, scale = got.double().cpu(), want.cpu(), scale.cpu()
    bound = tol["rtol"] * want.abs() + ulps * EPS32 * scale + tol["atol"]
    bad = ~((got - want).abs() <= bound)
    assert not bool(bad.any()), f"{what}: {int(bad.sum())} of {got.numel()} off"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", NON_RELU)
def test_every_activation_matches_the_float64_oracle(backend, name, dtype):
    device = device_for(backend)
    x, dy = make((2, 3, 5, 7), dtype, device, seed=3)
    x = x * 2  # past ±6 and ±3, where relu6 and hardswish switch
    gamma, nu = _feature(x, seed=3), torch.tensor(6.0, device=device)
    y, dx, dg = run_public(backend, x, gamma, nu, dy, "feature", activation=name)
    ry, rdx, rdg, ys, dxs = gate_reference(name, x, gamma, nu, dy, "feature")
    assert y.dtype == dx.dtype == dtype and dg.shape == gamma.shape == (7,)
    _within(y, ry, ys, dtype, backend, "y")
    _within(dx, rdx, dxs, dtype, backend, "dx")
    _within(dg, rdg, gate_dgamma_scale(name, x, gamma, nu, dy, "feature"), torch.float32, backend, "dγ", 64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "layout", layouts("channels_last", "batch_inner", "transposed_view", "strided", "expanded")
)
def test_layouts_give_the_contiguous_result_in_empty_like_strides(backend, layout):
    device = device_for(backend)
    x, dy = make((4, 8, 6, 6), torch.float32, device, seed=1)
    x, dy = LAYOUTS[layout](x), LAYOUTS[layout](dy)
    gamma, nu = _feature(x, seed=1), torch.tensor(6.0, device=device)
    y, dx, dg = run_public(backend, x, gamma, nu, dy, "feature", activation="gelu")
    assert y.stride() == torch.empty_like(x).stride()
    yc, dxc, dgc = run_public(
        backend, x.contiguous(), gamma, nu, dy.contiguous(), "feature", activation="gelu"
    )
    torch.testing.assert_close(y, yc, rtol=4 * EPS32, atol=4 * EPS32 * float(x.abs().max()))
    torch.testing.assert_close(dx, dxc, rtol=4 * EPS32, atol=4 * EPS32 * float(x.abs().max()))
    torch.testing.assert_close(dg, dgc, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_token_is_gated_alike_whatever_the_batch_and_sequence_length(backend):
    """Row t of a (B, T, D) x gets the same y as the same row alone: γ never sees B or T."""
    device = device_for(backend)
    x, dy = make((3, 11, 24), torch.float32, device, seed=2)
    gamma, nu = _feature(x, seed=2), torch.tensor(5.0, device=device)
    y, _, _ = run_public(backend, x, gamma, nu, dy, "feature", activation="silu")
    y_short, _, _ = run_public(backend, x[1:2, 3:8], gamma, nu, dy[1:2, 3:8], "feature", activation="silu")
    torch.testing.assert_close(y_short, y[1:2, 3:8], rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_switch_points_and_nan_stay_in_their_feature(backend):
    """±0 take slope 1; a NaN at one position makes only its feature's dγ NaN."""
    device = device_for(backend)
    x, dy = make((3, 4, 6), torch.float32, device, seed=4)
    x[:, :, 1] = 0.0
    x[:, 0, 2] = -0.0
    x[2, 3, 4] = float("nan")
    gamma, nu = _feature(x, seed=4), torch.tensor(8.0, device=device)
    y, dx, dg = run_public(backend, x, gamma, nu, dy, "feature")
    assert_matches_reference(x, gamma, nu, dy, y, dx, dg, backend=backend, granularity="feature")
    assert torch.equal(dx[:, :, 1], dy[:, :, 1]) and torch.equal(dx[:, 0, 2], dy[:, 0, 2])
    assert dg.isnan().tolist() == [False, False, False, False, True, False]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["relu", "gelu"])
def test_backward_is_deterministic(backend, name):
    device = device_for(backend)
    x, dy = make((8, 33, 40), torch.float32, device, seed=5)
    gamma, nu = _feature(x, seed=5), torch.tensor(4.0, device=device)
    first = run_public(backend, x, gamma, nu, dy, "feature", activation=name)
    for _ in range(5):
        again = run_public(backend, x, gamma, nu, dy, "feature", activation=name)
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_of_what_runs(backend):
    """A feature gate runs the registered ops on x's (numel / D, D) rows: opcheck them there."""
    device = device_for(backend)
    x, dy = make((2, 3, 5), torch.float32, device)
    gamma, nu = _feature(x), torch.tensor(3.0, device=device)
    rows, dy_rows = x.reshape(-1, 5), dy.reshape(-1, 5)
    torch.library.opcheck(alpha_relu_op, (rows.requires_grad_(), gamma.requires_grad_(), nu, backend))
    torch.library.opcheck(alpha_relu_backward_op, (dy_rows, rows.detach(), gamma.detach(), nu, backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_matches_eager(backend):
    device = device_for(backend)
    torch._dynamo.reset()
    x, dy = make((2, 3, 4, 6), torch.float32, device)
    gamma, nu = _feature(x), torch.tensor(3.0, device=device)

    def f(x, g):
        return alphakern.gate(x, g, nu, activation="gelu", granularity="feature", backend=backend)

    results = []
    for fn in (f, torch.compile(f, fullgraph=True)):
        xg, gg = x.clone().requires_grad_(), gamma.clone().requires_grad_()
        y = fn(xg, gg)
        results.append((y, *torch.autograd.grad(y, (xg, gg), dy)))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_double_backward_against_autograd_of_the_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    gamma = (torch.rand(5, dtype=torch.float64) * 2 - 1).requires_grad_()
    nu = torch.tensor(3.0, dtype=torch.float64)
    y = alphakern.gate(x, gamma, nu, activation="gelu", granularity="feature", backend="torch")
    gx, gg = torch.autograd.grad((y**2).sum(), (x, gamma), create_graph=True)
    got = torch.autograd.grad((gx**2).sum() + gg.sum(), (x, gamma))
    xr, gr = x.detach().requires_grad_(), gamma.detach().requires_grad_()
    a = torch.sigmoid((torch.sigmoid(gr) - 0.5) * nu)  # (D,) broadcasts over the last dim
    yr = xr + a * (F.gelu(xr) - xr)
    rx, rg = torch.autograd.grad((yr**2).sum(), (xr, gr), create_graph=True)
    want = torch.autograd.grad((rx**2).sum() + rg.sum(), (xr, gr))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


# -- bad input --------------------------------------------------------------------------------------
def test_bad_input_names_the_argument_and_what_was_expected():
    nu = torch.tensor(1.0)
    with pytest.raises(
        ValueError, match=r"granularity='feature' needs x with >= 1 dims, got x of shape \(\)"
    ):
        alphakern.gate(torch.tensor(1.0), torch.zeros(1), nu, granularity="feature")
    with pytest.raises(ValueError, match=r"gamma of shape \(4,\) does not fit x of shape \(2, 3\) for "
                       r"granularity='feature': gamma must have shape \(3,\)"):  # fmt: skip
        alphakern.gate(torch.randn(2, 3), torch.zeros(4), nu, granularity="feature")
    with pytest.raises(ValueError, match=r"granularity must be one of \['layer', 'channel', 'element', "
                       r"'feature'\], got 'token'"):  # fmt: skip
        alphakern.alpha_relu(torch.randn(2, 3), torch.zeros(3), nu, granularity="token")


def test_feature_is_never_inferred_and_the_message_says_how_to_ask():
    """(D,) can equal (C,): a (B, T, D) x with a (D,) γ and no granularity is refused, naming it."""
    with pytest.raises(ValueError, match=r"does not fit x of shape \(2, 6, 64\).*granularity='feature'"):
        alphakern.gate(torch.randn(2, 6, 64), torch.zeros(64), torch.tensor(1.0))


def test_a_token_gate_refuses_another_sequence_length_and_names_feature():
    m = alphakern.AlphaGate(activation="gelu", granularity="channel")
    m(torch.randn(1, 8, 64))  # γ of shape (8,): one per token
    with pytest.raises(ValueError, match=r"gamma of shape \(8,\) does not fit x of shape \(1, 6, 64\) for "
                       r"granularity='channel'.*use granularity='feature'"):  # fmt: skip
        m(torch.randn(1, 6, 64))
