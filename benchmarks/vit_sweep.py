#!/usr/bin/env python
"""The ViT end to end on CIFAR-10 (issue 30, 4b): which GELUs a ViT needs, at equal epochs.

1. the GELU ViT (``--model vit --activation relu``: no gates) trained ``--base-epochs``;
2. every point from its weights with the SAME ``--search-epochs`` + ``--finetune-epochs`` and the
   same distillation from it (KL, T = 4): the 100 % point (no gates; the trainer distils it in every
   epoch, as it has no search phase), then for each budget (a share of the GELUs) gates per hidden
   feature (``--granularity feature``: alphakern's) and per token (``--granularity channel``:
   PriViT's), a GELU budget (``--budget-kind gelu``), the gates made exact to it, fine-tuned;
3. each finished point folded (``alphakern.train.fold_run``: the MLPs whose features became linear
   merged), its test accuracy before and after, MACs and latency from ``fold_report``, and the
   share of GELUs each layer kept (from the run's checkpoint).

Every run is a resumable run directory: run the script again after an interruption and it goes on
where it stopped (finished runs are read back). Results: ``vit_sweep.json`` and ``vit_sweep.png``.

    python benchmarks/vit_sweep.py --data-dir DATA                       # the full sweep (hours)
    python benchmarks/vit_sweep.py --data-dir DATA --limit-train 256 --base-epochs 1 \\
        --search-epochs 1 --finetune-epochs 1 --work /tmp/vs --out /tmp/vs  # smoke
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from alphakern.files import atomic_write
from alphakern.train import TrainConfig, fold_run
from alphakern.train.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget_sweep import provenance, sweep_parser, train_to_end  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "vit_sweep"


def kept_per_layer(run_dir: str) -> list[float]:
    """The share of GELUs each gate kept after the cut (forward order of the gates' names)."""
    keep = load_checkpoint(run_dir, map_location="cpu").get("keep") or {}
    return [float(k.float().mean()) for _, k in sorted(keep.items())]


def folded(run_dir: str) -> dict:
    """fold_run's record of a finished run (cached in its directory as fold.json)."""
    path = Path(run_dir) / "fold.json"
    if not path.is_file():
        fold_run(run_dir, policy="latency")
    r = json.loads(path.read_text())
    return dict(test_acc_folded=r.get("test_acc_after"), report=r["report"],
                mlps=[{k: m[k] for k in ("gate", "form", "features", "kept", "macs_before", "macs_after")}
                      for m in r.get("mlps", [])])  # fmt: skip


def latency(work: Path, out: Path, batches: list[int], seconds: float) -> dict:
    """The GELU ViT (the 100 % point's network) against each finished point folded: eager fp32
    latency at each batch size (rounds interleaved, medians) and onnxruntime's (median of rounds).
    Run it with the machine otherwise idle; written to ``vit_latency.json``."""
    import torch
    from bench_fold import ort_latency_ms
    from timing import cpu_time_interleaved

    import alphakern
    from alphakern.graph import discretize
    from alphakern.train import runs

    models = {"gelu": discretize(runs.load_run(str(work / "gelu_100"), "cpu").model).eval()}
    for d in sorted(work.glob("*_0.*")):
        if (d / "fold.json").is_file():  # a finished point: its network folded at batch 64
            net = discretize(runs.load_run(str(d), "cpu").model).eval()
            models[d.name] = alphakern.fold(net, torch.randn(max(batches), 3, 32, 32), policy="latency")
    result: dict = dict(**provenance(), models=list(models), eager_ms={}, onnxruntime_ms={})
    for b in batches:
        x = torch.randn(b, 3, 32, 32)
        with torch.inference_mode():
            fns = {k: (lambda m=m, x=x: m(x)) for k, m in models.items()}
            for f in fns.values():
                f()
            q = cpu_time_interleaved(fns, budget_s=seconds, min_rounds=10, max_rounds=2000)
        result["eager_ms"][b] = {k: v[0] for k, v in q.items()}
        result["onnxruntime_ms"][b] = ort_latency_ms(models, x, rounds=50 if b == 1 else 10)
        for kind in ("eager_ms", "onnxruntime_ms"):
            t = result[kind][b]
            if t:
                print(
                    f"batch {b} {kind}: "
                    + ", ".join(f"{k} {v:.2f} ms (x{t['gelu'] / v:.2f})" for k, v in t.items())
                )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "vit_latency.json", lambda p: p.write_text(json.dumps(result, indent=1) + "\n"))
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    full = [p for p in result["points"] if p["granularity"] is None]
    for gran, label in (
        ("feature", "gates per hidden feature (alphakern)"),
        ("channel", "gates per token (PriViT)"),
    ):
        pts = sorted((p for p in result["points"] if p["granularity"] == gran), key=lambda p: p["gelus"])
        pts += full
        ax.plot([p["gelus"] for p in pts], [p["test_acc"] for p in pts], marker="o", label=label)
        for p in pts:
            if p["granularity"] == gran:
                bx.plot(range(1, len(p["kept_per_layer"]) + 1), p["kept_per_layer"], marker="o",
                        label=f"{label.split(' (')[0]}, {p['fraction']:.0%}")  # fmt: skip
    ax.axhline(
        result["gelu_network"]["test_acc"], color="k", linestyle=":", label="GELU ViT before the points"
    )
    ax.set_xlabel("GELUs per image")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    bx.set_xlabel("gate (forward order)")
    bx.set_ylabel("share of its GELUs kept")
    bx.grid(True, alpha=0.3)
    bx.legend(fontsize=7)
    fig.suptitle("ViT (patch 8, 6 layers, width 192) on CIFAR-10, equal epochs")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def main() -> None:
    p = sweep_parser(__doc__, "runs/vit_sweep", RESULTS)
    p.add_argument("--budgets", default="0.5,0.25", help="shares of the network's GELUs")
    p.add_argument("--granularities", default="feature,channel")
    p.add_argument("--base-epochs", type=int, default=15)
    p.add_argument("--search-epochs", type=int, default=5)
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument(
        "--lr",
        type=float,
        default=5e-4,
        help="Adam's (1e-3 made the GELU ViT's validation accuracy fall in its 2nd epoch)",
    )
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency", action="store_true", help="only time the finished points (machine idle)")
    p.add_argument("--batches", default="1,64", help="batch sizes --latency times")
    p.add_argument("--seconds", type=float, default=20.0, help="--latency's eager timing per batch size")
    args = p.parse_args()
    work, out = Path(args.work), Path(args.out)
    if args.latency:
        latency(work, out, [int(b) for b in args.batches.split(",")], args.seconds)
        return
    common = dict(data_dir=args.data_dir, model="vit", seed=args.seed, limit_train=args.limit_train,
                  augment=True, lr=args.lr, log_every=200)  # fmt: skip
    t0 = time.perf_counter()
    base = TrainConfig(out=str(work / "gelu_base"), activation="relu", epochs=args.base_epochs, **common)
    base_m = train_to_end(base)
    equal = dict(epochs=args.search_epochs, finetune_epochs=args.finetune_epochs, init=base.out, distill=True)
    runs = [(None, 1.0, TrainConfig(out=str(work / "gelu_100"), activation="relu", **equal, **common))]
    for gran in args.granularities.split(","):
        for b in (float(v) for v in args.budgets.split(",")):
            cfg = TrainConfig(out=str(work / f"{gran}_{b:g}"), granularity=gran, budget=b, budget_kind="gelu",
                              **equal, **common)  # fmt: skip
            runs.append((gran, b, cfg))
    points = []
    for gran, b, cfg in runs:
        m = train_to_end(cfg)
        point = dict(granularity=gran, fraction=b, run=cfg.out, test_acc=m["test_acc"],
                     gelus=sum(m["nonlinearities_after"].values()), val_acc=m["epochs"][-1]["val_acc"],
                     epochs=len(m["epochs"]))  # fmt: skip
        if gran is not None:
            point.update(kept_per_layer=kept_per_layer(cfg.out), **folded(cfg.out))
        points.append(point)
        result = dict(
            **provenance(),
            config=vars(args),
            gelu_network=dict(
                run=base.out, test_acc=base_m["test_acc"], gelus=sum(base_m["nonlinearities_before"].values())
            ),  # fmt: skip
            points=points,
            complete=len(points) == len(runs),
            seconds_this_call=time.perf_counter() - t0,
        )
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(result, indent=1) + "\n"
        atomic_write(out / "vit_sweep.json", lambda p, text=text: p.write_text(text))
        plot(result, out / "vit_sweep.png")
    for pt in points:
        name = pt["granularity"] or "GELU"
        print(f"{name} {pt['fraction']:.0%}: {pt['gelus']} GELUs, test {pt['test_acc']:.2f}%")


if __name__ == "__main__":
    main()
