"""The MLP fold for models torch.fx cannot trace (Hugging Face's): found by one eval forward of the
example input, rewritten module by module in the concat form (``folding.mlp``), whose three
modules take the places of the three they replace — no graph needed. A linear whose output only
another linear reads (an MLP whose gate ``discretize`` made the identity) becomes an identity, and
the second the one linear of both.

Which tensors flow where is read off the forward itself: forward hooks on every linear
(``nn.Linear``, transformers' ``Conv1D``), gate and dropout module, and a ``TorchFunctionMode`` that
records which module reads each tensor. An MLP folds when the first linear's output is read by the
gate alone and the gate's output by the second linear alone (through an eval-mode dropout), and
each of the three runs once."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from alphakern.folding.algebra import compose_linears, is_conv1d
from alphakern.folding.chains import _DROPOUT
from alphakern.folding.mlp import SWIGLU, choose_form, concat_modules, mlp_dims, mlp_gate
from alphakern.graph.fx import set_module
from alphakern.modules import AlphaGate, FixedGate, FixedSlopeReLU

_MULS = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.mul_}


# reads of a tensor's metadata, not of its data (T5's MLP checks hidden_states.dtype between its
# dropout and its second linear): they make no reader
_METADATA_PROPERTIES = {"dtype", "shape", "device", "ndim", "layout", "requires_grad", "is_cuda"}
_METADATA_METHODS = {torch.Tensor.size, torch.Tensor.dim, torch.Tensor.numel, torch.Tensor.stride,
                     torch.Tensor.is_floating_point, torch.Tensor.is_contiguous}  # fmt: skip


def _metadata_read(func) -> bool:
    if getattr(func, "__name__", None) == "__get__":  # a property: Tensor.dtype.__get__, ...
        return getattr(getattr(func, "__self__", None), "__name__", None) in _METADATA_PROPERTIES
    return func in _METADATA_METHODS


class _Reads(torch.overrides.TorchFunctionMode):
    """For each tensor (kept alive, so ids stay unique) the modules on top of the stack that read
    it (None: code outside every watched module), and the functions that read it."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.readers: dict[int, set] = defaultdict(set)
        self.funcs: dict[int, set] = defaultdict(set)
        self.alive: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _metadata_read(func):
            return func(*args, **kwargs)
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, torch.Tensor):
                self.readers[id(t)].add(self.stack[-1] if self.stack else None)
                self.funcs[id(t)].add(func)
                self.alive.append(t)
        return func(*args, **kwargs)


def _watched(m: nn.Module) -> bool:
    return isinstance(m, (nn.Linear, AlphaGate, FixedGate, FixedSlopeReLU, *_DROPOUT)) or is_conv1d(m)


def _trace_reads(model: nn.Module, x: torch.Tensor) -> tuple[dict, dict, dict, _Reads]:
    """One eval forward: each watched module's (input, output) tensors, its number of calls, the reads."""
    reads = _Reads()
    io: dict[str, tuple] = {}
    calls: dict[str, int] = defaultdict(int)
    handles = []
    for name, m in model.named_modules():
        if not _watched(m):
            continue

        def enter(mod, inputs, name=name):
            reads.stack.append(name)

        def leave(mod, inputs, output, name=name):
            reads.stack.pop()
            calls[name] += 1
            io[name] = (inputs[0] if inputs else None, output)
            reads.alive.append(output)

        handles += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave)]
    try:
        with torch.no_grad(), reads:
            model(x)
    finally:
        for h in handles:
            h.remove()
    modules = dict(model.named_modules())
    return io, calls, modules, reads


def _reader(out: torch.Tensor, name: str, io: dict, modules: dict, reads: _Reads) -> str | None:
    """The one watched module that reads ``out``, the output of module ``name``, other than eval
    dropouts — which return their input itself, so that their readers are ``out``'s own — or None."""
    readers = reads.readers[id(out)] - {name}
    passed = {r for r in readers if isinstance(modules.get(r), _DROPOUT) and io[r][1] is out}
    readers -= passed
    return next(iter(readers)) if len(readers) == 1 else None


