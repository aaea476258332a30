"""The MLP fold for models torch.fx cannot trace (Hugging Face's): found by one eval forward of the
example input, rewritten module by module in the concat form (``folding.mlp``), whose three
modules take the places of the three they replace — no graph needed.

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

from alphakern.folding.algebra import is_conv1d
from alphakern.folding.chains import _DROPOUT
from alphakern.folding.mlp import SWIGLU, choose_form, concat_modules, mlp_gate
from alphakern.graph.fx import set_module
from alphakern.modules import AlphaGate, FixedGate, FixedSlopeReLU

_MULS = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.mul_}


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


def fold_mlp_modules(model: nn.Module, example_input: torch.Tensor, policy) -> tuple[list, list, list]:
    """Fold ``model``'s MLPs in place, module by module (eval mode): (merged, not_merged, mlps) as
    ``FoldInfo`` holds them."""
    io, calls, modules, reads = _trace_reads(model.eval(), example_input)
    producer = {id(out): name for name, (_, out) in io.items()}
    merged, not_merged, mlps = [], [], []
    for gname, (g_in, g_out) in io.items():
        gate = modules[gname]
        if not isinstance(gate, AlphaGate | FixedGate | FixedSlopeReLU):
            continue
        l1name = producer.get(id(g_in))
        l1 = modules.get(l1name)
        if l1 is None or not (isinstance(l1, nn.Linear) or is_conv1d(l1)):
            continue
        # the second linear: reads the gate's output, directly or through an eval dropout
        out, path = g_out, [gname]
        readers = reads.readers[id(out)] - {gname}
        while len(readers) == 1 and isinstance(modules.get(next(iter(readers))), _DROPOUT):
            (dname,) = readers
            out, path = io[dname][1], [*path, dname]
            readers = reads.readers[id(out)] - {dname}
        l2name = next(iter(readers)) if len(readers) == 1 else None
        l2 = modules.get(l2name)
        names = (l1name, gname) + ((l2name,) if l2 is not None else ())
        if l2 is None or not (isinstance(l2, nn.Linear) or is_conv1d(l2)):
            if any(f in _MULS for f in reads.funcs[id(out)]):
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
    return merged, not_merged, mlps
