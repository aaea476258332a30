"""``alpha``: alphakern's own gates (the default method) — α = σ((σ(γ) − ½)·ν) with ν growing each
training step (the seed study's schedule), the hinge weight·relu(soft count − budget)/total during
the search (or weight·soft/total without a budget; ``--gate-mode l1`` adds l1·mean α), then the
gates with the highest α kept to the budget (``budget.keep_to_budget``), or α rounded at ½ without one.
"""

from __future__ import annotations

from torch import Tensor, nn

from alphakern.graph.budget import (
    budget_penalty,
    keep_rounded,
    keep_to_budget,
    keep_to_budget_by_units,
    l1_penalty,
)
from alphakern.graph.methods.base import Evaluate, Method, Scope


class Alpha(Method):
    """``weight``: the hinge's (None: 1, and no term at all without a budget); ``l1``: the weight of
    the mean-α term of ``--gate-mode l1`` (None: no such term); ``units``: fold units kept or
    dropped together at the budget (``alphakern.fold_units``)."""

    name = "alpha"

    def __init__(
        self, weight: float | None = None, l1: float | None = None, units: list[tuple[str, ...]] | None = None
    ) -> None:
        self.weight, self.l1, self.units = weight, l1, units

    def penalty(self, scope: Scope) -> Tensor | None:
        terms = []
        if scope.budget is not None or self.weight is not None:
            weight = self.weight if self.weight is not None else 1.0
            terms.append(budget_penalty(scope.sites, scope.total, weight, scope.budget))
        if self.l1 is not None:
            terms.append(l1_penalty(scope.all_sites, self.l1))
        return sum(terms) if terms else None

    def keep(self, scope: Scope, model: nn.Module, evaluate: Evaluate | None = None) -> dict[str, Tensor]:
        """To the budget (highest α first; by fold units with ``units``), else α rounded at ½;
        gates outside the budget's scope (``--budget-kind``) rounded at ½."""
        if scope.budget is None:
            return keep_rounded(scope.all_sites)
        if self.units is not None:
            return keep_to_budget_by_units(scope.all_sites, scope.budget, self.units)
        return {**keep_rounded(scope.others), **keep_to_budget(scope.sites, scope.budget)}
