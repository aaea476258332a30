"""Training on CIFAR (the study's CNN, linearised ReLU networks, ReLU budgets): config, loop,
checkpoints, plots (``alphakern train``)."""

from alphakern.train.checkpoint import (
    CHECKPOINT,
    METRICS,
    CheckpointError,
    load_checkpoint,
    load_config,
)
from alphakern.train.config import TrainConfig, resolve_device
from alphakern.train.loop import (
    EVAL_BATCH,
    NonFiniteLoss,
    Trainer,
    build_model,
    evaluate,
    format_relus,
    test_with_discretized,
)
from alphakern.train.rundir import RunDirBusy
from alphakern.train.runs import FoldedRun, Run, fold_run, load_run, load_test_batches, undecided_gates

__all__ = [
    "CHECKPOINT",
    "EVAL_BATCH",
    "METRICS",
    "CheckpointError",
    "FoldedRun",
    "Run",
    "RunDirBusy",
    "NonFiniteLoss",
    "TrainConfig",
    "Trainer",
    "build_model",
    "evaluate",
    "fold_run",
    "format_relus",
    "load_checkpoint",
    "load_config",
    "load_run",
    "resolve_device",
    "load_test_batches",
    "test_with_discretized",
    "undecided_gates",
]
