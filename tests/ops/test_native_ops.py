"""The native ops' schemas (defined once, in Python) and their fake kernels: every op of
``alphakern_C`` has a fake kernel that agrees with the CPU kernel (opcheck: schema, fake tensor
shapes/strides/dtypes, autograd registration), so torch.compile can trace any of them."""

import pytest
import torch

from alphakern.ops.backends.native import schema
from tests.reference import needs_cpu_kernels
from tests.utils import make

OPS = schema.ops()


def _cases():
    x, dy = make((4, 6), torch.float32, "cpu", seed=8)  # flat [A=4, G=6] / [A·C, B] = [4·2, 3]
    xf, dyf = x.reshape(-1), dy.reshape(-1)
    slopes6 = torch.rand(6, generator=torch.Generator().manual_seed(1))
    slopes2 = slopes6[:2].contiguous()
    g, nu = torch.tensor(0.3), torch.tensor(5.0)
    # BatchNorm + gate: a channels_last [2, 3, 4, 5] x, fp32 per-channel parameters
    x4, dy4 = make((2, 3, 4, 5), torch.float32, "cpu", layout="channels_last", seed=9)
    gen = torch.Generator().manual_seed(3)
    mean, invstd, w, b, ca, cb = (torch.randn(3, generator=gen) for _ in range(6))
    bn = (x4, mean, invstd.abs(), w, b, slopes6[:3].contiguous())
    r4 = make((2, 3, 4, 5), torch.float32, "cpu", layout="channels_last", seed=10)[0]
    bn_add = (x4, r4, *bn[1:])
    # the whole op: a channel γ, the residual, affine and running statistics (opcheck runs it in
    # training; the running statistics are read, not updated)
    gc = torch.randn(3, generator=gen)
    whole = (x4, r4, w, b, mean, invstd.abs(), gc, nu)
    return {
        "bn_gate": (*whole, True, 1e-5),
        "bn_gate_backward": (dy4, x4, r4, w, b, mean, invstd.abs(), gc, nu, True),
        "layer_gate_fwd": (x, g, nu),
        "layer_gate_bwd": (dy, x, g, nu),
        "gates_cols_fwd": (xf, slopes6, 4, 6),
        "gates_cols_bwd": (dyf, xf, slopes6, 4, 6),
        "gates_rows_fwd": (xf, slopes2, 2, 3),
        "gates_rows_bwd": (dyf, xf, slopes2, 2, 3),
        "gate_terms": (torch.randn(3, 5, generator=torch.Generator().manual_seed(2)), nu),
        "bn_stats": (x4,),
        "bn_gate_fwd": bn,
        "bn_gate_bwd_reduce": (dy4, *bn),
        "bn_gate_bwd_apply": (dy4, *bn, ca, cb),
        "bn_add_gate_fwd": bn_add,
        "bn_add_gate_bwd_reduce": (dy4, *bn_add),
        "bn_add_gate_bwd_apply": (dy4, *bn_add, ca, cb),
    }


def test_every_schema_is_defined_once_in_python():
    assert set(schema.SCHEMAS) == {*_cases(), "cpu_capability"}
    for name, sig in schema.SCHEMAS.items():
        assert str(getattr(OPS, name).default._schema) == f"{schema.NAMESPACE}::{name}{sig}"


@needs_cpu_kernels
@pytest.mark.parametrize("name", list(_cases()))
def test_opcheck_every_native_op(name):
    torch.library.opcheck(getattr(OPS, name).default, _cases()[name])


@needs_cpu_kernels
def test_fake_sums_have_the_cpu_dtype():
    """The CPU library returns its per-gate sums in fp64 (CUDA: fp32): the fake kernels say so."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    args = _cases()["gates_rows_bwd"]
    _, sums = OPS.gates_rows_bwd(*args)
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        _, fsums = OPS.gates_rows_bwd(*fake)
    assert sums.dtype == fsums.dtype == torch.float64 and sums.shape == fsums.shape == (2,)


@needs_cpu_kernels
@pytest.mark.parametrize("activation", ["relu", "gelu", "hardswish"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_bn_add_gate_backward_is_its_two_passes_bit_for_bit(layout, activation):
    """The whole backward of BN → add → gate in fp32 writes dr (= dz) in its sums pass and makes dx from
    it, one tensor pass fewer than recomputing dz from dy and r as the pass ops do: the same bits."""
    from alphakern.ops.core.activations import Activation

    act = Activation(activation)
    x, dy = make((3, 21, 5, 7), torch.float32, "cpu", layout=layout, seed=4)  # rows of 35, 21: tails
    r = make((3, 21, 5, 7), torch.float32, "cpu", layout=layout, seed=5)[0]
    gen = torch.Generator().manual_seed(6)
    mean, invstd, w, b, gamma = (torch.randn(21, generator=gen) for _ in range(5))
    invstd, nu = invstd.abs() + 0.1, torch.tensor(4.0)
    dx, dr, dw, db, _ = OPS.bn_gate_backward(
        dy, x, r, w, b, mean, invstd, gamma, nu, True, act.code, act.negative_slope
    )
    slopes = OPS.gate_terms(gamma, nu)[0].float()  # 1 − α per channel
    sums = OPS.bn_add_gate_bwd_reduce(dy, x, r, mean, invstd, w, b, slopes, act.code, act.negative_slope)
    count = x.numel() // 21
    ca, cb = (sums[0] / count).float(), (sums[1] / count).float()
    dx2, dr2 = OPS.bn_add_gate_bwd_apply(
        dy, x, r, mean, invstd, w, b, slopes, ca, cb, act.code, act.negative_slope
    )
    assert torch.equal(dr, dr2) and torch.equal(dx, dx2)
    assert torch.equal(dw, sums[1].float()) and torch.equal(db, sums[0].float())


@needs_cpu_kernels
@pytest.mark.parametrize("x_layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize(
    "dtype, residual", [(torch.float32, True), (torch.float32, False), (torch.bfloat16, True)]
)
def test_bn_gate_backward_takes_dy_in_any_layout(x_layout, dtype, residual):
    """dy in another layout than x's (a CIFAR ResNet's sliced shortcut once handed a contiguous
    gradient to a channels_last x) or broadcast (a global average pool's backward) gives the bits of
    dy in x's layout, and dx, dr in x's layout."""
    from alphakern.ops.core.activations import Activation

    x, dy = make((5, 21, 9, 7), dtype, "cpu", layout=x_layout, seed=11)
    r = make((5, 21, 9, 7), dtype, "cpu", layout=x_layout, seed=12)[0] if residual else None
    gen = torch.Generator().manual_seed(13)
    mean, invstd, w, b, gamma = (torch.randn(21, generator=gen) for _ in range(5))
    invstd, nu = invstd.abs() + 0.1, torch.tensor(4.0)
    act = Activation("gelu")
    args = (x, r, w, b, mean, invstd, gamma, nu, True, act.code, act.negative_slope)
    fmt = torch.channels_last if x_layout == "channels_last" else torch.contiguous_format
    other = torch.contiguous_format if x_layout == "channels_last" else torch.channels_last
    pooled = dy.mean((2, 3), keepdim=True).expand_as(dy)
    for given in (dy.contiguous(memory_format=other), pooled):
        got = OPS.bn_gate_backward(given, *args)
        want = OPS.bn_gate_backward(given.contiguous(memory_format=fmt), *args)
        assert got[0].stride() == x.stride() and (r is None or got[1].stride() == x.stride())
        assert all(torch.equal(g, e) for g, e in zip(got, want, strict=True))
