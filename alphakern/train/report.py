"""The ReLU lines of a run's report and metrics (non-linearities of every kind where the network
has others, as mobilenet_v2's ReLU6): per gated layer, how many were kept."""

from __future__ import annotations

import torch

from alphakern.gate_rules import counts_as_nonlinear
from alphakern.graph.budget import GateSite


def relu_layers(sites: list[GateSite], keep: dict[str, torch.Tensor] | None) -> list[dict]:
    """Per gated layer: its ReLUs per sample in the original network and how many are kept (by the
    exact gates ``keep``, or else by the gates' current α)."""
    if keep is not None:
        kept = [int(keep[s.name].sum()) * s.positions for s in sites]
    else:
        kept = [int(counts_as_nonlinear(s.module.alpha).sum()) * s.positions for s in sites]
    return [dict(name=s.name, relus=s.relus, kept=k) for s, k in zip(sites, kept, strict=True)]


def format_relus(metrics: dict) -> str:
    """The report's ReLU lines: per sample, before and after, and per layer what was kept."""
    before, after, budget = (metrics[k] for k in ("relu_count_before", "relu_count_after", "relu_budget"))
    text = f"  ReLUs per sample: {before} before, {after} after ({100 * after / max(before, 1):.1f}%)"
    kinds_before, kinds_after = (
        metrics.get("nonlinearities_before", {}),
        metrics.get("nonlinearities_after", {}),
    )
    if set(kinds_before) - {"relu"}:  # other kinds than ReLU: the counts above add them all up
        text = (
            text.replace("ReLUs", "non-linearities (all kinds)")
            + "\n  per kind: "
            + ", ".join(f"{k} {n} before, {kinds_after.get(k, 0)} after" for k, n in kinds_before.items())
        )
    if budget is not None:
        text += f"; budget {budget}"
    layers = metrics["relu_layers"]
    kept = [f"{d['name']} {d['kept']}/{d['relus']}" for d in layers if d["kept"] != d["relus"]]
    if kept:
        text += "\n  kept per layer (others all kept): " + ", ".join(kept)
    return text
