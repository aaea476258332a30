"""``fold``: turn what linearisation made linear into fewer, merged layers — exactly.

A gate that learned "linear" (``discretize`` makes it an ``nn.Identity``) leaves two convolutions
with nothing non-linear between them, and two such convolutions are one. ``fold`` rewrites a copy of
the model's torch.fx graph (eval mode):

1. identities go: ``nn.Identity``, eval-mode dropout, a ``FixedSlopeReLU`` whose slopes are all 1,
   reshapes that keep the shape;
2. each BatchNorm (eval statistics) is folded into the conv or linear before it
   (``torch.nn.utils.fusion``);
3. conv → conv becomes one conv: kernel k1 + (k2 − 1)·s1, stride s1·s2, the kernels composed with
   ``conv_transpose2d``, the first bias pushed through the second conv; grouped convs are composed
   as their dense block-diagonal equivalents and stay grouped when both have the same groups
   (depthwise ∘ depthwise is depthwise; pointwise → depthwise → pointwise becomes one dense conv);
4. a conv whose output is added to its own input (identity skip) or to a 1×1 conv of it (the
   projection shortcut) absorbs the skip, RepVGG-style: a centred identity kernel, or the 1×1
   kernel padded into the k×k one;
5. linear → linear becomes one linear.

Nothing is merged across anything else (a kept ReLU, a pooling, an add that cannot be absorbed).
**Exactness**: every merge is exact in real arithmetic but one — a second conv with zero padding: the
original pads the *intermediate* (after the first bias), the merged conv pads the input, so the
outer ring differs. ``exact=True`` refuses such a merge and reports it; ``exact=False`` makes it and
the report gives the measured max error on ``example_input``.

**Policy**: a merge can make a layer bigger (two 3×3 64→64 convs: 18·64² MACs per pixel; one 5×5:
25·64²). ``"flops"`` keeps merges that do not raise MACs, ``"latency"`` those that time faster on
``device`` at the example's shapes (a cached table), ``"all"`` every mergeable one.
"""

from __future__ import annotations

import copy
import operator
import statistics
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from alphakern.convert import GateTracer, unfuse_bn
from alphakern.modules import AlphaGate, FixedSlopeReLU

POLICIES = ("latency", "flops", "all")
__all__ = ["POLICIES", "FoldInfo", "fold", "fold_padding", "fold_report", "fold_units"]
_ADDS = {operator.add, operator.iadd, torch.add}
_RESHAPES_F = {torch.flatten, torch.reshape}
_RESHAPES_M = {"flatten", "view", "reshape"}
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


@dataclass
class FoldInfo:
    """What ``fold`` did: ``merged`` (nodes, what), ``not_merged`` (nodes, why), and with
    ``exact=False`` the max |folded − original| measured on the example input."""

    merged: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    not_merged: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    max_error: float | None = None


def _trace(model: nn.Module) -> fx.GraphModule:
    root = unfuse_bn(copy.deepcopy(model)).eval()  # a fused BN → gate pair: BN and gate again
    return fx.GraphModule(root, GateTracer().trace(root))


