"""``random``: the control every method must beat — no learned gates, the budget's ReLUs kept at
uniformly random positions (each gate's elements, or channels, drawn with one seeded generator).
The cut happens before the first epoch; every epoch then fine-tunes (with the run's distillation)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from alphakern.graph.methods.base import Evaluate, Method, Scope, cut_by_score


class Random(Method):
    name = "random"
    learned = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def keep(self, scope: Scope, model: nn.Module, evaluate: Evaluate | None = None) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        scores = {
            s.name: torch.rand(s.module.gamma.shape, generator=g, dtype=torch.float64) for s in scope.sites
        }
        return cut_by_score(scope, scores)