def _is_linear(m: nn.Module | None) -> bool:
    return isinstance(m, nn.Linear) or (m is not None and is_conv1d(m))


def fold_mlp_modules(model: nn.Module, example_input: torch.Tensor, policy) -> tuple[list, list, list]:
    """Fold ``model``'s MLPs and linear → linear chains in place, module by module (eval mode):
    (merged, not_merged, mlps) as ``FoldInfo`` holds them."""
    io, calls, modules, reads = _trace_reads(model.eval(), example_input)
    producer = {id(out): name for name, (_, out) in io.items()}
    merged, not_merged, mlps = [], [], []
    for gname, (g_in, g_out) in io.items():
        gate = modules[gname]
        if not isinstance(gate, AlphaGate | FixedGate | FixedSlopeReLU):
            continue
        l1name = producer.get(id(g_in))
        l1 = modules.get(l1name)
        if not _is_linear(l1):
            continue
        # the second linear: reads the gate's output, directly or through an eval dropout
        l2name = _reader(g_out, gname, io, modules, reads)
        l2 = modules.get(l2name)
        names = (l1name, gname) + ((l2name,) if l2 is not None else ())
        if not _is_linear(l2):
            if any(f in _MULS for f in reads.funcs[id(g_out)]):
                not_merged.append((names, SWIGLU))
            continue
        found = mlp_gate(gate)
        if reads.readers[id(g_in)] - {l1name} != {gname}:
            found = "the first linear's output is read elsewhere too"
        elif any(calls[n] != 1 for n in (l1name, gname, l2name)):
            found = "a module of the MLP runs more than once in a forward"
        if isinstance(found, str):
            not_merged.append((names, found))
            continue
        keep, act = found
        rows = g_in.numel() // g_in.shape[-1]
        form, record = choose_form(policy, l1, keep, act, l2, rows, forms=("concat",))
        mlps.append({"gate": gname, "form": form, **record})
        if form is None:
            not_merged.append((names, f"the policy keeps the MLP ({policy.name})"))
            continue
        for name, new in zip((l1name, gname, l2name), concat_modules(l1, keep, act, l2), strict=True):
            set_module(model, name, new)
        merged.append((names, f"MLP folded (concat: {record['kept']} of {record['features']} features kept)"))
    done = {n for names, _ in merged for n in names}
    chains, kept = _linear_chains(model, io, calls, modules, reads, policy, done)
    return merged + chains, not_merged + kept, mlps


def _linear_chains(
    model: nn.Module, io: dict, calls: dict, modules: dict, reads: _Reads, policy, done: set
) -> tuple[list, list]:
    """Each linear whose output (through eval dropouts) only another linear reads, as its input,
    each run once: the second becomes the one linear of both (``compose_linears``), the first an
    identity — the pairs the policy keeps, of modules no other merge took. (merged, not_merged)."""
    merged, not_merged = [], []
    for l1name, (_, out1) in io.items():
        l1 = modules[l1name]
        if not _is_linear(l1) or l1name in done:
            continue
        l2name = _reader(out1, l1name, io, modules, reads)
        l2 = modules.get(l2name)
        if not _is_linear(l2) or l2name in done or io[l2name][0] is not out1:
            continue
        if calls[l1name] != 1 or calls[l2name] != 1:
            not_merged.append(((l1name, l2name), "a linear of the chain runs more than once in a forward"))
            continue
        why = policy.linears_rejected(*mlp_dims(l1, l2))
        if why is not None:
            not_merged.append(((l1name, l2name), why))
            continue
        # the second keeps a linear's attributes (T5's MLP reads wo.weight.dtype), the first goes
        set_module(model, l2name, compose_linears(l1, l2))
        set_module(model, l1name, nn.Identity())
        done |= {l1name, l2name}
        merged.append(((l1name, l2name), "linears merged"))
    return merged, not_merged
