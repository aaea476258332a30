"""``snl``: Selective Network Linearization (Cho et al., ICML 2022), following the authors' code in
NYU-DICE-Lab/selective_network_linearization — ``archs_unstructured/cifar_resnet.py`` (the mask
blended with the ReLU), ``snl_finetune_unstructured.py`` (the search loop, the λ schedule, the
threshold and binarisation), ``utils.py`` (``mask_train_kd_unstructured``: the L1 term) and
``scripts/snl_resnet18_c100_relu_*.sh`` (λ = 1e-5, threshold 1e-2).

- the gate: a free mask m per element (or channel, or feature), initialised at 1, the output
  m·f(x) + (1 − m)·x;
- the penalty: λ·‖m‖₁ (a channel's mask weighted by the positions it controls, so λ means the
  same per ReLU at every granularity);
- the schedule, after each search epoch: the count is the ReLUs whose mask is above the threshold;
  a new lowest count is remembered, otherwise (from the 6th epoch on, as their ``epoch >= 5``) λ
  grows ×1.1; once the count is within the budget the search stops and the masks are binarised
  (their loop's ``break``) — the epochs left fine-tune, so every method trains as long;
- the cut: masks above the threshold kept; if the search ended above the budget (the epochs ran
  out), the highest masks kept to it.

Differences from their code, the same for every method here: the search loss is the trainer's
(cross-entropy, no distillation in the search); choices read the validation split, never the test set.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from alphakern.graph.methods.base import Evaluate, Method, MethodGate, Scope, cut_by_score


class MaskGate(MethodGate):
    """m·f(x) + (1 − m)·x with the mask m free (``gamma``), initialised at 1 (f)."""

    @torch.no_grad()
    def reset_gamma(self) -> None:
        self.gamma.fill_(1.0)

    def weight(self) -> Tensor:
        return self.gamma


class SNL(Method):
    name = "snl"
    gate = MaskGate
    granularities = ("channel", "element", "feature")
    WARMUP_EPOCHS = 5  # λ may grow from the 6th search epoch on (their ``epoch >= 5``)

    def __init__(self, weight: float | None = None, threshold: float = 1e-2) -> None:
        self.weight = 1e-5 if weight is None else float(weight)  # λ, multiplied by 1.1 on a stall
        self.threshold = threshold
        self.lowest: int | None = None  # the lowest count seen after an epoch
        self.epochs = 0  # search epochs finished

    def penalty(self, scope: Scope) -> Tensor:
        return self.weight * sum(s.module.gamma.abs().float().sum() * s.positions for s in scope.sites)

    def count(self, scope: Scope) -> int:
        """The ReLUs per sample whose mask is above the threshold."""
        return scope.hard_count({s.name: s.module.gamma.detach() > self.threshold for s in scope.sites})

    def end_epoch(self, scope: Scope) -> bool:
        count = self.count(scope)
        if self.lowest is None or count < self.lowest:
            self.lowest = count
        elif self.epochs >= self.WARMUP_EPOCHS:
            self.weight *= 1.1
        self.epochs += 1
        return count <= scope.budget

    def keep(self, scope: Scope, model: nn.Module, evaluate: Evaluate | None = None) -> dict[str, Tensor]:
        above = {s.name: s.module.gamma.detach().cpu() > self.threshold for s in scope.sites}
        within = cut_by_score(scope, {s.name: s.module.gamma.detach() for s in scope.sites})
        return {n: above[n] & within[n] for n in above}

    def state_dict(self) -> dict:
        return dict(weight=self.weight, lowest=self.lowest, epochs=self.epochs)

    def load_state_dict(self, state: dict) -> None:
        self.weight, self.lowest, self.epochs = state["weight"], state["lowest"], state["epochs"]
