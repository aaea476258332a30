"""Per-channel and per-element gates: every backend against the float64 formula, per gate."""

import pytest
import torch

import alphakern
from alphakern.ops.alpha_relu import alpha_relu_backward_op, alpha_relu_op
from alphakern.ops.backends.triton import gates as alpha_relu_triton_gates
from alphakern.ops.core import alpha_terms
from tests.reference import TRITON_RUNS, assert_matches_reference, backend_params, device_for
from tests.utils import gates, layouts, make, run

FUSED_OK = backend_params()  # every backend; cuda and (without the interpreter) triton skip on a CPU


@pytest.mark.parametrize("backend", FUSED_OK)
def test_two_dimensional_x_channel_is_element(backend):
    """For x of shape (N, C) a (C,) γ is both per channel and per element: one answer."""
    device = device_for(backend)
    x, dy = make((9, 6), torch.float32, device)
    gamma, nu = gates("channel", x), torch.tensor(5.0, device=device)
    y, dx, dg = run(backend, x, gamma, nu, dy)
    x3, dy3 = x.unsqueeze(-1), dy.unsqueeze(-1)  # (N, C, 1): channel gates, same positions
    y3, dx3, dg3 = run(backend, x3, gamma, nu, dy3)
    torch.testing.assert_close(y, y3.squeeze(-1), rtol=0, atol=0)
    torch.testing.assert_close(dx, dx3.squeeze(-1), rtol=0, atol=0)
    torch.testing.assert_close(dg, dg3, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", FUSED_OK)
@pytest.mark.parametrize("granularity", ["channel", "element"])
def test_switch_points_and_nan_stay_in_their_gate(backend, granularity):
    """±0 take slope 1 in every gate; a NaN in one channel makes only that gate's dγ NaN."""
    device = device_for(backend)
    x, dy = make((3, 4, 5, 6), torch.float32, device, seed=2)
    x[:, 1, 0, 0] = 0.0
    x[:, 1, 0, 1] = -0.0
    x[1, 2, 3, 4] = float("nan")
    gamma, nu = gates(granularity, x, seed=2), torch.tensor(8.0, device=device)
    y, dx, dg = run(backend, x, gamma, nu, dy)
    assert_matches_reference(x, gamma, nu, dy, y, dx, dg, backend=backend)
    assert torch.equal(dx[:, 1, 0, :2], dy[:, 1, 0, :2])
    nan_gates = dg.isnan()
    expected = torch.zeros_like(nan_gates)
    if granularity == "channel":
        expected[2] = True
    else:
        expected[2, 3, 4] = True
    assert torch.equal(nan_gates, expected)


@pytest.mark.parametrize("backend", FUSED_OK)
@pytest.mark.parametrize("granularity", ["channel", "element"])
def test_saturated_gates(backend, granularity):
    """ν = 300: some gates' 1 − α ≈ 1e-10 (kept by σ(−z)), some α ≈ 1e-10."""
    device = device_for(backend)
    x, dy = make((2, 6, 4, 4), torch.float32, device, seed=3)
    gamma = torch.linspace(-0.3, 0.3, 6)
    gamma = (gamma if granularity == "channel" else gamma[:, None, None].expand(x.shape[1:]).contiguous()).to(
        device
    )
    y, dx, dg = run(backend, x, gamma, torch.tensor(300.0, device=device), dy)
    assert_matches_reference(x, gamma, torch.tensor(300.0, device=device), dy, y, dx, dg, backend=backend)


@pytest.mark.parametrize("backend", FUSED_OK)
@pytest.mark.parametrize("granularity", ["channel", "element"])
def test_backward_is_deterministic(backend, granularity):
    device = device_for(backend)
    x, dy = make((4, 5, 18, 18), torch.float32, device, seed=4)
    gamma, nu = gates(granularity, x), torch.tensor(4.0, device=device)
    dx0, dg0 = alpha_relu_backward_op(dy, x, gamma, nu, backend)
    for _ in range(10):
        dx, dg = alpha_relu_backward_op(dy, x, gamma, nu, backend)
        assert torch.equal(dx, dx0) and torch.equal(dg, dg0)


@pytest.mark.parametrize("backend", FUSED_OK)
@pytest.mark.parametrize("granularity", ["channel", "element"])
def test_empty_batch(backend, granularity):
    device = device_for(backend)
    x = torch.empty(0, 3, 4, device=device)
    gamma = gates(granularity, torch.empty(1, 3, 4)).to(device)
    y, dx, dg = run(backend, x, gamma, torch.tensor(2.0, device=device), torch.empty_like(x))
    assert y.shape == x.shape and dx.shape == x.shape
    assert dg.shape == gamma.shape and torch.equal(dg, torch.zeros_like(gamma))


@pytest.mark.skipif(not TRITON_RUNS, reason="triton needs a GPU or TRITON_INTERPRET=1")
@pytest.mark.parametrize("granularity", ["channel", "element"])
def test_triton_row_blocks_grid_stride(granularity):
    """Fewer programs than row blocks: each loops over several, the partials still sum right."""
    device = device_for("triton")
    x, dy = make(
        (40, 3, 2, 5), torch.float32, device, "channels_last" if granularity == "channel" else "contiguous"
    )
    gamma, nu = gates(granularity, x), torch.tensor(7.0, device=device)
    y = alpha_relu_op(x, gamma, nu, "triton")
    dx, dg = alpha_relu_triton_gates.backward(dy, x, gamma, nu, granularity, max_programs=1)
    assert_matches_reference(x, gamma, nu, dy, y, dx, dg, backend="triton")


@pytest.mark.parametrize("backend", FUSED_OK)
@pytest.mark.parametrize("granularity", ["channel", "element"])
def test_opcheck(backend, granularity):
    device = device_for(backend)
    x, dy = make((2, 3, 4, 5), torch.float32, device, "channels_last")
    gamma, nu = gates(granularity, x), torch.tensor(3.0, device=device)
    torch.library.opcheck(alpha_relu_op, (x.requires_grad_(), gamma.requires_grad_(), nu, backend))
    torch.library.opcheck(alpha_relu_backward_op, (dy, x.detach(), gamma.detach(), nu, backend))


@pytest.mark.parametrize("backend", FUSED_OK)
@pytest.mark.parametrize("granularity", ["channel", "element"])
def test_compile_fullgraph(backend, granularity):
    device = device_for(backend)
    torch._dynamo.reset()
    x, dy = make((2, 3, 4, 5), torch.float32, device)
    gamma, nu = gates(granularity, x), torch.tensor(3.0, device=device)

    def f(x, g):
        return alphakern.alpha_relu(x, g, nu, backend=backend)

    grads = []
    for fn in (f, torch.compile(f, fullgraph=True)):
        xg, gg = x.clone().requires_grad_(), gamma.clone().requires_grad_()
        y = fn(xg, gg)
        grads.append((y, *torch.autograd.grad(y, (xg, gg), dy)))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_alpha_per_gate():
    gamma = torch.tensor([[-1.0, 0.0], [0.5, 2.0]])
    nu = torch.tensor(4.0)
    expected = torch.sigmoid((torch.sigmoid(gamma.double()) - 0.5) * 4.0).float()
    torch.testing.assert_close(alphakern.alpha(gamma, nu), expected)


@pytest.mark.skipif(not TRITON_RUNS, reason="triton needs a GPU or TRITON_INTERPRET=1")
@pytest.mark.parametrize(
    "shape,layout",
    [((40, 3, 16, 17), "contiguous"), ((9, 3, 64, 64), "channels_last")],
    ids=["rows-K40", "cols-K72"],
)
def test_triton_final_sum_over_many_partials(shape, layout):
    """More partials per gate than the final sum's BLOCK_K, with a ragged last block."""
    device = device_for("triton")
    x, dy = make(shape, torch.float32, device, layout, seed=5)
    gamma, nu = gates("channel", x), torch.tensor(5.0, device=device)
    assert alpha_relu_triton_gates.FINAL_BLOCK_K < 40
    y, dx, dg = run("triton", x, gamma, nu, dy)
    assert_matches_reference(x, gamma, nu, dy, y, dx, dg, backend="triton")


class _TorchGateOps:
    """The native gate ops written in torch, as their schemas specify (ops/backends/native/schema.py),
    to test the Python side shared by the cuda and cpu backends (layout plan, flat views, strides,
    chain rule) without a GPU or a build."""

    @staticmethod
    def gate_terms(gamma, nu):
        _, om, dadg = alpha_terms(gamma, nu)
        return om.float().reshape(gamma.shape), dadg.reshape(gamma.shape)

    @staticmethod
    def gates_cols_fwd(x, slopes, A, G, act=0, neg=0.01):
        assert act == 0  # relu's gate, as the backend under test calls it
        s = slopes.to(torch.float32).repeat(A)
        xf = x.float()
        return torch.where(xf > 0, xf, xf * s).to(x.dtype)

    @staticmethod
    def gates_cols_bwd(dy, x, slopes, A, G, act=0, neg=0.01):
        assert act == 0  # relu's gate, as the backend under test calls it
        s = slopes.to(torch.float32).repeat(A)
        xf, g = x.float(), dy.float()
        dx = torch.where(xf >= 0, g, g * s).to(x.dtype)
        return dx, (g * torch.relu(-xf)).view(A, G).sum(0)

    @staticmethod
    def gates_rows_fwd(x, slopes, C, B, act=0, neg=0.01):
        assert act == 0  # relu's gate, as the backend under test calls it
        s = slopes.view(1, C, 1)
        xf = x.float().view(-1, C, B)
        return torch.where(xf > 0, xf, xf * s).to(x.dtype).reshape(-1)

    @staticmethod
    def gates_rows_bwd(dy, x, slopes, C, B, act=0, neg=0.01):
        assert act == 0  # relu's gate, as the backend under test calls it
        s = slopes.view(1, C, 1)
        xf, g = x.float().view(-1, C, B), dy.float().view(-1, C, B)
        dx = torch.where(xf >= 0, g, g * s).to(x.dtype).reshape(-1)
        return dx, (g * torch.relu(-xf)).sum((0, 2))


@pytest.mark.parametrize("granularity", ["channel", "element"])
@pytest.mark.parametrize("layout", layouts("contiguous", "channels_last", "batch_inner", "strided"))
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (2, 3, 16, 17), (4, 6)], ids=str)
def test_cuda_backend_glue(granularity, layout, shape, monkeypatch):
    from alphakern.ops.backends.native import cuda as cuda_ext

    monkeypatch.setattr(cuda_ext, "_ops", lambda: _TorchGateOps)
    monkeypatch.setattr(cuda_ext, "_check", lambda x: None)
    x, dy = make(shape, torch.float32, "cpu", layout if len(shape) == 4 else "contiguous", seed=6)
    gamma, nu = gates(granularity, x, seed=6), torch.tensor(6.0)
    y = cuda_ext.forward(x, gamma, nu, granularity)
    dx, dg = cuda_ext.backward(dy, x, gamma, nu, granularity)
    assert_matches_reference(x, gamma, nu, dy, y, dx, dg)
    assert y.stride() == torch.empty_like(x).stride() and dx.stride() == torch.empty_like(x).stride()
