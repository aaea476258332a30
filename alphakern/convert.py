"""Give every ReLU of any network its own learnable gate (``linearize``), and count ReLUs
(``relu_count``).

``linearize`` traces the model with torch.fx (``symbolic_trace``) and rewrites the graph: every
ReLU *application* — an ``nn.ReLU`` module call, ``F.relu``, ``torch.relu``, ``Tensor.relu`` and
their in-place forms — becomes a call of its own ``AlphaReLU``; a module called at several places
(torchvision's BasicBlock calls ``self.relu`` twice) gets one gate per call. In-place calls
mutate their input: every later use of that input reads the gate's output instead. Models fx
cannot trace fall back to swapping ``nn.ReLU`` modules, with a warning naming what could not get
its own gate (functional calls, modules called more than once). Other activations (ReLU6, GELU,
SiLU, ...) stay as they are and are listed in a warning.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import fx, nn

from alphakern.gate_rules import counts_as_relu
from alphakern.modules import AlphaReLU, FixedSlopeReLU, alpha_layers

_RELU_FUNCTIONS = {F.relu: False, torch.relu: False, torch.relu_: True, F.relu_: True}
_RELU_METHODS = {"relu": False, "relu_": True}
# activations that are not ReLUs: left alone, but named so that nobody thinks they were gated
_OTHER = (
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.PReLU,
    nn.Hardswish,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
)
_OTHER_FUNCTIONS = {
    F.relu6,
    F.gelu,
    F.silu,
    F.leaky_relu,
    F.elu,
    F.hardswish,
    F.mish,
    torch.tanh,
    torch.sigmoid,
}


def _relu_kind(node: fx.Node, modules: dict[str, nn.Module]) -> bool | None:
    """None if the node is no ReLU, else whether it works in place."""
    if node.op == "call_module" and isinstance(modules.get(node.target), nn.ReLU):
        return modules[node.target].inplace
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        return _RELU_FUNCTIONS[node.target] or bool(node.kwargs.get("inplace", False))
    if node.op == "call_method" and node.target in _RELU_METHODS:
        return _RELU_METHODS[node.target]
    return None


def _other_activation(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    if node.op == "call_module" and isinstance(modules.get(node.target), _OTHER):
        return f"{node.target} ({type(modules[node.target]).__name__})"
    if node.op == "call_function" and node.target in _OTHER_FUNCTIONS:
        return f"{node.name} ({getattr(node.target, '__name__', node.target)})"
    return None


def linearize(
    model: nn.Module, *, granularity: str = "layer", nu_step: float = 0.01, backend: str | None = None
) -> nn.Module:
    """A new model (``model`` is left untouched) in which every ReLU application has its own
    AlphaReLU (gates per channel/element are created at the first forward, as AlphaReLU's are)."""

    def gate() -> AlphaReLU:
        return AlphaReLU(nu_step, granularity=granularity, backend=backend)

    gate()  # checks granularity and nu_step before any work
    try:
        gm = fx.symbolic_trace(copy.deepcopy(model))
    except Exception as e:  # fx raises many kinds (TraceError, TypeError, control flow on proxies...)
        return _swap_modules(copy.deepcopy(model), gate, reason=f"{type(e).__name__}: {e}")
    modules = dict(gm.named_modules())
    uses: dict[str, int] = {}
    others = []
    for node in list(gm.graph.nodes):
        inplace = _relu_kind(node, modules)
        if inplace is None:
            other = _other_activation(node, modules)
            if other:
                others.append(other)
            continue
        name = _gate_name(node, uses)
        gm.add_submodule(name, gate())
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
        warnings.warn(f"linearize: left as they are (not ReLUs): {', '.join(others)}", stacklevel=2)
    return gm


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


def _swap_modules(model: nn.Module, gate, reason: str) -> nn.Module:
    """Fallback for models fx cannot trace: each nn.ReLU module becomes an AlphaReLU. Counts the
    calls of each module in one forward is impossible without an input, so the warning names
    every swapped module (a module called twice would share its gate) and says functional ReLUs
    are not converted."""
    swapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, child_name, gate())
                swapped.append(f"{name}.{child_name}" if name else child_name)
    warnings.warn(
        f"linearize: torch.fx could not trace the model ({reason.splitlines()[0]}); swapped the "
        f"nn.ReLU modules instead ({', '.join(swapped) or 'none'}). Not converted: F.relu / "
        "torch.relu / Tensor.relu calls; a module called at several places shares one gate.",
        stacklevel=3,
    )
    return model


class _ReluCalls(torch.overrides.TorchFunctionMode):
    """Counts the per-sample outputs of every ReLU evaluated (module or functional)."""

    FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_, torch.Tensor.relu, torch.Tensor.relu_}

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch, self.count = batch, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.FUNCTIONS and isinstance(out, torch.Tensor):
            self.count += out.numel() // self.batch
        return out


@torch.no_grad()
def relu_count(model: nn.Module, example_input: torch.Tensor) -> int:
    """Scalar non-linearities evaluated per sample: for each AlphaReLU the output positions whose
    gate is not linear (α ≥ 0.05), for each FixedSlopeReLU (what ``discretize`` leaves) those whose
    slope is not 1, plus every ReLU evaluated that is not a gate. Runs one forward
    in eval mode (ν does not move) on ``example_input`` (batch first)."""
    batch = example_input.shape[0]
    counts: list[int] = []

    def hook(m: AlphaReLU | FixedSlopeReLU, inputs, output) -> None:
        # a gate bends unless it is linear; a fixed slope (what discretising leaves) unless it is 1
        keep = counts_as_relu(m.alpha) if isinstance(m, AlphaReLU) else (m.slope != 1)
        counts.append(_positions(keep.float(), m.granularity, output, batch))

    gates = [m for _, m in alpha_layers(model)]
    gates += [m for m in model.modules() if isinstance(m, FixedSlopeReLU)]
    handles = [m.register_forward_hook(hook) for m in gates]
    was_training = model.training
    model.eval()
    try:
        with _ReluCalls(batch) as calls:
            model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return sum(counts) + calls.count


def _positions(keep: torch.Tensor, granularity: str, output: torch.Tensor, batch: int) -> int:
    """Output positions of one sample whose gate is kept (``keep``: 1/0 per gate, γ's shape)."""
    if keep.numel() == 1:
        return int(keep.item()) * (output.numel() // batch)
    # per channel / element: broadcast the kept gates over one sample's positions
    shape = (1, -1, *([1] * (output.dim() - 2))) if granularity == "channel" else (1, *keep.shape)
    return int(keep.reshape(shape).expand(1, *output.shape[1:]).sum().item())
