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
5. linear → linear becomes one linear;
6. a transformer MLP, Linear → per-feature gate of 0/1 weights → Linear, becomes its narrow MLP
   plus a linear bypass, or the concatenated form (``folding.mlp``), as the policy chooses.

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
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from alphakern.folding.algebra import compose_convs, compose_linears, conv_out, with_identity, with_shortcut
from alphakern.folding.chains import conv_problem, identity_module, traced_copy
from alphakern.folding.mlp import SWIGLU, choose_form, concat_modules, mlp_gate, split_modules
from alphakern.folding.policy import Policy
from alphakern.folding.untraced import fold_mlp_modules
from alphakern.modules import AlphaGate, FixedGate, FixedSlopeReLU
from alphakern.ops.core.checks import check_module, check_tensor

_ADDS = {operator.add, operator.iadd, torch.add}
_MULS = {operator.mul, operator.imul, torch.mul}
_RESHAPES_F = {torch.flatten, torch.reshape}
_RESHAPES_M = {"flatten", "view", "reshape"}


@dataclass
class FoldInfo:
    """What ``fold`` did: ``merged`` (nodes, what), ``not_merged`` (nodes, why), and with
    ``exact=False`` the max |folded − original| measured on the example input."""

    merged: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    not_merged: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    max_error: float | None = None
    # per MLP folded or kept: gate, features, kept, form (None: kept as it was), MACs per token
    # before/after, and under "latency" the seconds of each form
    mlps: list[dict] = field(default_factory=list)


class FoldGraph:
    """The graph being folded and what every pass needs of it: modules by node, shapes (after
    ``propagate``), replacing nodes by a fresh module's call, and the record (``info``)."""

    def __init__(self, gm: fx.GraphModule, x: torch.Tensor) -> None:
        self.gm, self.x = gm, x
        self.info = FoldInfo()
        self.count = 0

    def module(self, node: object, kind: type | tuple[type, ...]) -> nn.Module | None:
        if isinstance(node, fx.Node) and node.op == "call_module":
            m = self.gm.get_submodule(node.target)
            return m if isinstance(m, kind) else None
        return None

    def pairs(self, cls: type[nn.Module]) -> Iterator[tuple[fx.Node, nn.Module, fx.Node, nn.Module]]:
        """(n1, m1, n2, m2) for each call n2 of a ``cls`` module whose input is a call n1 of another
        that nothing else reads: the chains of two a merge can make one (graph order)."""
        for n2 in list(self.gm.graph.nodes):
            m2 = self.module(n2, cls)
            n1 = n2.args[0] if m2 is not None else None
            m1 = self.module(n1, cls)
            if m1 is not None and len(n1.users) == 1:
                yield n1, m1, n2, m2

    def is_tensor(self, node: fx.Node) -> bool:
        """Did shape propagation see one tensor come out of ``node`` (not a tuple, a size, ...)?"""
        return hasattr(node.meta.get("tensor_meta"), "shape")

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
        with self.gm.graph.inserting_before(gone[0]):  # before every reader, after the source
            new = self.gm.graph.call_module(name, (source,))
        new.meta = dict(last.meta)
        last.replace_all_uses_with(new)
        for node in reversed(gone):
            self.gm.graph.erase_node(node)
        self.info.merged.append((tuple(n.name for n in gone), f"{what} -> {name}"))
        return new

    def note(self, names: tuple[str, ...], why: str) -> None:
        if (names, why) not in self.info.not_merged:
            self.info.not_merged.append((names, why))


def fold(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    exact: bool = True,
    policy: str = "latency",
    device: torch.device | str | None = None,
) -> nn.Module:
    """A new eval-mode model (``model`` is untouched) with BatchNorms folded and linear chains merged
    (see the module docstring): a GraphModule, or for a model fx cannot trace a copy whose MLPs
    were folded module by module (``folding.untraced``); ``.fold_info`` (a FoldInfo) says what was
    merged and what was not, and why. ``device``: where ``policy="latency"`` times the candidates
    (default: the input's)."""
    check_module(model)
    check_tensor(example_input)
    Policy.check(policy)
    rule = Policy(policy, torch.device(device) if device is not None else example_input.device)
    try:
        traced = traced_copy(model)
    except Exception as e:  # fx raises many kinds (TraceError, TypeError, control flow on proxies...)
        return _fold_untraced(model, example_input, rule, e)
    g = FoldGraph(traced, example_input)
    g.propagate()
    remove_identities(g)
    fold_batchnorms(g)
    fold_mlps(g, rule)
    # every merge removes at least one node: more rounds than nodes is a bug, not a big model
    for _ in range(len(g.gm.graph.nodes) + 1):
        g.propagate()
        if not (merge_convs(g, exact, rule) or absorb_skips(g) or merge_linears(g, rule)):
            break
    else:
        raise RuntimeError("fold: the merges did not converge (a merge that removes no node)")
    gm = g.gm
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    gm.fold_info = g.info
    if not exact:
        with torch.no_grad():
            ref, out = copy.deepcopy(model).eval()(example_input), gm(example_input)
        g.info.max_error = float((out.double() - ref.double()).abs().max()) if ref.numel() else 0.0
    return gm


