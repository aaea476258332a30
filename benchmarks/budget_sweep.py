#!/usr/bin/env python
"""Accuracy vs ReLU count: a network trained to several ReLU budgets, each with the same epochs.

1. the ReLU network (``--activation relu``) trained ``--base-epochs``: the network to linearise;
2. the 100 % point: that network trained ``--search-epochs + --finetune-epochs`` more epochs;
3. each budget: from the same weights (``--init``), ``--search-epochs`` with gates per
   ``--granularity`` and the budget's hinge penalty, the gates made exact to the budget, then
   ``--finetune-epochs`` distilling from the ReLU network (``--distill``).

Then the step-time cost of the gates: training steps with channel gates vs layer gates, rounds
interleaved in this process. Every run is resumable: run the script again after an interruption.

    python benchmarks/budget_sweep.py --data-dir DATA            # resnet20, 50/25/10 %
    python benchmarks/budget_sweep.py --data-dir DATA --limit-train 512 --base-epochs 1 ...  # smoke
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from alphakern.files import atomic_write
from alphakern.train import METRICS, TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import device_name  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "budget_sweep"


def finished(cfg: TrainConfig) -> dict | None:
    """The metrics of ``cfg``'s run if it ran all its epochs and was tested, else None."""
    done = Path(cfg.out) / METRICS
    if done.is_file():
        metrics = json.loads(done.read_text())
        if "test_acc" in metrics and len(metrics["epochs"]) == cfg.total_epochs:
            return metrics
    return None


