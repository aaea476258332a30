"""Every way a gate becomes exact, one home: ``exact_gate`` (what one gate becomes at a fixed
weight per gate), ``discretize`` (each decided gate by its verdict) and ``apply_keep`` (each gate
kept or made linear, as a budget or the trainer's rounding decided)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from alphakern.gate_rules import verdict_masks
from alphakern.graph.bn_fusion import unfuse_bn
from alphakern.graph.fx import set_module
from alphakern.modules import AlphaGate, FixedGate, FixedSlopeReLU, alpha_layers
from alphakern.ops.core.checks import check_module


def exact_gate(m: AlphaGate, weight: Tensor) -> nn.Module:
    """What gate ``m`` becomes with the fixed weight α = ``weight`` per gate (1: f, 0: identity,
    anything between: that blend): f's own module (nn.ReLU, nn.SiLU, ...) where every gate is 1,
    nn.Identity where every gate is 0, else a FixedSlopeReLU (f = relu, slope 1 − w) or FixedGate."""
    if bool((weight == 1).all()):
        return m.act.module()
    if bool((weight == 0).all()):
        return nn.Identity()
    weight = weight.to(device=m.gamma.device, dtype=torch.float32)
    if m.act.name == "relu":
        return FixedSlopeReLU(1 - weight, granularity=m.granularity)
    return FixedGate(weight, activation=m.act, granularity=m.granularity)


def _discrete(m: AlphaGate) -> nn.Module | None:
    """What a decided gate becomes: f's module (nn.ReLU, nn.SiLU, ...) / nn.Identity when all its
    gates agree, else a fixed gate with weight 1 (f) or 0 (identity) per decided gate and the
    current α for undecided ones (``exact_gate``); None (keep it) for an undecided layer gate."""
    a = m.alpha
    masks = verdict_masks(a)
    if a.numel() == 1 and not bool(masks["non-linear"].any() | masks["linear"].any()):
        return None
    return exact_gate(m, torch.where(masks["non-linear"], 1.0, torch.where(masks["linear"], 0.0, a)))


def discretize(model: nn.Module) -> nn.Module:
    """A copy with each decided AlphaReLU replaced by nn.ReLU or nn.Identity — or, for gates per
    channel/element that disagree, a FixedSlopeReLU exact per gate (undecided layers kept)."""
    check_module(model)
    out = unfuse_bn(copy.deepcopy(model))  # a fused BN → gate pair: its gate replaced like any other
    for name, m in alpha_layers(out):
        new = _discrete(m)
        if new is None:
            continue
        set_module(out, name, new)
    return out


def apply_keep(model: nn.Module, keep: dict[str, Tensor]) -> nn.Module:
    """``model`` (changed in place) with each named gate made exact: its activation's module (nn.ReLU,
    ...) if every gate is kept, nn.Identity if none, else a fixed gate per gate (``exact_gate``)."""
    check_module(model)
    if not isinstance(keep, dict):
        raise TypeError(f"keep must be a dict of gate name to tensor, got {type(keep).__name__}")
    unfuse_bn(model)  # a gate fused with its BatchNorm is replaced like any other
    modules = dict(model.named_modules())
    for name, k in keep.items():
        m = modules.get(name)
        if not isinstance(m, AlphaGate):
            raise ValueError(f"{name} is not an AlphaGate of this model")
        set_module(model, name, exact_gate(m, k.to(torch.bool).float()))
    return model
