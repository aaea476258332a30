"""The run directory's figures: losses/accuracies per epoch, α per training step, and (budget runs)
the ReLUs kept and removed per layer."""

from __future__ import annotations

from pathlib import Path

import torch

from alphakern.files import atomic_write

CURVES, ALPHAS, BUDGET_BARS = "training_validation_metrics.png", "alpha_evolution.png", "relu_budget.png"
PLOTS = (CURVES, ALPHAS, BUDGET_BARS)


def write_plots(
    run_dir: Path,
    metrics: dict,
    alpha_hist: torch.Tensor,
    names: list[str],
    band: torch.Tensor | None = None,
) -> None:
    """``alpha_hist``: [steps, layers]; ``band``: [steps, layers, (mean, std)] of α over each
    layer's gates (per-channel/per-element runs), drawn as mean ± std instead of a line per gate."""
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
    atomic_write(run_dir / CURVES, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    fig, axis = plt.subplots(figsize=(10, 6))
    for i, name in enumerate(names):
        label = f"layer {i + 1} ({name})" + (" mean ± std over its gates" if band is not None else "")
        (line,) = axis.plot(alpha_hist[:, i].numpy(), label=label)
        if band is not None:
            mean, std = band[:, i, 0], band[:, i, 1]
            steps = range(len(mean))
            lo, hi = (mean - std).clamp(0, 1).numpy(), (mean + std).clamp(0, 1).numpy()
            axis.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    axis.set_xlabel("training step")
    axis.set_ylabel("alpha")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title("Evolution of alpha (1: ReLU, 0: identity)")
    if names:
        axis.legend()
    fig.tight_layout()
    atomic_write(run_dir / ALPHAS, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def write_relu_budget_plot(run_dir: Path, metrics: dict) -> None:
    """``relu_budget.png``: per gated layer, the ReLUs per sample kept and removed (stacked bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = metrics["relu_layers"]
    kept = [d["kept"] for d in layers]
    removed = [d["relus"] - d["kept"] for d in layers]
    x = range(len(layers))
    fig, axis = plt.subplots(figsize=(max(6, 0.45 * len(layers) + 2), 5))
    axis.bar(x, kept, label="kept (ReLU)", color="tab:red")
    axis.bar(x, removed, bottom=kept, label="removed (linear)", color="tab:gray", alpha=0.5)
    axis.set_xticks(list(x), [d["name"] for d in layers], rotation=60, ha="right", fontsize=7)
    axis.set_ylabel("ReLUs per sample")
    before, after = metrics["relu_count_before"], metrics["relu_count_after"]
    budget = metrics.get("relu_budget")
    title = f"ReLUs kept: {after} of {before} ({100 * after / max(before, 1):.1f}%)"
    axis.set_title(title + (f", budget {budget}" if budget is not None else ""))
    axis.legend()
    fig.tight_layout()
    atomic_write(run_dir / BUDGET_BARS, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
