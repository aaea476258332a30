"""``autorep``: AutoReP's hard gate with hysteresis (Peng et al., ICCV 2023), following the authors'
code in harveyp123/AutoReP — ``models_util/model_spReLU_relay.py`` (``ReLU_masked_relay``: the
auxiliary parameter, the hysteresis update, the straight-through estimator),
``train_util/train_util.py`` (the hinge λ·relu(density − budget)) and ``util_func/config.py`` /
``scripts/scripts_relu_prune_relay_0.003.sh`` (λ = 10, the band 0.003, the mask's learning rate 0.02).

- the gate: a 0/1 mask per element (a buffer) and an auxiliary parameter a (``gamma``, initialised
  uniform in [0, 1)); before each training forward the mask moves with hysteresis — a kept
  element is dropped only when a < −band, a dropped one comes back only when a > band — and the
  output is m·f(x) + (1 − m)·x; the gradient reaches a through the straight-through estimator
  d m/d a = softplus(a);
- the penalty: λ·relu(density − budget/total), density = the kept ReLUs / total;
- the auxiliary parameters learn at their own rate (0.02, Adam), the network at the trainer's;
- the cut: the kept elements (mask 1); if more than the budget are kept when the search ends,
  those with the largest a. ReLU vs identity only: their polynomial replacement is not here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parameter import UninitializedBuffer

from alphakern.graph.methods.base import Evaluate, Method, MethodGate, Scope, cut_by_score, split_groups


class _StraightThrough(torch.autograd.Function):
    """Forward: the mask; backward: softplus(a)·grad into the auxiliary parameter a."""

    @staticmethod
    def forward(ctx, aux: Tensor, mask: Tensor) -> Tensor:
        ctx.save_for_backward(aux)
        return mask.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (aux,) = ctx.saved_tensors
        return F.softplus(aux) * grad, None


class HysteresisGate(MethodGate):
    """The mask (``mask``, 0/1) follows the auxiliary parameter (``gamma``) with a hysteresis band."""

    band = 0.003

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.granularity == "layer":
            self.register_buffer("mask", torch.tensor(1.0))
        else:
            self.register_buffer("mask", UninitializedBuffer())

    @torch.no_grad()
    def reset_gamma(self) -> None:
        if isinstance(self.mask, UninitializedBuffer):
            self.mask.materialize(self.gamma.shape, device=self.gamma.device)
        self.mask.fill_(1.0)
        self.gamma.uniform_(0.0, 1.0)

    @torch.no_grad()
    def update_mask(self) -> None:
        a, m = self.gamma, self.mask
        m.copy_(m * (a > -self.band) + (1 - m) * (a > self.band))

    def weight(self) -> Tensor:
        return _StraightThrough.apply(self.gamma, self.mask)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.update_mask()
        return super().forward(x)

    @property
    def alpha(self) -> Tensor:
        return self.mask.detach().clone()


class AutoReP(Method):
    name = "autorep"
    gate = HysteresisGate
    granularities = ("channel", "element", "feature")
    GATE_LR = 0.02

    def __init__(self, weight: float | None = None) -> None:
        self.weight = 10.0 if weight is None else float(weight)

    def penalty(self, scope: Scope) -> Tensor:
        kept = sum(s.module.weight().float().sum() * s.positions for s in scope.sites)
        return self.weight * torch.relu((kept - scope.budget) / scope.total)

    def parameter_groups(self, model: nn.Module, lr: float) -> list[dict]:
        return split_groups(model, lr, self.GATE_LR)

    def keep(self, scope: Scope, model: nn.Module, evaluate: Evaluate | None = None) -> dict[str, Tensor]:
        # kept elements first (mask + a number in (0, ½)), ordered among themselves by a
        scores = {
            s.name: s.module.mask + torch.sigmoid(s.module.gamma.detach().double()) / 2 for s in scope.sites
        }
        within = cut_by_score(scope, scores)
        return {s.name: within[s.name] & (s.module.mask.cpu() > 0) for s in scope.sites}