def fold(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    exact: bool = True,
    policy: str = "latency",
    device: torch.device | str | None = None,
) -> fx.GraphModule:
    """A new eval-mode model (``model`` is untouched) with BatchNorms folded and linear chains merged
    (see the module docstring); ``.fold_info`` (a FoldInfo) says what was merged and what was not,
    and why. ``device``: where ``policy="latency"`` times the candidates (default: the input's)."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {list(POLICIES)}, got {policy!r}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a tensor, got {type(example_input).__name__}")
    gm = _trace(model)
    folder = _Folder(gm, example_input, exact, policy, device)
    folder.run()
    gm.fold_info = folder.info
    if not exact:
        with torch.no_grad():
            ref, out = copy.deepcopy(model).eval()(example_input), gm(example_input)
        folder.info.max_error = float((out.double() - ref.double()).abs().max()) if ref.numel() else 0.0
    return gm


class _Folder:
    def __init__(self, gm: fx.GraphModule, x: torch.Tensor, exact: bool, policy: str, device) -> None:
        self.gm, self.x, self.exact, self.policy = gm, x, exact, policy
        self.device = torch.device(device) if device is not None else x.device
        self.info = FoldInfo()
        self.latency_cache: dict[tuple, float] = {}
        self.count = 0

    # -- graph helpers -------------------------------------------------------------------------
    def module(self, node: object, kind: type | tuple[type, ...]) -> nn.Module | None:
        if isinstance(node, fx.Node) and node.op == "call_module":
            m = self.gm.get_submodule(node.target)
            return m if isinstance(m, kind) else None
        return None

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        return tuple(node.meta["tensor_meta"].shape)

    def propagate(self) -> None:
        self.gm.recompile()
        with torch.no_grad():
            ShapeProp(self.gm).propagate(self.x)

    def replace(self, gone: list[fx.Node], new_module: nn.Module, source: fx.Node, what: str) -> fx.Node:
        """A call of ``new_module`` (a fresh submodule) on ``source`` takes the place of the nodes
        ``gone`` (the last one's output; all of them are erased)."""
        self.count += 1
        name = f"folded_{self.count}"
        self.gm.add_submodule(name, new_module)
        last = gone[-1]
        with self.gm.graph.inserting_before(last):
            new = self.gm.graph.call_module(name, (source,))
        new.meta = dict(last.meta)
        last.replace_all_uses_with(new)
        for node in reversed(gone):
            self.gm.graph.erase_node(node)
        self.info.merged.append((tuple(n.name for n in gone), f"{what} -> {name}"))
        return new

    def run(self) -> None:
        self.propagate()
        self.remove_identities()
        self.fold_batchnorms()
        # every merge removes at least one node: more rounds than nodes is a bug, not a big model
        for _ in range(len(self.gm.graph.nodes) + 1):
            self.propagate()
            if not (self.merge_convs() or self.absorb_skips() or self.merge_linears()):
                break
        else:
            raise RuntimeError("fold: the merges did not converge (a merge that removes no node)")
        self.gm.graph.eliminate_dead_code()
        self.gm.delete_all_unused_submodules()
        self.gm.graph.lint()
        self.gm.recompile()

    # -- 1. identities -------------------------------------------------------------------------
    def is_identity(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            return _identity_module(self.gm.get_submodule(node.target))
        keeps_shape = (
            node.args
            and isinstance(node.args[0], fx.Node)
            and "tensor_meta" in node.args[0].meta
            and "tensor_meta" in node.meta
            and self.shape(node.args[0]) == self.shape(node)
        )
        if node.op == "call_function" and node.target in _RESHAPES_F:
            return bool(keeps_shape)
        if node.op == "call_method" and node.target in _RESHAPES_M:
            return bool(keeps_shape)
        if node.op == "call_function" and node.target is F.dropout:
            return not node.kwargs.get("training", True) or (len(node.args) > 2 and not node.args[2])
        return False

    def remove_identities(self) -> None:
        for node in list(self.gm.graph.nodes):
            if node.op in ("call_module", "call_function", "call_method") and self.is_identity(node):
                node.replace_all_uses_with(node.args[0])
                self.gm.graph.erase_node(node)

    # -- 2. BatchNorm into the layer before it -------------------------------------------------
    def fold_batchnorms(self) -> None:
        for node in list(self.gm.graph.nodes):
            bn = self.module(node, (nn.BatchNorm1d, nn.BatchNorm2d))
            if bn is None:
                continue
            src = node.args[0]
            conv, lin = self.module(src, nn.Conv2d), self.module(src, nn.Linear)
            names = (getattr(src, "name", "?"), node.name)
            if (conv is None and lin is None) or len(src.users) != 1:
                self.info.not_merged.append((names, "batch norm not right after a conv/linear of its own"))
                continue
            if not bn.track_running_stats or bn.running_mean is None:
                self.info.not_merged.append((names, "batch norm without running statistics"))
                continue
            if lin is not None and (bn.num_features != lin.out_features or len(self.shape(src)) != 2):
                self.info.not_merged.append((names, "batch norm over other features than the linear's"))
                continue
            fused = fuse_conv_bn_eval(conv, bn) if conv is not None else fuse_linear_bn_eval(lin, bn)
            self.replace([src, node], fused, src.args[0], "batch norm folded")

    # -- 3. conv -> conv -----------------------------------------------------------------------
    def conv_problem(self, c: nn.Conv2d) -> str | None:
        return _conv_problem(c)

    def merge_convs(self) -> bool:
        for n2 in list(self.gm.graph.nodes):
            c2 = self.module(n2, nn.Conv2d)
            n1 = n2.args[0] if c2 is not None else None
            c1 = self.module(n1, nn.Conv2d)
            if c1 is None or len(n1.users) != 1:
                continue
            names = (n1.name, n2.name)
            problem = self.conv_problem(c1) or self.conv_problem(c2)
            if problem is None and self.exact and any(c2.padding):
                problem = (
                    "the second conv's zero padding pads the first conv's output (after its bias): "
                    "not exact at the border (exact=False merges it)"
                )
            if problem is not None:
                self._note(names, problem)
                continue
            merged = compose_convs(c1, c2)
            if self.shape(n2)[2:] != _conv_out(merged, self.shape(n1.args[0])[2:]):
                self._note(names, "the merged conv's output size differs (ragged strides)")
                continue
            why_not = self.rejected(merged, [(c1, n1), (c2, n2)], self.shape(n1.args[0]))
            if why_not:
                self._note(names, why_not)
                continue
            self.replace([n1, n2], merged, n1.args[0], "convs merged")
            return True
        return False

    def _note(self, names: tuple[str, ...], why: str) -> None:
        if (names, why) not in self.info.not_merged:
            self.info.not_merged.append((names, why))

    # -- 4. residual skips ---------------------------------------------------------------------
    def absorb_skips(self) -> bool:
        for node in list(self.gm.graph.nodes):
            is_add = (node.op == "call_function" and node.target in _ADDS) or (
                node.op == "call_method" and node.target in ("add", "add_")
            )
            if not is_add or len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
                continue
            for body, skip in (node.args, node.args[::-1]):
                conv = self.module(body, nn.Conv2d)
                if conv is None or len(body.users) != 1 or self.conv_problem(conv):
                    continue
                x = body.args[0]
                short = self.module(skip, nn.Conv2d)
                if skip is x:
                    merged, what = with_identity(conv), "identity skip absorbed"
                elif short is not None and skip.args[0] is x and len(skip.users) == 1:
                    merged, what = with_shortcut(conv, short), "1x1 shortcut absorbed"
                else:
                    continue
                if merged is None:
                    self._note(
                        (body.name, node.name), "the skip does not fit the conv (stride, padding, size)"
                    )
                    continue
                gone = [body, skip, node] if skip is not x else [body, node]
                self.replace(gone, merged, x, what)
                return True
        return False

    # -- 5. linear -> linear -------------------------------------------------------------------
    def merge_linears(self) -> bool:
        for n2 in list(self.gm.graph.nodes):
            l2 = self.module(n2, nn.Linear)
            n1 = n2.args[0] if l2 is not None else None
            l1 = self.module(n1, nn.Linear)
            if l1 is None or len(n1.users) != 1:
                continue
            merged = compose_linears(l1, l2)
            rows = int(torch.tensor(self.shape(n1)[:-1]).prod())
            macs_before = rows * (l1.in_features * l1.out_features + l2.in_features * l2.out_features)
            # linears: the MAC rule under "latency" too (a product of two thin matrices is rarely
            # slower than one matrix of the same MACs)
            if self.policy != "all" and rows * l1.in_features * l2.out_features > macs_before:
                self._note((n1.name, n2.name), "merging would raise MACs")
                continue
            self.replace([n1, n2], merged, n1.args[0], "linears merged")
            return True
        return False

    # -- policy --------------------------------------------------------------------------------
    def rejected(self, merged: nn.Conv2d, parts: list[tuple[nn.Conv2d, fx.Node]], in_shape) -> str | None:
        if self.policy == "all":
            return None
        before = sum(_conv_macs(c, self.shape(n)) for c, n in parts)
        after = _conv_macs(merged, self.shape(parts[-1][1]))
        if self.policy == "flops":
            return f"merging would raise MACs ({before} -> {after})" if after > before else None
        t_before = self.latency([c for c, _ in parts], in_shape)
        t_after = self.latency([merged], in_shape)
        if t_after >= t_before:
            return f"not faster on {self.device.type} ({t_before * 1e3:.3f} -> {t_after * 1e3:.3f} ms)"
        return None

    def latency(self, convs: list[nn.Conv2d], in_shape: tuple[int, ...]) -> float:
        """Median seconds of the convs in sequence on the device, cached per (convs, shape)."""
        key = (tuple(_conv_key(c) for c in convs), tuple(in_shape), self.device.type)
        if key not in self.latency_cache:
            seq = nn.Sequential(*(copy.deepcopy(c) for c in convs)).to(self.device).eval()
            x = torch.randn(in_shape, device=self.device, dtype=convs[0].weight.dtype)
            self.latency_cache[key] = _median_seconds(lambda: seq(x), self.device)
        return self.latency_cache[key]


def _identity_module(m: nn.Module) -> bool:
    """Identity in eval mode: nn.Identity, dropout, a fixed gate whose slopes are all 1."""
    if isinstance(m, (nn.Identity, *_DROPOUT)):
        return True
    return isinstance(m, FixedSlopeReLU) and bool((m.slope == 1).all())


def _conv_problem(c: nn.Conv2d) -> str | None:
    if c.padding_mode != "zeros" or isinstance(c.padding, str):
        return f"padding {c.padding!r} ({c.padding_mode}) is left alone"
    if c.dilation != (1, 1):
        return f"dilation {c.dilation} is left alone"
    return None


def _passes_through(m: nn.Module) -> bool:
    """What a linear conv chain may hold between two convs: BatchNorm, identities, linear gates."""
    return _identity_module(m) or isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm))


