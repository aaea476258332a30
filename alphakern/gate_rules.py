"""When a gate counts as what: the one home of every rule that turns α into a decision.

- verdicts (the report, ``discretize``): non-linear above NONLINEAR_ABOVE, linear below
  LINEAR_BELOW, undecided between;
- counting (``relu_count``, the trainer's kept ReLUs): a gate counts as a ReLU unless it is linear
  (α ≥ LINEAR_BELOW);
- exact gates without a budget (the trainer after its search): kept when α ≥ ROUND_AT;
- exact gates within a budget (``budget.discretize_to_budget``): highest α first while they fit.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

NONLINEAR_ABOVE = 0.95  # α > this: the gate is a ReLU
LINEAR_BELOW = 0.05  # α < this: the gate is the identity
ROUND_AT = 0.5  # made exact without a budget: a ReLU when α ≥ this
VERDICTS = ("non-linear", "linear", "undecided")


def verdict(alpha: float) -> str:
    if alpha > NONLINEAR_ABOVE:
        return "non-linear"
    if alpha < LINEAR_BELOW:
        return "linear"
    return "undecided"


def verdict_masks(a: Tensor) -> dict[str, Tensor]:
    """Boolean masks of the gates per verdict (α as a tensor of any shape)."""
    nonlinear, linear = a > NONLINEAR_ABOVE, a < LINEAR_BELOW
    return {"non-linear": nonlinear, "linear": linear, "undecided": ~(nonlinear | linear)}


def counts_as_nonlinear(a: Tensor) -> Tensor:
    """Per gate: does it still bend (is it not linear)? What ReLU counts count."""
    return a >= LINEAR_BELOW


def kept_by_rounding(a: Tensor) -> Tensor:
    """Per gate, made exact without a budget: stays a ReLU when α ≥ ½."""
    return a >= ROUND_AT


def kept_within_budget(a: np.ndarray, positions: np.ndarray, budget: int) -> np.ndarray:
    """Which gates stay ReLUs (bool per gate) when gate i costs ``positions[i]`` ReLUs: highest α
    first, each kept while it fits in what is left of ``budget`` (ties in the given order), the
    rest linear. The kept positions add up to at most the budget, and less only by less than a gate
    left out."""
    order = np.argsort(-a, kind="stable")
    take = np.zeros(len(a), dtype=bool)
    fits = np.cumsum(positions[order]) <= budget  # the longest prefix that fits...
    prefix = int(fits.argmin()) if not fits.all() else len(order)
    take[order[:prefix]] = True
    left = budget - int(positions[order[:prefix]].sum())
    for i in order[prefix:]:  # ...then smaller gates into what is left
        if left <= 0:
            break
        if positions[i] <= left:
            take[i] = True
            left -= int(positions[i])
    return take
