"""Folding: turn what linearisation made linear into fewer, merged layers (``fold``; see
``folding.passes``), with the passes that prepare a network for it (``fold_padding``,
``fold_units``) and what it bought (``fold_report``).

- ``algebra``: the merges as pure tensor functions (no graph);
- ``passes``: the rewrite passes and the ``fold`` driver composing them;
- ``policy``: which merges are kept (MACs, measured latency);
- ``chains``: linear conv chains, one walk along them, ``fold_padding`` and ``fold_units``;
- ``mlp``: transformer MLPs whose per-feature gate is 0/1 — their folded forms and which one;
- ``untraced``: the MLP fold, module by module, for models fx cannot trace (Hugging Face's);
- ``report``: depth, parameters, MACs and latency before and after.
"""

from alphakern.folding.algebra import (
    compose_convs,
    compose_linears,
    dense_weight,
    with_identity,
    with_shortcut,
)
from alphakern.folding.chains import fold_padding, fold_units
from alphakern.folding.mlp import PartialActivation, SplitMLP
from alphakern.folding.passes import FoldInfo, fold
from alphakern.folding.policy import POLICIES
from alphakern.folding.report import fold_report

__all__ = [
    "POLICIES",
    "FoldInfo",
    "PartialActivation",
    "SplitMLP",
    "compose_convs",
    "compose_linears",
    "dense_weight",
    "fold",
    "fold_padding",
    "fold_report",
    "fold_units",
    "with_identity",
    "with_shortcut",
]
