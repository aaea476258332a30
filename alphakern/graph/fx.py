"""torch.fx helpers every graph tool shares, one copy each: the tracer that keeps alphakern's gates
as single nodes, tracing a model into a GraphModule, and setting a submodule by its dotted name."""

from __future__ import annotations

from torch import fx, nn

from alphakern.modules import AlphaGate, FixedGate, FixedSlopeReLU
from alphakern.ops.core.activations import library_activation, ungated_reason
from alphakern.ops.core.checks import check_module


class GateTracer(fx.Tracer):
    """torch.fx's tracer with alphakern's gates and other libraries' activation modules (and
    registered ones) as leaves: one node each — which linearize gates or names, fold and the
    counts read — rather than the tensor ops inside them."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (
            isinstance(m, (AlphaGate, FixedGate, FixedSlopeReLU))
            or library_activation(m) is not None
            or ungated_reason(m) is not None
            or super().is_leaf_module(m, qualname)
        )


def trace(model: nn.Module) -> fx.GraphModule:
    """A GraphModule of ``model``'s forward (its modules shared, not copied), traced afresh even if
    ``model`` is one already."""
    check_module(model)
    return fx.GraphModule(model, GateTracer().trace(model))


def as_graph_module(model: nn.Module) -> fx.GraphModule:
    """``model`` itself if it is a GraphModule (what the in-place passes rewrite), else ``trace``."""
    return model if isinstance(model, fx.GraphModule) else trace(model)


def set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    """``root``'s submodule at the dotted path ``name`` replaced by ``module``."""
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)
