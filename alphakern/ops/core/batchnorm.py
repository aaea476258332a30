"""The host side of the fused BatchNorm + gate around the Triton kernels
(``backends/triton/bn_gate.py``): the layouts they take, the fp32 per-channel parameters, the eval
statistics, and the backward's arithmetic on the per-channel sums [Σ dz, Σ dz·x̂, Σ dy·(f(z) − z)].
The native backends do the same in C++, inside their one call per direction
(csrc/common/bn_gate_host.h for CUDA, csrc/cpu/bn_gate.cpp on host arrays)."""

from __future__ import annotations

import torch
from torch import Tensor

from alphakern.ops.core.layout import dense_input, like


def kernel_layout(x: Tensor) -> tuple[Tensor, bool]:
    """(x as the kernels take it, channels_last?): a 4-D channels_last x as it is, else contiguous
    ([N, C, S] rows of S), gathered only when it is neither."""
    xd = dense_input(x)
    cl = xd.dim() == 4 and not xd.is_contiguous() and xd.is_contiguous(memory_format=torch.channels_last)
    return (xd if cl or xd.is_contiguous() else xd.contiguous()), cl


def as_x(t: Tensor, x: Tensor) -> Tensor:
    """t (computed in the kernels' layout of x) laid out as empty_like(x), as the fake kernels say."""
    return t if t.stride() == x.stride() else like(t, torch.empty_like(x))


def shift(x: Tensor) -> Tensor:
    """The shift k per channel as contiguous fp32 [C], as csrc/common/bn_shift.h's: the statistics
    sum d = x − k and d², whose E[d²] − E[d]² keeps its digits when |mean| ≫ std (E[x²] − E[x]²
    over fp32 partial sums loses them all there). k is the mean of a corner of x (8 samples, 4
    positions per spatial dimension): |k − mean| is of the order of std."""
    corner = x[(slice(0, 8), slice(None)) + (slice(0, 4),) * (x.dim() - 2)]
    dims = (0, *range(2, x.dim()))
    return corner.double().mean(dims).float().contiguous()


def affine(weight: Tensor | None, bias: Tensor | None, c: int, ref: Tensor) -> tuple[Tensor, Tensor]:
    """BN's weight and bias as contiguous fp32 [C] (ones and zeros without affine)."""
    w = ref.new_ones(c, dtype=torch.float32) if weight is None else weight.detach().float().contiguous()
    b = ref.new_zeros(c, dtype=torch.float32) if bias is None else bias.detach().float().contiguous()
    return w, b


def running(running_mean: Tensor, running_var: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, var, invstd) in fp32 from the running statistics (copies: an op's outputs never alias)."""
    mean, var = running_mean.detach().float().clone(), running_var.detach().float().clone()
    return mean, var, torch.rsqrt(var + eps)


def centring(sums: Tensor, training: bool, count: int, mean: Tensor) -> tuple[Tensor, Tensor]:
    """(ca, cb) of dx = w·invstd·(dz − ca − x̂·cb): mean(dz) and mean(dz·x̂) over the batch in
    training (the statistics depend on x), zero in eval."""
    if not training:
        z = torch.zeros_like(mean)
        return z, z
    m = max(count, 1)
    return (sums[0] / m).float(), (sums[1] / m).float()


def affine_and_gate_grads(sums: Tensor, gamma: Tensor, dadg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(∂L/∂weight, ∂L/∂bias in fp32, ∂L/∂γ) from the fp64 sums [3, C]: a layer gate sums its
    channels in index order, then the chain rule dα/dγ."""
    gate_sums = sums[2].sum() if gamma.numel() == 1 else sums[2]
    dgamma = (gate_sums.reshape(gamma.shape) * dadg).to(gamma.dtype)
    return sums[1].float(), sums[0].float(), dgamma