def train_to_end(cfg: TrainConfig) -> dict:
    """Train ``cfg`` to its end (resuming a checkpoint, skipping a finished run); its metrics."""
    metrics = finished(cfg)
    if metrics is not None:
        print(f"{cfg.out}: done before ({metrics['test_acc']:.2f}%)")
        return metrics
    trainer = Trainer(cfg, progress=False)
    if (Path(cfg.out) / "checkpoint.pt").is_file():
        trainer.load()
        print(f"{cfg.out}: resuming after epoch {trainer.epoch}")
    t0 = time.perf_counter()
    metrics = trainer.run()
    print(
        f"{cfg.out}: {metrics['test_acc']:.2f}% at {metrics['relu_count_after']} ReLUs "
        f"({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    return metrics


def provenance(**machine) -> dict:
    """When and where a sweep ran: the date (UTC) and the machine (CPU, threads, torch, and ``machine``)."""
    return dict(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        machine=dict(
            cpu=device_name("cpu"),
            threads=torch.get_num_threads(),
            torch=torch.__version__,
            **machine,
        ),  # fmt: skip
    )


def sweep_parser(doc: str, work: str, out: Path) -> argparse.ArgumentParser:
    """The arguments every resumable sweep takes: the data, its run directories, where results go."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--work", default=work, help="run directories (resumable)")
    p.add_argument("--out", default=str(out), help="where the results (JSON, plots) go")
    return p


def step_cost(args: argparse.Namespace, data_dir: str, rounds: int = 3, steps: int = 40) -> dict:
    """Seconds per training step with gates per channel and per layer (and plain ReLUs), rounds
    interleaved; the ratios are what to read, not the absolute times."""
    from alphakern.data import load_dataset

    data = load_dataset("cifar10", data_dir)
    kinds = {
        "relu": dict(activation="relu"),
        "layer": dict(granularity="layer"),
        "channel": dict(granularity="channel"),
    }
    trainers = {}
    for name, kw in kinds.items():
        cfg = TrainConfig(
            data_dir=data_dir, out="/nonexistent", model=args.model, limit_train=64 * (steps + 5), **kw
        )
        trainers[name] = Trainer(cfg, data, progress=False)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for name, t in trainers.items():
            batches = list(t.train_batches.epoch(0))
            warm = min(5, len(batches) - 1)  # steps not timed
            t.model.train()
            for i, (x, y) in enumerate(batches):
                if i == warm:
                    t0 = time.perf_counter()
                loss = torch.nn.functional.cross_entropy(
                    t.step_model(x), y
                )  # no penalty: the gates' own cost
                t.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                t.optimizer.step()
            times[name].append((time.perf_counter() - t0) / (len(batches) - warm))
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(
        seconds_per_step=med,
        rounds=times,
        channel_over_layer=med["channel"] / med["layer"],
        layer_over_relu=med["layer"] / med["relu"],
        channel_over_relu=med["channel"] / med["relu"],
    )


def accuracy_axes(ax, title: str) -> None:
    """Test accuracy against ReLUs per image (log x): the sweeps' plots."""
    ax.set_xscale("log")
    ax.set_xlabel("ReLUs per image")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted(result["points"], key=lambda p: p["relu_count"])
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot([p["relu_count"] for p in pts], [p["test_acc"] for p in pts], "o-", label="trained to the budget")
    for p in pts:
        xy = (p["relu_count"], p["test_acc"])
        ax.annotate(
            f"{100 * p['fraction']:.0f}%", xy, textcoords="offset points", xytext=(4, -12), fontsize=8
        )
    full = next(p for p in pts if p["fraction"] == 1.0)
    ax.axhline(full["test_acc"] - 2, color="gray", ls=":", label="ReLU network − 2 points")
    c = result["config"]
    accuracy_axes(ax, f"{c['model']}, {c['granularity']} gates, CIFAR-10: {c['base_epochs']} epochs ReLU "
                  f"network, then {c['search_epochs']}+{c['finetune_epochs']} per point")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def main() -> None:
    p = sweep_parser(__doc__, "runs/budget_sweep", RESULTS)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--granularity", default="channel")
    p.add_argument("--budgets", default="0.5,0.25,0.1", help="fractions of the network's ReLUs")
    p.add_argument("--base-epochs", type=int, default=6)
    p.add_argument("--search-epochs", type=int, default=3)
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--penalty", type=float, default=None, help="hinge weight (TrainConfig's default: 1)")
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-cost", action="store_true", help="skip the step-time measurement")
    args = p.parse_args()
    work, out = Path(args.work), Path(args.out)
    common = dict(data_dir=args.data_dir, model=args.model, seed=args.seed, limit_train=args.limit_train,
                  log_every=200)  # fmt: skip
    t_start = time.perf_counter()
    base = TrainConfig(out=str(work / "relu_base"), activation="relu", epochs=args.base_epochs, **common)
    base_metrics = train_to_end(base)
    more = args.search_epochs + args.finetune_epochs
    full = train_to_end(
        TrainConfig(out=str(work / "relu_100"), activation="relu", epochs=more, init=base.out, **common)
    )
    points = [dict(fraction=1.0, run=str(work / "relu_100"), **_point(full))]
    for b in [float(v) for v in args.budgets.split(",")]:
        cfg = TrainConfig(
            out=str(work / f"budget_{b:g}"),
            granularity=args.granularity,
            budget=b,
            penalty=args.penalty,
            epochs=args.search_epochs,
            finetune_epochs=args.finetune_epochs,
            init=base.out,
            distill=args.finetune_epochs > 0,
            **common,
        )
        m = train_to_end(cfg)
        search = [e for e in m["epochs"] if e["phase"] == "search"]
        soft = search[-1]["soft_relu_count"] if search else None
        points.append(
            dict(fraction=b, run=cfg.out, budget=m["relu_budget"], soft_count_after_search=soft, **_point(m))
        )
    result = dict(
        **provenance(device=full["device"]),
        config=dict(vars(args), base_epochs=args.base_epochs),
        relu_network=dict(
            run=base.out, relu_count=base_metrics["relu_count_before"], test_acc=base_metrics["test_acc"]
        ),
        points=points,
        sweep_seconds=time.perf_counter() - t_start,
    )
    full_acc = full["test_acc"]
    for pt in points:
        pt["drop_vs_relu_network"] = full_acc - pt["test_acc"]
    if not args.skip_cost:
        result["step_time"] = step_cost(args, args.data_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "budget_sweep.json", lambda p: p.write_text(json.dumps(result, indent=1) + "\n"))
    plot(result, out / "budget_sweep.png")
    for pt in points:
        print(f"{100 * pt['fraction']:5.1f}%: {pt['relu_count']:>7} ReLUs, test {pt['test_acc']:.2f}% "
              f"({pt['drop_vs_relu_network']:+.2f} points below the ReLU network)")  # fmt: skip
    if "step_time" in result:
        print(f"step time: channel gates / layer gates = {result['step_time']['channel_over_layer']:.3f}")
    print(f"wrote {out / 'budget_sweep.json'} and budget_sweep.png")


def _point(m: dict) -> dict:
    last = m["epochs"][-1]
    return dict(relu_count=m["relu_count_after"], test_acc=m["test_acc"], val_acc=last["val_acc"],
                images_per_s=statistics.median(e["images_per_s"] for e in m["epochs"]))  # fmt: skip


if __name__ == "__main__":
    main()
