"""What every linearisation method is made of, and what they share.

A method is three things (``Method``): a gate parameterisation (the gate module it puts where
``linearize`` put AlphaGates), the penalty or schedule that drives it during the search epochs, and
the rule that makes the gates exact to a budget (``keep``). ``Scope`` is what the penalty and the
rule see: the gates' sites, the network's non-linearities per sample and the budget as a count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from alphakern.graph.budget import GateSite, keep_to_budget
from alphakern.graph.fx import set_module
from alphakern.modules import AlphaGate, alpha_layers
from alphakern.ops.core.granularity import gate_view

Evaluate = Callable[[nn.Module], float]  # a model's validation accuracy (%): never the test set


@dataclass
class Scope:
    """The gates a method acts on (``sites``), the non-linearities per sample the budget is a share
    of (``total``), what those gates may keep (``budget``, None: no budget), and every gate of the
    network in forward order (``all_sites``: more than ``sites`` when a budget is on one kind)."""

    sites: list[GateSite]
    total: int
    budget: int | None
    all_sites: list[GateSite]

    @property
    def others(self) -> list[GateSite]:
        """The gates outside the budget's scope."""
        inside = {s.name for s in self.sites}
        return [s for s in self.all_sites if s.name not in inside]

    def hard_count(self, kept: dict[str, Tensor]) -> int:
        """The non-linearities per sample that ``kept`` (bool per gate) leaves."""
        return sum(int(kept[s.name].sum()) * s.positions for s in self.sites)


class Method:
    """The interface; ``alpha`` (alphakern's gates) is the default. Subclasses set ``name``, and
    ``gate`` (their parameterisation; None: the AlphaGates ``linearize`` made stay)."""

    name = ""
    gate: type[AlphaGate] | None = None
    learned = True  # False: no search; the gates are cut before the first epoch
    granularities: tuple[str, ...] = ("layer", "channel", "element", "feature")

    @classmethod
    def prepare(cls, model: nn.Module) -> nn.Module:
        """``model`` (changed in place) with every AlphaGate replaced by this method's gate."""
        if cls.gate is None:
            return model
        for name, m in alpha_layers(model):
            set_module(model, name, cls.gate.like(m))
        return model

    def penalty(self, scope: Scope) -> Tensor | None:
        """The term added to each search step's loss (None: none)."""
        return None

    def end_epoch(self, scope: Scope) -> bool:
        """After each search epoch: update the schedule; True to cut the gates now."""
        return False

    def keep(self, scope: Scope, model: nn.Module, evaluate: Evaluate | None = None) -> dict[str, Tensor]:
        """Which gates stay non-linear (bool, γ's shape per site), within ``scope.budget``."""
        raise NotImplementedError

    def parameter_groups(self, model: nn.Module, lr: float) -> list[dict] | None:
        """The optimiser's groups when the gates learn at their own rate (None: one group)."""
        return None

    def state_dict(self) -> dict:
        """What the schedule holds, for a bit-for-bit resume."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def cut_by_score(scope: Scope, scores: dict[str, Tensor]) -> dict[str, Tensor]:
    """Highest score first, each gate kept while it fits in the budget (``keep_to_budget``)."""
    return keep_to_budget(scope.sites, scope.budget, scores=scores)


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [m.gamma for _, m in alpha_layers(model)]


def split_groups(model: nn.Module, lr: float, gate_lr: float) -> list[dict]:
    """Two groups: the network's weights at ``lr``, the gates' parameters at ``gate_lr``."""
    gates = gate_parameters(model)
    ids = {id(p) for p in gates}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [dict(params=rest, lr=lr), dict(params=gates, lr=gate_lr)]


class MethodGate(AlphaGate):
    """A linearisation method's own gate, x + w·(f(x) − x) with the method's weight w per gate
    (``weight``): an AlphaGate to every graph tool (counting, the budget's sites, ``apply_keep``),
    but with its own parameter in ``gamma`` and no ν schedule. Runs in PyTorch (torch.lerp): the
    methods are compared on accuracy, not speed; never fused with a BatchNorm."""

    fuses_with_bn = False

    @classmethod
    def like(cls, m: AlphaGate) -> MethodGate:
        """This gate in place of ``m``: same f, granularity and γ shape, on ``m``'s device."""
        g = cls(0.0, activation="relu", granularity=m.granularity, backend=m.backend)
        g.act = m.act
        if g.has_uninitialized_params():
            g.gamma.materialize(m.gamma.shape, device=m.gamma.device)
        g.to(m.gamma.device)
        g.reset_gamma()
        g._drop_lazy_hooks()
        return g

    def weight(self) -> Tensor:
        """The weight of f per gate, differentiable in ``gamma``."""
        raise NotImplementedError

    def differentiable_alpha(self) -> Tensor:
        return self.weight()

    def forward(self, x: Tensor) -> Tensor:
        w = gate_view(self.weight().to(x.dtype), x, self.granularity)
        return torch.lerp(x, self.act.f(x), w)

    def extra_repr(self) -> str:
        text = f"activation={str(self.act)!r}, granularity={self.granularity!r}"
        if self.has_uninitialized_params():
            return text
        return text + f", gates={tuple(self.gamma.shape)}"
