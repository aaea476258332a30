"""How the fused backends see x for per-channel and per-element gates (shared by Triton and CUDA).

x is read in memory order, whatever its dense layout, as one of two 2-D shapes:

- "cols": [A, G], the gate is the column — per-element gates (A = batch, G = one sample, the
  gates laid out in the sample's memory order), and per-channel gates whose channel stride B is
  below ROWS_MIN_B (G = C·B, each channel's gate repeated over its B neighbours; B = 1 is
  channels_last);
- "rows": [A, C, B] with B ≥ ROWS_MIN_B (NCHW with a large H·W): rows of B elements, one
  channel each.

A backend returns fp32 sums of dy·relu(−x) per gate of the plan; ``dgamma`` maps them back to
γ's logical order and applies the chain rule in fp64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alphakern.ops._layout import flat
from alphakern.ops.utils import alpha_terms

ROWS_MIN_B = 256  # channel stride from which one row per program beats repeating the gates


@dataclass
class GatePlan:
    mode: str  # "cols" or "rows"
    A: int
    G: int  # gates per row ("cols") or channels ("rows")
    B: int  # channel stride (1 for element gates)
    gates: torch.Tensor  # γ in the plan's order: [G]
    g_mem: torch.Tensor | None = None  # element gates: γ laid out as x's sample


def batch_outermost(xd: torch.Tensor) -> bool:
    """Element gates need each sample contiguous in memory (else the backends gather x once)."""
    return xd.shape[0] == 1 or xd.stride(0) == xd.numel() // xd.shape[0]


def plan(xd: torch.Tensor, gamma: torch.Tensor, kind: str) -> GatePlan:
    """The plan for dense xd (batch outermost for element gates) and γ of granularity ``kind``."""
    if kind == "element":
        # the sample's gates in the sample's memory order (x's strides for dims 1..)
        g_mem = torch.empty_strided(xd.shape[1:], xd.stride()[1:], dtype=gamma.dtype, device=gamma.device)
        g_mem.copy_(gamma)
        return GatePlan("cols", xd.shape[0], g_mem.numel(), 1, flat(g_mem), g_mem)
    C = xd.shape[1]
    B = xd.stride(1)
    A = xd.numel() // (C * B)
    if B >= ROWS_MIN_B:
        return GatePlan("rows", A, C, B, gamma.reshape(-1))
    gates = gamma.reshape(-1) if B == 1 else gamma.reshape(-1).repeat_interleave(B)
    return GatePlan("cols", A, C * B, B, gates)


def dgamma(
    sums: torch.Tensor, p: GatePlan, gamma: torch.Tensor, nu: torch.Tensor, dadg: torch.Tensor | None = None
) -> torch.Tensor:
    """∂L/∂γ (γ's shape and dtype) from the fp32 sums of dy·relu(−x) per gate of the plan;
    ``dadg``: dα/dγ per gate in γ's order when the caller has it (else from alpha_terms)."""
    if p.g_mem is not None:  # memory order → γ's logical order
        total = sums.as_strided(p.g_mem.shape, p.g_mem.stride())
    elif p.mode == "cols" and p.B > 1:  # the B repeats of each channel's gate, in order
        total = sums.view(-1, p.B).sum(1, dtype=torch.float64)
    else:
        total = sums
    if dadg is None:
        _, _, dadg = alpha_terms(gamma, nu)
    return (total.double() * dadg).to(gamma.dtype).reshape(gamma.shape).contiguous()
