"""BatchNorm fused with the gate (alphakern.bn_gate, BatchNormGate, fuse_bn): against nn.BatchNorm2d
followed by the gate formula in float64 (PyTorch's own F.<f>, autograd for the gradients), train
and eval, every f, gates per layer and channel, contiguous and channels_last, fp32/fp16/bf16;
the running statistics after several steps; BN's own errors; determinism; the op's registration;
fuse_bn on a whole network and its state dict both ways."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import alphakern
from alphakern.functional import bn_gate
from alphakern.graph import fuse_bn, unfuse_bn
from alphakern.modules import AlphaGate, BatchNormAddGate, BatchNormGate, materialize
from alphakern.ops.bn_gate import bn_gate_backward_op, bn_gate_op
from alphakern.ops.core.activations import ACTIVATIONS
from tests.reference import (
    HAS_CUDA,
    HAS_NVCC,
    backend_params,
    bn_gate_reference,
    device_for,
    needs_cpu_kernels,
)
from tests.utils import DTYPES, LAYOUTS, make

pytestmark = needs_cpu_kernels  # the CPU kernels are also these tests' default "auto" backend
BACKENDS = [p for p in backend_params() if p.id != "torch"]  # "torch" is the composition, tested apart


EPS32 = torch.finfo(torch.float32).eps
SHAPE = (3, 21, 4, 7)  # odd sizes: channels_last rows of 21 (a 16-wide step and a tail), NCHW rows of 28


def _public(name: str) -> dict:
    base = "gelu" if name == "gelu_tanh" else name
    return dict(activation=base, approximate="tanh" if name == "gelu_tanh" else "none", negative_slope=0.2)


def _setup(granularity: str, dtype, layout: str, seed: int = 0, shape: tuple[int, ...] = SHAPE):
    x, dy = make(shape, dtype, "cpu", layout, seed)
    x = (x + 0.7).to(dtype)  # a mean away from 0: the centring matters
    g = torch.Generator().manual_seed(seed + 1)
    c = shape[1]
    gamma = torch.rand(() if granularity == "layer" else (c,), generator=g) * 4 - 2
    w, b = torch.randn(c, generator=g), torch.randn(c, generator=g)
    rm, rv = torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.5
    return x, dy, gamma, torch.tensor(3.0), w, b, rm, rv


def _close(got, want, what, rtol, scale):
    err = (got.double() - want).abs()
    bound = rtol * want.abs() + scale
    bad = ~(err <= bound)
    assert not bool(bad.any()), f"{what}: {int(bad.sum())} off, worst err {err.max().item():.3g}"


def _rtol(dtype) -> float:
    return torch.finfo(dtype).eps if dtype != torch.float32 else 8 * EPS32


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_matches_float64_batchnorm_then_gate(backend, name, granularity, dtype, layout, training):
    _check_fused(backend, name, granularity, dtype, layout, training, SHAPE)


# more than one tile of channels and more than one work item of rows: channels_last 130 channels
# are 3 Triton channel blocks (64 wide) and 429 rows 4 CPU chunks (16384 // 130 rows each); NCHW
# rows of 1122 are 2 Triton blocks of 1024, with 2 channels a tile (3 channel blocks for 5)
BLOCK_SHAPES = [((3, 130, 11, 13), "channels_last"), ((2, 5, 33, 34), "contiguous")]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("shape,layout", BLOCK_SHAPES, ids=[f"{s}-{lay}" for s, lay in BLOCK_SHAPES])
@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_over_many_channel_blocks_and_row_chunks(backend, shape, layout, granularity, training):
    _check_fused(backend, "silu", granularity, torch.float32, layout, training, shape)


def _residual(shape, dtype, layout, dev, r_layout=None):
    """A residual of the block's scale (its sum with BN(x) crosses every f's kinks), laid out as
    ``r_layout`` (default x's)."""
    r, _ = make(shape, dtype, "cpu", r_layout or layout, 9)
    return r.to(dev)


def _add_cases() -> list:
    """Every f × granularity × dtype on the native kernels; under the Triton interpreter (slow)
    every f per channel in fp32, and fp16/bf16 for one f at both granularities."""
    cases = []
    for bp in BACKENDS:
        (backend,) = bp.values
        for name in ACTIVATIONS:
            for granularity in ("layer", "channel"):
                for dtype in DTYPES:
                    lean = dtype == torch.float32 and granularity == "channel" or name == "silu"
                    if backend == "triton" and not lean:
                        continue
                    case_id = f"{backend}-{name}-{granularity}-{dtype}"
                    cases.append(pytest.param(backend, name, granularity, dtype, marks=bp.marks, id=case_id))
    return cases


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend,name,granularity,dtype", _add_cases())
def test_fused_add_matches_float64_bn_add_then_gate(backend, name, granularity, dtype, layout, training):
    """bn_add_gate: G(BN(x) + r) and its gradients, ∂L/∂r included, against float64."""
    _check_fused(backend, name, granularity, dtype, layout, training, SHAPE, residual=True)


@pytest.mark.parametrize("shape,layout", BLOCK_SHAPES, ids=[f"{s}-{lay}" for s, lay in BLOCK_SHAPES])
@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_add_over_many_blocks_and_a_residual_in_another_layout(backend, shape, layout):
    other = "contiguous" if layout == "channels_last" else "channels_last"
    _check_fused(backend, "gelu", "channel", torch.float32, layout, True, shape, True, r_layout=other)


def _check_fused(backend, name, granularity, dtype, layout, training, shape, residual=False, r_layout=None):
    dev = device_for(backend)
    x, dy, gamma, nu, w, b, rm, rv = (t.to(dev) for t in _setup(granularity, dtype, layout, 0, shape))
    r = _residual(shape, dtype, layout, dev, r_layout) if residual else None
    xg, gg, wg, bg = (t.clone().requires_grad_() for t in (x, gamma, w, b))
    rg = None if r is None else r.clone().requires_grad_()
    rm1, rv1 = rm.clone(), rv.clone()
    y = bn_gate(xg, gg, nu, residual=rg, weight=wg, bias=bg, running_mean=rm1, running_var=rv1,
                training=training, backend=backend, **_public(name))  # fmt: skip
    y.backward(dy)
    x, dy, gamma, nu, w, b, rm, rv, y, rm1, rv1 = (
        t.cpu() for t in (x, dy, gamma, nu, w, b, rm, rv, y, rm1, rv1)
    )
    for t in (xg, gg, wg, bg) + (() if rg is None else (rg,)):
        t.grad = t.grad.cpu()
    r = None if r is None else r.cpu()
    ref = bn_gate_reference(name, x, dy, gamma, nu, w, b, rm, rv, training, residual=r)
    ry, rdx, rdw, rdb, rdg, (dws, dbs, dgs), rdr = ref
    assert y.dtype == xg.grad.dtype == dtype and y.stride() == x.stride() and xg.grad.stride() == x.stride()
    rt = _rtol(dtype)
    _close(y, ry, "y", rt, 64 * EPS32 * ry.abs().max())
    _close(xg.grad, rdx, "dx", rt, 256 * EPS32 * rdx.abs().max())
    if rg is not None:  # ∂L/∂r is the gate's backward at BN(x) + r, laid out as r
        assert rg.grad.dtype == dtype and rg.grad.stride() == r.stride()
        _close(rg.grad, rdr, "dresidual", rt, 64 * EPS32 * rdr.abs().max())
    _close(wg.grad, rdw, "dweight", 0, 64 * EPS32 * dws + rt * rdw.abs())
    _close(bg.grad, rdb, "dbias", 0, 64 * EPS32 * dbs + rt * rdb.abs())
    _close(gg.grad, rdg, "dgamma", 0, 64 * EPS32 * dgs + rt * rdg.abs())
    if not training:
        assert torch.equal(rm1, rm) and torch.equal(rv1, rv)
        return
    x64 = x.double()  # the running statistics: momentum 0.1, the variance unbiased
    want_m = 0.9 * rm.double() + 0.1 * x64.mean((0, 2, 3))
    want_v = 0.9 * rv.double() + 0.1 * x64.var((0, 2, 3), unbiased=True)
    _close(rm1, want_m, "running_mean", 1e-6, 1e-6)
    _close(rv1, want_v, "running_var", 1e-6, 1e-6)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("residual", [False, True], ids=["bn_gate", "bn_add_gate"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_registered_op_compile_runs_matches_float64(backend, residual, training, monkeypatch):
    """The path torch.compile takes — alphakern::bn_gate and its registered autograd, not the eager
    autograd.Function — run eagerly against float64 (test_compile_fullgraph reaches it only
    through dynamo, and only against the eager path)."""
    from alphakern.ops import bn_gate as op_module

    def eager_path(*_):
        raise AssertionError("the eager autograd.Function ran")

    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(op_module._BNGateFunction, "apply", eager_path)
    _check_fused(backend, "leaky_relu", "channel", torch.float32, "channels_last", training, SHAPE, residual)


# the CUDA kernels' other paths: NCHW rows longer than a warp's segment (4096) and of an odd length
# (scalar loads), channels_last rows wider than a block (C > 1024: two column blocks) and of C not
# a multiple of the vector width, many row blocks
CUDA_SHAPES = [((2, 3, 80, 81), "contiguous"), ((3, 2, 71, 73), "contiguous"),
               ((2, 1100, 3, 5), "channels_last"), ((40, 13, 16, 16), "channels_last")]  # fmt: skip


@pytest.mark.skipif(not (HAS_CUDA and HAS_NVCC), reason="the cuda backend needs a CUDA GPU and nvcc")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,layout", CUDA_SHAPES, ids=[f"{s}-{lay}" for s, lay in CUDA_SHAPES])
def test_cuda_kernels_on_long_wide_and_ragged_shapes(shape, layout, dtype):
    x, dy = make(shape, dtype, "cpu", layout, 3)
    x = (x + 0.7).to(dtype)
    c = shape[1]
    g = torch.Generator().manual_seed(4)
    gamma, w, b = torch.rand(c, generator=g) * 4 - 2, torch.randn(c, generator=g), torch.randn(c, generator=g)
    nu, rm, rv = torch.tensor(3.0), torch.zeros(c), torch.ones(c)
    xg, gg, wg, bg = (t.cuda().requires_grad_() for t in (x, gamma, w, b))
    y = bn_gate(xg, gg, nu.cuda(), weight=wg, bias=bg, activation="silu", backend="cuda")
    y.backward(dy.cuda())
    ry, rdx, rdw, rdb, rdg, (dws, dbs, dgs), _ = bn_gate_reference(
        "silu", x, dy, gamma, nu, w, b, rm, rv, True
    )
    rt = _rtol(dtype)  # the tolerances of the test above
    _close(y.cpu(), ry, "y", rt, 64 * EPS32 * ry.abs().max())
    _close(xg.grad.cpu(), rdx, "dx", rt, 256 * EPS32 * rdx.abs().max())
    _close(wg.grad.cpu(), rdw, "dweight", 0, 64 * EPS32 * dws + rt * rdw.abs())
    _close(bg.grad.cpu(), rdb, "dbias", 0, 64 * EPS32 * dbs + rt * rdb.abs())
    _close(gg.grad.cpu(), rdg, "dgamma", 0, 64 * EPS32 * dgs + rt * rdg.abs())
    assert y.stride() == xg.stride() and xg.grad.stride() == xg.stride()


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_module_running_statistics_after_several_steps_match_nn_batchnorm(layout, momentum):
    """Three training steps then eval: the fused module's running mean/var/num_batches_tracked,
    outputs and gradients equal nn.BatchNorm2d + the gate's (torch backend) within fp32 rounding."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5, momentum=momentum)
    gate = AlphaGate(activation="silu", granularity="channel", backend="torch")
    ref = nn.Sequential(bn, gate)
    materialize(ref, (2, 5, 4, 7))
    with torch.no_grad():
        gate.gamma.uniform_(-2, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    fused = copy.deepcopy(ref)
    fused_bn = BatchNormGate(fused[0], fused[1], "1")
    fused[1].backend = None  # auto: the fused CPU kernels
    for step in range(3):
        x = LAYOUTS[layout](torch.randn(6, 5, 4, 7) * (step + 1) + step)
        y_ref, y = ref(x), fused_bn(x)
        torch.testing.assert_close(y, y_ref, rtol=2e-5, atol=2e-5)
        y_ref.square().sum().backward()
        y.square().sum().backward()
    for a, b in ((fused[0].running_mean, bn.running_mean), (fused[0].running_var, bn.running_var)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert int(fused[0].num_batches_tracked) == int(bn.num_batches_tracked) == 3
    assert torch.equal(fused[1].nu, gate.nu)  # ν advanced once per training forward, as the gate's own
    for p, q in ((fused[0].weight, bn.weight), (fused[0].bias, bn.bias), (fused[1].gamma, gate.gamma)):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4)
    ref.eval(), fused.eval(), fused_bn.eval()
    x = torch.randn(2, 5, 4, 7)
    torch.testing.assert_close(fused_bn(x), ref(x), rtol=2e-5, atol=2e-5)


def test_batchnorm_errors_and_empty_batch():
    x, _, gamma, nu, w, b, rm, rv = _setup("channel", torch.float32, "contiguous")
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        bn_gate(torch.randn(1, 21, 1, 1), gamma, nu, weight=w, bias=b, running_mean=rm, running_var=rv)
    with pytest.raises(ValueError, match=r"gamma of shape \(4,\) does not fit x of shape \(3, 21, 4, 7\)"):
        bn_gate(x, torch.zeros(4), nu, weight=w, bias=b)
    with pytest.raises(ValueError, match="bn_gate backend='cpu' takes fp32/fp16/bf16 CPU tensors"):
        bn_gate(x.double(), gamma, nu, weight=w, bias=b, backend="cpu")
    for training in (False, True):  # an empty batch: an empty result, as F.batch_norm's
        empty = torch.zeros(0, 21, 4, 7, requires_grad=True)
        y = bn_gate(empty, gamma, nu, weight=w, bias=b, running_mean=rm, running_var=rv, training=training,
                    backend="cpu")  # fmt: skip
        y.sum().backward()
        assert y.shape == empty.shape and empty.grad.shape == empty.shape


def test_one_value_per_channel_is_refused_even_with_one_channel():
    gamma, nu = torch.tensor(0.5), torch.tensor(3.0)
    for shape in ((1, 1, 1, 1), (1, 1)):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
            bn_gate(torch.randn(shape), gamma, nu, backend="cpu")
    bn_gate(torch.randn(2, 1, 1, 1), gamma, nu, backend="cpu")  # two values: fine


def test_fused_backward_is_first_order_and_says_so():
    x, _, gamma, nu, w, b, _, _ = _setup("channel", torch.float32, "contiguous")
    x = x.requires_grad_()
    y = bn_gate(x, gamma, nu, weight=w, bias=b, backend="cpu")
    with pytest.raises(
        RuntimeError, match="^bn_gate's fused backward is first-order only; use backend='torch'$"
    ):
        torch.autograd.grad(y.square().sum(), x, create_graph=True)


def test_the_composition_takes_momentum_eps_and_the_gate_on_the_named_backend(monkeypatch):
    """backend="torch" (and element gates on any backend): F.batch_norm with the caller's momentum
    and eps, then the gate on the backend the caller named ("auto" for None)."""
    from alphakern.ops import bn_gate as op_module

    seen = []
    gate_entry = op_module.gate_op_entry

    def spy(z, gamma, nu, act, backend):
        seen.append(backend)
        return gate_entry(z, gamma, nu, act, backend)

    monkeypatch.setattr(op_module, "gate_op_entry", spy)
    x, _, gamma, nu, w, b, rm, rv = _setup("channel", torch.float32, "contiguous")
    rm_got, rv_got, rm_want, rv_want = rm.clone(), rv.clone(), rm.clone(), rv.clone()
    got = bn_gate(x, gamma, nu, weight=w, bias=b, running_mean=rm_got, running_var=rv_got, momentum=0.3,
                  eps=0.5, activation="silu", backend="torch")  # fmt: skip
    z = F.batch_norm(x, rm_want, rv_want, w, b, True, 0.3, 0.5)
    want = alphakern.gate(z, gamma, nu, activation="silu", backend="torch")
    assert seen == ["torch"]
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close((rm_got, rv_got), (rm_want, rv_want), rtol=0, atol=0)
    element = torch.rand(x.shape[1:]) - 0.5
    for backend, gate_backend in ((None, None), ("auto", None), ("torch", "torch")):
        seen.clear()
        bn_gate(x, element, nu, weight=w, bias=b, backend=backend)
        assert seen == [gate_backend], backend


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_statistics_keep_their_digits_when_the_mean_dwarfs_the_spread(backend, layout):
    """mean 300, std 0.01: E[x²] − E[x]² in fp32 sums would lose every digit of the variance (the
    output was 40–95 % off before the statistics summed x − k); within fp32 rounding of float64."""
    dev = device_for(backend)
    x, dy, gamma, nu, w, b, rm, rv = _setup("channel", torch.float32, layout, 2, (4, 16, 3, 3))
    x = LAYOUTS[layout](300 + (x - 0.7) * 0.01)
    xg = x.to(dev).requires_grad_()
    y = bn_gate(
        xg, gamma.to(dev), nu.to(dev), weight=w.to(dev), bias=b.to(dev), activation="silu", backend=backend
    )
    y.backward(dy.to(dev))
    ry, rdx, *_ = bn_gate_reference("silu", x, dy, gamma, nu, w, b, rm, rv, True)
    # the mean rounded to fp32 is off by up to 300·2⁻²⁴ ≈ 2e-3 of the spread
    _close(y.cpu(), ry, "y", 0, 2e-3 * ry.abs().max())
    _close(xg.grad.cpu(), rdx, "dx", 0, 2e-3 * rdx.abs().max())


@pytest.mark.parametrize("activation", ["gelu", "silu", "hardswish"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_saturated_gates_are_exactly_f_or_the_identity_even_at_inf(backend, activation):
    """ν = inf: α is exactly 1 (γ > 0) or 0 (γ < 0), so y is f(z) or z itself — also where z = ±inf,
    where a·f(z) + (1 − a)·z without the kernels' blends would give 0·inf = NaN. The kernels may drop
    those blends only when no gate of the call is saturated; this call has nothing but saturated
    gates."""
    dev = device_for(backend)
    c = 4
    x = torch.linspace(-6, 6, 2 * c * 3 * 3).reshape(2, c, 3, 3)
    x[0, :, 0, 0], x[1, :, 1, 1] = float("inf"), float("-inf")
    gamma, nu = torch.tensor([1.0, -1.0, 2.0, -2.0]), torch.tensor(float("inf"))
    w, b = torch.linspace(0.5, 2.0, c), torch.linspace(-1.0, 1.0, c)
    rm, rv = torch.linspace(-0.5, 0.5, c), torch.linspace(0.5, 2.0, c)
    y = bn_gate(
        x.to(dev), gamma.to(dev), nu.to(dev), activation=activation, weight=w.to(dev), bias=b.to(dev),
        running_mean=rm.to(dev), running_var=rv.to(dev), training=False, backend=backend,
    ).cpu()  # fmt: skip
    view = (1, c, 1, 1)
    z = (x.double() - rm.double().view(view)) * torch.rsqrt(rv.double().view(view) + 1e-5)
    z = z * w.double().view(view) + b.double().view(view)
    f = {"gelu": F.gelu, "silu": F.silu, "hardswish": F.hardswish}[activation]
    want = torch.where((gamma > 0).view(view), f(z), z)  # f(−inf) is NaN for gelu and silu, as torch's
    assert want.isinf().sum() >= 3  # +inf through f, ±inf through the identity
    torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("view", ["strided", "permuted"])
def test_inputs_neither_contiguous_nor_channels_last(view):
    """A strided slice and an H/W-swapped layout: the kernels take a dense copy, and y, dx and dr
    come back laid out as ``empty_like`` of x and the residual say, with the float64 values."""
    x, dy, gamma, nu, w, b, rm, rv = _setup("channel", torch.float32, "contiguous", 4, (3, 21, 7, 8))
    r = _residual(x.shape, x.dtype, "contiguous", "cpu")
    if view == "strided":
        x, dy, r = (torch.cat([t, t], 3)[..., ::2] for t in (x, dy, r))
    else:
        x, dy, r = (t.transpose(2, 3).contiguous().transpose(2, 3) for t in (x, dy, r))
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    xg, rg = (torch.empty_like(t).copy_(t).requires_grad_() for t in (x, r))
    y = bn_gate(xg, gamma, nu, residual=rg, weight=w, bias=b, activation="gelu", backend="cpu")
    y.backward(dy)
    ry, rdx, *_, rdr = bn_gate_reference("gelu", x, dy, gamma, nu, w, b, rm, rv, True, residual=r)
    assert y.stride() == torch.empty_like(x).stride()
    _close(y, ry, "y", 8 * EPS32, 64 * EPS32 * ry.abs().max())
    _close(xg.grad, rdx, "dx", 8 * EPS32, 256 * EPS32 * rdx.abs().max())
    _close(rg.grad, rdr, "dresidual", 8 * EPS32, 64 * EPS32 * rdr.abs().max())


def test_kernels_read_contiguous_and_channels_last_inputs_in_place():
    """No copy of x for the kernels when it is contiguous or channels_last (4-D), one contiguous
    copy otherwise (bandwidth: a copy is a whole extra pass)."""
    from alphakern.ops.core.batchnorm import kernel_layout

    x = torch.randn(3, 5, 4, 6)
    cl = x.to(memory_format=torch.channels_last)
    for t, want_cl in ((x, False), (cl, True), (x.reshape(3, 5, 24), False)):
        got, is_cl = kernel_layout(t)
        assert got is t and is_cl is want_cl
    odd = x.transpose(2, 3)
    got, is_cl = kernel_layout(odd)
    assert got.is_contiguous() and not is_cl and torch.equal(got, odd)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_without_affine_in_half_precision_and_a_float64_default_dtype(dtype):
    """BN without affine on fp16/bf16 x, also under torch.set_default_dtype(float64) (a user's
    setting): the kernels get fp32 ones and zeros, and the result is the composition's."""
    x, _, gamma, nu, _, _, _, _ = _setup("channel", dtype, "channels_last")
    want = bn_gate(x.float(), gamma, nu, activation="silu", backend="torch")
    before = torch.get_default_dtype()
    try:
        for default in (torch.float32, torch.float64):
            torch.set_default_dtype(default)
            got = bn_gate(x, gamma, nu, activation="silu", backend="cpu")
            assert got.dtype == dtype
            _close(got, want.double(), str(default), _rtol(dtype), 64 * EPS32 * want.abs().max())
    finally:
        torch.set_default_dtype(before)


def test_bn_add_gate_errors_name_the_argument():
    x, _, gamma, nu, w, b, _, _ = _setup("channel", torch.float32, "contiguous")
    bad = {
        "shape": torch.zeros(3, 21, 4, 6),
        "dtype": torch.zeros(3, 21, 4, 7, dtype=torch.float16),
        "device": torch.zeros(3, 21, 4, 7, device="meta"),
    }
    for r in bad.values():
        with pytest.raises(ValueError, match=r"residual must have x's shape \(3, 21, 4, 7\), dtype"):
            alphakern.bn_add_gate(x, r, gamma, nu, weight=w, bias=b)
    with pytest.raises(TypeError, match="residual must be a Tensor or None, got float"):
        alphakern.bn_add_gate(x, 1.0, gamma, nu, weight=w, bias=b)
    for kw, missing in (
        (dict(weight=w), "weight given without bias"),
        (dict(bias=b), "bias given without weight"),
    ):
        with pytest.raises(ValueError, match=missing):
            alphakern.bn_add_gate(x, x, gamma, nu, **kw)
    # the native ops' own checks, for callers of torch.ops.alphakern_C directly
    ops = torch.ops.alphakern_C
    c = torch.ones(21)
    with pytest.raises(RuntimeError, match="bn_add_gate: residual must have x's shape"):
        ops.bn_add_gate_fwd(x, x[:, :, :, :6].contiguous(), c, c, c, c, c)
    with pytest.raises(RuntimeError, match="residual must be float32, float16 or bfloat16"):
        ops.bn_add_gate_fwd(x, x.double(), c, c, c, c, c)


def test_bn_add_gate_without_affine_and_with_the_composition_backend():
    """weight = bias = None (BN without affine) and the "torch" backend: the same function, and the
    fused backward's ∂L/∂x, ∂L/∂r and ∂L/∂γ without BN's parameters."""
    x, dy, gamma, nu, _, _, rm, rv = _setup("channel", torch.float32, "channels_last")
    r = _residual(x.shape, x.dtype, "channels_last", "cpu")
    xg, rg, gg = (t.clone().requires_grad_() for t in (x, r, gamma))
    got = alphakern.bn_add_gate(xg, rg, gg, nu, activation="hardswish", backend="cpu")
    got.backward(dy)
    want = alphakern.bn_add_gate(x, r, gamma, nu, activation="hardswish", backend="torch")
    ones, zeros = torch.ones(21), torch.zeros(21)
    ry, rdx, _, _, rdg, (_, _, dgs), rdr = bn_gate_reference(
        "hardswish", x, dy, gamma, nu, ones, zeros, rm, rv, True, residual=r
    )
    _close(got, ry, "y", 8 * EPS32, 64 * EPS32 * ry.abs().max())
    _close(want, ry, "y (torch)", 8 * EPS32, 64 * EPS32 * ry.abs().max())
    _close(xg.grad, rdx, "dx", 8 * EPS32, 256 * EPS32 * rdx.abs().max())
    _close(rg.grad, rdr, "dresidual", 8 * EPS32, 64 * EPS32 * rdr.abs().max())
    _close(gg.grad, rdg, "dgamma", 0, 64 * EPS32 * dgs + 8 * EPS32 * rdg.abs())


def test_element_gates_and_float64_run_the_composition():
    x, dy, _, nu, w, b, rm, rv = _setup("channel", torch.float32, "contiguous")
    gamma = torch.rand(x.shape[1:]) - 0.5
    want = alphakern.gate(F.batch_norm(x, rm.clone(), rv.clone(), w, b, True), gamma, nu, activation="relu6")
    got = bn_gate(
        x, gamma, nu, weight=w, bias=b, running_mean=rm.clone(), running_var=rv.clone(), activation="relu6"
    )
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("residual", [False, True], ids=["bn_gate", "bn_add_gate"])
def test_deterministic_and_independent_of_the_thread_count(backend, layout, residual):
    x, dy, gamma, nu, w, b, _, _ = (t.to(device_for(backend)) for t in _setup("layer", torch.float32, layout))
    big = (8, 4, 8, 8) if backend == "cpu" else (2, 1, 2, 2)  # big enough for threads (interpreter: small)
    x, dy = (LAYOUTS[layout](t.repeat(*big)) for t in (x, dy))
    w, b = w.repeat(big[1]), b.repeat(big[1])
    r = _residual(x.shape, x.dtype, layout, x.device) if residual else None

    def run(threads):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            xg, gg, wg, bg = (t.clone().requires_grad_() for t in (x, gamma, w, b))
            rg = None if r is None else r.clone().requires_grad_()
            kw = dict(residual=rg, weight=wg, bias=bg, activation="gelu", backend=backend)
            bn_gate(xg, gg, nu, **kw).backward(dy)
            return xg.grad, gg.grad, wg.grad, bg.grad, (None if rg is None else rg.grad)
        finally:
            torch.set_num_threads(before)

    first = run(2)
    for again in (run(2), run(1)):
        assert all(a is b or torch.equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    x, dy, gamma, nu, w, b, rm, rv = (
        t.to(device_for(backend)) for t in _setup("channel", torch.float32, "channels_last")
    )
    r = _residual(x.shape, x.dtype, "channels_last", x.device).requires_grad_()
    for training in (True, False):
        for residual in (None, r):
            args = (x, residual, w.requires_grad_(), b.requires_grad_(), rm, rv, gamma.requires_grad_(), nu,
                    training, 1e-5, "silu", 0.01, backend)  # fmt: skip
            torch.library.opcheck(bn_gate_op, args)


class _Block(nn.Module):
    """conv → BN → ReLU, then conv → BN → add(skip) → ReLU: a pair and a tail for fuse_bn."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU()
        self.conv2, self.bn2, self.act2 = nn.Conv2d(5, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU()

    def forward(self, x):
        h = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(h)) + h)


def test_compile_fullgraph():
    m = alphakern.linearize(_Block(), granularity="channel", fuse_bn=True)
    materialize(m, (2, 3, 8, 8))
    assert sum(isinstance(mod, BatchNormGate) for mod in m.modules()) == 2
    assert sum(isinstance(mod, BatchNormAddGate) for mod in m.modules()) == 1
    xin = torch.randn(4, 3, 8, 8)
    eager = copy.deepcopy(m).eval()
    compiled = torch.compile(copy.deepcopy(m).eval(), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(xin), eager(xin), rtol=0, atol=0)
    plain, twin = copy.deepcopy(m).train(), copy.deepcopy(m).train()
    train = torch.compile(twin, fullgraph=True, backend="aot_eager")
    for net in (train, plain):
        net(xin).square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_fuse_bn_on_resnet20_same_outputs_grads_and_state_dict_both_ways(monkeypatch):
    """linearize(fuse_bn=True) on ResNet-20: every BN → gate pair fused, the forward and every
    gradient as the unfused network's, the same state-dict keys (loads both ways); discretize and
    fold see BN and gate again; unfuse_bn restores the graph."""
    from alphakern.cifar_nets import relu_network
    from alphakern.graph import discretize

    torch.manual_seed(0)
    base = alphakern.linearize(relu_network("resnet20"), granularity="channel")
    materialize(base)
    with torch.no_grad():
        for _, g in alphakern.alpha_layers(base):
            g.gamma.uniform_(-1, 1)
    fused = fuse_bn(copy.deepcopy(base))
    n_fused = sum(isinstance(m, BatchNormGate) for m in fused.modules())
    n_tails = sum(isinstance(m, BatchNormAddGate) for m in fused.modules())
    assert (n_fused, n_tails) == (19, 9)  # every BN: 10 BN → gate pairs, 9 blocks' BN → add → gate
    assert list(fused.state_dict()) == list(base.state_dict())
    assert [n for n, _ in alphakern.alpha_layers(fused)] == [n for n, _ in alphakern.alpha_layers(base)]
    x = torch.randn(4, 3, 32, 32)
    from alphakern.ops.backends.native import bn_gate as native

    calls = []
    kernel = native.forward
    monkeypatch.setattr(native, "forward", lambda *a: calls.append(a[1] is not None) or kernel(*a))
    for m in (base, fused):
        m.train()
        m(x).logsumexp(1).sum().backward()
    assert len(calls) == 19 and sum(calls) == 9  # the fused kernels ran, once per BN, 9 with a residual
    torch.testing.assert_close(fused(x), base(x), rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(base.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-4, msg=name)
    # the state dict loads into the unfused form and gives the same outputs
    plain = copy.deepcopy(base)
    plain.load_state_dict(fused.state_dict())
    plain.eval(), fused.eval()
    torch.testing.assert_close(plain(x), fused(x), rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, BatchNormGate) for m in discretize(fused).modules())
    torch.testing.assert_close(discretize(fused)(x), discretize(plain)(x), rtol=1e-4, atol=1e-4)
    back = unfuse_bn(copy.deepcopy(fused))
    assert not any(isinstance(m, BatchNormGate) for m in back.modules())
    torch.testing.assert_close(back(x), plain(x), rtol=0, atol=0)
    # counting sees every gate of the fused network (hooks: the BN then the gate, unfused)
    assert alphakern.nonlinearity_count(fused, x[:1]) == alphakern.nonlinearity_count(plain, x[:1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_resnet20_shortcut_subsamples_exactly_and_keeps_the_gradient_channels_last(dtype):
    """ResNet-20's option-A shortcut (a 1×1 average pool of stride 2, then the zero channels) is
    x[:, :, ::2, ::2] padded, bit for bit, odd sizes included; its gradient comes back in x's memory
    format (the slice's is contiguous, which cost the fused BN → add → gate of each stage's end a
    layout copy of dy) and, summed with a channels_last gradient as autograd does, stays so."""
    from alphakern.cifar_nets import _PadShortcut

    sc = _PadShortcut(6)
    for shape in ((3, 4, 9, 7), (2, 5, 8, 8)):
        x = torch.randn(shape).to(dtype=dtype, memory_format=torch.channels_last).requires_grad_()
        y = sc(x)
        assert torch.equal(y, F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 3, 3)))
        g = torch.randn(y.shape, dtype=dtype).to(memory_format=torch.channels_last)
        (dx,) = torch.autograd.grad(y, x, g)
        want = torch.zeros(shape, dtype=dtype)
        want[:, :, ::2, ::2] = g[:, 3 : 3 + shape[1]]
        assert torch.equal(dx, want)
        assert dx.is_contiguous(memory_format=torch.channels_last)
        assert (dx + torch.ones_like(x)).is_contiguous(memory_format=torch.channels_last)


def test_fuse_bn_fuses_a_batchnorm_once_when_gates_follow_each_other():
    """BN → gate → gate: the BN fuses with the first gate; the second, now reading the fused
    module, is not fused a second time (which would drop the first gate)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), alphakern.AlphaReLU(),
                      alphakern.AlphaGate(activation="gelu"))  # fmt: skip
    with torch.no_grad():
        m[2].gamma.fill_(-2.0)
        m[2].nu.fill_(3.0)
    fused = fuse_bn(copy.deepcopy(m))
    fused_pairs = [g.gate_name for g in fused.modules() if isinstance(g, BatchNormGate)]
    assert fused_pairs == ["2"]
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fused.eval()(x), m.eval()(x), rtol=1e-5, atol=1e-5)


def test_trainer_fuse_bn_runs_a_budget_and_resumes(tmp_path):
    """--fuse-bn: the same run as without it (the fused pairs' outputs within fp32 rounding), its
    gates made exact to the budget (the fused gates replaced like the others), a checkpoint that
    loads into the unfused model."""
    import json

    from alphakern.train import Trainer, load_checkpoint
    from tests.cifar_fixtures import write_pickles
    from tests.train_helpers import train_cfg

    data = write_pickles(tmp_path / "data", n_per_batch=16, n_test=16)
    runs = {}
    for fuse in (False, True):
        c = train_cfg(data, tmp_path / str(fuse), model="resnet20", granularity="channel", budget=0.5,
                      epochs=1, finetune_epochs=1, batch_size=16, fuse_bn=fuse)  # fmt: skip
        t = Trainer(c, progress=False)
        assert sum(isinstance(m, BatchNormGate) for m in t.model.modules()) == (19 if fuse else 0)
        t.run()
        runs[fuse] = json.loads((tmp_path / str(fuse) / "metrics.json").read_text())
        if fuse:
            assert not any(isinstance(m, BatchNormGate) for m in t.model.modules())  # exact: unfused
            state = load_checkpoint(tmp_path / str(fuse))["model"]
            plain = load_checkpoint(tmp_path / "False")["model"]
            assert list(state) == list(plain)
    assert runs[True]["relu_count_after"] <= runs[True]["relu_budget"] == runs[False]["relu_budget"]
    with pytest.raises(ValueError, match="--activation must be alpha or relu with --fuse-bn"):
        train_cfg(data, tmp_path / "x", activation="alpha-eager", fuse_bn=True)


def _pool_as(model: nn.Module, oracle: nn.Module) -> None:
    """The oracle's max-pools route their gradients where ``model``'s (run first) did: a window of
    near-equal values can pick another argmax in fp32 than in fp64, which sends a whole
    gradient element elsewhere — a difference of the pooling's, not of the op under test."""
    picked: list[Tensor] = []

    def record(m, inputs, out):
        _, idx = F.max_pool2d(inputs[0], m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)
        picked.append(idx)

    def replay(m, inputs, out):
        x, idx = inputs[0], picked.pop(0)
        return x.flatten(2).gather(2, idx.flatten(2)).view_as(idx)

    pools = [[m for m in net.modules() if isinstance(m, nn.MaxPool2d)] for net in (model, oracle)]
    for mine, theirs in zip(*pools, strict=True):  # in forward order, as both register them
        mine.register_forward_hook(record)
        theirs.register_forward_hook(replay)


@pytest.mark.parametrize("model", ["cnn", "resnet20"])
def test_fused_bn_relu_is_the_relu_network(model, tmp_path):
    """fuse_bn(relu=True): each BN → nn.ReLU pair as the gate at α = 1 exactly (ν = inf): the same
    outputs, gradients and running statistics as the ReLU network, the same state-dict keys, and
    relu_count unchanged."""
    from alphakern.cifar_nets import relu_network
    from alphakern.models import AlphaCNN

    torch.manual_seed(0)
    base = AlphaCNN("relu", "logits") if model == "cnn" else relu_network("resnet20")
    fused = fuse_bn(copy.deepcopy(base), relu=True)
    assert sum(isinstance(m, BatchNormGate) for m in fused.modules()) == (3 if model == "cnn" else 19)
    assert list(fused.state_dict()) == list(base.state_dict())
    x = torch.randn(8, 3, 32, 32).to(memory_format=torch.channels_last)
    ref = copy.deepcopy(base).double()  # the gradients' oracle: eager fp32 BN drifts by ~1e-3 over
    _pool_as(fused, ref)  # ResNet-20's 20 layers, the fused op not
    for m, inp in ((base, x), (fused, x), (ref, x.double())):
        m.train()(inp).logsumexp(1).sum().backward()
    for (name, p), q in zip(ref.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad.double(), p.grad, rtol=1e-4, atol=1e-5, msg=name)
    fused_state = fused.state_dict()
    for name, b in base.state_dict().items():  # the running statistics after the step
        torch.testing.assert_close(fused_state[name], b, rtol=1e-5, atol=1e-6, msg=name)
    base.eval(), fused.eval()
    torch.testing.assert_close(fused(x), base(x), rtol=1e-4, atol=1e-4)
    assert alphakern.relu_count(fused, x[:1]) == alphakern.relu_count(base, x[:1]) > 0


def _resnets() -> list:
    import timm
    import torchvision

    return [
        pytest.param(
            lambda: torchvision.models.resnet18(num_classes=10), (8, 9), id="torchvision-basicblock"
        ),
        pytest.param(
            lambda: torchvision.models.resnet50(num_classes=10, width_per_group=16),
            (16, 33),
            id="torchvision-bottleneck",
        ),
        # timm's blocks put disabled drop_block/aa/drop_path (nn.Identity) between BN, add and act
        pytest.param(lambda: timm.create_model("resnet18", num_classes=10), (8, 9), id="timm-resnet"),
    ]


def _smooth(model: nn.Module) -> nn.Module:
    """The model with SiLU for ReLU: gates without a kink, so that fp32 and fp64 agree to rounding
    (at a kink, a sum an ulp either side of 0 changes the gradient by α·dy: with a few values per
    channel, percents of a BN's gradients)."""
    for m in list(model.modules()):
        for child, sub in list(m.named_children()):
            if type(sub) is nn.ReLU:
                setattr(m, child, nn.SiLU())
    return model


@pytest.mark.parametrize("make_model,counts", _resnets())
def test_fuse_bn_fuses_each_residual_tail_against_float64(make_model, counts):
    """fuse_bn on torchvision's BasicBlock and Bottleneck ResNets and timm's: every BN → add(skip)
    → gate tail one BatchNormAddGate, every other BN → gate pair one BatchNormGate; the outputs and
    every gradient within fp32 rounding of the float64 network's (each tensor within 1e-4 of its
    largest value; eager fp32 is off by up to 1.6e-2 here); unfuse_bn gives the unfused network
    back (the same outputs, bit for bit)."""
    torch.manual_seed(0)
    base = alphakern.linearize(_smooth(make_model()), granularity="channel")
    materialize(base, (2, 3, 64, 64))
    with torch.no_grad():
        for _, g in alphakern.alpha_layers(base):
            g.gamma.uniform_(-1, 1)
    fused = fuse_bn(copy.deepcopy(base))
    tails = sum(isinstance(m, BatchNormAddGate) for m in fused.modules())
    assert (tails, sum(type(m) is BatchNormGate for m in fused.modules())) == counts
    assert list(fused.state_dict()) == list(base.state_dict())
    x = torch.randn(4, 3, 64, 64).to(memory_format=torch.channels_last)
    ref = copy.deepcopy(base).double()
    _pool_as(fused, ref)  # the stem's max-pool
    outs = {}
    for key, m, inp in (("fused", fused, x), ("ref", ref, x.double())):
        outs[key] = m.train()(inp)
        outs[key].logsumexp(1).sum().backward()
    torch.testing.assert_close(outs["fused"].double(), outs["ref"], rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(ref.named_parameters(), fused.parameters(), strict=True):
        err = (q.grad.double() - p.grad).abs().max()
        assert err <= 1e-4 * p.grad.abs().max(), f"{name}: {err:.3g} of {p.grad.abs().max():.3g}"
    back = unfuse_bn(copy.deepcopy(fused)).eval()
    assert not any(isinstance(m, BatchNormGate) for m in back.modules())
    base.load_state_dict(fused.state_dict())  # the running statistics the step moved
    torch.testing.assert_close(back(x), base.eval()(x), rtol=0, atol=0)


def test_fuse_bn_leaves_adds_that_are_not_a_residual_tail():
    """Not fused: a BN whose output is also read elsewhere, an add read twice, and a broadcast
    add (a [C, 1, 1] tensor) runs unfused inside the fused module, with the same result."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.bn2 = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.BatchNorm2d(4)
            self.g1, self.g2, self.g3 = (AlphaGate(granularity="channel") for _ in range(3))
            self.register_buffer("shift", torch.randn(4, 1, 1))

        def forward(self, x):
            h = self.conv(x)
            a = self.bn(h)
            s = a + h
            y = self.g1(s) + s  # the add's sum read twice: no fusion
            z = self.g2(a + y)  # the BN read twice: no fusion
            return self.g3(self.bn2(z) + self.shift)  # broadcast: fused, run unfused

    torch.manual_seed(0)
    m = Net()
    materialize(m, (2, 3, 5, 5))
    fused = fuse_bn(copy.deepcopy(m))
    kinds = [type(mod).__name__ for mod in fused.modules() if isinstance(mod, BatchNormGate)]
    assert kinds == ["BatchNormAddGate"]
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(fused.train()(x), m.train()(x), rtol=1e-5, atol=1e-5)


def test_fuse_bn_fuses_only_what_it_takes():
    """A tail written skip + BN(x) fuses like BN(x) + skip; a product, a difference or a method
    call with the skip is not a residual add; element gates and linearisation methods' gates stay
    unfused; plain ReLUs fuse only with relu=True, and other modules after a BN never do."""
    from alphakern.graph.methods import SNL

    class Net(nn.Module):
        def __init__(self, combine, act=None):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
            self.act, self.combine = act or AlphaGate(granularity="channel"), combine

        def forward(self, x):
            return self.act(self.combine(self.bn(self.conv(x)), x))

    def tails(m):
        return sum(
            isinstance(mod, BatchNormAddGate) for mod in fuse_bn(materialize(m, (2, 3, 4, 4))).modules()
        )

    assert tails(Net(lambda b, s: s + b)) == 1 == tails(Net(lambda b, s: b + s))
    for combine in (torch.mul, torch.sub, lambda b, s: b.add(s, alpha=2), lambda b, s: b - s):
        torch.manual_seed(0)
        assert tails(Net(combine)) == 0
    element = alphakern.linearize(Net(torch.add, nn.ReLU()), granularity="element")
    assert tails(element) == 0
    snl = SNL.prepare(materialize(alphakern.linearize(Net(torch.add, nn.ReLU()), granularity="channel")))
    assert not any(isinstance(m, BatchNormGate) for m in fuse_bn(snl).modules())
    plain = nn.Sequential(
        nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.SiLU()
    )  # fmt: skip
    assert not any(isinstance(m, BatchNormGate) for m in fuse_bn(copy.deepcopy(plain)).modules())
    kinds = [type(m) for m in fuse_bn(copy.deepcopy(plain), relu=True).modules()]
    assert kinds.count(BatchNormGate) == 1 and nn.SiLU in kinds and nn.BatchNorm2d in kinds


# bf16 elements, (2**17 + 1, 16, 32, 32): offsets past int32, and NCHW rows of 32 × 32 starting past it
BIG = 2**31 + 2**14
BIG_C, BIG_HW = 16, 1024
BIG_SHAPE = (BIG // (BIG_C * BIG_HW), BIG_C, 32, 32)
# x repeats every PERIOD elements of memory, and every channel holds each of its residues equally
# often: its statistics and sums are those of one small sample, times how often it repeats; 4 values
# a channel at least (with 2, x̂ = ±1 and BatchNorm's dx is exactly 0)
PERIOD = 64
PAT_X = torch.arange(PERIOD, dtype=torch.float64) - 40  # exact in bf16
WINDOWS = [torch.arange(0, 64), torch.arange(2**31 - 64, 2**31 + 32), torch.arange(BIG - 64, BIG)]
BIG_STRIDES = {
    "contiguous": (BIG_C * BIG_HW, BIG_HW, 32, 1),
    "channels_last": (BIG_C * BIG_HW, 1, 32 * BIG_C, BIG_C),
}


def _small_sample(layout: str) -> Tensor:
    """(1, C, PERIOD, 1): channel k's residues of memory — each once in NCHW (a channel is whole
    periods), each PERIOD / C times in channels_last (channel k holds the residues r ≡ k mod C)."""
    j = torch.arange(PERIOD)
    if layout == "contiguous":
        res = j.expand(BIG_C, PERIOD)
    else:
        res = (BIG_C * j + torch.arange(BIG_C)[:, None]) % PERIOD
    return PAT_X[res].reshape(1, BIG_C, PERIOD, 1).to(torch.bfloat16)


def _in_sample(i: Tensor, layout: str) -> tuple[Tensor, Tensor]:
    """Memory indices i as (channel, place in that channel's small sample)."""
    r = i % PERIOD
    if layout == "contiguous":
        return (i // BIG_HW) % BIG_C, r
    k = i % BIG_C
    return k, ((r - k) % PERIOD) // BIG_C


def _check_big_windows(got: Tensor, want: Tensor, layout: str, what: str, ulps: int) -> None:
    """y, dx or dr in each window of memory against the small sample's float64 oracle, within
    bf16's rounding plus ``ulps`` fp32 ulps of the largest value (as ``_check_fused``)."""
    assert got.stride() == BIG_STRIDES[layout], what
    scale = ulps * EPS32 * want.abs().max()
    flat = got.as_strided((BIG,), (1,))
    for i in WINDOWS:
        k, place = _in_sample(i, layout)
        where = f"{layout}: {what} at {int(i[0])}"
        _close(flat[i], want[0, k, place, 0], where, _rtol(torch.bfloat16), scale)


@pytest.mark.slow
def test_bn_add_gate_past_2_31_elements(big_memory):
    """BatchNorm (training) + residual + channel gate of SiLU on the CPU kernels over 2**31 + 1024
    bf16 elements of (2**17 + 1, 16, 32, 32), NCHW and channels_last: the batch statistics,
    y, dx and dr at memory's start, across 2**31 and at its end, and dweight, dbias, dγ, against
    one small sample per channel in float64 (x, the residual and dy are one tensor: 12 GB, not 24).
    An int32 offset or count would wrap there."""
    big_memory(16, "x, then y or dx and dr, of 2**31 + 2**14 bf16 elements: 4 GiB each")
    mem = torch.empty(BIG, dtype=torch.bfloat16)
    mem.view(-1, PERIOD).copy_(PAT_X)
    gamma, nu = torch.linspace(-2, 3, BIG_C), torch.tensor(4.0)
    w, b = torch.linspace(-1.5, 2, BIG_C), torch.linspace(-1, 3, BIG_C)
    eps, times = 1e-5, BIG // (PERIOD * BIG_C)  # how often each sample's element occurs in its channel
    for layout, stride in BIG_STRIDES.items():
        x = mem.as_strided(BIG_SHAPE, stride)
        small = _small_sample(layout)
        unused = torch.zeros(BIG_C), torch.ones(BIG_C)  # running statistics: training uses the batch's
        ry, rdx, rdw, rdb, rdg, _, rdr = bn_gate_reference(
            "silu", small, small, gamma, nu, w, b, *unused, True, eps, residual=small
        )
        y, mean, var = bn_gate_op(x, x, w, b, None, None, gamma, nu, True, eps, "silu", 0.0, "cpu")
        _close(mean, small.double().mean((0, 2, 3)), f"{layout}: mean", 1e-6, 0)
        _close(var, small.double().var((0, 2, 3), unbiased=False), f"{layout}: var", 1e-6, 0)
        _check_big_windows(y, ry, layout, "y", 64)
        del y
        grads = bn_gate_backward_op(x, x, x, w, b, mean, var, gamma, nu, True, eps, "silu", 0.0, "cpu")
        dx, dr, dw, db, dg = grads  # dy = x
        del grads
        _check_big_windows(dx, rdx, layout, "dx", 256)
        _check_big_windows(dr, rdr, layout, "dr", 64)
        del dx, dr
        for got, want, what in ((dw, rdw, "dweight"), (db, rdb, "dbias"), (dg, rdg, "dgamma")):
            _close(got, times * want, f"{layout}: {what}", 1e-5, 1e-6 * times)