def _fold_untraced(model: nn.Module, x: torch.Tensor, rule: Policy, error: Exception) -> nn.Module:
    out = copy.deepcopy(model).eval()
    merged, not_merged, mlps = fold_mlp_modules(out, x, rule)
    why = (
        f"torch.fx could not trace the model ({type(error).__name__}: {str(error).splitlines()[0][:200]}): "
        "only its MLPs and linear → linear chains were folded, module by module"
    )
    out.fold_info = FoldInfo(merged, [((), why), *not_merged], mlps=mlps)
    return out


# -- 1. identities -----------------------------------------------------------------------------
def _is_identity(g: FoldGraph, node: fx.Node) -> bool:
    if node.op == "call_module":
        return identity_module(g.gm.get_submodule(node.target))
    keeps_shape = (
        node.args
        and isinstance(node.args[0], fx.Node)
        and g.is_tensor(node.args[0])
        and g.is_tensor(node)
        and g.shape(node.args[0]) == g.shape(node)
    )
    if node.op == "call_function" and node.target in _RESHAPES_F:
        return bool(keeps_shape)
    if node.op == "call_method" and node.target in _RESHAPES_M:
        return bool(keeps_shape)
    if node.op == "call_function" and node.target is F.dropout:
        return not node.kwargs.get("training", True) or (len(node.args) > 2 and not node.args[2])
    return False


def remove_identities(g: FoldGraph) -> None:
    """nn.Identity, eval-mode dropout, all-linear fixed gates and shape-keeping reshapes go."""
    for node in list(g.gm.graph.nodes):
        if node.op in ("call_module", "call_function", "call_method") and _is_identity(g, node):
            node.replace_all_uses_with(node.args[0])
            g.gm.graph.erase_node(node)


# -- 2. BatchNorm into the layer before it -----------------------------------------------------
def fold_batchnorms(g: FoldGraph) -> None:
    """Each BatchNorm (eval statistics) into the conv or linear before it, when that layer's
    output has no other reader — BatchNorm modules and functional ``F.batch_norm`` calls on a
    module's statistics (timm's ``BatchNormAct2d`` reaches fx as one); every other BatchNorm is
    named in ``not_merged`` with the reason."""
    for node in list(g.gm.graph.nodes):
        bn = g.module(node, (nn.BatchNorm1d, nn.BatchNorm2d))
        if bn is None and node.op == "call_function" and node.target is F.batch_norm:
            bn = _functional_bn(g, node)
            if isinstance(bn, str):
                g.note((node.name,), bn)
                continue
        if bn is None:
            continue
        src = node.args[0]
        conv, lin = g.module(src, nn.Conv2d), g.module(src, nn.Linear)
        names = (getattr(src, "name", "?"), node.name)
        if (conv is None and lin is None) or [u for u in src.users if not _reads_metadata(u)] != [node]:
            g.note(names, "batch norm not right after a conv/linear of its own")
            continue
        if not bn.track_running_stats or bn.running_mean is None:
            g.note(names, "batch norm without running statistics")
            continue
        if lin is not None and (bn.num_features != lin.out_features or len(g.shape(src)) != 2):
            g.note(names, "batch norm over other features than the linear's")
            continue
        fused = fuse_conv_bn_eval(conv, bn) if conv is not None else fuse_linear_bn_eval(lin, bn)
        for user in [u for u in src.users if u is not node]:  # x.ndim, x.shape: the BN's output has them
            user.replace_input_with(src, node)
        g.replace([src, node], fused, src.args[0], "batch norm folded")


_METADATA = {"ndim", "shape", "dtype", "device"}


def _reads_metadata(node: fx.Node) -> bool:
    """Does ``node`` read only a tensor's metadata (``x.ndim``, ``x.shape``, ``x.size()``, ...)?"""
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) > 1 and node.args[1] in _METADATA
    return node.op == "call_method" and node.target in ("size", "dim")


_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")


def _functional_bn(g: FoldGraph, node: fx.Node) -> nn.BatchNorm2d | str:
    """An eval-mode BatchNorm2d holding the statistics and affine tensors an ``F.batch_norm`` call
    reads from the model (copies), or why it cannot be folded."""
    args = dict(zip(_BN_ARGS, node.args, strict=False))
    args.update(node.kwargs)
    if args.get("training", False):
        return "a functional batch norm in training mode (batch statistics)"
    tensors = {}
    for key in ("running_mean", "running_var", "weight", "bias"):
        a = args.get(key)
        if a is None and key in ("weight", "bias"):
            continue
        if not (isinstance(a, fx.Node) and a.op == "get_attr"):
            return f"a functional batch norm whose {key} is not a tensor of the model"
        tensors[key] = _attr(g.gm, a.target)
    mean = tensors["running_mean"]
    bn = nn.BatchNorm2d(mean.numel(), eps=float(args.get("eps", 1e-5)))  # weight 1, bias 0 unless given
    bn = bn.to(device=mean.device, dtype=mean.dtype).eval()
    with torch.no_grad():
        for key, t in tensors.items():
            getattr(bn, key).copy_(t)
    return bn


