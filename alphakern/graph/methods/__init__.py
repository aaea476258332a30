"""The linearisation methods, one module each behind one interface (``Method``): a gate
parameterisation, the penalty or schedule that drives it, the rule that makes it exact to a budget.

- ``alpha``: alphakern's gates (the seed's ν schedule, the budget's hinge) — the default;
- ``snl``: Selective Network Linearization's masks (L1, λ ×1.1 on a stall, threshold 1e-2);
- ``autorep``: AutoReP's hard gates with hysteresis and the density hinge;
- ``stage``: DeepReDuce-style culling of whole stages by criticality, no learned gates;
- ``random``: a uniform random cut to the budget, the control.

Every method works on any model ``linearize`` handles (its gates are swapped for the method's own);
choices read the validation split (``evaluate``), never the test set.
"""

from __future__ import annotations

from alphakern.graph.methods.alpha import Alpha
from alphakern.graph.methods.autorep import AutoReP, HysteresisGate
from alphakern.graph.methods.base import Evaluate, Method, MethodGate, Scope
from alphakern.graph.methods.random_cut import Random
from alphakern.graph.methods.snl import SNL, MaskGate
from alphakern.graph.methods.stage import Stage, stages

METHODS: dict[str, type[Method]] = {m.name: m for m in (Alpha, SNL, AutoReP, Stage, Random)}


def make_method(name: str, **options) -> Method:
    """The method called ``name`` with its options (ValueError naming the choices otherwise)."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {name!r}")
    return METHODS[name](**options)


__all__ = [
    "METHODS",
    "Alpha",
    "AutoReP",
    "Evaluate",
    "HysteresisGate",
    "MaskGate",
    "Method",
    "MethodGate",
    "Random",
    "SNL",
    "Scope",
    "Stage",
    "make_method",
    "stages",
]
