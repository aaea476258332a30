"""What a run is made of, built from its config before any data is read: the model, the teacher of
``--init``/``--distill``, and the ReLU budget with its penalty — so a budget the network cannot meet
or an ``--init`` that does not fit is refused before any work."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from alphakern.cifar_nets import relu_network
from alphakern.data import NUM_CLASSES
from alphakern.folding import fold_padding, fold_units
from alphakern.graph import apply_keep, fuse_bn, linearize, nonlinearity_count
from alphakern.graph.budget import GateSite, gate_sites, resolve_budget
from alphakern.graph.methods import METHODS, Alpha, Evaluate, Method, Scope, make_method
from alphakern.models import AlphaCNN
from alphakern.modules import alpha_layers, materialize
from alphakern.ops.core.alpha import gamma_for
from alphakern.train.checkpoint import load_checkpoint
from alphakern.train.config import TrainConfig


def build_model(
    cfg: TrainConfig, device: torch.device, channels_last: bool, keep: dict | None = None
) -> nn.Module:
    """The study's CNN, or a ReLU network passed through ``linearize`` (a gate per ReLU call);
    ``keep``: the gates a budget run made exact (from its checkpoint)."""
    torch.manual_seed(cfg.seed)
    classes = NUM_CLASSES[cfg.dataset]
    nu_step = 0.0 if cfg.gate_mode == "l1" else cfg.nu_step  # l1 mode: ν held where it starts
    if cfg.model == "cnn":
        model = AlphaCNN(
            cfg.activation,
            cfg.head,
            num_classes=classes,
            nu_step=nu_step,
            granularity=cfg.granularity,
            backend=cfg.backend,
        )
    else:
        model = relu_network(cfg.model, classes)
        if cfg.activation == "alpha":
            model = linearize(model, granularity=cfg.granularity, nu_step=nu_step, backend=cfg.backend)
    model = materialize(model.to(device))  # per-channel/per-element γ exist before the optimiser
    gamma = None if cfg.alpha_init is None else gamma_for(cfg.alpha_init, cfg.start_nu)
    for _, m in alpha_layers(model):
        m.nu.fill_(cfg.start_nu)
        if gamma is not None:
            with torch.no_grad():
                m.gamma.fill_(gamma)
    METHODS[cfg.method].prepare(model)  # a method's own gates where linearize put AlphaGates
    if keep is not None:
        apply_keep(model, keep)
        if cfg.fold_padding:
            fold_padding(model)
    elif cfg.fuse_bn:  # the same parameters and state-dict keys, the pairs run as one op
        model = fuse_bn(model, relu=cfg.activation == "relu")
    return model.to(memory_format=torch.channels_last) if channels_last else model


def load_init(cfg: TrainConfig, model: nn.Module, device: torch.device) -> nn.Module | None:
    """Copy the trained weights of the run ``cfg.init`` into ``model`` (its gates start fresh);
    with ``--distill``, return that run's own network in eval mode: the teacher."""
    state = load_checkpoint(cfg.init, map_location=device)
    src = TrainConfig.from_dict(state["config"])
    if (src.model, src.dataset) != (cfg.model, cfg.dataset):
        raise ValueError(
            f"--init {cfg.init}: a {src.model} on {src.dataset}; this run trains a {cfg.model} "
            f"on {cfg.dataset}"
        )
    if state.get("keep"):
        raise ValueError(f"--init {cfg.init}: a budget run (its gates are exact); start from a ReLU network")
    weights = {k: v for k, v in state["model"].items() if not k.endswith((".gamma", ".nu"))}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    gates = {name for name, _ in alpha_layers(model)}  # their state starts fresh (γ, ν, a method's own)
    missing = [k for k in missing if k.rpartition(".")[0] not in gates]
    if missing or unexpected:
        raise ValueError(
            f"--init {cfg.init}: weights do not match this model (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    if not cfg.distill:
        return None
    teacher = build_model(src, device, channels_last=False)
    teacher.load_state_dict(state["model"])
    return teacher.eval().requires_grad_(False)


def method_of(cfg: TrainConfig, units: list[tuple[str, ...]] | None = None) -> Method:
    """The run's linearisation method with its options from the config (``--penalty``: the
    weight of its penalty, ``--gate-mode l1``/``--l1`` and fold units: alpha's)."""
    if cfg.method == "alpha":
        return Alpha(cfg.penalty, cfg.l1 if cfg.gate_mode == "l1" else None, units)
    if cfg.method in ("snl", "autorep"):
        return make_method(cfg.method, weight=cfg.penalty)
    if cfg.method == "random":
        return make_method("random", seed=cfg.seed)
    return make_method(cfg.method)


@dataclass
class Budget:
    """A run's ReLUs — its non-linearities of every kind (ReLU6 of mobilenet_v2, ...) added up: the
    network's count per sample (``relus_before``, per kind in ``kinds_before``: fresh gates are all
    non-linear), its gates' sites, and the budget as a count (None: no budget) — of which
    ``gate_budget`` is left to the gates once the non-linearities that are not gates are counted.

    With ``--budget-kind K`` the budget and its penalty speak of the kind K alone: the budget is a
    fraction (or count) of K's non-linearities, only K's gates (``scoped``) are penalised and cut
    to it, and the gates of other kinds are left to learn freely (made exact by rounding α at ½)."""

    cfg: TrainConfig
    sites: list[GateSite]
    kinds_before: dict[str, int]
    budget: int | None
    gate_budget: int | None
    method: Method | None = None  # what penalises the gates and cuts them (method_of)

    @property
    def relus_before(self) -> int:
        return sum(self.kinds_before.values())

    @property
    def scoped(self) -> list[GateSite]:
        """The gates the budget and penalty act on: every gate, or those of --budget-kind."""
        kind = self.cfg.budget_kind
        return [s for s in self.sites if kind is None or s.module.act.kind == kind]

    @property
    def scope_total(self) -> int:
        """The non-linearities per sample the budget is a share of."""
        kind = self.cfg.budget_kind
        return self.relus_before if kind is None else self.kinds_before.get(kind, 0)

    @classmethod
    def of(cls, cfg: TrainConfig, model: nn.Module, example: torch.Tensor) -> Budget:
        sites = gate_sites(model, example) if alpha_layers(model) else []
        kinds = nonlinearity_count(model, example)
        if (cfg.budget is not None or cfg.penalty is not None) and not sites:
            raise ValueError(f"--budget/--penalty: the {cfg.model} has no learnable gates")
        out = cls(
            cfg, sites, kinds, None, None, method_of(cfg, fold_units(model) if cfg.fold_units else None)
        )
        if cfg.budget_kind is not None and not out.scoped:
            have = sorted({s.module.act.kind for s in sites})
            raise ValueError(
                f"--budget-kind {cfg.budget_kind}: the {cfg.model} has no gates of it (its gates: {have})"
            )
        if cfg.budget is not None:
            out.budget = resolve_budget(cfg.budget, out.scope_total)
            out.gate_budget = out.budget - (out.scope_total - sum(s.relus for s in out.scoped))
        return out

    @functools.cached_property
    def scope(self) -> Scope:
        """What the method's penalty and cut see (fixed once the budget is set: built once, not
        at every step's penalty)."""
        return Scope(self.scoped, self.scope_total, self.gate_budget, self.sites)

    def penalty(self) -> torch.Tensor | None:
        """The search epochs' penalty on the gates (None: none asked for)."""
        return self.method.penalty(self.scope)

    def exact_keep(
        self, model: nn.Module | None = None, evaluate: Evaluate | None = None
    ) -> dict[str, torch.Tensor]:
        """Which gates stay non-linear — the method's cut (alpha: to the budget, highest α first,
        or without one by rounding α at ½); ``evaluate``: validation accuracy, for the methods
        that measure what they cut."""
        return self.method.keep(self.scope, model, evaluate)
