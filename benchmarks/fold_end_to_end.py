#!/usr/bin/env python
"""End to end on the real CIFAR-10 copy: a network trained to drop the ReLU inside its residual
blocks, its padding moved (``--fold-padding``), folded exactly — accuracy and latency against the
ReLU network it came from.

1. the ReLU network trained ``--base-epochs`` (the network to linearise);
2. the ReLU network trained ``--search-epochs + --finetune-epochs`` more (the fair baseline);
3. from the same weights, layer gates trained to ``--budget`` for ``--search-epochs``, made exact,
   each linear conv chain's padding moved to its first conv, then ``--finetune-epochs`` distilling
   from the ReLU network;
4. both discretised networks folded (``alphakern.fold``, exact): the ReLU network's BatchNorms
   fold and nothing else, the budget network's linear blocks become one conv each.

Latency: eval, fp32, inference mode, contiguous, batch 1 and 64, the four models interleaved
(``timing.cpu_time_interleaved``), medians; with the onnx extra also onnxruntime. Every run is
resumable: run the script again after an interruption.

    python benchmarks/fold_end_to_end.py --data-dir DATA
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from bench_fold import ort_latency_ms
from budget_sweep import provenance, train_to_end
from timing import cpu_time_interleaved

import alphakern
from alphakern.data import DeviceBatches, load_dataset, probe
from alphakern.files import atomic_write
from alphakern.folding import POLICIES, fold_report
from alphakern.graph import discretize
from alphakern.train import EVAL_BATCH, TrainConfig, evaluate, runs

RESULTS = Path(__file__).resolve().parent / "results" / "fold_end_to_end"


def load_run(run_dir: str) -> torch.nn.Module:
    """A finished run's network, discretised, eval, on the CPU."""
    return discretize(runs.load_run(run_dir, "cpu").model).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--work", default="runs/fold_end_to_end", help="run directories (resumable)")
    p.add_argument("--out", default=str(RESULTS), help="where fold_end_to_end_<model>.json goes")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--budget", type=float, default=0.55, help="fraction of the ReLUs kept")
    p.add_argument("--base-epochs", type=int, default=10)
    p.add_argument("--search-epochs", type=int, default=3)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--fold-units", action="store_true", help="meet the budget by fold units (--fold-units)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", default="latency", choices=POLICIES)
    p.add_argument("--batches", default="1,64")
    p.add_argument("--seconds", type=float, default=20.0, help="timing budget per batch size")
    args = p.parse_args()
    work = Path(args.work)
    common = dict(data_dir=args.data_dir, model=args.model, seed=args.seed, limit_train=args.limit_train,
                  augment=args.augment, device="cpu", log_every=200)  # fmt: skip
    base = TrainConfig(out=str(work / "relu_base"), activation="relu", epochs=args.base_epochs, **common)
    train_to_end(base)
    more = args.search_epochs + args.finetune_epochs
    relu = TrainConfig(out=str(work / "relu_more"), activation="relu", epochs=more, init=base.out, **common)
    gated = TrainConfig(
        out=str(work / (f"budget_{args.budget:g}" + ("_units" if args.fold_units else ""))),
        granularity="layer",
        budget=args.budget,
        epochs=args.search_epochs,
        finetune_epochs=args.finetune_epochs,
        init=base.out,
        distill=args.finetune_epochs > 0,
        fold_padding=True,
        fold_units=args.fold_units,
        **common,
    )
    metrics = {name: train_to_end(cfg) for name, cfg in (("relu", relu), ("gated", gated))}

    x1 = probe()
    models = {"relu": load_run(relu.out), "gated": load_run(gated.out)}
    folded = {k: alphakern.fold(m, x1, policy=args.policy) for k, m in models.items()}
    data = load_dataset("cifar10", args.data_dir)
    batches = DeviceBatches(data.test_x, data.test_y, EVAL_BATCH, shuffle=False)
    acc = {}
    for k in models:
        acc[k] = evaluate(models[k], batches)[1]
        acc[k + "_folded"] = evaluate(folded[k], batches)[1]
    all_models = {**models, **{k + "_folded": m for k, m in folded.items()}}
    latency, ort = {}, {}
    for b in (int(v) for v in args.batches.split(",")):
        x = torch.randn(b, 3, 32, 32)
        with torch.inference_mode():
            fns = {k: (lambda m=m, x=x: m(x)) for k, m in all_models.items()}
            for f in fns.values():
                f()
            q = cpu_time_interleaved(fns, budget_s=args.seconds, min_rounds=10, max_rounds=2000)
        latency[b] = {k: v[0] for k, v in q.items()}
        ort[b] = ort_latency_ms(all_models, x, rounds=50 if b == 1 else 10)
        ratio = latency[b]["relu"] / latency[b]["gated_folded"]
        ratio_f = latency[b]["relu_folded"] / latency[b]["gated_folded"]
        print(f"batch {b}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in latency[b].items())
              + f" | gated folded vs relu: x{ratio:.2f}, vs relu with BN folded: x{ratio_f:.2f}")  # fmt: skip
    reports = {k: fold_report(models[k], folded[k], x1, rounds=1) for k in models}
    result = dict(
        **provenance(),
        config=vars(args),
        runs={k: c.out for k, c in (("relu_base", base), ("relu", relu), ("gated", gated))},
        relu_count={k: m["relu_count_after"] for k, m in metrics.items()},
        relu_layers=metrics["gated"].get("relu_layers"),
        padding_moved=metrics["gated"].get("padding_moved"),
        test_acc=acc,
        structure={
            k: {side: {f: r[side][f] for f in ("depth", "params", "macs")} for side in ("before", "after")}
            for k, r in reports.items()
        },  # fmt: skip
        merged={k: [list(n) + [w] for n, w in f.fold_info.merged] for k, f in folded.items()},
        not_merged={k: [list(n) + [w] for n, w in f.fold_info.not_merged] for k, f in folded.items()},
        latency_ms=latency,
        onnxruntime_ms=ort,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fold_end_to_end_{args.model}{'_units' if args.fold_units else ''}.json"
    atomic_write(path, lambda p: p.write_text(json.dumps(result, indent=1) + "\n"))
    print("test accuracy: " + ", ".join(f"{k} {v:.2f}%" for k, v in acc.items()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
