"""GPU-only checks: past 2³¹ elements (64-bit offsets), and the two fused backends agreeing."""

import pytest
import torch

from alphakern.ops.alpha_relu import alpha_relu_backward_op, alpha_relu_op
from tests.reference import HAS_NVCC, needs_cuda

FUSED = [
    pytest.param("triton", id="triton"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not HAS_NVCC, reason="nvcc is not installed")),
]


@needs_cuda
@pytest.mark.parametrize("backend", FUSED)
def test_beyond_2_pow_31_elements(backend):
    n = 2**31 + 4099  # offsets past int32, and a ragged tail
    free, _ = torch.cuda.mem_get_info()
    if free < 5 * n * 2 + 2**30:
        pytest.skip(f"needs ~{5 * n * 2 / 2**30:.0f} GiB of free GPU memory")
    x = torch.full((n,), -2.0, dtype=torch.float16, device="cuda")
    x[-3:] = torch.tensor([1.0, -4.0, 0.0], dtype=torch.float16)
    gamma = torch.tensor(0.5, device="cuda")
    nu = torch.tensor(4.0, device="cuda")
    a = torch.sigmoid((torch.sigmoid(gamma) - 0.5) * nu).item()
    y = alpha_relu_op(x, gamma, nu, backend)
    tail = y[-4:].float().cpu()
    expect = torch.tensor([-2 * (1 - a), 1.0, -4 * (1 - a), 0.0])
    torch.testing.assert_close(tail, expect, rtol=2e-3, atol=1e-3)
    assert torch.equal(y[:1000], y[2**31 : 2**31 + 1000])
    del y
    dy = torch.ones_like(x)
    dx, dg = alpha_relu_backward_op(dy, x, gamma, nu, backend)
    torch.testing.assert_close(
        dx[-4:].float().cpu(), torch.tensor([1 - a, 1.0, 1 - a, 1.0]), rtol=2e-3, atol=1e-3
    )
    # Σ relu(−x) = 2·(n − 3) + 4 + 0, then the chain rule
    s = torch.sigmoid(gamma).item()
    expect_dg = (2 * (n - 3) + 4) * a * (1 - a) * 4.0 * s * (1 - s)
    assert abs(dg.item() - expect_dg) <= 1e-4 * abs(expect_dg)


@needs_cuda
@pytest.mark.skipif(not HAS_NVCC, reason="nvcc is not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("numel", [1, 7, 1023, 4096 * 33 + 5, 2**22 + 3])
def test_triton_and_cuda_agree(dtype, numel):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(numel, device="cuda", generator=g).to(dtype)
    dy = torch.randn(numel, device="cuda", generator=g).to(dtype)
    gamma, nu = torch.tensor(-0.3, device="cuda"), torch.tensor(9.0, device="cuda")
    yt = alpha_relu_op(x, gamma, nu, "triton")
    yc = alpha_relu_op(x, gamma, nu, "cuda")
    dxt, dgt = alpha_relu_backward_op(dy, x, gamma, nu, "triton")
    dxc, dgc = alpha_relu_backward_op(dy, x, gamma, nu, "cuda")
    # same fp32 formula elementwise (exp and FMA contraction may differ by ulps)
    torch.testing.assert_close(yt, yc, rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=1e-6)
    torch.testing.assert_close(dxt, dxc, rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=1e-6)
    # different (both fixed) summation orders
    torch.testing.assert_close(dgt, dgc, rtol=1e-4, atol=1e-3)


@needs_cuda
@pytest.mark.parametrize("backend", FUSED)
def test_misaligned_input_takes_the_scalar_path(backend):
    """A storage offset that breaks 16-byte alignment must still give correct results."""
    base = torch.randn(4097, device="cuda")
    x = base[1:]  # 4-byte offset: not 16-byte aligned
    gamma, nu = torch.tensor(0.2, device="cuda"), torch.tensor(5.0, device="cuda")
    ref = alpha_relu_op(x.clone(), gamma, nu, "torch")
    torch.testing.assert_close(alpha_relu_op(x, gamma, nu, backend), ref)


@needs_cuda
@pytest.mark.parametrize("layout", ["rows", "cols"])
def test_channel_gates_beyond_2_pow_31_elements(layout):
    """Per-channel gates past int32 offsets, in both Triton modes (NCHW rows, channels_last cols)."""
    n, c, h, w = 2**15 + 1, 64, 32, 32  # 2^31 + 65536 elements
    free, _ = torch.cuda.mem_get_info()
    if free < 5 * n * c * h * w * 2 + 2**30:
        pytest.skip("needs ~22 GiB of free GPU memory")
    x = torch.full((n, c, h, w), -2.0, dtype=torch.float16, device="cuda")
    if layout == "cols":
        x = x.to(memory_format=torch.channels_last)
    x[-1, :, -1, -1] = 1.0  # the very last positions: past 2^31 in memory
    gamma = torch.linspace(-1, 1, c, device="cuda")
    nu = torch.tensor(4.0, device="cuda")
    om = torch.sigmoid(-(torch.sigmoid(gamma.double()) - 0.5) * 4.0).float().cpu()
    y = alpha_relu_op(x, gamma, nu, "triton")
    torch.testing.assert_close(y[-1, :, -1, -2].float().cpu(), -2 * om, rtol=2e-3, atol=1e-3)
    torch.testing.assert_close(y[-1, :, -1, -1].float().cpu(), torch.ones(c), rtol=0, atol=0)
    del y
    dx, dg = alpha_relu_backward_op(torch.ones_like(x), x, gamma, nu, "triton")
    torch.testing.assert_close(dx[-1, :, -1, -2].float().cpu(), om, rtol=2e-3, atol=1e-3)
    # Σ relu(−x) per channel = 2·(positions − 1), times the chain rule of that gate
    s = torch.sigmoid(gamma.double()).cpu()
    a = 1 - om.double()
    expect = 2.0 * (n * h * w - 1) * a * (1 - a) * 4.0 * s * (1 - s)
    torch.testing.assert_close(dg.double().cpu(), expect, rtol=1e-4, atol=0)
