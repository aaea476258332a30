"""gradcheck/gradgradcheck, determinism, opcheck and torch.compile(fullgraph=True)."""

import math

import pytest
import torch
from torch import nn

import alphakern
from alphakern.ops.alpha_relu import alpha_relu_backward_op, alpha_relu_op
from alphakern.ops.backends import cpu_backend as cpu_ext
from alphakern.ops.backends import cuda_backend as cuda_ext
from alphakern.ops.backends import torch_backend as alpha_relu_torch
from alphakern.ops.backends import triton_backend as alpha_relu_triton
from tests.reference import backend_params, device_for
from tests.utils import LAYOUTS, layouts


def _inputs(dtype=torch.float64, shape=(2, 3, 5, 4), device="cpu"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=dtype)
    x = torch.where(x.abs() < 1e-3, x + 0.01, x)  # keep finite differences off the kink
    x = x.to(device).requires_grad_()
    gamma = torch.tensor(0.4, dtype=dtype, device=device, requires_grad=True)
    nu = torch.tensor(3.0, dtype=dtype, device=device)
    return x, gamma, nu


def test_gradcheck_torch_backend():
    x, gamma, nu = _inputs()
    assert torch.autograd.gradcheck(lambda x, g: alphakern.alpha_relu(x, g, nu, backend="torch"), (x, gamma))


def test_gradgradcheck_torch_backend():
    x, gamma, nu = _inputs()
    assert torch.autograd.gradgradcheck(
        lambda x, g: alphakern.alpha_relu(x, g, nu, backend="torch"), (x, gamma)
    )


