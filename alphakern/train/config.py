"""The trainer's configuration: the study's defaults, each value checked when the config is made."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from alphakern.data import DATASETS
from alphakern.graph.methods import METHODS
from alphakern.models import CNN_ACTIVATIONS, HEADS, MODELS
from alphakern.ops.core import BACKEND_CHOICES, GRANULARITIES
from alphakern.ops.core.activations import KINDS
from alphakern.ops.core.alpha import gamma_for
from alphakern.ops.core.checks import is_finite_number

GATE_MODES = ("schedule", "l1")
NU_INIT_L1 = 10.0  # --gate-mode l1 without --nu-init: α = σ((σ(γ) − ½)·10) spans 0.007..0.993


@dataclass
class TrainConfig:
    """Defaults are the original study's: Adam lr 1e-3, batch 64, 10 epochs, ν += 0.01 a step.

    Invalid values raise ValueError naming the command-line flag, before any work starts.
    """

    data_dir: str = "data"
    out: str = "runs/alphakern"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    model: str = "cnn"
    dataset: str = "cifar10"
    augment: bool = False
    activation: str = "alpha"
    head: str = "logits"
    nu_step: float = 0.01
    granularity: str = "layer"
    backend: str | None = None
    amp: bool = False
    compile: bool = False
    channels_last: bool | None = None  # None: the measured-faster default (see Trainer)
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch
    fuse_bn: bool = False  # each BatchNorm2d → gate pair as one fused op (alphakern.fuse_bn)
    method: str = "alpha"  # the linearisation method (alphakern.graph.methods)
    # training to a ReLU budget (alphakern.graph.budget): a penalty on the soft ReLU count in the search
    # epochs, then the gates made exact (to the budget) and `finetune_epochs` with them frozen
    budget: float | None = None  # a fraction <= 1 of the network's ReLUs, or a count
    penalty: float | None = None  # weight on the normalised soft count (the hinge's, with budget)
    budget_kind: str | None = None  # the budget and penalty on this kind of non-linearity alone
    finetune_epochs: int = 0
    fold_padding: bool = False  # once exact: each linear conv chain's padding on its first conv
    fold_units: bool = False  # made exact to the budget by fold units (alphakern.fold_units)
    distill: bool = False  # fine-tune with KL (T = 4) to the ReLU network of `init`
    init: str | None = None  # run directory whose trained weights start this run
    gate_mode: str = "schedule"  # "l1": ν fixed at nu_init (no schedule) + l1 · mean α
    nu_init: float | None = None  # ν at the start (default 0; 10 in l1 mode)
    alpha_init: float | None = None  # α at the start (γ set for it at nu_init); None: γ = 0, α = ½
    l1: float = 0.01
    limit_train: int | None = None
    val_fraction: float = 0.2
    download: bool = False
    log_every: int = 50

    def __post_init__(self) -> None:
        def bad(field: str, expected: str) -> ValueError:
            flag = "--" + field.replace("_", "-")
            return ValueError(f"{flag} must be {expected}, got {getattr(self, field)!r}")

        for f in ("epochs", "batch_size", "log_every"):
            if not _is_int(getattr(self, f)) or getattr(self, f) < 1:
                raise bad(f, "a positive integer")
        if not _is_int(self.finetune_epochs) or self.finetune_epochs < 0:
            raise bad("finetune_epochs", "a non-negative integer")
        if self.limit_train is not None and (not _is_int(self.limit_train) or self.limit_train < 1):
            raise bad("limit_train", "a positive number of images")
        if not _is_int(self.seed) or self.seed < 0:
            raise bad("seed", "a non-negative integer")
        if not is_finite_number(self.lr) or self.lr <= 0:
            raise bad("lr", "a positive number")
        if not is_finite_number(self.nu_step) or self.nu_step < 0:
            raise bad("nu_step", "a non-negative number")
        if not is_finite_number(self.val_fraction) or not 0 < self.val_fraction < 1:
            raise bad("val_fraction", "between 0 and 1")
        checks = (
            ("model", MODELS),
            ("activation", CNN_ACTIVATIONS),
            ("head", HEADS),
            ("granularity", GRANULARITIES),
            ("dataset", DATASETS),
            ("gate_mode", GATE_MODES),
            ("method", tuple(METHODS)),
        )
        for f, choices in checks:
            if getattr(self, f) not in choices:
                raise bad(f, f"one of {', '.join(choices)}")
        if self.model != "cnn" and self.activation not in ("alpha", "relu"):
            raise bad("activation", f"alpha or relu for --model {self.model}")
        if self.model != "cnn" and self.head != "logits":
            raise bad("head", f"logits for --model {self.model} (softmax reproduces the study's CNN only)")
        self._check_budget(bad)
        self._check_method(bad)
        if self.backend is not None and self.backend not in BACKEND_CHOICES:
            raise bad("backend", f"one of {', '.join(BACKEND_CHOICES)}")
        if self.fuse_bn and self.activation not in ("alpha", "relu"):
            raise bad(
                "activation",
                "alpha or relu with --fuse-bn (it fuses each BatchNorm with the gate or ReLU after it)",
            )
        if self.fuse_bn and self.sync_bn:
            raise ValueError("--fuse-bn computes per-process statistics: it cannot go with --sync-bn")
        if self.compile and self.activation == "alpha-eager":
            raise ValueError(
                "--activation alpha-eager cannot be combined with --compile: PyTorch would compute "
                "wrong γ gradients for the unfused expression (see EagerAlphaReLU); use --activation alpha"
            )
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise bad("device", "auto, cpu, cuda or cuda:N") from None

    def _check_budget(self, bad) -> None:
        if self.budget is not None:
            if not is_finite_number(self.budget) or self.budget <= 0:
                raise bad("budget", "positive: a fraction <= 1 of the ReLUs or a whole ReLU count")
            if self.budget > 1 and self.budget != int(self.budget):
                raise bad("budget", "a whole ReLU count when above 1")
        for f in ("penalty", "l1", "nu_init"):
            v = getattr(self, f)
            if v is not None and (not is_finite_number(v) or v < 0):
                raise bad(f, "a non-negative number")
        if self.budget_kind is not None:
            if self.budget_kind not in KINDS:
                raise bad("budget_kind", f"one of {', '.join(KINDS)}")
            if self.budget is None and self.penalty is None:
                raise ValueError("--budget-kind scopes --budget/--penalty: give one of them")
        gated = self.activation in ("alpha", "alpha-eager")
        wants = [f for f in ("budget", "penalty") if getattr(self, f) is not None]
        if self.alpha_init is not None:
            wants.append("alpha_init")
            if not is_finite_number(self.alpha_init) or not 0 < self.alpha_init < 1:
                raise bad("alpha_init", "between 0 and 1")
            try:
                gamma_for(self.alpha_init, self.start_nu)
            except ValueError as e:
                raise ValueError(f"--alpha-init with --nu-init: {e}") from None
        if self.gate_mode == "l1":
            wants.append("gate_mode")
            if self.nu_init == 0:
                raise bad("nu_init", "positive with --gate-mode l1 (at ν = 0 every α is ½, γ learns nothing)")
        if wants and not gated:
            flag = "--" + wants[0].replace("_", "-")
            msg = f"{flag} needs learnable gates (--activation alpha), got --activation {self.activation}"
            raise ValueError(msg)
        if self.fold_units and (self.budget is None or self.granularity != "layer" or self.budget_kind):
            raise ValueError(
                "--fold-units keeps or drops a unit's gates together at the budget: it needs --budget and "
                "--granularity layer, without --budget-kind"
            )
        if self.fold_padding and not self.discretizes:
            raise ValueError(
                "--fold-padding acts when the gates are made exact: give --budget, --penalty or "
                "--finetune-epochs (with --activation alpha)"
            )
        if self.distill and self.init is None:
            raise ValueError("--distill needs --init RUN_DIR: the trained ReLU network to distil from")
        if self.distill and self.finetune_epochs == 0:
            raise ValueError("--distill acts in the fine-tuning epochs: give --finetune-epochs K (K >= 1)")

    def _check_method(self, bad) -> None:
        """A method other than alpha: a budget over every non-linearity, on learnable gates of a
        granularity it has; the options that are alpha's refused by name."""
        if self.method == "alpha":
            return
        method = METHODS[self.method]
        if self.activation != "alpha":
            raise bad(
                "activation",
                f"alpha with --method {self.method} (it puts its own gates where the ReLUs were)",
            )
        if self.budget is None:
            raise ValueError(f"--method {self.method} cuts the network to a ReLU budget: give --budget")
        if self.granularity not in method.granularities:
            raise bad("granularity", f"one of {', '.join(method.granularities)} with --method {self.method}")
        alphas = dict(budget_kind=None, fold_units=False, fuse_bn=False, gate_mode="schedule", nu_init=None,
                      alpha_init=None)  # fmt: skip
        for f, default in alphas.items():
            if getattr(self, f) != default:
                flag = "--" + f.replace("_", "-")
                raise ValueError(f"{flag} belongs to --method alpha; --method {self.method} does not take it")
        if self.penalty is not None and not method.learned:
            raise ValueError(f"--penalty: --method {self.method} learns no gates, it has no penalty")

    @property
    def total_epochs(self) -> int:
        """Search epochs, then fine-tuning epochs with the gates frozen."""
        return self.epochs + self.finetune_epochs

    @property
    def start_nu(self) -> float:
        if self.nu_init is not None:
            return float(self.nu_init)
        return NU_INIT_L1 if self.gate_mode == "l1" else 0.0

    @property
    def discretizes(self) -> bool:
        """Whether the gates are made exact after the search epochs (and the run then fine-tunes)."""
        wants = self.budget is not None or self.penalty is not None or self.finetune_epochs > 0
        return wants and self.activation in ("alpha", "alpha-eager")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from a checkpoint's dict; keys of older versions that no longer exist are dropped."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def resolve_device(name: str) -> torch.device:
    """ "auto" → cuda if present; a named device must exist (ValueError saying what does)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"--device {name}: this machine has no CUDA GPU; use --device cpu (or auto)")
        if device.index is not None and device.index >= n:
            raise ValueError(f"--device {name}: this machine has {n} CUDA GPU(s), cuda:0..cuda:{n - 1}")
    elif device.type not in ("cpu", "meta"):
        raise ValueError(f"--device {name}: alphakern trains on cpu or cuda")
    return device