def _conv_before(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """The conv whose output reaches ``node``'s first input through what ``_passes_through``
    only, it and every node on the way read by nothing else; None if there is none."""
    n = node.args[0] if node.args else None
    while isinstance(n, fx.Node) and n.op == "call_module" and len(n.users) == 1:
        m = gm.get_submodule(n.target)
        if isinstance(m, nn.Conv2d):
            return n
        if not _passes_through(m):
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
    unfuse_bn(model)  # a fused BN → gate pair would hide its gate
    gm = model if isinstance(model, fx.GraphModule) else fx.GraphModule(model, GateTracer().trace(model))
    moved: list[tuple[str, str]] = []
    for n2 in reversed(list(gm.graph.nodes)):  # last link first: a chain's padding moves to its head
        c2 = gm.get_submodule(n2.target) if n2.op == "call_module" else None
        if not isinstance(c2, nn.Conv2d) or _conv_problem(c2) or not any(c2.padding):
            continue
        n1 = _conv_before(gm, n2)
        c1 = gm.get_submodule(n1.target) if n1 is not None else None
        if c1 is None or _conv_problem(c1):
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
    gm = _trace(model)
    mods = dict(gm.named_modules())

    def conv_after(node: fx.Node) -> fx.Node | None:
        n = node
        while len(n.users) == 1:
            (n,) = n.users
            if n.op != "call_module":
                return None
            m = mods[n.target]
            if isinstance(m, nn.Conv2d):
                return n
            if not _passes_through(m):
                return None
        return None

    gates = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(mods[n.target], AlphaGate)]
    links = {g.target: (_conv_before(gm, g), conv_after(g)) for g in gates}
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


