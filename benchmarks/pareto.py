#!/usr/bin/env python
"""The linearisation methods side by side at equal epochs (issue 31): accuracy vs ReLUs on CIFAR-10.

1. one ReLU ResNet-20 trained ``--base-epochs`` (augmented): the network every point starts from;
2. every point from its weights with the SAME ``--search-epochs`` + ``--finetune-epochs`` and the
   same distillation from it (KL, T = 4, in every epoch without gates):
   - the 100 % point: no gates, trained as long;
   - each method (``alpha``, ``snl``, ``autorep``: learned gates per element; ``stage``,
     ``random``: cut before the first epoch, every epoch fine-tunes) at each budget (a share of the
     ReLUs), plus alphakern's gates per channel as their own row, and a second seed for the
     25 % point of ``alpha`` and ``snl``. ``alpha`` starts its gates at α = ``--alpha-init`` (ν =
     ``--alpha-nu-init``) with the hinge weight ``--alpha-penalty``, ``snl`` its λ at
     ``--snl-penalty``, each chosen on the validation split by ``search_probe.py``; their 25 %
     points with their own defaults (the seed study's start α = ½ and weight 1; SNL's λ = 1e-5)
     are rows of their own;
3. per point: test accuracy, ReLUs per image, and the share of its ReLUs each stage kept.

Every choice a method makes reads the validation split; the test set is read once per point, at its
end. Every run is a resumable run directory: run the script again after an interruption and it
goes on where it stopped (finished runs are read back). On a fresh checkout, where the run directories
are gone, the ReLU network comes back from its committed weights (``relu_base.safetensors``) and the
finished points' committed metrics stand for their runs. Results: ``pareto.json``, ``pareto.png``
(accuracy vs ReLUs, log x, a line per method) and ``pareto_stages.png`` (where each method keeps
its ReLUs), rewritten after every point; each run's metrics (its epochs' curves) in ``run_metrics/NAME.json``.

    python benchmarks/pareto.py --data-dir DATA                                   # days on 2 cores
    python benchmarks/pareto.py --data-dir DATA --report                       # the results so far
    python benchmarks/pareto.py --data-dir DATA --limit-train 256 --base-epochs 1 --search-epochs 1 \\
        --finetune-epochs 1 --budgets 0.25 --work /tmp/p --out /tmp/p          # smoke

Two at once share the points: each skips the point the other is training (its run directory is
locked). On the 2-core EPYC, two processes at OMP_NUM_THREADS=1 made 1.33× the training steps of one
at 2 threads (ResNet-20, batch 64: 283 ms a step each against 188 ms), about 1.15× the points
per hour in whole epochs; as each ends, the other's points may be missing from the results it wrote
last: ``--report`` writes them all.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from alphakern.files import atomic_write
from alphakern.train import RunDirBusy, TrainConfig
from alphakern.train.checkpoint import load_checkpoint
from alphakern.train.rundir import RunDir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget_sweep import accuracy_axes, finished, provenance, sweep_parser, train_to_end  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "pareto"
BASE_WEIGHTS = "relu_base.safetensors"  # the ReLU network's weights, committed beside the results
METHOD_ORDER = ("alpha", "snl", "autorep", "stage", "random")
LEARNED = ("alpha", "snl", "autorep")  # the methods with learned gates (issue 31: each must beat random)
# the settings chosen on the validation split (search_probe.py, results/pareto/search_probe_*.json: the
# best validation accuracy of the network cut to the 25 % budget at the end of the search: 6 epochs,
# or SNL's stop at the budget), and the row each method's own defaults keep at 25 % (its run
# directory's suffix and its label)
DEFAULTS_ROW = {"alpha": ("seedstart", "seed's start"), "snl": ("authors", "authors' λ")}
ALPHA_START = dict(alpha_init=0.95, nu_init=20.0, penalty=30.0)  # of weights 10, 30, 100 at α = 0.95, ν = 20
SNL_PENALTY = 1e-4  # of 1e-5 (its authors'), 3e-5, 1e-4, 3e-4, 1e-3 (search_probe_snl*.json)


def kept_per_stage(metrics: dict) -> dict[str, float]:
    """The share of each stage's ReLUs the point kept (from the run's ``relu_layers``). A stage is a
    run of consecutive gates with the same ReLUs per image — in ResNet-20, one resolution (the
    stem and 16 channels at 32², 32 at 16², 64 at 8²), as ``--method stage`` groups them."""
    relus: dict[str, int] = {}
    kept: dict[str, int] = {}
    last, stage = None, 0
    for d in metrics.get("relu_layers", []):
        if d["relus"] != last:
            last, stage = d["relus"], stage + 1
        s = f"stage {stage}"
        relus[s] = relus.get(s, 0) + d["relus"]
        kept[s] = kept.get(s, 0) + d["kept"]
    return {s: kept[s] / relus[s] for s in relus}


def verdict(points: list[dict], methods: list[str]) -> dict[str, dict]:
    """Per budget, what issue 31 asks of the points in so far (seed 0, element gates, each method's
    chosen settings): the methods ranked by test accuracy, alpha's lead over SNL, the lead of each
    learned method of ``methods`` over ``random``, the two goals (alpha at least as accurate as SNL;
    each of those ahead of random; None while a point is missing) and each method's accuracy per
    seed."""
    learned = [m for m in LEARNED if m in methods]
    out: dict[str, dict] = {}
    for b in sorted({p["fraction"] for p in points if p["method"]}, reverse=True):
        at = [p for p in points if p["method"] and p["fraction"] == b and p["granularity"] == "element"]
        acc = {p["method"]: p["test_acc"] for p in at if p["seed"] == 0 and not p.get("variant")}
        seeds: dict[str, list[float]] = {}
        for p in sorted(at, key=lambda p: p["seed"]):
            if not p.get("variant"):
                seeds.setdefault(p["method"], []).append(p["test_acc"])
        lead = acc["alpha"] - acc["snl"] if "alpha" in acc and "snl" in acc else None
        vs_random = {m: acc[m] - acc["random"] for m in learned if m in acc and "random" in acc}
        ahead = all(v > 0 for v in vs_random.values()) if learned and len(vs_random) == len(learned) else None
        out[f"{b:g}"] = dict(
            ranking=sorted(acc, key=lambda m: -acc[m]), test_acc=acc, alpha_minus_snl=lead,
            minus_random=vs_random, alpha_at_least_snl=None if lead is None else lead >= 0,
            learned_ahead_of_random=ahead,
            seeds={m: v for m, v in seeds.items() if len(v) > 1},
        )  # fmt: skip
    return out


def label(p: dict) -> str:
    row = p["method"] if p["granularity"] in (None, "element") else f"{p['method']} ({p['granularity']})"
    row += f", {p['variant']}" if p.get("variant") else ""
    return row if p["seed"] == 0 else f"{row}, seed {p['seed']}"


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result["points"]
    full = [p for p in points if p["method"] is None]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    rows = sorted({label(p) for p in points if p["method"] is not None and p["seed"] == 0})
    colour = {row: f"C{i % 10}" for i, row in enumerate(rows)}  # a row's colour in both figures
    for row in rows:
        pts = sorted((p for p in points if p["method"] and label(p) == row), key=lambda p: p["relus"])
        ax.plot(
            [p["relus"] for p in pts], [p["test_acc"] for p in pts], marker="o", label=row, color=colour[row]
        )
    for p in points:
        if p["method"] and p["seed"] != 0:
            ax.plot(p["relus"], p["test_acc"], "kx", ms=7)
    for p in full:
        ax.plot(p["relus"], p["test_acc"], "k*", ms=10, label="ReLU network, trained as long")
    if any(p["seed"] != 0 for p in points):
        ax.plot([], [], "kx", label="second seed")
    c = result["config"]
    accuracy_axes(ax, f"ResNet-20, CIFAR-10: {c['base_epochs']} epochs ReLU network, then "
                  f"{c['search_epochs']} + {c['finetune_epochs']} epochs per point")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out / "pareto.png", lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)

    budgets = sorted(float(v) for v in result["config"]["budgets"].split(","))
    fig, axes = plt.subplots(1, max(1, len(budgets)), figsize=(12, 4), sharey=True)
    axes = axes if hasattr(axes, "__len__") else [axes]
    for bx, b in zip(axes, budgets, strict=False):
        pts = [p for p in points if p["method"] and p["fraction"] == b and p["seed"] == 0]
        pts.sort(key=lambda p: rows.index(label(p)))
        stages = sorted({s for p in pts for s in p["kept_per_stage"]})
        width = 0.8 / max(1, len(pts))
        for i, p in enumerate(pts):
            xs = [j + i * width for j in range(len(stages))]
            kept = [p["kept_per_stage"].get(s, 0.0) for s in stages]
            bx.bar(xs, kept, width, label=label(p), color=colour[label(p)])
        bx.set_xticks([j + 0.4 - width / 2 for j in range(len(stages))], stages)
        bx.set_title(f"budget {b:.0%} of the ReLUs", fontsize=9)
        bx.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("share of the stage's ReLUs kept")
    filled = [bx for bx in axes if bx.get_legend_handles_labels()[0]]  # budgets not run yet stay empty
    if filled:
        filled[-1].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(out / "pareto_stages.png", lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def save_run(out: Path, run: str, metrics: dict, init: str | None = None) -> None:
    """A run's metrics as committed (``out/run_metrics/NAME.json``), not its checkpoint: everything
    but the per-step gate history (megabytes per run; the epochs keep each layer's mean γ and α);
    ``init``: the digest of the ReLU network it started from."""
    (out / "run_metrics").mkdir(parents=True, exist_ok=True)
    record = {k: v for k, v in metrics.items() if k != "history"} | ({"init_sha256": init} if init else {})
    text = json.dumps(record, indent=1) + "\n"
    atomic_write(out / "run_metrics" / f"{Path(run).name}.json", lambda p: p.write_text(text))


def recorded(cfg: TrainConfig, out: Path, init: str | None = None) -> dict | None:
    """The committed metrics of ``cfg``'s finished run (``out/run_metrics/NAME.json``) when its run
    directory is gone, as on a fresh checkout: None unless they record the same configuration (its
    directories aside) run to its end — from the ReLU network of digest ``init``, for a point."""
    path = out / "run_metrics" / f"{Path(cfg.out).name}.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    try:  # as the trainer resumes a run: a field added since it ran takes its default
        theirs = asdict(TrainConfig.from_dict(m["config"]))
    except (TypeError, ValueError):
        return None
    own = ("out", "data_dir", "init")
    if {k: v for k, v in theirs.items() if k not in own} != {
        k: v for k, v in asdict(cfg).items() if k not in own
    }:
        return None
    if "test_acc" not in m or len(m["epochs"]) != cfg.total_epochs:
        return None
    return m if m.get("init_sha256") == init else None


def base_network(base: TrainConfig, out: Path, report: bool) -> tuple[dict | None, str | None]:
    """The ReLU network every point starts from, its metrics and the digest of its committed weights
    (``out/relu_base.safetensors``: tensors only, no pickle). Trained once, its weights committed:
    another machine's CPU trains other bits from the same seed, so a fresh checkout rebuilds the run
    directory from the weights instead (None, None: not finished, with ``report``)."""
    path = out / BASE_WEIGHTS
    if finished(base) is None and path.is_file() and (m := recorded(base, out)) is not None:  # fresh checkout
        run = RunDir(base.out, writes=True)  # held while this process trains or reads it on
        try:  # as the trainer: the directory's one writer, or refused
            run.restore(dict(config=asdict(base), epoch=len(m["epochs"]), model=load_file(path)), m)
        except RunDirBusy as e:
            raise SystemExit(f"{base.out}: cannot restore it from {path}: {e}") from None
        print(f"{base.out}: restored from {path} ({m['test_acc']:.2f}%)")
    m = finished(base) if report else train_to_end(base)
    if m is None:
        return None, None
    weights = load_checkpoint(base.out)["model"]
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: save_file({k: v.contiguous() for k, v in weights.items()}, str(p)))
    committed = load_file(path)
    if committed.keys() != weights.keys() or not all(torch.equal(committed[k], weights[k]) for k in weights):
        raise SystemExit(
            f"{base.out} holds another ReLU network than {path}, which the committed points started from: "
            "move that file and run_metrics/ away to start afresh"
        )
    return m, hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    p = sweep_parser(__doc__, "runs/pareto", RESULTS)
    p.add_argument("--budgets", default="0.25,0.1,0.5", help="shares of the ReLUs, in the order run")
    p.add_argument("--methods", default=",".join(METHOD_ORDER))
    p.add_argument("--base-epochs", type=int, default=15)
    p.add_argument("--search-epochs", type=int, default=6)
    p.add_argument("--finetune-epochs", type=int, default=6)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--report", action="store_true", help="train nothing: write the finished points' results")
    # alpha's start and hinge weight, chosen on the validation split by benchmarks/search_probe.py
    p.add_argument("--alpha-init", type=float, default=ALPHA_START["alpha_init"])
    p.add_argument("--alpha-nu-init", type=float, default=ALPHA_START["nu_init"])
    p.add_argument("--alpha-penalty", type=float, default=ALPHA_START["penalty"])
    snl_help = "SNL's starting λ (default: the one chosen on validation)"
    p.add_argument("--snl-penalty", type=float, default=SNL_PENALTY, help=snl_help)
    args = p.parse_args()
    work, out = Path(args.work), Path(args.out)
    common = dict(data_dir=args.data_dir, model="resnet20", limit_train=args.limit_train, augment=True,
                  log_every=200)  # fmt: skip
    t0 = time.perf_counter()
    base = TrainConfig(
        out=str(work / "relu_base"), activation="relu", epochs=args.base_epochs, seed=0, **common
    )
    base_m, init = base_network(base, out, args.report)
    if base_m is None:
        raise SystemExit(f"--report: the ReLU network {base.out} has not finished")
    save_run(out, base.out, base_m)

    def result_of(cfg: TrainConfig) -> dict | None:  # --report: None for a run not finished
        done = finished(cfg)
        if done is None and (m := recorded(cfg, out, init)) is not None:
            print(f"{cfg.out}: recorded in {out / 'run_metrics'} ({m['test_acc']:.2f}%)")
            return m
        if args.report:
            return done
        try:
            return train_to_end(cfg)  # (reads a finished run back)
        except RunDirBusy as e:  # a second pareto.py is training it
            print(f"{cfg.out}: skipped: {e}", flush=True)
            return None

    equal = dict(epochs=args.search_epochs, finetune_epochs=args.finetune_epochs, init=base.out, distill=True)
    budgets = [float(v) for v in args.budgets.split(",")]
    methods = args.methods.split(",")
    runs = [(None, None, 1.0, 0, TrainConfig(out=str(work / "relu_100"), activation="relu", seed=0, **equal,
                                              **common), None)]  # fmt: skip

    chosen = dict(
        alpha=dict(alpha_init=args.alpha_init, nu_init=args.alpha_nu_init, penalty=args.alpha_penalty),
        snl=dict(penalty=args.snl_penalty),
    )

    def point(method: str, gran: str, b: float, seed: int, variant: str | None = None) -> tuple:
        suffix = f"_{DEFAULTS_ROW[method][0]}" if variant else ""
        name = f"{method}{suffix}_{gran}_{b:g}" + (f"_seed{seed}" if seed else "")
        own = {} if variant else chosen.get(method, {})
        cfg = TrainConfig(out=str(work / name), method=method, granularity=gran, budget=b, seed=seed, **equal,
                          **common, **own)  # fmt: skip
        return (method, gran, b, seed, cfg, variant)

    for b in budgets:
        runs += [point(m, "element", b, 0) for m in methods]
    # the second seed before the channel row: the spread is what the methods' gaps are read against
    runs += [point(m, "element", 0.25, 1) for m in ("alpha", "snl") if m in methods and 0.25 in budgets]
    if "alpha" in methods:
        runs += [point("alpha", "channel", b, 0) for b in budgets]
    if 0.25 in budgets:  # alpha with the seed study's start (α = ½) and weight 1, SNL with λ = 1e-5
        tuned = [m for m in DEFAULTS_ROW if m in methods and any(v is not None for v in chosen[m].values())]
        runs += [point(m, "element", 0.25, 0, variant=DEFAULTS_ROW[m][1]) for m in tuned]
    points, left = [], []
    for method, gran, b, seed, cfg, variant in runs:
        m = result_of(cfg)
        if m is None:
            left.append(cfg.out)
            continue
        points.append(dict(
            method=method, variant=variant, granularity=gran, fraction=b, seed=seed, run=cfg.out,
            test_acc=m["test_acc"],
            relus=m["relu_count_after"], relu_budget=m.get("relu_budget"), val_acc=m["epochs"][-1]["val_acc"],
            epochs=len(m["epochs"]), cut_after_epoch=m.get("cut_after_epoch"),
            kept_per_stage=kept_per_stage(m),
        ))  # fmt: skip
        result = dict(
            **provenance(),
            config=vars(args),
            relu_network=dict(run=base.out, test_acc=base_m["test_acc"], relus=base_m["relu_count_before"]),
            points=points,
            verdict=verdict(points, methods),
            complete=len(points) == len(runs),
            runs_left=left + [r[4].out for r in runs[len(points) + len(left) :]],
            seconds_this_call=time.perf_counter() - t0,
        )
        save_run(out, cfg.out, m, init)
        text = json.dumps(result, indent=1) + "\n"
        atomic_write(out / "pareto.json", lambda p, text=text: p.write_text(text))
        plot(result, out)
    for pt in points:
        print(f"{label(pt) if pt['method'] else 'ReLU 100%'} {pt['fraction']:.0%}: {pt['relus']} ReLUs, "
              f"test {pt['test_acc']:.2f}%")  # fmt: skip


if __name__ == "__main__":
    main()
