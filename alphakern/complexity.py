"""How non-linear did each layer turn out: verdicts, discretisation, the report's text."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

from torch import nn

from alphakern.modules import alpha_layers

NONLINEAR_ABOVE = 0.95  # α > this: the layer is a ReLU
LINEAR_BELOW = 0.05  # α < this: the layer is the identity


@dataclass
class LayerVerdict:
    name: str
    gamma: float
    alpha: float
    verdict: str  # "non-linear", "linear" or "undecided"


def verdict(alpha: float) -> str:
    if alpha > NONLINEAR_ABOVE:
        return "non-linear"
    if alpha < LINEAR_BELOW:
        return "linear"
    return "undecided"


def layer_verdicts(model: nn.Module) -> list[LayerVerdict]:
    """γ, α and the verdict of every AlphaReLU (reads a few scalars off the device)."""
    return [
        LayerVerdict(name, float(m.gamma.detach()), a := float(m.alpha), verdict(a))
        for name, m in alpha_layers(model)
    ]


def discretize(model: nn.Module) -> nn.Module:
    """A copy with each decided AlphaReLU replaced by nn.ReLU or nn.Identity (undecided kept)."""
    out = copy.deepcopy(model)
    for name, m in alpha_layers(out):
        v = verdict(float(m.alpha))
        if v == "undecided":
            continue
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        setattr(parent, child, nn.ReLU() if v == "non-linear" else nn.Identity())
    return out


def summary(verdicts: list[LayerVerdict]) -> dict:
    counts = {k: sum(v.verdict == k for v in verdicts) for k in ("non-linear", "linear", "undecided")}
    return dict(
        layers=[asdict(v) for v in verdicts],
        counts=counts,
        # an undecided layer (0.05 ≤ α ≤ 0.95) still bends: only linear ones drop out
        effective_nonlinearities=counts["non-linear"] + counts["undecided"],
    )


def format_report(
    verdicts: list[LayerVerdict], acc_before: float | None = None, acc_after: float | None = None
) -> str:
    s = summary(verdicts)
    lines = ["Complexity report", f"  {'layer':<14} {'gamma':>8} {'alpha':>8}  verdict"]
    for i, v in enumerate(verdicts, 1):
        lines.append(f"  {i}: {v.name:<11} {v.gamma:8.4f} {v.alpha:8.4f}  {v.verdict}")
    c = s["counts"]
    lines.append(
        f"  effective non-linearities: {s['effective_nonlinearities']} of {len(verdicts)} "
        f"({c['non-linear']} non-linear, {c['linear']} linear, {c['undecided']} undecided; "
        f"non-linear: alpha > {NONLINEAR_ABOVE}, linear: alpha < {LINEAR_BELOW})"
    )
    if acc_before is not None:
        lines.append(f"  test accuracy: {acc_before:.2f}%")
    if acc_after is not None:
        lines.append(f"  test accuracy after discretising (ReLU/Identity per verdict): {acc_after:.2f}%")
    return "\n".join(lines)
