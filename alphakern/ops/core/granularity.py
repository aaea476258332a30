"""What γ's shape means for x: one gate per layer, per channel or per element of a sample.

Resolved once, by the op, above the backends: every backend's ``forward``/``backward`` receives
the granularity as its ``granularity`` argument and never re-derives it.
"""

from __future__ import annotations

from torch import Tensor

GRANULARITIES = ("layer", "channel", "element")


def gate_view(t: Tensor, x: Tensor, granularity: str) -> Tensor:
    """A per-gate tensor (γ's shape) shaped to broadcast against x: a scalar, (1, C, 1, ...) or
    (1, *x.shape[1:])."""
    if granularity == "layer":
        return t.reshape(())
    if granularity == "channel":
        return t.reshape(1, -1, *([1] * (x.dim() - 2)))
    return t.reshape(1, *x.shape[1:])


def granularity_of(x: Tensor, gamma: Tensor) -> str:
    """ "layer", "channel" or "element": what γ's shape means for x (ValueError if nothing).

    A 1-element γ is one gate for the layer; shape (C,) with C = x.shape[1] one per channel;
    shape x.shape[1:] one per element of a sample, shared over the batch. For a 2-D x the last
    two coincide (and compute the same)."""
    if gamma.numel() == 1:
        return "layer"
    if x.dim() >= 2 and gamma.shape == x.shape[1:2]:
        return "channel"
    if x.dim() >= 2 and gamma.shape == x.shape[1:]:
        return "element"
    accepted = "1 element (per layer)"
    if x.dim() >= 2:
        accepted += f", {tuple(x.shape[1:2])} (per channel) or {tuple(x.shape[1:])} (per element)"
    else:
        accepted += " (per-channel and per-element gates need x with ≥ 2 dims)"
    raise ValueError(
        f"gamma of shape {tuple(gamma.shape)} does not fit x of shape {tuple(x.shape)}: "
        f"gamma must have {accepted}"
    )
