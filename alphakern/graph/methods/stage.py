"""``stage``: DeepReDuce-style culling (Jha et al., ICML 2021; no public code was found, this follows
the paper's procedure): no learned gates — whole stages' ReLUs are removed, least critical first,
until the network fits the budget; the stage that straddles the budget is thinned layer by layer
(least critical layer first), the last layer partly (its first elements kept).

- a stage: the gates whose outputs share one spatial resolution (a run of consecutive gates in
  forward order) — ResNet-20 has three (32², 16², 8²); a model whose gates all share one resolution
  has no stages to cull and is refused;
- criticality, from the validation split: the accuracy of the trained ReLU network with that stage
  (or, in the straddling stage, that layer) alone made linear — the higher it stays, the less
  critical. DeepReDuce measures criticality by training a network per stage; this is the cheap
  measure its ablation compares with, the same for every budget.

The cut happens before the first epoch; every epoch then fine-tunes (with the run's distillation).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from alphakern.graph.budget import GateSite
from alphakern.graph.discretize import apply_keep
from alphakern.graph.methods.base import Evaluate, Method, Scope, cut_by_score


def _resolution(s: GateSite) -> tuple[int, ...]:
    """(H, W) of a gate acting on (C, H, W) per sample; () for any other output."""
    return s.shape[1:] if len(s.shape) == 3 else ()


def stages(sites: list[GateSite]) -> list[list[GateSite]]:
    """Runs of consecutive gates (forward order) whose outputs have the same spatial resolution."""
    out: list[list[GateSite]] = []
    for s in sites:
        if out and _resolution(out[-1][-1]) == _resolution(s):
            out[-1].append(s)
        else:
            out.append([s])
    return out


class Stage(Method):
    name = "stage"
    learned = False

    def keep(self, scope: Scope, model: nn.Module, evaluate: Evaluate | None = None) -> dict[str, Tensor]:
        if evaluate is None:
            raise ValueError(
                "--method stage measures each stage's criticality on the validation split: give evaluate"
            )
        groups = stages(scope.sites)
        if len(groups) < 2:
            raise ValueError(
                f"--method stage culls whole stages, but every gate of this model acts at one resolution "
                f"{scope.sites[0].shape if scope.sites else ()}: it has no stages to cull"
            )
        everything = {s.name: torch.ones(s.module.gamma.shape, dtype=torch.bool) for s in scope.sites}

        def accuracy_without(names: set[str]) -> float:
            keep = {n: torch.zeros_like(k) if n in names else k for n, k in everything.items()}
            return evaluate(apply_keep(copy.deepcopy(model), keep))

        # least critical first: the stage whose loss costs the least validation accuracy
        order = sorted(range(len(groups)), key=lambda i: -accuracy_without({s.name for s in groups[i]}))
        self.culled = []
        left = sum(s.relus for s in scope.sites)
        scores, rank = {}, 0.0
        for i in order:  # the most critical stages keep the highest scores
            group = groups[i]
            if left > scope.budget:
                self.culled.append([s.name for s in group])
            relus = sum(s.relus for s in group)
            straddles = left > scope.budget and left - relus < scope.budget
            layer = {s.name: 0.0 for s in group}
            if straddles:  # thinned layer by layer: the layer whose loss costs least goes first
                layer = {s.name: 100.0 - accuracy_without({s.name}) for s in group}
            for s in group:
                scores[s.name] = torch.full(
                    s.module.gamma.shape, rank * 1000.0 + layer[s.name], dtype=torch.float64
                )
            left -= relus
            rank += 1.0
        return cut_by_score(scope, scores)
