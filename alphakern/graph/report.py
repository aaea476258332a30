"""How non-linear did each layer turn out: verdicts per gate and the report's text."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from alphakern.gate_rules import LINEAR_BELOW, NONLINEAR_ABOVE, VERDICTS, verdict, verdict_masks
from alphakern.modules import AlphaGate, alpha_layers
from alphakern.ops.core.checks import check_module

__all__ = [
    "LINEAR_BELOW",
    "NONLINEAR_ABOVE",
    "VERDICTS",
    "LayerVerdict",
    "format_report",
    "layer_verdict",
    "layer_verdicts",
    "summary",
    "verdict",
]


@dataclass
class LayerVerdict:
    """One AlphaReLU. For per-channel/per-element gates, gamma and alpha are means over the gates
    and the verdict is "non-linear"/"linear" only when every gate is; else "mixed" or "undecided"."""

    name: str
    gamma: float
    alpha: float
    verdict: str  # "non-linear", "linear", "undecided" or (several gates) "mixed"
    gates: int = 1
    fractions: dict | None = None  # share of gates per verdict (several gates only)


def layer_verdict(name: str, m: AlphaGate) -> LayerVerdict:
    a = m.alpha.float()
    if a.numel() == 1:
        return LayerVerdict(name, float(m.gamma.detach()), float(a), verdict(float(a)))
    masks = verdict_masks(a)
    fractions = {k: float(v.float().mean()) for k, v in masks.items()}
    overall = next((k for k in ("non-linear", "linear") if fractions[k] == 1.0), None)
    if overall is None:
        overall = "undecided" if fractions["undecided"] == 1.0 else "mixed"
    return LayerVerdict(
        name, float(m.gamma.detach().float().mean()), float(a.mean()), overall, a.numel(), fractions
    )


def layer_verdicts(model: nn.Module) -> list[LayerVerdict]:
    """γ, α and the verdict of every AlphaReLU (reads a few numbers off the device)."""
    check_module(model)
    return [layer_verdict(name, m) for name, m in alpha_layers(model)]


def summary(verdicts: list[LayerVerdict]) -> dict:
    counts = {k: sum(v.verdict == k for v in verdicts) for k in (*VERDICTS, "mixed")}
    return dict(
        layers=[asdict(v) for v in verdicts],
        counts=counts,
        # an undecided or mixed layer still bends: only fully linear ones drop out
        effective_nonlinearities=len(verdicts) - counts["linear"],
    )


def format_report(
    verdicts: list[LayerVerdict], acc_before: float | None = None, acc_after: float | None = None
) -> str:
    s = summary(verdicts)
    if not verdicts:  # a ReLU network, or a budget run whose gates were made exact
        lines = ["Complexity report", "  no learnable gates"]
        lines += [f"  test accuracy: {acc_before:.2f}%"] if acc_before is not None else []
        return "\n".join(lines)
    lines = ["Complexity report", f"  {'layer':<14} {'gamma':>8} {'alpha':>8}  verdict"]
    for i, v in enumerate(verdicts, 1):
        line = f"  {i}: {v.name:<11} {v.gamma:8.4f} {v.alpha:8.4f}  {v.verdict}"
        if v.fractions is not None:  # means over the gates, then the share of each verdict
            shares = ", ".join(f"{100 * v.fractions[k]:.1f}% {k}" for k in VERDICTS)
            line += f" ({v.gates} gates: {shares})"
        lines.append(line)
    c = s["counts"]
    mixed = f", {c['mixed']} mixed" if c["mixed"] else ""
    lines.append(
        f"  effective non-linearities: {s['effective_nonlinearities']} of {len(verdicts)} "
        f"({c['non-linear']} non-linear, {c['linear']} linear, {c['undecided']} undecided{mixed}; "
        f"non-linear: alpha > {NONLINEAR_ABOVE}, linear: alpha < {LINEAR_BELOW})"
    )
    if acc_before is not None:
        lines.append(f"  test accuracy: {acc_before:.2f}%")
    if acc_after is not None:
        lines.append(f"  test accuracy after discretising (ReLU/Identity per verdict): {acc_after:.2f}%")
    return "\n".join(lines)