def _conv_key(c: nn.Conv2d) -> tuple:
    return (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.groups, c.bias is not None)


def _conv_out(c: nn.Conv2d, hw: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(
        (h + 2 * p - k) // s + 1 for h, p, k, s in zip(hw, c.padding, c.kernel_size, c.stride, strict=True)
    )


def _conv_macs(c: nn.Conv2d, out_shape: tuple[int, ...]) -> int:
    n_out = int(torch.tensor(out_shape).prod())
    return n_out * (c.in_channels // c.groups) * c.kernel_size[0] * c.kernel_size[1]


def _median_seconds(fn, device: torch.device, rounds: int = 7) -> float:
    with torch.inference_mode():
        fn()
        times = []
        for _ in range(rounds):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


# -- the merges, as functions of modules (float64 math, the result in the first's dtype) ---------
def dense_weight(c: nn.Conv2d) -> torch.Tensor:
    """The conv's weight as the dense block-diagonal [out, in, kh, kw] it computes, in float64."""
    w = c.weight.detach().double()
    g = c.groups
    if g == 1:
        return w
    out, ipg = w.shape[:2]
    opg = out // g
    dense = w.new_zeros(out, ipg * g, *w.shape[2:])
    for j in range(g):
        dense[j * opg : (j + 1) * opg, j * ipg : (j + 1) * ipg] = w[j * opg : (j + 1) * opg]
    return dense


def _grouped(dense: torch.Tensor, groups: int) -> torch.Tensor:
    out, cin = dense.shape[:2]
    opg, ipg = out // groups, cin // groups
    return torch.cat([dense[j * opg : (j + 1) * opg, j * ipg : (j + 1) * ipg] for j in range(groups)])


def _bias(c: nn.Conv2d | nn.Linear) -> torch.Tensor:
    n = c.out_channels if isinstance(c, nn.Conv2d) else c.out_features
    return c.bias.detach().double() if c.bias is not None else c.weight.new_zeros(n, dtype=torch.float64)


def _new_conv(like: nn.Conv2d, w: torch.Tensor, b: torch.Tensor, stride, padding, groups: int) -> nn.Conv2d:
    out, ipg, kh, kw = w.shape
    conv = nn.Conv2d(ipg * groups, out, (kh, kw), stride=stride, padding=padding, groups=groups, bias=True)
    conv = conv.to(device=like.weight.device, dtype=like.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
    return conv.eval()


def compose_convs(c1: nn.Conv2d, c2: nn.Conv2d) -> nn.Conv2d:
    """One conv computing c2(c1(x)) (exactly, but at the border when c2 pads; see ``fold``)."""
    w1, w2 = dense_weight(c1), dense_weight(c2)
    s1, s2 = c1.stride, c2.stride
    # W[o, i] = Σ_m W2[o, m] ⋆ W1[m, i] with W1 dilated by the first stride: a transposed conv of
    # W2 (as a batch of o images with m channels) by W1 (m in, i out channels)
    w = F.conv_transpose2d(w2, w1, stride=s1)
    b = _bias(c2) + w2.sum((2, 3)) @ _bias(c1)
    groups = c1.groups if c1.groups == c2.groups else 1
    stride = (s1[0] * s2[0], s1[1] * s2[1])
    padding = tuple(p1 + p2 * s for p1, p2, s in zip(c1.padding, c2.padding, s1, strict=True))
    return _new_conv(c1, _grouped(w, groups) if groups > 1 else w, b, stride, padding, groups)


def _same_padding(c: nn.Conv2d) -> bool:
    return all(k % 2 == 1 and p == k // 2 for k, p in zip(c.kernel_size, c.padding, strict=True))


def with_identity(c: nn.Conv2d) -> nn.Conv2d | None:
    """c(x) + x as one conv: a centred identity kernel added (stride 1, odd k, 'same' padding)."""
    if c.in_channels != c.out_channels or c.stride != (1, 1) or not _same_padding(c):
        return None
    w = dense_weight(c).clone()
    kh, kw = c.kernel_size
    w[:, :, kh // 2, kw // 2] += torch.eye(c.out_channels, dtype=w.dtype, device=w.device)
    groups = c.groups
    return _new_conv(c, _grouped(w, groups) if groups > 1 else w, _bias(c), c.stride, c.padding, groups)


def with_shortcut(c: nn.Conv2d, s: nn.Conv2d) -> nn.Conv2d | None:
    """c(x) + s(x) for a 1×1 conv s of the same stride: s's kernel padded into c's centre."""
    if s.kernel_size != (1, 1) or s.padding != (0, 0) or s.stride != c.stride or not _same_padding(c):
        return None
    if s.in_channels != c.in_channels or s.out_channels != c.out_channels or s.padding_mode != "zeros":
        return None
    w = dense_weight(c).clone()
    kh, kw = c.kernel_size
    w[:, :, kh // 2, kw // 2] += dense_weight(s)[:, :, 0, 0]
    return _new_conv(c, w, _bias(c) + _bias(s), c.stride, c.padding, 1)


def compose_linears(l1: nn.Linear, l2: nn.Linear) -> nn.Linear:
    """One linear computing l2(l1(x))."""
    w1, w2 = l1.weight.detach().double(), l2.weight.detach().double()
    lin = nn.Linear(l1.in_features, l2.out_features).to(device=l1.weight.device, dtype=l1.weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(w2 @ w1)
        lin.bias.copy_(_bias(l2) + w2 @ _bias(l1))
    return lin.eval()


# -- the report ---------------------------------------------------------------------------------
def _depth(model: nn.Module) -> int:
    """Convs and linears on the longest path through the model's graph."""
    gm = model if isinstance(model, fx.GraphModule) else _trace(model)
    best: dict[fx.Node, int] = {}
    for node in gm.graph.nodes:
        inputs = [best.get(a, 0) for a in node.all_input_nodes]
        here = 0
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), (nn.Conv2d, nn.Linear)):
            here = 1
        best[node] = max(inputs, default=0) + here
    return max(best.values(), default=0)


def _macs(model: nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def fold_report(before: nn.Module, after: nn.Module, x: torch.Tensor, rounds: int = 20) -> dict:
    """Depth (convs/linears on the longest path), parameters, MACs (torch's FlopCounterMode) and
    median latency (eval, inference mode, interleaved rounds on x's device) of both models."""
    models = {"before": before.eval(), "after": after.eval()}
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            m(x)
        for _ in range(rounds):
            for k, m in models.items():
                times[k].append(_median_seconds(lambda m=m: m(x), x.device, rounds=1))
    out = {
        k: dict(
            depth=_depth(m),
            params=sum(p.numel() for p in m.parameters()),
            macs=_macs(m, x),
            latency_ms=1e3 * statistics.median(times[k]),
        )
        for k, m in models.items()
    }
    out["speedup"] = out["before"]["latency_ms"] / out["after"]["latency_ms"]
    return out
