#!/usr/bin/env python
"""Choose a learned method's penalty weight (and alpha's start) for the Pareto (issue 31) on the
validation split.

With the seed's start (γ = 0, ν = 0: every α = ½) a trained ReLU network loses half of each ReLU at
its first step, and with the hinge's weight 1 alpha's soft count was still 42 % above the budget
after 6 search epochs; SNL's λ = 1e-5 left its count at 149,692 of a 47,104 budget. This runs the
search epochs of the Pareto's 25 % point of ``--method`` from the same ReLU network for each weight
in ``--penalties`` (alpha: its gates starting at α = ``--alpha-init``, ν = ``--nu-init``) and
records per epoch: validation accuracy with the soft gates, the soft ReLU count, and validation
accuracy right after the method's own cut (no fine-tuning; BatchNorm's running statistics
re-estimated on 100 training batches). A method that stops its search at the budget (SNL) stops
here too. The test set is never read.

    python benchmarks/search_probe.py --data-dir DATA --init runs/pareto/relu_base --method snl \\
        --penalties 1e-5,1e-4,1e-3
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from alphakern.files import atomic_write
from alphakern.graph import apply_keep
from alphakern.graph.budget import soft_count
from alphakern.train import TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget_sweep import provenance  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "pareto"
RECALIBRATE = 100  # training batches through the cut network (BatchNorm in training mode, no gradient)


def cut_accuracy(t: Trainer) -> float:
    """Validation accuracy of a copy of ``t``'s model cut by its method, BatchNorm re-estimated."""
    cut = copy.deepcopy(t.model)
    apply_keep(cut, t.budget.exact_keep(t.model, t.validation_accuracy))
    with torch.no_grad():
        cut.train()  # the running statistics of the cut network, as fine-tuning's first steps would
        for _, (x, _y) in zip(range(RECALIBRATE), t.train_batches.epoch(t.epoch), strict=False):
            cut(x)
    return t.validation_accuracy(cut)


def probe(cfg: TrainConfig) -> list[dict]:
    """``cfg``'s search epochs: per epoch the soft gates' and the cut network's validation accuracy
    and the soft count."""
    t = Trainer(cfg, progress=False)
    rows = []
    while t.epoch < cfg.epochs:
        stats = t.train_epoch()
        t.epoch += 1
        with torch.no_grad():
            soft = float(soft_count(t.sites))
        at_budget = t.budget.method.end_epoch(t.budget.scope)  # its schedule (SNL's λ) moves on
        rows.append(dict(
            epoch=t.epoch, val_acc=t.validation_accuracy(t.model), soft_relu_count=soft,
            val_acc_cut=cut_accuracy(t), train_time_s=stats["train_time_s"],
        ))  # fmt: skip
        print(cfg.out, rows[-1], flush=True)
        if at_budget:
            break
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--init", required=True, help="the Pareto's ReLU network (run directory)")
    p.add_argument("--method", default="alpha", choices=("alpha", "snl", "autorep"))
    p.add_argument("--penalties", default="10,30,100", help="the method's penalty weights, comma-separated")
    p.add_argument("--alpha-init", type=float, default=0.95)
    p.add_argument("--nu-init", type=float, default=20.0)
    p.add_argument("--epochs", type=int, default=6, help="search epochs (the Pareto's 6)")
    p.add_argument("--budget", type=float, default=0.25)
    p.add_argument("--limit-train", type=int, default=None, help="a smoke run's share of the data")
    p.add_argument("--out", default=None, help="default: results/pareto/search_probe_METHOD.json")
    args = p.parse_args()
    out = Path(args.out or RESULTS / f"search_probe_{args.method}.json")
    start = dict(alpha_init=args.alpha_init, nu_init=args.nu_init) if args.method == "alpha" else {}
    result = dict(**provenance(), config=vars(args), probes=[])
    for w in (float(v) for v in args.penalties.split(",")):
        cfg = TrainConfig(
            out=f"/tmp/search_probe/{args.method}_{w:g}", data_dir=args.data_dir, model="resnet20",
            augment=True, method=args.method, granularity="element", budget=args.budget, epochs=args.epochs,
            finetune_epochs=6, init=args.init, distill=True, limit_train=args.limit_train, penalty=w, **start,
        )  # fmt: skip
        t0 = time.perf_counter()
        rows = probe(cfg)
        result["probes"].append(dict(penalty=w, **start, epochs=rows, seconds=time.perf_counter() - t0))
        text = json.dumps(result, indent=1) + "\n"
        atomic_write(out, lambda p, text=text: p.write_text(text))


if __name__ == "__main__":
    main()
