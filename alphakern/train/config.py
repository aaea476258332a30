"""The trainer's configuration: the study's defaults, each value checked when the config is made."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from alphakern.models import ACTIVATIONS, HEADS, MODELS
from alphakern.ops.utils import BACKEND_CHOICES, GRANULARITIES


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
    activation: str = "alpha"
    head: str = "logits"
    nu_step: float = 0.01
    granularity: str = "layer"
    backend: str | None = None
    amp: bool = False
    compile: bool = False
    channels_last: bool | None = None  # None: the measured-faster default (see Trainer)
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch
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
        if self.limit_train is not None and (not _is_int(self.limit_train) or self.limit_train < 1):
            raise bad("limit_train", "a positive number of images")
        if not _is_int(self.seed) or self.seed < 0:
            raise bad("seed", "a non-negative integer")
        if not _finite(self.lr) or self.lr <= 0:
            raise bad("lr", "a positive number")
        if not _finite(self.nu_step) or self.nu_step < 0:
            raise bad("nu_step", "a non-negative number")
        if not _finite(self.val_fraction) or not 0 < self.val_fraction < 1:
            raise bad("val_fraction", "between 0 and 1")
        checks = (
            ("model", MODELS),
            ("activation", ACTIVATIONS),
            ("head", HEADS),
            ("granularity", GRANULARITIES),
        )
        for f, choices in checks:
            if getattr(self, f) not in choices:
                raise bad(f, f"one of {', '.join(choices)}")
        if self.model != "cnn" and self.activation not in ("alpha", "relu"):
            raise bad("activation", f"alpha or relu for --model {self.model}")
        if self.model != "cnn" and self.head != "logits":
            raise bad("head", f"logits for --model {self.model} (softmax reproduces the study's CNN only)")
        if self.backend is not None and self.backend not in BACKEND_CHOICES:
            raise bad("backend", f"one of {', '.join(BACKEND_CHOICES)}")
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

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from a checkpoint's dict; keys of older versions that no longer exist are dropped."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


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
