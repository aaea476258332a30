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

__all__ = [
    "CHECKPOINT",
    "EVAL_BATCH",
    "METRICS",
    "CheckpointError",
    "NonFiniteLoss",
    "TrainConfig",
    "Trainer",
    "build_model",
    "evaluate",
    "format_relus",
    "load_checkpoint",
    "load_config",
    "resolve_device",
    "test_with_discretized",
]
