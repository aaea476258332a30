"""Every backend against the float64 oracle: dtypes, odd shapes, layouts, γ/ν ranges, edge values."""

import pytest
import torch

import alphakern
from alphakern.ops.backends import triton_backend as alpha_relu_triton
from alphakern.ops.backends.triton import layer as triton_layer
from tests.reference import assert_matches_reference, backend_params, device_for
from tests.utils import DTYPES, GRANULARITIES, LAYOUTS, gates, layouts, make, run, scalars

# (γ, ν): α = ½ at ν = 0; mid-range; 1 − α ≈ 9e-4 (an fp16/bf16 α would be off by a quarter of it);
# 1 − α ≈ 2e-10 (fp32 `1 - α` is 0 there: only σ(−z) keeps the slope); α saturated to exactly
# 0 or 1 at ν = 1e3; (0.01, 62.5), where an approximate fp32 sigmoid is off by ~1 ulp of α.
GAMMA_NU = [
    (0.0, 0.0),
    (0.3, 5.0),
    (-1.2, 10.0),
    (0.3, 94.0),
    (0.3, 300.0),
    (2.0, 1e3),
    (-2.0, 1e3),
    (0.01, 62.5),
]


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(0,), (1,), (1, 1, 1023), (3, 7, 256), (4, 8, 16, 16)], ids=str)
def test_shapes_dtypes(backend, dtype, shape):
    device = device_for(backend)
    x, dy = make(shape, dtype, device)
    gamma, nu = scalars(0.3, 5.0, device)
    assert_matches_reference(x, gamma, nu, dy, *run(backend, x, gamma, nu, dy), backend=backend)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gamma_nu", GAMMA_NU, ids=str)
def test_gamma_nu_range(backend, dtype, gamma_nu):
    device = device_for(backend)
    x, dy = make((3, 7, 256), dtype, device, seed=1)
    gamma, nu = scalars(*gamma_nu, device)
    assert_matches_reference(x, gamma, nu, dy, *run(backend, x, gamma, nu, dy), backend=backend)


def test_float64_torch_backend():
    x, dy = make((3, 7, 256), torch.float64, "cpu")
    gamma, nu = scalars(0.3, 5.0, "cpu", torch.float64)
    assert_matches_reference(x, gamma, nu, dy, *run("torch", x, gamma, nu, dy))


@pytest.mark.parametrize("backend", backend_params())
def test_float64_gamma_with_float32_x(backend):
    device = device_for(backend)
    x, dy = make((1, 1, 1023), torch.float32, device)
    gamma, nu = scalars(-0.4, 7.0, device, torch.float64)
    assert_matches_reference(x, gamma, nu, dy, *run(backend, x, gamma, nu, dy), backend=backend)


# (shape, note) for every granularity: odd channel counts, 1×1 spatial, 2-D and 3-D x, a channel
# stride B past ROWS_MIN_B (one program per row chunk) with a ragged last chunk, one just below it
SHAPES = [
    (1, 7, 1, 1),
    (2, 130, 3, 3),
    (5, 6),
    (2, 5, 7),
    (2, 3, 16, 16),
    (2, 4, 17, 19),
    (3, 2, 15, 17),
]


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_parity(backend, granularity, dtype, shape):
    device = device_for(backend)
    x, dy = make(shape, dtype, device)
    gamma, nu = gates(granularity, x), torch.tensor(10.0, device=device)
    y, dx, dg = run(backend, x, gamma, nu, dy)
    assert_matches_reference(x, gamma, nu, dy, y, dx, dg, backend=backend)


LAYOUT_CASES = [  # (layout, shape): every granularity in each
    *((name, shape) for name in layouts("contiguous", "channels_last", "batch_inner", "strided")
      for shape in [(2, 5, 3, 4), (2, 3, 16, 17)]),
    *((name, (4, 8, 16, 16)) for name in layouts("channels_last", "transposed_view", "sliced", "expanded")),
]  # fmt: skip


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("layout,shape", LAYOUT_CASES, ids=[f"{n}-{s}" for n, s in LAYOUT_CASES])
def test_layouts(backend, granularity, layout, shape):
    """The gate follows the logical index in every layout; the output keeps x's memory format,
    exactly as the fake kernel promises."""
    device = device_for(backend)
    x, dy = make(shape, torch.float32, device, seed=1)
    x, dy = LAYOUTS[layout](x), LAYOUTS[layout](dy)
    gamma, nu = gates(granularity, x, seed=1), torch.tensor(6.0, device=device)
    y, dx, dg = run(backend, x, gamma, nu, dy)
    assert_matches_reference(x, gamma, nu, dy, y, dx, dg, backend=backend)
    assert y.stride() == torch.empty_like(x).stride() and dx.stride() == torch.empty_like(x).stride()


