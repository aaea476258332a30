"""Linear conv chains: what may sit between two convs that fold merges (``passes_through``), the
one walk along a chain (``chain_neighbour``), and the two passes that work on chains in place of a
trained network — ``fold_padding`` (a chain's padding onto its first conv) and ``fold_units`` (the
gates whose joint removal makes a chain)."""

from __future__ import annotations

import copy

from torch import fx, nn

from alphakern.graph.bn_fusion import unfuse_bn
from alphakern.graph.fx import as_graph_module, trace
from alphakern.modules import AlphaGate, FixedSlopeReLU
from alphakern.ops.core.checks import check_module

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def traced_copy(model: nn.Module) -> fx.GraphModule:
    """An eval-mode copy of ``model`` traced with its gates as nodes, fused BN → gate pairs split
    (``model`` is untouched): what fold rewrites and measures."""
    root = unfuse_bn(copy.deepcopy(model)).eval()
    return trace(root)


def identity_module(m: nn.Module) -> bool:
    """Identity in eval mode: nn.Identity, dropout, a fixed gate whose slopes are all 1."""
    if isinstance(m, (nn.Identity, *_DROPOUT)):
        return True
    return isinstance(m, FixedSlopeReLU) and bool((m.slope == 1).all())


def conv_problem(c: nn.Conv2d) -> str | None:
    if c.padding_mode != "zeros" or isinstance(c.padding, str):
        return f"padding {c.padding!r} ({c.padding_mode}) is left alone"
    if c.dilation != (1, 1):
        return f"dilation {c.dilation} is left alone"
    return None


def passes_through(m: nn.Module) -> bool:
    """What a linear conv chain may hold between two convs: BatchNorm, identities, linear gates."""
    return identity_module(m) or isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm))


def chain_neighbour(gm: fx.GraphModule, node: fx.Node, *, forward: bool) -> fx.Node | None:
    """The conv a linear chain reaches from ``node``: backward, the conv whose output reaches
    ``node``'s first input; forward, the conv that reads ``node``'s output — through what
    ``passes_through`` only, every node on the way (and the conv itself, backward) read by nothing
    else. None if there is none."""
    if forward:
        n = node
        while len(n.users) == 1:
            (n,) = n.users
            if n.op != "call_module":
                return None
            m = gm.get_submodule(n.target)
            if isinstance(m, nn.Conv2d):
                return n
            if not passes_through(m):
                return None
        return None
    n = node.args[0] if node.args else None
    while isinstance(n, fx.Node) and n.op == "call_module" and len(n.users) == 1:
        m = gm.get_submodule(n.target)
        if isinstance(m, nn.Conv2d):
            return n
        if not passes_through(m):
            return None
        n = n.args[0]
    return None


def fold_padding(model: nn.Module) -> list[tuple[str, str]]:
    """Move the zero padding of each linear conv chain onto its first conv, in place (Kim et al.):
    conv1 → [BN] → [identities] → conv2 with padding p2 becomes conv1 padded p1 + p2·s1 and conv2
    unpadded. The output is the same size; the intermediate grows by a ring that is now computed
    from real (padded) inputs rather than set to zero after conv1's bias — a different network,
    to fine-tune, which ``fold`` then merges exactly. Call it on a network whose gates are exact
    (``discretize``, ``apply_keep``); BatchNorm in training mode sees the ring too. A conv whose
    output has another reader (a residual skip) keeps its padding: the reader would see the ring —
    so a chain that appears only once ``fold`` absorbed a block's skip stays refused. Returns the
    (conv1, conv2) names whose padding moved, last chain link first."""
    check_module(model)
    unfuse_bn(model)  # a fused BN → gate pair would hide its gate
    gm = as_graph_module(model)
    moved: list[tuple[str, str]] = []
    for n2 in reversed(list(gm.graph.nodes)):  # last link first: a chain's padding moves to its head
        c2 = gm.get_submodule(n2.target) if n2.op == "call_module" else None
        if not isinstance(c2, nn.Conv2d) or conv_problem(c2) or not any(c2.padding):
            continue
        n1 = chain_neighbour(gm, n2, forward=False)
        c1 = gm.get_submodule(n1.target) if n1 is not None else None
        if c1 is None or conv_problem(c1):
            continue
        c1.padding = tuple(p1 + p2 * s for p1, p2, s in zip(c1.padding, c2.padding, c1.stride, strict=True))
        c2.padding = (0,) * len(c2.padding)
        moved.append((n1.target, n2.target))
    return moved


def fold_units(model: nn.Module) -> list[tuple[str, ...]]:
    """The learnable gates whose removal lets ``fold`` merge convs, grouped into units: a gate that
    sits between two convs (through BatchNorm and identities, each read by nothing else) links
    them, and gates linked through a shared conv form one unit — MobileNetV2's expansion and
    depthwise gates, a ResNet block's inner gate alone. Made linear together, a unit's convs
    become one chain; a gate after a residual sum or before a pooling links nothing and is in no
    unit. Units and their gates in forward order, by module name."""
    check_module(model)
    gm = traced_copy(model)
    mods = dict(gm.named_modules())
    gates = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(mods[n.target], AlphaGate)]
    links = {g.target: (chain_neighbour(gm, g, forward=False), chain_neighbour(gm, g, forward=True))
             for g in gates}  # fmt: skip
    linking = [t for t, (b, a) in links.items() if b is not None and a is not None]
    unit_of = {t: t for t in linking}  # each gate's unit, named by its first gate
    first_after = {links[t][0]: t for t in linking}  # the gate that follows a conv
    for t in linking:  # forward order: a gate joins the unit of the gate before its conv
        nxt = first_after.get(links[t][1])
        if nxt is not None:
            unit_of[nxt] = unit_of[t]
    units: dict[str, list[str]] = {}
    for t in linking:
        units.setdefault(unit_of[t], []).append(t)
    return [tuple(u) for u in units.values()]
