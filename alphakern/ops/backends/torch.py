"""The pure-PyTorch backend: any device, any floating dtype, few passes, no host sync.

R_α is PReLU with slope 1 − α, so the forward is one ``F.prelu`` kernel with the slope σ(−z)
(exact near saturation, see ops.core.alpha.alpha_terms). The backward is 5 kernels and no
``torch.where`` (several times one of these on the CPU; benchmarks/results/README.md): clamp and
dot for ∂L/∂γ; r = dy·(x ≥ 0) (compare, multiply: slope 1, also at x = ±0 as autograd of relu gives),
then lerp(r, dy, 1 − α) = r + (1 − α)·(dy − r) puts the slope on the rest, x < 0 and NaN —
never forming 1 − α by subtraction. One edge differs from the fused kernels: an infinite dy
gives NaN in ∂L/∂x there (inf − inf inside lerp) instead of ±inf. fp16/bf16 compute in fp32.
Per-channel and per-element gates broadcast the same way; their ∂L/∂γ is a sum per gate.

Any other activation f (``ops.core.activations``) runs PyTorch's own f and autograd of f, blended
as α·f(x) + (1 − α)·x and α·dy·f'(x) + (1 − α)·dy, with the weight-1 side taken as is where the
other weight is 0 (so α = 1 is ``F.<f>`` and its gradient exactly, α = 0 the identity, also at
±inf, where the zero-weight term would be 0·inf); ∂L/∂γ sums dy·h(x), h = f − x in a form finite
wherever its limit is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alphakern.ops.core.activations import ACTIVATIONS, RELU, Activation
from alphakern.ops.core.alpha import alpha_terms
from alphakern.ops.core.granularity import gate_view
from alphakern.ops.core.layout import dense_input_and_output, flat, like

NAME = "torch"
__all__ = ["ACTIVATIONS", "DTYPES", "NAME", "available", "backward", "forward"]
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_REDUCED = (torch.float16, torch.bfloat16)


def _gate_sum(t: torch.Tensor, granularity: str) -> torch.Tensor:
    """Σ over the positions that share a gate (all but dim 1, or dim 0), in t's dtype (torch's
    cascade sum: accurate, and much faster on the CPU than accumulating in fp64)."""
    dims = [d for d in range(t.dim()) if d != 1] if granularity == "channel" else [0]
    return t.sum(dim=dims)


def available() -> bool:
    return True


def _blend(
    one: torch.Tensor, other: torch.Tensor, a: torch.Tensor, om: torch.Tensor, granularity: str
) -> torch.Tensor:
    """a·one + om·other per gate, exactly ``one`` where om = 0 and ``other`` where a = 0."""
    a, om = gate_view(a.to(one.dtype), one, granularity), gate_view(om.to(one.dtype), one, granularity)
    mixed = torch.addcmul(one * a, other, om)
    return torch.where(om == 0, one, torch.where(a == 0, other, mixed))


def forward(
    x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, granularity: str, act: Activation = RELU
) -> torch.Tensor:
    if x.dtype in _REDUCED:  # fp32 math: a slope rounded to 8 bits would ruin y where α ≈ 1
        return forward(x.float(), gamma, nu, granularity, act).to(x.dtype)
    if act.name != "relu":
        xd, out = dense_input_and_output(x)  # computed in the output's layout
        a, om, _ = alpha_terms(gamma, nu)
        return like(_blend(act.f(xd), xd, a, om, granularity), out)
    _, om, _ = alpha_terms(gamma, nu)
    om = om.to(x.dtype)
    if granularity == "element":  # prelu takes one slope per channel at most
        # max(x, (1 − α)·x) is x for x ≥ 0 and (1 − α)·x below, as 0 ≤ 1 − α ≤ 1; NaN propagates
        xd, y = dense_input_and_output(x)
        torch.mul(xd, gate_view(om, x, granularity), out=y)
        return torch.maximum(y, xd, out=y)
    y = F.prelu(x, om.reshape(-1))  # one slope, or one per channel (dim 1)
    # prelu keeps every dense layout; a strided x's output is laid out as empty_like says
    return y if y.stride() == x.stride() else like(y, torch.empty_like(x))


def backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    gamma: torch.Tensor,
    nu: torch.Tensor,
    granularity: str,
    act: Activation = RELU,
) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dtype in _REDUCED:
        dx, dgamma = backward(dy.float(), x.float(), gamma, nu, granularity, act)
        return dx.to(x.dtype), dgamma
    if act.name != "relu":
        return _backward(dy, x, gamma, nu, granularity, act)
    xd, dx = dense_input_and_output(x)
    dyd = like(dy, dx)
    _, om, dadg = alpha_terms(gamma, nu)
    m = torch.clamp(xd, max=0, out=dx)  # −relu(−x), NaN kept
    # fp64 product of the fp32 (or fp64) sums and the chain factor, rounded once to γ's dtype
    if granularity == "layer":
        total = torch.dot(flat(dyd), flat(m)).double()
    else:  # sums per gate (deterministic reductions); a NaN stays in its own gate's sum
        total = _gate_sum(m.mul_(dyd), granularity).reshape(gamma.shape).double()  # in dx: no temporary
    dgamma = (-total * dadg).to(gamma.dtype).reshape(gamma.shape)
    # r: dy where x ≥ 0 (±0 included, NaN not: an IEEE compare, the same in every code path —
    # hardshrink_backward's vectorised CPU path and its scalar one disagree on NaN), 0 elsewhere
    torch.ge(xd, 0, out=dx).mul_(dyd)  # the mask as 0/1 floats in dx: no bool temporary
    # r + (1 − α)(dy − r); lerp switches to dy − (dy − r)·α only for 1 − α ≥ ½, where that is exact enough
    return torch.lerp(dx, dyd, gate_view(om.to(x.dtype), x, granularity), out=dx), dgamma


def _backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    gamma: torch.Tensor,
    nu: torch.Tensor,
    granularity: str,
    act: Activation,
) -> tuple[torch.Tensor, torch.Tensor]:
    xd, out = dense_input_and_output(x)
    dyd = like(dy, out)
    a, om, dadg = alpha_terms(gamma, nu)
    dx = like(_blend(act.backward(dyd, xd), dyd, a, om, granularity), out)
    hd = act.h(xd).mul_(dyd)
    total = hd.sum() if granularity == "layer" else _gate_sum(hd, granularity)
    dgamma = (total.reshape(gamma.shape).double() * dadg).to(gamma.dtype).reshape(gamma.shape)
    return dx, dgamma
