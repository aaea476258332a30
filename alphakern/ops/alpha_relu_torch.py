"""The pure-PyTorch backend: any device, any floating dtype, the fewest passes PyTorch allows.

Forward is 2 kernels (clamp, addcmul) writing into one buffer; backward is 4 (clamp, dot,
hardshrink_backward, addcmul) into one buffer. α stays a 0-dim tensor: no host sync, so the
same code is also correct (if not fast) on CUDA. Edge cases follow autograd of the eager
expression x + α·relu(−x): y(−inf) = NaN, slope 1 at x = ±0, NaN propagates into y and ∂L/∂γ.
"""

from __future__ import annotations

import torch

from alphakern.ops._layout import dense_input_and_output, flat, like


def alpha(gamma: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """α = σ((σ(γ) − ½)·ν), in γ's dtype, differentiable w.r.t. γ."""
    return torch.sigmoid((torch.sigmoid(gamma) - 0.5) * nu)


def alpha_and_derivative(gamma: torch.Tensor, nu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(α, dα/dγ) with dα/dγ = α(1 − α)·ν·σ(γ)(1 − σ(γ)), sharing the sigmoids."""
    s = torch.sigmoid(gamma)
    a = torch.sigmoid((s - 0.5) * nu)
    return a, a * (1 - a) * nu * s * (1 - s)


_REDUCED = (torch.float16, torch.bfloat16)


def forward(x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    if x.dtype in _REDUCED:  # fp32 math: α rounded to 8 bits would ruin y where α ≈ 1
        return forward(x.float(), gamma, nu).to(x.dtype)
    xd, y = dense_input_and_output(x)
    a = alpha(gamma, nu).to(x.dtype).reshape(())
    torch.clamp(xd, max=0, out=y)  # −relu(−x)
    return torch.addcmul(xd, y, a, value=-1, out=y)


def backward(
    dy: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dtype in _REDUCED:
        dx, dgamma = backward(dy.float(), x.float(), gamma, nu)
        return dx.to(x.dtype), dgamma
    xd, dx = dense_input_and_output(x)
    dyd = like(dy, dx)
    a, dadg = alpha_and_derivative(gamma, nu)
    a = a.to(x.dtype).reshape(())
    m = torch.clamp(xd, max=0, out=dx)  # −relu(−x), NaN kept
    dgamma = (-torch.dot(flat(dyd), flat(m)) * dadg).to(gamma.dtype).reshape(gamma.shape)
    # dy where x < 0 or NaN, 0 where x is ±0 or positive: exactly where the slope is 1 − α
    torch.ops.aten.hardshrink_backward.grad_input(dyd, m, 0.0, grad_input=m)
    return torch.addcmul(dyd, m, a, value=-1, out=dx), dgamma