def test_gradgradcheck_through_the_fused_backward():
    """Second derivatives when the first-order gradients come from the fused backward kernel."""
    x, gamma, nu = _inputs()
    calls = []
    real = alpha_relu_torch.backward

    def counting(*args):
        calls.append(1)
        return real(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(alpha_relu_torch, "backward", counting)
        assert torch.autograd.gradgradcheck(
            lambda x, g: alphakern.alpha_relu(x, g, nu, backend="torch"), (x, gamma)
        )
    assert calls  # the backend's backward produced the first-order gradients


@pytest.mark.parametrize("backend", backend_params())
def test_double_backward_matches_eager(backend, monkeypatch):
    """create_graph=True on every backend: first-order gradients from the backend's fused
    backward (spied on), second-order ones from autograd, both equal to the eager expression's."""
    device = device_for(backend)
    x, gamma, nu = _inputs(torch.float32, device=device)
    modules = {"torch": alpha_relu_torch, "triton": alpha_relu_triton, "cuda": cuda_ext, "cpu": cpu_ext}
    module = modules[backend]
    calls = []
    real = module.backward
    monkeypatch.setattr(module, "backward", lambda *a: calls.append(1) or real(*a))

    def grads(fn):
        y = fn(x, gamma)
        gx, gg = torch.autograd.grad((y * y).sum(), (x, gamma), create_graph=True)
        return torch.autograd.grad(gx.pow(2).sum() + gg, (x, gamma))

    fused = grads(lambda x, g: alphakern.alpha_relu(x, g, nu, backend=backend))
    assert calls, "the fused backward did not run"
    eager = grads(lambda x, g: x + alphakern.alpha(g, nu) * torch.relu(-x))
    for a, b in zip(fused, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", backend_params())
def test_first_order_gradient_at_zero_with_create_graph(backend):
    """Slope 1 at x = +0 and −0.0, 1 − α below zero, also when the backward builds a graph."""
    device = device_for(backend)
    x = torch.tensor([0.0, -0.0, -1.0, 2.0], device=device, requires_grad=True)
    gamma = torch.tensor(0.3, device=device, requires_grad=True)
    nu = torch.tensor(5.0, device=device)
    dy = torch.tensor([3.0, 5.0, 7.0, 11.0], device=device)
    for create_graph in (False, True):
        y = alphakern.alpha_relu(x, gamma, nu, backend=backend)
        (dx,) = torch.autograd.grad(y, x, dy, create_graph=create_graph)
        om = 1 - alphakern.alpha(gamma, nu).item()
        expect = torch.tensor([3.0, 5.0, 7.0 * om, 11.0])
        torch.testing.assert_close(dx.detach().cpu(), expect, rtol=1e-6, atol=0)


@pytest.mark.parametrize("backend", backend_params())
def test_backward_is_deterministic(backend):
    device = device_for(backend)
    g = torch.Generator().manual_seed(1)
    n = 3 * 7 * 256 * 3  # several tiles, so several partial sums
    x = torch.randn(n, generator=g).to(device)
    dy = torch.randn(n, generator=g).to(device)
    gamma = torch.tensor(-0.3, device=device)
    nu = torch.tensor(8.0, device=device)
    dx0, dg0 = alpha_relu_backward_op(dy, x, gamma, nu, backend)
    for _ in range(20):
        dx, dg = alpha_relu_backward_op(dy, x, gamma, nu, backend)
        assert torch.equal(dx, dx0) and torch.equal(dg, dg0)


OPCHECK_LAYOUTS = layouts("contiguous", "channels_last", "permuted")


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("layout", OPCHECK_LAYOUTS)
def test_opcheck(backend, layout):
    device = device_for(backend)
    x, gamma, nu = _inputs(torch.float32, device=device)
    x = LAYOUTS[layout](x.detach()).requires_grad_()
    torch.library.opcheck(alpha_relu_op, (x, gamma, nu, backend))
    dy = LAYOUTS[layout](torch.randn_like(x))
    torch.library.opcheck(alpha_relu_backward_op, (dy, x.detach(), gamma.detach(), nu, backend))


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("layout", OPCHECK_LAYOUTS)
def test_fake_kernels_promise_the_real_strides(backend, layout):
    """What torch.compile plans memory with (the fake kernels) is what the kernels return."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    device = device_for(backend)
    x, gamma, nu = (t.detach() for t in _inputs(torch.float32, device=device))
    x = LAYOUTS[layout](x)
    y = alpha_relu_op(x, gamma, nu, backend)
    dx, _ = alpha_relu_backward_op(torch.ones_like(x), x, gamma, nu, backend)
    mode = FakeTensorMode()
    fx, fg, fn = (mode.from_tensor(t) for t in (x, gamma, nu))
    with mode:
        fy = alpha_relu_op(fx, fg, fn, backend)
        fdx, _ = alpha_relu_backward_op(torch.ones_like(fx), fx, fg, fn, backend)
    assert fy.stride() == y.stride() == x.stride()
    assert fdx.stride() == dx.stride() == x.stride()


class _Net(torch.nn.Module):
    def __init__(self, backend=None):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.act = alphakern.AlphaReLU(backend=backend)

    def forward(self, x):
        return self.act(self.conv(x)).sum(dim=(1, 2, 3))


@pytest.mark.parametrize("backend", backend_params())
def test_compile_fullgraph_matches_eager(backend):
    """torch.compile traces a model using the op with no graph break, and computes the same.

    Triton runs here too: on the CPU the compiled graph calls the op, whose kernels the
    interpreter runs."""
    device = device_for(backend)
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = _Net(backend).to(device)
    ref = _Net("torch").to(device)
    ref.load_state_dict(net.state_dict())
    compiled = torch.compile(net, fullgraph=True)
    x = torch.randn(2, 3, 8, 8, device=device)
    for _ in range(2):  # ν moves on each training step, in both
        out_c, out_r = compiled(x), ref(x)
        out_c.sum().backward()
        out_r.sum().backward()
        torch.testing.assert_close(out_c, out_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net.act.nu, ref.act.nu)
    torch.testing.assert_close(net.act.gamma.grad, ref.act.gamma.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(net.conv.weight.grad, ref.conv.weight.grad, rtol=1e-4, atol=1e-5)


def test_compiled_training_keeps_the_nu_each_forward_used():
    """γ's gradient under torch.compile equals eager's over several steps (ν moves each step).

    PyTorch's partitioner may recompute reads of a mutated buffer in the backward; AlphaReLU's
    op saves the ν it used, so it is immune. The unfused EagerAlphaReLU refuses to compile.
    """
    grads = []
    for compiled in (False, True):
        torch._dynamo.reset()
        m = alphakern.AlphaReLU(nu_step=1.0)
        with torch.no_grad():
            m.gamma.fill_(0.5)
        f = torch.compile(m, fullgraph=True) if compiled else m
        for _ in range(3):
            f(-torch.ones(3)).sum().backward()
        grads.append(m.gamma.grad.item())
    assert grads[0] == pytest.approx(grads[1], rel=1e-5)
    torch._dynamo.reset()
    with pytest.raises(Exception, match="EagerAlphaReLU cannot be trained under torch.compile"):
        torch.compile(alphakern.EagerAlphaReLU(), fullgraph=True)(torch.ones(3))


def test_compile_fullgraph_as_the_first_call_in_a_fresh_process():
    """A user's first call being a compiled one: backend "auto" is resolved while Dynamo traces
    (whether the native CPU kernels are built is looked up then, not traced into the graph)."""
    from tests.subproc import run_python

    code = (
        "import torch, alphakern\n"
        "m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), alphakern.AlphaReLU(),\n"
        "                        alphakern.AlphaGate(activation='gelu'))\n"
        "m = alphakern.fuse_bn(m)  # the fused BatchNorm + gate resolves its backend too\n"
        "f = torch.compile(m, fullgraph=True, backend='aot_eager')\n"
        "f(torch.randn(2, 3, 8, 8)).sum().backward()\n"
        "print('grad', all(g.gamma.grad is not None for g in (m.get_submodule('2'), m.get_submodule('3'))))\n"
    )
    proc = run_python("-c", code)
    assert proc.returncode == 0 and "grad True" in proc.stdout, proc.stderr[-3000:]


# -- torch.func: grad, jacrev, vmap, per-sample gradients ------------------------------------------
ORACLE_F = {  # f in float64, written here
    "relu": torch.relu,
    "relu6": lambda x: x.clamp(0, 6),
    "leaky_relu": lambda x: torch.where(x > 0, x, 0.01 * x),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "silu": lambda x: x * torch.sigmoid(x),
    "hardswish": lambda x: x * (x + 3).clamp(0, 6) / 6,
}


def _oracle(x, gamma, nu, name, granularity):
    """x + α·(f(x) − x) in float64, differentiable in x and γ."""
    a = torch.sigmoid((torch.sigmoid(gamma) - 0.5) * nu.double())
    a = a.reshape(1, -1, *([1] * (x.dim() - 2))) if granularity == "channel" else a.reshape(())
    return x + a * (ORACLE_F[name](x) - x)


@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("name", list(ORACLE_F))
@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_torch_func_grad_jacrev_and_per_sample_gradients_match_float64(backend, name, granularity):
    """torch.func.grad w.r.t. γ, vmap(grad) per sample and jacrev w.r.t. x, against float64
    autograd of the formula. The fused Function has no setup_context or vmap rule: under a
    transform the op runs as PyTorch ops (``ops.gate.composite``); each of these raised before."""
    if backend == "cpu":
        from alphakern.ops.backends.native import cpu

        cpu.build()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 4, 4, generator=g) * 3
    gamma = torch.randn(() if granularity == "layer" else (3,), generator=g)
    nu = torch.tensor(2.5)

    def loss(gm, xs):
        y = alphakern.gate(xs, gm, nu, activation=name, granularity=granularity, backend=backend)
        return (y * y).sum()

    def oracle_loss(gm, xs):
        return (_oracle(xs, gm, nu, name, granularity) ** 2).sum()

    g64, x64 = gamma.double().requires_grad_(), x.double()
    want = torch.autograd.grad(oracle_loss(g64, x64), g64)[0]
    torch.testing.assert_close(torch.func.grad(loss)(gamma, x).double(), want, rtol=1e-5, atol=1e-5)
    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(gamma, x[:, None])
    for i in range(x.shape[0]):
        want_i = torch.autograd.grad(oracle_loss(g64, x64[i : i + 1]), g64)[0]
        torch.testing.assert_close(per_sample[i].double(), want_i, rtol=1e-5, atol=1e-5)
    sample = x[:1]

    def gate_of(xs):
        return alphakern.gate(xs, gamma, nu, activation=name, granularity=granularity, backend=backend)

    jac = torch.func.jacrev(gate_of)(sample)
    want_jac = torch.autograd.functional.jacobian(
        lambda xs: _oracle(xs, gamma.double(), nu, name, granularity), sample.double()
    )
    torch.testing.assert_close(jac.double(), want_jac, rtol=1e-5, atol=1e-6)


def test_torch_func_per_sample_gradients_of_a_linearized_network():
    """Per-sample gradients (vmap(grad) over functional_call) of a linearized CNN with a fused
    BatchNorm in eval mode, against a loop of autograd over the samples."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    x = torch.randn(4, 3, 8, 8)
    model = alphakern.linearize(net, granularity="channel", fuse_bn=True, example_input=x).eval()
    for _, gate in alphakern.alpha_layers(model):  # α away from ½, where lerp is symmetric
        with torch.no_grad():
            gate.gamma.normal_()
            gate.nu.fill_(3.0)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p, xs):
        return torch.func.functional_call(model, (p, buffers), (xs[None],)).square().sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
    for i in range(x.shape[0]):
        model.zero_grad()
        model(x[i : i + 1]).square().sum().backward()
        for k, p in model.named_parameters():
            torch.testing.assert_close(per_sample[k][i], p.grad, rtol=1e-4, atol=1e-5, msg=k)