def _attr(root: nn.Module, target: str) -> torch.Tensor:
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


# -- 3. conv -> conv ---------------------------------------------------------------------------
def merge_convs(g: FoldGraph, exact: bool, policy: Policy) -> bool:
    """The first conv → conv pair the policy keeps becomes one conv; True if one did."""
    for n1, c1, n2, c2 in g.pairs(nn.Conv2d):
        names = (n1.name, n2.name)
        problem = conv_problem(c1) or conv_problem(c2)
        if problem is None and exact and any(c2.padding):
            problem = (
                "the second conv's zero padding pads the first conv's output (after its bias): "
                "not exact at the border (exact=False merges it)"
            )
        if problem is not None:
            g.note(names, problem)
            continue
        merged = compose_convs(c1, c2)
        if g.shape(n2)[2:] != conv_out(merged, g.shape(n1.args[0])[2:]):
            g.note(names, "the merged conv's output size differs (ragged strides)")
            continue
        why_not = policy.rejected(merged, [(c1, g.shape(n1)), (c2, g.shape(n2))], g.shape(n1.args[0]))
        if why_not:
            g.note(names, why_not)
            continue
        g.replace([n1, n2], merged, n1.args[0], "convs merged")
        return True
    return False


# -- 4. residual skips -------------------------------------------------------------------------
def absorb_skips(g: FoldGraph) -> bool:
    """The first conv whose output is added to its own input (identity skip) or to a 1×1 conv of
    it (projection shortcut) absorbs the skip; True if one did."""
    for node in list(g.gm.graph.nodes):
        is_add = (node.op == "call_function" and node.target in _ADDS) or (
            node.op == "call_method" and node.target in ("add", "add_")
        )
        if not is_add or len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
            continue
        for body, skip in (node.args, node.args[::-1]):
            conv = g.module(body, nn.Conv2d)
            if conv is None or len(body.users) != 1 or conv_problem(conv):
                continue
            x = body.args[0]
            short = g.module(skip, nn.Conv2d)
            if skip is x:
                merged, what = with_identity(conv), "identity skip absorbed"
            elif short is not None and skip.args[0] is x and len(skip.users) == 1:
                merged, what = with_shortcut(conv, short), "1x1 shortcut absorbed"
            else:
                continue
            if merged is None:
                g.note((body.name, node.name), "the skip does not fit the conv (stride, padding, size)")
                continue
            gone = [body, skip, node] if skip is not x else [body, node]
            g.replace(gone, merged, x, what)
            return True
    return False


# -- 5. linear -> linear -----------------------------------------------------------------------
def merge_linears(g: FoldGraph, policy: Policy) -> bool:
    """The first linear → linear pair that does not raise MACs (any, under "all") becomes one."""
    for n1, l1, n2, l2 in g.pairs(nn.Linear):
        why = policy.linears_rejected(l1.in_features, l1.out_features, l2.out_features)
        if why is not None:
            g.note((n1.name, n2.name), why)
            continue
        g.replace([n1, n2], compose_linears(l1, l2), n1.args[0], "linears merged")
        return True
    return False


# -- 6. transformer MLPs -----------------------------------------------------------------------
def _is_mul(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _MULS) or (
        node.op == "call_method" and node.target in ("mul", "mul_")
    )


def fold_mlps(g: FoldGraph, policy: Policy) -> None:
    """Each Linear → gate → Linear whose gate is per feature with weights 0/1 becomes the form the
    policy keeps (``folding.mlp``); other gates between two linears are named with the reason."""
    for gate_node in list(g.gm.graph.nodes):
        gate = g.module(gate_node, (AlphaGate, FixedGate, FixedSlopeReLU))
        n1 = gate_node.args[0] if gate is not None and gate_node.args else None
        l1 = g.module(n1, nn.Linear)
        if l1 is None:
            continue
        users = list(gate_node.users)
        n2 = users[0] if len(users) == 1 else None
        l2 = g.module(n2, nn.Linear)
        names = (n1.name, gate_node.name) + ((n2.name,) if l2 is not None else ())
        if l2 is None:
            if any(_is_mul(u) for u in users):
                g.note(names, SWIGLU)
            continue
        found = mlp_gate(gate)
        if len(n1.users) != 1:
            found = "the first linear's output is read elsewhere too"
        if isinstance(found, str):
            g.note(names, found)
            continue
        keep, act = found
        rows = int(torch.tensor(g.shape(n1)[:-1]).prod())
        form, record = choose_form(policy, l1, keep, act, l2, rows)
        g.info.mlps.append({"gate": str(gate_node.target), "form": form, **record})
        if form is None:
            g.note(names, f"the policy keeps the MLP ({policy.name})")
            continue
        what = f"MLP folded ({form}: {record['kept']} of {record['features']} features kept)"
        folded = (
            split_modules(l1, keep, act, l2)
            if form == "split"
            else nn.Sequential(*concat_modules(l1, keep, act, l2))
        )
        g.replace([n1, gate_node, n2], folded, n1.args[0], what)
