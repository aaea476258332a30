"""Count the non-linearities a network evaluates per sample, by kind (``nonlinearity_count``,
``relu_count``): gates by their α, fixed gates by their weights, every other activation call by
intercepting it (``TorchFunctionMode``)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from alphakern.gate_rules import counts_as_nonlinear
from alphakern.graph.bn_fusion import unfuse_bn
from alphakern.modules import AlphaGate, BatchNormGate, FixedGate, FixedSlopeReLU
from alphakern.ops.core.activations import (
    FUNCTION_FORMS,
    KINDS,
    METHOD_CALLABLES,
    arg_reader,
    call_kind,
    library_activation,
)
from alphakern.ops.core.checks import check_module, check_tensor


class _Calls(torch.overrides.TorchFunctionMode):
    """Counts the per-sample outputs of every ungated activation evaluated (module or functional),
    by kind; calls inside a gate module (its torch backend runs F.<f>) are not counted."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch, self.inside = batch, 0
        self.counts: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        form = _CALL_FORMS.get(func)
        if form is not None and not self.inside and isinstance(out, torch.Tensor):
            kind = call_kind(form, arg_reader(args, kwargs))
            if kind is not None:
                self.counts[kind] = self.counts.get(kind, 0) + out.numel() // self.batch
        return out


_CALL_FORMS = {**FUNCTION_FORMS, **METHOD_CALLABLES}


@torch.no_grad()
def nonlinearity_count(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """Scalar non-linearities evaluated per sample, by kind (relu, relu6, leaky_relu, gelu, silu,
    hardswish): for each gate the output positions whose gate is not linear (α ≥ 0.05), for each
    fixed gate ``discretize`` leaves those whose weight is not 0 (slope not 1), plus every
    activation evaluated that is not a gate. Kinds with none are left out. One forward in eval
    mode (ν does not move) on ``example_input`` (batch first)."""
    check_module(model)
    check_tensor(example_input)
    if any(isinstance(m, BatchNormGate) for m in model.modules()):  # count the BN → gate pairs apart
        model = unfuse_bn(copy.deepcopy(model))
    batch = example_input.shape[0]
    counts: dict[str, int] = {}
    mode = _Calls(batch)

    def enter(m, inputs) -> None:
        mode.inside += 1

    def leave(m, inputs, output) -> None:
        mode.inside -= 1
        if isinstance(m, AlphaGate):  # a gate bends unless it is linear
            keep, kind = counts_as_nonlinear(m.alpha), m.act.kind
        elif isinstance(m, FixedSlopeReLU):
            keep, kind = m.slope != 1, "relu"
        else:
            keep, kind = m.weight != 0, m.act.kind
        counts[kind] = counts.get(kind, 0) + _positions(keep, output, batch)

    def leave_library(m, inputs, output) -> None:
        """An activation module of another library (or registered): its outputs, under its kind,
        the tensor ops inside it not counted again."""
        mode.inside -= 1
        if not mode.inside and isinstance(output, torch.Tensor):
            kind = library[m]
            counts[kind] = counts.get(kind, 0) + output.numel() // batch

    gate_types = (AlphaGate, FixedSlopeReLU, FixedGate)
    gates = [m for m in model.modules() if isinstance(m, gate_types)]
    library = {m: act.kind for m in model.modules()
               if not isinstance(m, gate_types) and (act := library_activation(m)) is not None}  # fmt: skip
    handles = [h for m in gates for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    handles += [h for m in library for h in (m.register_forward_pre_hook(enter),
                                             m.register_forward_hook(leave_library))]  # fmt: skip
    was_training = model.training
    model.eval()
    try:
        with mode:
            model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    for kind, n in mode.counts.items():
        counts[kind] = counts.get(kind, 0) + n
    return {k: counts[k] for k in KINDS if counts.get(k)}


def relu_count(model: nn.Module, example_input: torch.Tensor) -> int:
    """ReLUs evaluated per sample (``nonlinearity_count``'s "relu"): for each AlphaReLU the output
    positions whose gate is not linear (α ≥ 0.05), for each FixedSlopeReLU (what ``discretize``
    leaves) those whose slope is not 1, plus every ReLU evaluated that is not a gate. Runs one
    forward in eval mode (ν does not move) on ``example_input`` (batch first)."""
    return nonlinearity_count(model, example_input).get("relu", 0)


def _positions(keep: torch.Tensor, output: torch.Tensor, batch: int) -> int:
    """Output positions of one sample whose gate is kept (``keep``: 1/0 per gate, γ's shape): every
    gate of a module controls as many positions (a layer gate all, a channel gate H·W, an element
    gate 1, a feature gate one per token), so the kept gates times that."""
    return int(keep.sum().item()) * (output.numel() // batch // keep.numel())
