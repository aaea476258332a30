"""How the fused backends see x for per-channel and per-element gates (Triton, CUDA and CPU).

x is read in memory order, whatever its dense layout, as one of two 2-D shapes:

- "cols": [A, G], the gate is the column — per-element gates (A = batch, G = one sample, the
  gates laid out in the sample's memory order), and per-channel gates whose channel stride B is
  below ROWS_MIN_B (G = C·B, each channel's gate repeated over its B neighbours; B = 1 is
  channels_last);
- "rows": [A, C, B] with B ≥ ROWS_MIN_B (NCHW with a large H·W): rows of B elements, one
  channel each.

A backend returns the sums of dy·relu(−x) per column/channel of the layout (fp32 from Triton and
CUDA, fp64 from the CPU library); ``dgamma`` maps them back to γ's logical order and applies the
chain rule in fp64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alphakern.ops.core.alpha import alpha_terms
from alphakern.ops.core.layout import flat

ROWS_MIN_B = 256  # channel stride from which one row per program beats repeating the gates


@dataclass
class GateLayout:
    mode: str  # "cols" or "rows"
    A: int
    G: int  # columns ("cols") or channels ("rows")
    B: int  # channel stride (1 for element gates)
    ordered: torch.Tensor  # the per-gate values given (γ or slopes), one per column/channel: [G]
    sample: torch.Tensor | None = None  # element gates: those values laid out as x's sample


def batch_outermost(xd: torch.Tensor) -> bool:
    """Element gates need each sample contiguous in memory (else the backends gather x once)."""
    return xd.shape[0] == 1 or xd.stride(0) == xd.numel() // xd.shape[0]


def layout_gates(xd: torch.Tensor, values: torch.Tensor, granularity: str) -> GateLayout:
    """The layout for dense xd (batch outermost for element gates) and per-gate ``values`` (γ's
    shape) of granularity ``granularity``, those values put in the layout's order."""
    if granularity == "element":
        # the sample's gates in the sample's memory order (x's strides for dims 1..)
        sample = torch.empty_strided(xd.shape[1:], xd.stride()[1:], dtype=values.dtype, device=values.device)
        sample.copy_(values)
        return GateLayout("cols", xd.shape[0], sample.numel(), 1, flat(sample), sample)
    C = xd.shape[1]
    B = xd.stride(1)
    A = xd.numel() // (C * B)
    if B >= ROWS_MIN_B:
        return GateLayout("rows", A, C, B, values.reshape(-1))
    ordered = values.reshape(-1) if B == 1 else values.reshape(-1).repeat_interleave(B)
    return GateLayout("cols", A, C * B, B, ordered)


def dgamma(
    sums: torch.Tensor,
    lay: GateLayout,
    gamma: torch.Tensor,
    nu: torch.Tensor,
    dadg: torch.Tensor | None = None,
) -> torch.Tensor:
    """∂L/∂γ (γ's shape and dtype) from the sums of dy·relu(−x) per column/channel of ``lay``;
    ``dadg``: dα/dγ per gate in γ's order when the caller has it (else from alpha_terms)."""
    if lay.sample is not None:  # memory order → γ's logical order
        total = sums.as_strided(lay.sample.shape, lay.sample.stride())
    elif lay.mode == "cols" and lay.B > 1:  # the B repeats of each channel's gate, in order
        total = sums.view(-1, lay.B).sum(1, dtype=torch.float64)
    else:
        total = sums
    if dadg is None:
        _, _, dadg = alpha_terms(gamma, nu)
    return (total.double() * dadg).to(gamma.dtype).reshape(gamma.shape).contiguous()
