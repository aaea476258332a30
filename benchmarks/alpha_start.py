#!/usr/bin/env python
"""Choose ``alpha``'s start and hinge weight for the Pareto (issue 31) on the validation split.

With the seed's start (γ = 0, ν = 0: every α = ½) a trained ReLU network loses half of each ReLU at
its first step, and with the hinge's weight 1 its soft count was still 42 % above the budget after
6 search epochs. This runs the first ``--epochs`` search epochs of the Pareto's 25 % alpha point
from the same ReLU network for each (``--alpha-init``, ``--nu-init``, ``--penalty``) in ``--grid``,
and records per epoch: validation accuracy with the soft gates, the soft ReLU count, and validation
accuracy right after a cut to the budget (no fine-tuning; BatchNorm's running statistics
re-estimated on 100 training batches). The test set is never read.

    python benchmarks/alpha_start.py --data-dir DATA --init runs/pareto/relu_base
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from alphakern.graph.budget import discretize_to_budget, soft_count
from alphakern.train import TrainConfig, Trainer
from alphakern.train.loop import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget_sweep import provenance  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "pareto"
RECALIBRATE = 100  # training batches through the cut network (BatchNorm in training mode, no gradient)


def probe(cfg: TrainConfig, epochs: int) -> list[dict]:
    """``epochs`` search epochs of ``cfg``: per epoch the soft gates' and the cut network's validation
    accuracy and the soft count."""
    t = Trainer(cfg, progress=False)
    rows = []
    for _ in range(epochs):
        stats = t.train_epoch()
        t.epoch += 1
        with torch.no_grad():
            cut = discretize_to_budget(t.model, t._example(), t.budget.gate_budget)
            soft = float(soft_count(t.sites))
            cut.train()  # BatchNorm's running statistics re-estimated for the cut network, as its
            for _, (x, _y) in zip(range(RECALIBRATE), t.train_batches.epoch(t.epoch), strict=False):
                cut(x)  # fine-tuning's first steps would; without it the cut's accuracy says little
        rows.append(dict(
            epoch=t.epoch, val_acc=evaluate(t.model, t.val_batches)[1], soft_relu_count=soft,
            val_acc_cut=evaluate(cut, t.val_batches)[1], train_time_s=stats["train_time_s"],
        ))  # fmt: skip
        print(cfg.out, rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--init", required=True, help="the Pareto's ReLU network (run directory)")
    p.add_argument("--grid", default="0.95:20:10,0.95:20:30,0.95:20:100",
                   help="alpha_init:nu_init:penalty, comma-separated")  # fmt: skip
    p.add_argument("--epochs", type=int, default=6, help="search epochs (the Pareto's 6)")
    p.add_argument("--budget", type=float, default=0.25)
    p.add_argument("--limit-train", type=int, default=None, help="a smoke run's share of the data")
    p.add_argument("--out", default=str(RESULTS / "alpha_start.json"))
    args = p.parse_args()
    result = dict(**provenance(), config=vars(args), probes=[])
    for item in args.grid.split(","):
        a, nu, w = (float(v) for v in item.split(":"))
        cfg = TrainConfig(
            out=f"/tmp/alpha_start/{item}", data_dir=args.data_dir, model="resnet20", augment=True,
            granularity="element", budget=args.budget, epochs=6, finetune_epochs=6, init=args.init,
            distill=True, limit_train=args.limit_train, penalty=w, nu_init=nu,
            alpha_init=None if a == 0.5 else a,  # the seed's start: γ = 0
        )  # fmt: skip
        t0 = time.perf_counter()
        rows = probe(cfg, args.epochs)
        result["probes"].append(dict(alpha_init=a, nu_init=nu, penalty=w, epochs=rows,
                                     seconds=time.perf_counter() - t0))  # fmt: skip
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
