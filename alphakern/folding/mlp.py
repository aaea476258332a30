"""Transformer MLPs folded exactly: Linear(d→h) → g → Linear(h→d_out), g a discretised per-feature
gate (f on the features N it kept, the identity on the features L it made linear), is exactly

- ``split``: the narrow MLP Linear(d→|N|) → f → Linear(|N|→d_out) plus, in parallel, the linear
  map W2[:, L]·W1[L] (one d×d_out linear, or its two thin factors when |L| is small) — fewest MACs;
- ``concat``: Linear(d → |N| + d_out) → f on the first |N| only → Linear(|N| + d_out → d_out),
  the linear part riding through the activation: three modules in the places of the three it
  replaces, so it also fits models fx cannot trace (rewritten module by module).

The weights come from ``algebra`` (float64 arithmetic, the result in the layers' dtype). Which gates
fold and why not: ``mlp_gate`` — per-feature gates of weights 0/1 only; a per-token gate, an
undecided one, a gate still learning, or a gated MLP (SwiGLU: its output multiplied by a second
projection, so a linear gate leaves a product of two projections) are named with the reason.
"""

from __future__ import annotations

import torch
from torch import nn

from alphakern.folding.algebra import linear_dims, linear_weights, mlp_concat, mlp_macs, mlp_split, new_linear
from alphakern.modules import AlphaGate, FixedGate, FixedSlopeReLU

FORMS = ("split", "concat")
SWIGLU = (
    "a gated MLP (SwiGLU): the gate's output is multiplied by another projection, so a linear gate "
    "leaves a product of two projections, not a linear map"
)


class SplitMLP(nn.Module):
    """narrow_out(f(narrow_in(x))) + bypass(x): the folded MLP's split form."""

    def __init__(self, narrow_in: nn.Module | None, act: nn.Module, narrow_out: nn.Module | None,
                 bypass: nn.Module) -> None:  # fmt: skip
        super().__init__()
        self.narrow_in, self.act, self.narrow_out, self.bypass = narrow_in, act, narrow_out, bypass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bypass(x)
        if self.narrow_in is None:
            return y
        return self.narrow_out(self.act(self.narrow_in(x))) + y


class PartialActivation(nn.Module):
    """f on the first ``kept`` features of the last dim, the identity on the rest (the concat form)."""

    def __init__(self, act: nn.Module, kept: int) -> None:
        super().__init__()
        self.act, self.kept = act, kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.act(x[..., : self.kept]), x[..., self.kept :]], dim=-1)

    def extra_repr(self) -> str:
        return f"kept={self.kept}"


def mlp_gate(m: nn.Module) -> tuple[torch.Tensor, nn.Module] | str:
    """(keep: bool [h], f's module) of a gate an MLP fold can remove, else why not."""
    if isinstance(m, AlphaGate):
        return "the gate is still learning (discretize the model first)"
    if not isinstance(m, FixedGate | FixedSlopeReLU):
        return "no per-feature gate"
    if m.granularity != "feature":
        return (
            f"gates per {m.granularity}: a feature linear at some positions and not at others is no "
            "linear map (gate per feature to fold MLPs)"
        )
    w = m.weight if isinstance(m, FixedGate) else 1 - m.slope  # the weight of f per feature
    if not bool(((w == 0) | (w == 1)).all()):
        return "undecided gates (weights strictly between 0 and 1)"
    act = m.act.module() if isinstance(m, FixedGate) else nn.ReLU()
    return w == 1, act


def split_modules(l1: nn.Module, keep: torch.Tensor, act: nn.Module, l2: nn.Module) -> SplitMLP:
    w1, b1 = linear_weights(l1)
    w2, b2 = linear_weights(l2)
    parts = mlp_split(w1, b1, keep.to(w1.device), w2, b2)
    like = l1.weight
    mod = {k: None if v is None else new_linear(*v, like) for k, v in parts.items()}
    bypass = mod["bypass"] or nn.Sequential(mod["bypass_in"], mod["bypass_out"])
    return SplitMLP(mod["narrow_in"], act, mod["narrow_out"], bypass).eval()


def concat_modules(
    l1: nn.Module, keep: torch.Tensor, act: nn.Module, l2: nn.Module
) -> tuple[nn.Linear, PartialActivation, nn.Linear]:
    w1, b1 = linear_weights(l1)
    w2, b2 = linear_weights(l2)
    (fw, fb), (sw, sb) = mlp_concat(w1, b1, keep.to(w1.device), w2, b2)
    like = l1.weight
    return new_linear(fw, fb, like), PartialActivation(act, int(keep.sum())), new_linear(sw, sb, like)


def mlp_dims(l1: nn.Module, l2: nn.Module) -> tuple[int, int, int]:
    """(d, h, d_out) of the MLP l1 → l2 (or of any linear → linear pair)."""
    (h, d), (d_out, _) = linear_dims(l1), linear_dims(l2)
    return d, h, d_out


def choose_form(
    policy, l1: nn.Module, keep: torch.Tensor, act: nn.Module, l2: nn.Module, rows: int, forms=FORMS
) -> tuple[str | None, dict]:
    """(the form the policy keeps, or None; a record: features kept, each form's MACs per token
    and, under "latency", its time)."""
    d, h, d_out = mlp_dims(l1, l2)
    kept = int(keep.sum())
    record = {"features": h, "kept": kept, "macs_before": mlp_macs(d, h, d_out, kept, "mlp")}
    macs = {f: mlp_macs(d, h, d_out, kept, f) for f in forms}
    cheapest = min(forms, key=lambda f: macs[f])
    if policy.name == "all":
        return cheapest, {**record, "macs_after": macs[cheapest]}
    if policy.name == "flops":
        ok = macs[cheapest] <= record["macs_before"]
        return (cheapest if ok else None), {**record, "macs_after": macs[cheapest]}
    x = torch.randn(rows, d, device=policy.device, dtype=l1.weight.dtype)
    candidates = {"mlp": nn.Sequential(l1, act, l2)}
    if "split" in forms:
        candidates["split"] = split_modules(l1, keep, act, l2)
    if "concat" in forms:
        candidates["concat"] = nn.Sequential(*concat_modules(l1, keep, act, l2))
    times = {f: policy.time_module(m, x) for f, m in candidates.items()}
    best = min(times, key=times.get)
    record["seconds"] = times
    if best == "mlp":
        return None, {**record, "macs_after": record["macs_before"]}
    return best, {**record, "macs_after": macs[best]}
