"""Training to a ReLU budget: where each gate acts (``gate_sites``), a differentiable soft ReLU
count and its penalty, and the exact discretisation that meets a budget.

The soft count is Σ over gates of α × the positions the gate controls per sample (a layer gate: the
whole activation map; a channel gate: H·W; an element gate: 1). Two penalties on it, as in the
literature: an L1 weight on the normalised count (SNL, Cho et al. 2022) and a hinge above a budget
(AutoReP, Peng et al. 2023). After the search, ``discretize_to_budget`` keeps the gates with the
highest α as ReLUs while they fit and makes the rest linear, so the ReLU count is at most the budget.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from alphakern.functional import alpha
from alphakern.gate_rules import kept_by_rounding, kept_within_budget
from alphakern.graph.discretize import apply_keep
from alphakern.modules import AlphaGate, alpha_layers
from alphakern.ops.core.checks import check_tensor


@dataclass
class GateSite:
    """One gate module: ``positions`` outputs per sample for each of its ``gates`` gates."""

    name: str
    module: AlphaGate
    positions: int
    gates: int
    shape: tuple[int, ...] = ()  # the gate's output per sample

    @property
    def relus(self) -> int:
        return self.positions * self.gates


@torch.no_grad()
def gate_sites(model: nn.Module, example_input: Tensor) -> list[GateSite]:
    """Every AlphaGate in forward order with the positions each of its gates controls, from one
    eval-mode forward of ``example_input`` (batch first; ν does not move)."""
    check_tensor(example_input)
    shapes: dict[int, torch.Size] = {}

    def hook(m: nn.Module, inputs, output: Tensor) -> None:
        shapes.setdefault(id(m), output.shape[1:])

    layers = alpha_layers(model)
    handles = [m.register_forward_hook(hook) for _, m in layers]
    was_training = model.training
    model.eval()
    try:
        model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    sites = []
    for name, m in layers:
        if id(m) not in shapes:
            raise ValueError(f"gate {name} was not called by the forward of an example input")
        per_sample = int(np.prod(shapes[id(m)]))
        sites.append(GateSite(name, m, per_sample // m.gamma.numel(), m.gamma.numel(), tuple(shapes[id(m)])))
    return sites


def soft_count(sites: list[GateSite]) -> Tensor:
    """Σ α × positions over every gate, differentiable in its parameter (α at each gate's current ν)."""
    return sum(s.module.differentiable_alpha().float().sum() * s.positions for s in sites)


def budget_penalty(sites: list[GateSite], total: int, weight: float, budget: int | None = None) -> Tensor:
    """weight · soft/total (no budget), or weight · relu(soft − budget)/total: scale-free in the
    network's ReLU count ``total``."""
    soft = soft_count(sites)
    excess = soft if budget is None else torch.relu(soft - budget)
    return excess * (weight / total)


def l1_penalty(sites: list[GateSite], weight: float) -> Tensor:
    """weight × the mean α over all gates: the L1 norm of the α's, as the study's supervisor
    suggested, normalised by the number of gates (every gate counts alike, whatever its size)."""
    n = sum(s.gates for s in sites)
    return weight * sum(alpha(s.module.gamma, s.module.nu).float().sum() for s in sites) / n


def resolve_budget(budget: float, total: int) -> int:
    """A fraction ≤ 1 of ``total`` or an absolute count, as the ReLUs per sample it allows."""
    if not budget > 0:
        raise ValueError(f"--budget must be positive (a fraction <= 1 or a ReLU count), got {budget}")
    count = int(budget * total) if budget <= 1 else int(budget)
    if budget > 1 and budget != int(budget):
        raise ValueError(f"--budget above 1 is a ReLU count and must be whole, got {budget}")
    if count > total:
        raise ValueError(f"--budget {budget:g}: more than the network's {total} ReLUs per sample")
    if count == 0:
        raise ValueError(f"--budget {budget:g} of {total} ReLUs rounds to 0 ReLUs")
    return count


def keep_to_budget(
    sites: list[GateSite], budget: int, scores: dict[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """Which gates stay ReLUs (bool, γ's shape per site): highest α (or ``scores[name]``, γ's
    shape) first, each kept while it fits in what is left of ``budget`` (ties in forward order), the
    rest linear. The kept positions add up to at most the budget, and less only by less than a
    gate left out (``gate_rules.kept_within_budget``)."""
    alphas = [
        (s.module.alpha if scores is None else scores[s.name]).double().flatten().cpu().numpy() for s in sites
    ]
    a = np.concatenate(alphas) if alphas else np.zeros(0)
    pos = np.concatenate([np.full(s.gates, s.positions, dtype=np.int64) for s in sites]) if sites else a
    take = kept_within_budget(a, pos, budget)
    keep, start = {}, 0
    for s in sites:
        keep[s.name] = torch.from_numpy(take[start : start + s.gates].copy()).reshape(s.module.gamma.shape)
        start += s.gates
    return keep


def keep_to_budget_by_units(
    sites: list[GateSite], budget: int, units: list[tuple[str, ...]]
) -> dict[str, Tensor]:
    """``keep_to_budget`` over units (``alphakern.fold_units``): a unit's gates stay ReLUs or
    turn linear together, so a unit made linear folds; its α is its gates' mean, its cost their
    sum; a gate in no unit is a unit of its own. Gates per layer only."""
    by_name = {s.name: s for s in sites}
    if any(s.gates != 1 for s in sites):
        raise ValueError("keeping gates by fold units needs gates per layer (--granularity layer)")
    groups = [list(u) for u in units if all(n in by_name for n in u)]
    grouped = {n for g in groups for n in g}
    groups += [[s.name] for s in sites if s.name not in grouped]
    a = np.array([np.mean([float(by_name[n].module.alpha) for n in g]) for g in groups])
    pos = np.array([sum(by_name[n].relus for n in g) for g in groups], dtype=np.int64)
    take = kept_within_budget(a, pos, budget)
    return {
        n: torch.tensor(bool(t)).reshape(by_name[n].module.gamma.shape)
        for g, t in zip(groups, take, strict=True)
        for n in g
    }


def keep_rounded(sites: list[GateSite]) -> dict[str, Tensor]:
    """Without a budget: each gate stays a ReLU when α ≥ ½ (``gate_rules.kept_by_rounding``)."""
    return {s.name: kept_by_rounding(s.module.alpha).cpu() for s in sites}


def discretize_to_budget(model: nn.Module, example_input: Tensor, budget: int) -> nn.Module:
    """A copy of ``model`` whose gates are all exactly ReLU or identity, with
    ``relu_count(copy, example_input) <= budget`` (see ``keep_to_budget``)."""
    out = copy.deepcopy(model)
    apply_keep(out, keep_to_budget(gate_sites(out, example_input), budget))
    return out


__all__ = [
    "GateSite",
    "budget_penalty",
    "discretize_to_budget",
    "gate_sites",
    "keep_rounded",
    "keep_to_budget",
    "keep_to_budget_by_units",
    "l1_penalty",
    "resolve_budget",
    "soft_count",
]
