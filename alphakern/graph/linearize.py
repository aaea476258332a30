"""Give every activation of any network its own learnable gate (``linearize``).

``linearize`` traces the model with torch.fx (``symbolic_trace``) and rewrites the graph: every
*application* of a gated kind — ReLU (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu``),
ReLU6 (``nn.ReLU6``, ``nn.Hardtanh(0, 6)``, ``F.relu6``, ``F.hardtanh(x, 0, 6)``), LeakyReLU,
GELU (both forms), SiLU, Hardswish, and their in-place forms — becomes a call of its own gate
(``AlphaReLU`` for a ReLU, ``AlphaGate`` of f otherwise); a module called at several places
(torchvision's BasicBlock calls ``self.relu`` twice) gets one gate per call. In-place calls
mutate their input: every later use of that input reads the gate's output instead. Models fx
cannot trace fall back to swapping activation modules, with a warning naming what could not get
its own gate (functional calls, modules called more than once). What no gate blends (ELU, Mish,
Softplus, tanh, sigmoid, ...) or a kind left out of ``activations`` stays and is listed in a warning.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import fx, nn

from alphakern.graph.bn_fusion import fuse_bn as _fuse_bn
from alphakern.graph.fx import GateTracer
from alphakern.modules import AlphaGate, AlphaReLU, materialize
from alphakern.ops.core.activations import (
    FUNCTION_FORMS,
    KINDS,
    METHOD_FORMS,
    RELU,
    UNGATED_FUNCTIONS,
    Activation,
    arg_reader,
    call_activation,
    module_activation,
    ungated_reason,
)
from alphakern.ops.core.checks import check_module, check_tensor


def _activation(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[Activation, bool] | None:
    """(f, whether the call works in place), or None if the node is no activation a gate blends."""
    if node.op == "call_module":
        return module_activation(modules.get(node.target))
    form = None
    if node.op == "call_function":
        form = FUNCTION_FORMS.get(node.target)
    elif node.op == "call_method":
        form = METHOD_FORMS.get(node.target)
    return None if form is None else call_activation(form, arg_reader(node.args, node.kwargs))


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(modules[node.target]).__name__})"
    return f"{node.name} ({getattr(node.target, '__name__', node.target)})"


def _other_activation(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """An activation no gate blends, described, else None."""
    other = (node.op == "call_module" and ungated_reason(modules.get(node.target)) is not None) or (
        node.op == "call_function" and node.target in UNGATED_FUNCTIONS
    )
    return _describe(node, modules) if other else None


def _check_kinds(activations) -> tuple[str, ...]:
    kinds = tuple(activations)
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"activations must name kinds from {list(KINDS)}, got {k!r}")
    return kinds


def linearize(
    model: nn.Module,
    *,
    activations: tuple[str, ...] | list[str] = KINDS,
    granularity: str = "layer",
    nu_step: float = 0.01,
    backend: str | None = None,
    fuse_bn: bool = False,
    example_input: torch.Tensor | None = None,
) -> nn.Module:
    """A new model (``model`` is left untouched) in which every application of an activation of the
    kinds in ``activations`` (default: every kind a gate has: relu, relu6, leaky_relu, gelu, silu,
    hardswish; ``("relu",)`` gates the ReLUs only) has its own gate — an AlphaReLU for a ReLU, an
    AlphaGate of f otherwise (gates per channel/element are created at the first forward).
    ``fuse_bn``: each BatchNorm2d → gate pair then runs as one fused op (``fuse_bn`` below).
    ``example_input``: one eval-mode forward of it (ν and BatchNorm statistics do not move)
    creates every lazy γ now — before an optimiser, DDP or a checkpoint sees the model."""

    def make_gate(act: Activation) -> AlphaGate:
        if act.name == "relu":
            return AlphaReLU(nu_step, granularity=granularity, backend=backend)
        approx = "tanh" if act.name == "gelu_tanh" else "none"
        name = "gelu" if act.name == "gelu_tanh" else act.name
        return AlphaGate(nu_step, activation=name, negative_slope=act.negative_slope, approximate=approx,
                         granularity=granularity, backend=backend)  # fmt: skip

    check_module(model)
    if example_input is not None:
        check_tensor(example_input)
    kinds = _check_kinds(activations)
    make_gate(RELU)  # checks granularity and nu_step before any work
    try:
        root = copy.deepcopy(model)
        gm = fx.GraphModule(
            root, GateTracer().trace(root), type(root).__name__
        )  # as fx.symbolic_trace names it
    except Exception as e:  # fx raises many kinds (TraceError, TypeError, control flow on proxies...)
        swapped = _swap_modules(copy.deepcopy(model), make_gate, kinds, reason=f"{type(e).__name__}: {e}")
        return swapped if example_input is None else _materialize_and_name_shared(swapped, example_input)
    modules = dict(gm.named_modules())
    uses: dict[str, int] = {}
    others = []
    for node in list(gm.graph.nodes):
        found = _activation(node, modules)
        if found is None or found[0].kind not in kinds:
            other = _other_activation(node, modules) if found is None else _describe(node, modules)
            if other:
                others.append(other)
            continue
        act, inplace = found
        name = _gate_name(node, uses)
        gm.add_submodule(name, make_gate(act))
        source = node.args[0] if node.args else node.kwargs["input"]
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (source,))
        node.replace_all_uses_with(new)
        if inplace and isinstance(source, fx.Node):  # later reads of the mutated input see the gate
            _redirect_later_uses(gm.graph, source, after=new, to=new)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    if others:
        warnings.warn(f"linearize: left as they are (not gated): {', '.join(others)}", stacklevel=2)
    out = _fuse_bn(gm) if fuse_bn else gm
    return out if example_input is None else materialize(out, example_input=example_input)


def _materialize_and_name_shared(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """``materialize`` a swapped model, and name each gate its forward called more than once
    (one gate for several call sites: where fx traces, each site gets its own)."""
    calls: dict[str, int] = {}
    gates = [(name, m) for name, m in model.named_modules() if isinstance(m, AlphaGate)]
    handles = [m.register_forward_hook(lambda m, i, o, n=name: calls.__setitem__(n, calls.get(n, 0) + 1))
               for name, m in gates]  # fmt: skip
    try:
        materialize(model, example_input=example_input)
    finally:
        for h in handles:
            h.remove()
    shared = [f"{name} ({n} calls)" for name, n in calls.items() if n > 1]
    if shared:
        warnings.warn(
            f"linearize: these gates are each called at several places in one forward and share one "
            f"gate there: {', '.join(shared)}",
            stacklevel=3,
        )
    return model


def _gate_name(node: fx.Node, uses: dict[str, int]) -> str:
    """The ReLU module's own path for its first call (name_1, name_2, ... for more); the node's
    name for functional calls."""
    if node.op == "call_module":
        base = str(node.target)
        k = uses.get(base, 0)
        uses[base] = k + 1
        return base if k == 0 else f"{base}_{k}"
    return f"gate_{node.name}"


def _redirect_later_uses(graph: fx.Graph, source: fx.Node, after: fx.Node, to: fx.Node) -> None:
    order = {n: i for i, n in enumerate(graph.nodes)}
    for user in list(source.users):
        if user is not to and order[user] > order[after]:
            user.replace_input_with(source, to)


def _swap_modules(model: nn.Module, make_gate, kinds: tuple[str, ...], reason: str) -> nn.Module:
    """Fallback for models fx cannot trace: each activation module of the kinds asked for becomes
    a gate. Counting the calls of each module is impossible without an input, so the warning
    names every swapped module (a module called twice would share its gate) and says functional
    calls are not converted."""
    swapped, left = [], []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            path = f"{name}.{child_name}" if name else child_name
            found = module_activation(child)
            if found is not None and found[0].kind in kinds:
                setattr(module, child_name, make_gate(found[0]))
                swapped.append(path)
            elif found is not None:
                left.append(f"{path} ({type(child).__name__}: {found[0].kind} not in activations)")
            elif (why := ungated_reason(child)) is not None:
                left.append(f"{path} ({type(child).__name__}: {why})")
    warnings.warn(
        f"linearize: torch.fx could not trace the model ({reason.splitlines()[0]}); swapped the "
        f"activation modules instead ({', '.join(swapped) or 'none'}). Left without a gate: "
        f"{', '.join(left) or 'no activation module'}. Not converted: functional calls (F.relu, "
        "torch.relu, Tensor.relu, F.gelu, ...); a module called at several places shares one gate.",
        stacklevel=3,
    )
    return model
