"""What γ's shape means for x: one gate per layer, per channel, per element of a sample, or per
feature of the last dimension.

Resolved once, by the op, above the backends. The backends know three granularities (layer,
channel, element): a per-feature gate is a per-element gate of x seen as a (numel / D, D)
matrix, which is how the op runs it (``feature_rows``) — the gate is the column in every
backend's per-element kernel, whatever x's rank.
"""

from __future__ import annotations

from torch import Tensor

GRANULARITIES = ("layer", "channel", "element", "feature")

_FEATURE_HINT = "for one gate per feature of the last dimension (a transformer's hidden features) " + (
    "use granularity='feature'"
)


def gate_shape(x: Tensor, granularity: str) -> tuple[int, ...]:
    """γ's shape for x: () per layer, (C,) = x.shape[1:2] per channel, x.shape[1:] per element of a
    sample, (D,) = x.shape[-1:] per feature. ValueError when x has too few dims for it."""
    need = {"layer": 0, "channel": 2, "element": 2, "feature": 1}[granularity]
    if x.dim() < need:
        raise ValueError(
            f"granularity={granularity!r} needs x with >= {need} dims, got x of shape {tuple(x.shape)}"
        )
    if granularity == "layer":
        return ()
    if granularity == "channel":
        return tuple(x.shape[1:2])
    return tuple(x.shape[1:] if granularity == "element" else x.shape[-1:])


def gate_view(t: Tensor, x: Tensor, granularity: str) -> Tensor:
    """A per-gate tensor (γ's shape) shaped to broadcast against x: a scalar, (1, C, 1, ...),
    (1, *x.shape[1:]) or (D,)."""
    if granularity == "layer":
        return t.reshape(())
    if granularity == "channel":
        return t.reshape(1, -1, *([1] * (x.dim() - 2)))
    if granularity == "feature":
        return t.reshape(-1)
    return t.reshape(1, *x.shape[1:])


def _inferred(x: Tensor, gamma: Tensor) -> str | None:
    if gamma.numel() == 1:
        return "layer"
    if x.dim() >= 2 and gamma.shape == x.shape[1:2]:
        return "channel"
    if x.dim() >= 2 and gamma.shape == x.shape[1:]:
        return "element"
    return None


def _compatible(inferred: str | None, requested: str, x: Tensor, gamma: Tensor) -> bool:
    """The gates asked for are those inferred: a 2-D x's per-channel and per-element gates are the
    same gates, and a single gate of any granularity is one gate for the layer (each computes the same)."""
    if inferred == requested:
        return True
    if inferred == "layer":
        return tuple(gamma.shape) == gate_shape(x, requested)
    return x.dim() == 2 and {inferred, requested} == {"channel", "element"}


def granularity_of(x: Tensor, gamma: Tensor, granularity: str | None = None) -> str:
    """What γ's shape means for x (ValueError if nothing): inferred from the shapes when
    ``granularity`` is None — "layer" (1 element), "channel" ((C,), C = x.shape[1]) or "element"
    (x.shape[1:]; for a 2-D x these two coincide and compute the same) — else checked against the
    requested one. "feature" (γ of shape (D,), D = x.shape[-1]) is never inferred, as (D,) can
    equal (C,): it must be asked for. Returns the granularity the kernels run (the inferred one
    for a request they compute alike)."""
    if granularity is not None and granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {list(GRANULARITIES)}, got {granularity!r}")
    expected = None if granularity is None else gate_shape(x, granularity)
    if granularity == "feature":
        if tuple(gamma.shape) != expected:
            raise ValueError(
                f"gamma of shape {tuple(gamma.shape)} does not fit x of shape {tuple(x.shape)} for "
                f"granularity='feature': gamma must have shape {expected}, one gate per feature of "
                "x's last dimension"
            )
        return "feature"
    inferred = _inferred(x, gamma)
    if granularity is None or (inferred is not None and _compatible(inferred, granularity, x, gamma)):
        if inferred is not None:
            return inferred
    elif granularity != "layer":
        where = "" if granularity == "element" else " (one gate per position of dim 1)"
        raise ValueError(
            f"gamma of shape {tuple(gamma.shape)} does not fit x of shape {tuple(x.shape)} for "
            f"granularity={granularity!r}: gamma must have shape {expected}{where}; {_FEATURE_HINT}"
        )
    accepted = "1 element (per layer)"
    if x.dim() >= 2:
        accepted += f", {tuple(x.shape[1:2])} (per channel) or {tuple(x.shape[1:])} (per element)"
    else:
        accepted += " (per-channel and per-element gates need x with ≥ 2 dims)"
    raise ValueError(
        f"gamma of shape {tuple(gamma.shape)} does not fit x of shape {tuple(x.shape)}: "
        f"gamma must have {accepted}; {_FEATURE_HINT}"
    )


def feature_rows(x: Tensor) -> Tensor:
    """x as the (numel / D, D) matrix whose columns per-feature gates control (a view when x's
    leading dims merge, else a copy)."""
    d = x.shape[-1]
    return x.reshape(x.numel() // d if d else 0, d)
