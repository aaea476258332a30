"""BatchNorm fused with the gate after it, and undone: ``fuse_bn`` makes each BatchNorm2d → gate
pair one ``BatchNormGate`` (one fused op), ``unfuse_bn`` splits them again for the tools that
rewrite gates (discretize, the budget's exact gates, fold)."""

from __future__ import annotations

from torch import fx, nn

from alphakern.graph.fx import as_graph_module, set_module
from alphakern.modules import AlphaGate, BatchNormGate
from alphakern.ops.dispatch import BN_GATE_GRANULARITIES


def fuse_bn(model: nn.Module, *, relu: bool = False) -> fx.GraphModule:
    """Each ``nn.BatchNorm2d`` whose output only an AlphaGate (per layer or channel) reads — and
    with ``relu=True`` only an ``nn.ReLU`` module — becomes a ``BatchNormGate`` running both as one
    fused op; the gate's own call leaves the graph. A GraphModule is rewritten in place, another
    model traced first (its modules shared). The state dict keeps its keys (the fused module
    shares the BN's tensors; the gate stays registered)."""
    return _fuse_pairs(as_graph_module(model), relu)


def _fusable(m: nn.Module | None, relu: bool) -> bool:
    if isinstance(m, AlphaGate):
        return m.fuses_with_bn and m.granularity in BN_GATE_GRANULARITIES
    return relu and type(m) is nn.ReLU


def _fuse_pairs(gm: fx.GraphModule, relu: bool = False) -> fx.GraphModule:
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        gate, src = modules.get(node.target) if node.op == "call_module" else None, None
        if _fusable(gate, relu) and len(node.args) == 1:
            src = node.args[0]
        ok = (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and type(modules.get(src.target)) is nn.BatchNorm2d
            and len(src.users) == 1
            and not node.kwargs
        )
        if not ok:
            continue
        modules[src.target] = BatchNormGate(modules[src.target], gate, node.target)  # fused once
        set_module(gm, src.target, modules[src.target])
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return gm


def unfuse_bn(model: nn.Module) -> nn.Module:
    """``fuse_bn`` undone in place: each BatchNormGate back to a plain BatchNorm2d (the same tensors)
    and its gate's call back into the graph after it — what discretize and fold work on."""
    if not isinstance(model, fx.GraphModule):
        return model
    modules = dict(model.named_modules())
    fused = [
        n
        for n in model.graph.nodes
        if n.op == "call_module" and isinstance(modules.get(n.target), BatchNormGate)
    ]
    for node in fused:
        m = modules[node.target]
        set_module(model, node.target, m.unfused())
        with model.graph.inserting_after(node):
            call = model.graph.call_module(m.gate_name, (node,))
        node.replace_all_uses_with(call, delete_user_cb=lambda user, c=call: user is not c)
    if fused:
        model.graph.lint()
        model.recompile()
    return model
