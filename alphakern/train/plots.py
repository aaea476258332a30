"""The run directory's two figures: losses/accuracies per epoch and α per training step."""

from __future__ import annotations

from pathlib import Path

import torch

from alphakern.train.checkpoint import atomic_write


def write_plots(run_dir: Path, metrics: dict, alpha_hist: torch.Tensor, names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [e["epoch"] for e in metrics["epochs"]]
    fig, ax = plt.subplots(1, 2, figsize=(12, 5))
    for key, axis, label in (("loss", ax[0], "Loss"), ("acc", ax[1], "Accuracy (%)")):
        axis.plot(ep, [e[f"train_{key}"] for e in metrics["epochs"]], marker="o", label="train")
        axis.plot(ep, [e[f"val_{key}"] for e in metrics["epochs"]], marker="o", label="validation")
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.set_title(f"{label} over epochs")
        axis.legend()
    fig.tight_layout()
    atomic_write(run_dir / "training_validation_metrics.png", lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    fig, axis = plt.subplots(figsize=(10, 6))
    for i, name in enumerate(names):
        axis.plot(alpha_hist[:, i].numpy(), label=f"layer {i + 1} ({name})")
    axis.set_xlabel("training step")
    axis.set_ylabel("alpha")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title("Evolution of alpha (1: ReLU, 0: identity)")
    if names:
        axis.legend()
    fig.tight_layout()
    atomic_write(run_dir / "alpha_evolution.png", lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
