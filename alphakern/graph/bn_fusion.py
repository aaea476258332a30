"""BatchNorm fused with the gate after it, and undone: ``fuse_bn`` makes each BatchNorm2d → gate
pair one ``BatchNormGate`` and each BatchNorm2d → add(skip) → gate tail of a residual block one
``BatchNormAddGate`` (one fused op each); ``unfuse_bn`` splits them again for the tools that
rewrite gates (discretize, the budget's exact gates, fold)."""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from alphakern.graph.fx import as_graph_module, set_module
from alphakern.modules import AlphaGate, BatchNormAddGate, BatchNormGate
from alphakern.ops.core.checks import check_module
from alphakern.ops.dispatch import BN_GATE_GRANULARITIES

_ADDS = (operator.add, operator.iadd, torch.add)  # how a traced residual block spells its add


def fuse_bn(model: nn.Module, *, relu: bool = False) -> fx.GraphModule:
    """Each ``nn.BatchNorm2d`` whose output only an AlphaGate (per layer or channel) reads — and
    with ``relu=True`` only an ``nn.ReLU`` module — becomes a ``BatchNormGate`` running both as one
    fused op; the gate's own call leaves the graph (and the nn.Identity calls between the two).
    Where the BN's output only feeds an add whose sum only that gate reads (BN → add(skip) → gate:
    torchvision's BasicBlock and Bottleneck, the CIFAR ResNet-20, timm's ResNets), the three
    become one ``BatchNormAddGate(x, skip)``. A GraphModule is rewritten in place, another model
    traced first (its modules shared). The state dict keeps its keys (the fused module shares the
    BN's tensors; the gate stays registered). ``unfuse_bn`` leaves the identities out."""
    check_module(model)
    return _fuse_pairs(as_graph_module(model), relu)


def _fusable(m: nn.Module | None, relu: bool) -> bool:
    if isinstance(m, AlphaGate):
        return m.fuses_with_bn and m.granularity in BN_GATE_GRANULARITIES
    return relu and type(m) is nn.ReLU


def _through_identities(node: object, modules: dict[str, nn.Module]) -> tuple[object, list[fx.Node]]:
    """(what ``node`` passes on, the nn.Identity calls on the way — timm's disabled drop_block,
    aa and drop_path — each read by one node only)."""
    passed = []
    while (
        isinstance(node, fx.Node)
        and node.op == "call_module"
        and type(modules.get(node.target)) is nn.Identity
        and len(node.users) == 1
        and len(node.args) == 1
    ):
        passed.append(node)
        node = node.args[0]
    return node, passed


def _lone_bn(node: object, modules: dict[str, nn.Module]) -> bool:
    """A plain BatchNorm2d's call whose output one node reads."""
    return (
        isinstance(node, fx.Node)
        and node.op == "call_module"
        and type(modules.get(node.target)) is nn.BatchNorm2d
        and len(node.users) == 1
    )


def _residual_tail(
    add: object, modules: dict[str, nn.Module]
) -> tuple[fx.Node, fx.Node, list[fx.Node]] | None:
    """(the BN's call, the skip, the identities between them) when ``add`` is BN(x) + skip read
    by one node, else None."""
    ok = (
        isinstance(add, fx.Node)
        and add.op == "call_function"
        and add.target in _ADDS
        and len(add.args) == 2
        and not add.kwargs
        and len(add.users) == 1
    )
    if not ok:
        return None
    for arg, skip in (add.args, add.args[::-1]):
        bn, passed = _through_identities(arg, modules)
        if _lone_bn(bn, modules) and isinstance(skip, fx.Node):
            return bn, skip, passed
    return None


def _fuse_pairs(gm: fx.GraphModule, relu: bool = False) -> fx.GraphModule:
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        gate = modules.get(node.target) if node.op == "call_module" else None
        if not (_fusable(gate, relu) and len(node.args) == 1 and not node.kwargs):
            continue
        src, passed = _through_identities(node.args[0], modules)
        if _lone_bn(src, modules):
            modules[src.target] = BatchNormGate(modules[src.target], gate, node.target)  # fused once
            set_module(gm, src.target, modules[src.target])
            node.replace_all_uses_with(src)
            for dead in (node, *passed):
                gm.graph.erase_node(dead)
        elif tail := _residual_tail(src, modules):
            bn, skip, between = tail
            modules[bn.target] = BatchNormAddGate(modules[bn.target], gate, node.target)
            set_module(gm, bn.target, modules[bn.target])
            with gm.graph.inserting_before(src):  # where both the BN's input and the skip exist
                fused = gm.graph.call_module(bn.target, (bn.args[0], skip))
            node.replace_all_uses_with(fused)
            for dead in (node, *passed, src, *between, bn):
                gm.graph.erase_node(dead)
    gm.graph.lint()
    gm.recompile()
    return gm


def unfuse_bn(model: nn.Module) -> nn.Module:
    """``fuse_bn`` undone in place: each BatchNormGate back to a plain BatchNorm2d (the same tensors)
    and its gate's call back into the graph after it — what discretize and fold work on."""
    check_module(model)
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
        if isinstance(m, BatchNormAddGate):  # BN(x) + skip, then the gate
            with model.graph.inserting_before(node):
                bn = model.graph.call_module(node.target, (node.args[0],))
                add = model.graph.call_function(operator.add, (bn, node.args[1]))
                call = model.graph.call_module(m.gate_name, (add,))
            node.replace_all_uses_with(call)
            model.graph.erase_node(node)
            continue
        with model.graph.inserting_after(node):
            call = model.graph.call_module(m.gate_name, (node,))
        node.replace_all_uses_with(call, delete_user_cb=lambda user, c=call: user is not c)
    if fused:
        model.graph.lint()
        model.recompile()
    return model