@pytest.mark.parametrize("backend", backend_params())
def test_dy_in_another_layout(backend):
    device = device_for(backend)
    x, dy = make((4, 8, 16, 16), torch.float32, device, seed=3)
    x = x.to(memory_format=torch.channels_last)
    gamma, nu = scalars(0.5, 4.0, device)
    assert_matches_reference(x, gamma, nu, dy, *run(backend, x, gamma, nu, dy), backend=backend)


def switch_points(dtype, device):
    """x at the points where the piecewise function switches, and around them."""
    tiny = torch.finfo(dtype).tiny
    subnormal = tiny * torch.finfo(dtype).eps  # the smallest
    vals = [
        0.0,
        -0.0,
        tiny,
        -tiny,
        subnormal,
        -subnormal,
        1e-30,
        -1e-30,
        1.0,
        -1.0,
        float("nan"),
        float("inf"),
        float("-inf"),
        torch.finfo(dtype).max,
        -torch.finfo(dtype).max,
    ]
    return torch.tensor(vals, dtype=torch.float32).to(dtype).to(device)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_switch_points_and_specials(backend, dtype):
    device = device_for(backend)
    x = switch_points(dtype, device)
    if backend == "triton" and alpha_relu_triton.INTERPRET and dtype == torch.bfloat16:
        # The interpreter's fp32 -> bf16 cast flushes subnormal results to a wrong value
        # (triton/runtime/interpreter.py, _convert_float); the GPU's cvt.rn.bf16.f32 does not.
        tiny = torch.finfo(dtype).tiny
        x = torch.where((x.abs() > 0) & (x.abs() <= tiny), 4 * tiny * x.sign(), x)
    dy = torch.linspace(-2, 3, x.numel()).to(dtype).to(device)
    gamma, nu = scalars(0.3, 5.0, device)
    y, dx, dg = run(backend, x, gamma, nu, dy)
    assert_matches_reference(x, gamma, nu, dy, y, dx, dg, backend=backend)
    a = alphakern.alpha(gamma, nu).item()
    # slope 1 at ±0; NaN propagates; ±inf stay ±inf (PReLU's answer, where the study's
    # expression gives NaN at −inf); the NaN reaches dγ
    assert dx[0].item() == dy[0].item() and dx[1].item() == dy[1].item()
    assert y[10].isnan() and y[11].item() == float("inf") and y[12].item() == float("-inf")
    # the smallest subnormals: −s takes the slope 1 − α, +s the slope 1
    assert dx[4].item() == dy[4].item() and dx[5].item() != dy[5].item()
    assert dg.isnan() and 0 < a < 1


@pytest.mark.parametrize("backend", backend_params())
def test_nan_makes_dgamma_nan_only(backend):
    device = device_for(backend)
    x, dy = make((3, 7, 256), torch.float32, device)
    x[1, 2, 3] = float("nan")
    gamma, nu = scalars(0.3, 5.0, device)
    y, dx, dg = run(backend, x, gamma, nu, dy)
    assert y.isnan().sum().item() == 1 and y[1, 2, 3].isnan()
    assert dg.isnan()
    # dx at the NaN is (1 − α)·dy, in a tensor long enough for vectorised CPU code paths
    assert_matches_reference(x, gamma, nu, dy, y, dx, dg, backend=backend)


@pytest.mark.parametrize("backend", backend_params())
def test_empty_gives_zero_dgamma(backend):
    device = device_for(backend)
    x = torch.empty(0, 5, device=device)
    gamma, nu = scalars(0.3, 5.0, device)
    y, dx, dg = run(backend, x, gamma, nu, torch.empty_like(x))
    assert y.shape == (0, 5) and dx.shape == (0, 5) and dg.item() == 0.0


@pytest.mark.skipif(
    not (alpha_relu_triton.available() and alpha_relu_triton.INTERPRET or torch.cuda.is_available()),
    reason="triton needs a GPU or TRITON_INTERPRET=1",
)
@pytest.mark.parametrize(
    "block_size,max_programs,final_block",
    [(128, 1, 1024), (128, 3, 1024), (256, 7, 1024), (1024, 64, 1024), (32, 64, 16), (64, 85, 16)],
)
def test_triton_partial_sums_many_programs(block_size, max_programs, final_block):
    """The grid-stride loop and the fixed-order partial sum, with many programs and tiles each,
    and a final sum over more partials than its block holds (several rounds, a ragged last one)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, dy = make((3, 7, 257), torch.float32, device, seed=4)
    gamma, nu = scalars(-0.7, 6.0, device)
    y = triton_layer.forward(x, gamma, nu)
    dx, dg = triton_layer.backward(
        dy, x, gamma, nu, block_size=block_size, max_programs=max_programs, final_block=final_block
    )
    assert_matches_reference(x, gamma, nu, dy, y, dx, dg, backend="triton")
