"""``alphakern study``: is a verdict a property of the network, or of one seed and one loss?

Trains every (head, seed) pair with ``alphakern train`` (a child process each, J at a time, each
in DIR/<head>-seed<seed>/ with its log), then aggregates per head and layer: how often each
verdict occurs, γ and α at the end (mean ± std over seeds), test accuracy (mean ± std). Writes
DIR/study.json, DIR/study.md (the table) and DIR/study.png (α over training, a panel per layer).

Finished runs with the same settings are reused and unfinished ones resumed, so a crashed or
interrupted study continues where it stopped. A run directory made with other settings is left
untouched and reported. A failed run is reported in every output (and the exit status), never
dropped silently.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

from alphakern.files import atomic_write
from alphakern.graph.report import VERDICTS
from alphakern.train.checkpoint import CHECKPOINT, METRICS, compact_json
from alphakern.train.config import TrainConfig

# what makes two runs the same experiment (the rest — output paths, logging — may differ)
SAME = (
    "head",
    "seed",
    "model",
    "epochs",
    "granularity",
    "activation",
    "nu_step",
    "lr",
    "batch_size",
    "limit_train",
)


@dataclass
class Run:
    head: str
    seed: int
    dir: Path
    status: str = "pending"  # "reused", "done", "failed"
    error: str | None = None
    metrics: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.head}-seed{self.seed}"


def plan(out: Path, heads: list[str], seeds: list[int]) -> list[Run]:
    return [Run(h, s, out / f"{h}-seed{s}") for h in heads for s in seeds]


def _read_metrics(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / METRICS).read_text())
    except (OSError, ValueError):
        return None


def _mismatch(found: dict, wanted: dict) -> str | None:
    """What differs; a key an older run's config lacks had its default then (as TrainConfig.from_dict)."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    seen = {k: found.get(k, defaults.get(k)) for k in SAME}
    diff = [f"{k} {seen[k]!r} ≠ {wanted[k]!r}" for k in SAME if k in wanted and seen[k] != wanted[k]]
    return ", ".join(diff) or None


def _train_command(run: Run, settings: dict) -> list[str]:
    cmd = [sys.executable, "-m", "alphakern", "train"]
    if (run.dir / CHECKPOINT).is_file():  # an interrupted run: continue it
        return [*cmd, "--resume", str(run.dir)]
    flags = dict(settings, head=run.head, seed=run.seed, out=str(run.dir))
    for k, v in flags.items():
        if v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    return cmd


def execute(run: Run, settings: dict, threads: int | None) -> Run:
    """Reuse, resume or train one run; never raises (the outcome is in run.status)."""
    wanted = dict(settings, head=run.head, seed=run.seed)
    m = _read_metrics(run.dir)
    if m is not None:
        bad = _mismatch(m.get("config", {}), wanted)
        if bad:
            run.status, run.error = "failed", f"{run.dir} holds a run with other settings ({bad}); left as is"
            return run
        if "test_acc" in m:
            run.status, run.metrics = "reused", m
            return run
    run.dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(run.dir / "train.log", "a") as log:
        proc = subprocess.run(_train_command(run, settings), stdout=log, stderr=subprocess.STDOUT, env=env)
    m = _read_metrics(run.dir)
    if proc.returncode != 0 or m is None or "test_acc" not in m:
        tail = (run.dir / "train.log").read_text(errors="replace").strip().splitlines()[-1:]
        run.status, run.error = "failed", f"exit status {proc.returncode}: {' '.join(tail)[-300:]}"
    else:
        run.status, run.metrics = "done", m
    return run


def _stats(values: list[float]) -> dict:
    n = len(values)
    if n == 0:
        return dict(mean=None, std=None, n=0)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return dict(mean=mean, std=std, n=n)


def aggregate(runs: list[Run], heads: list[str]) -> dict:
    """Per head: accuracy and, per layer, verdict counts and γ/α at the end over the finished runs."""
    out: dict = {}
    for head in heads:
        done = [r for r in runs if r.head == head and r.metrics]
        layers = []
        names = [la["name"] for la in done[0].metrics["report"]["layers"]] if done else []
        for i, name in enumerate(names):
            per_run = [r.metrics["report"]["layers"][i] for r in done]
            counts = {v: sum(la["verdict"] == v for la in per_run) for v in (*VERDICTS, "mixed")}
            layers.append(dict(
                name=name,
                verdicts={k: v for k, v in counts.items() if v},
                gamma=_stats([la["gamma"] for la in per_run]),
                alpha=_stats([la["alpha"] for la in per_run]),
            ))  # fmt: skip
        out[head] = dict(
            runs=len(done),
            failed=[r.name for r in runs if r.head == head and r.status == "failed"],
            test_acc=_stats([r.metrics["test_acc"] for r in done]),
            test_acc_discretized=_stats(
                [a for r in done if (a := r.metrics["report"].get("test_acc_discretized")) is not None]
            ),
            layers=layers,
        )
    return out


def _pm(s: dict, fmt: str) -> str:
    return "—" if s["mean"] is None else f"{s['mean']:{fmt}} ± {s['std']:{fmt}}"


def markdown(summary: dict, runs: list[Run], settings: dict) -> str:
    seeds = sorted({r.seed for r in runs})
    lines = [
        f"# Verdict stability: {len(seeds)} seeds × {len(summary)} heads",
        "",
        f"Reference CNN, {settings['epochs']} epochs, gates per {settings['granularity']}; verdict: "
        "α > 0.95 non-linear (ReLU), α < 0.05 linear, else undecided. Mean ± std over seeds.",
        "",
        "| head | layer | verdicts over the seeds | α at the end | γ at the end |",
        "|---|---|---|---|---|",
    ]
    for head, h in summary.items():
        for la in h["layers"]:
            verdicts = ", ".join(f"{k} ×{v}" for k, v in la["verdicts"].items())
            a, g = _pm(la["alpha"], ".3f"), _pm(la["gamma"], ".3f")
            lines.append(f"| {head} | {la['name']} | {verdicts} | {a} | {g} |")
    lines += ["", "| head | runs | test accuracy % | discretised % |", "|---|---|---|---|"]
    for head, h in summary.items():
        acc, disc = _pm(h["test_acc"], ".2f"), _pm(h["test_acc_discretized"], ".2f")
        lines.append(f"| {head} | {h['runs']} | {acc} | {disc} |")
    failed = [r for r in runs if r.status == "failed"]
    if failed:
        lines += ["", "**Failed runs** (not in the table):", ""]
        lines += [f"- {r.name}: {r.error}" for r in failed]
    return "\n".join(lines) + "\n"


def plot(path: Path, runs: list[Run]) -> None:
    """α over training steps for every run, one panel per layer, a colour per head."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in runs if r.metrics]
    names = done[0].metrics["history"]["layers"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False, sharey=True)
    colours = {h: f"C{i}" for i, h in enumerate(dict.fromkeys(r.head for r in done))}
    for r in done:
        hist = r.metrics["history"]
        series = hist.get("alpha", hist.get("alpha_mean"))
        for ax, alphas in zip(axes[0], series, strict=True):
            ax.plot(alphas, color=colours[r.head], lw=0.9, alpha=0.8, label=r.head)
    for ax, name in zip(axes[0], names, strict=True):
        ax.set_title(name)
        ax.set_xlabel("training step")
        ax.set_ylim(-0.03, 1.03)
    axes[0][0].set_ylabel("α (1 = ReLU, 0 = identity)")
    handles = {h.get_label(): h for h in axes[0][0].get_lines()}
    axes[0][-1].legend(handles.values(), handles.keys(), loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def run_study(
    out: Path, heads: list[str], seeds: list[int], settings: dict, jobs: int = 1
) -> tuple[dict, list[Run]]:
    """Train what is missing (``jobs`` at a time), aggregate, write study.json / .md / .png."""
    out.mkdir(parents=True, exist_ok=True)
    runs = plan(out, heads, seeds)
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for r in pool.map(lambda r: execute(r, settings, threads), runs):
            print(f"{r.name}: {r.status}" + (f" ({r.error})" if r.error else ""), flush=True)
    summary = aggregate(runs, heads)
    record = dict(
        settings=settings,
        heads=summary,
        runs=[
            dict(name=r.name, head=r.head, seed=r.seed, status=r.status, error=r.error,
                 test_acc=r.metrics.get("test_acc"), report=r.metrics.get("report"),
                 device=r.metrics.get("device"))
            for r in runs
        ],
    )  # fmt: skip
    atomic_write(out / "study.json", lambda p: p.write_text(compact_json(record)))
    text = markdown(summary, runs, settings)
    atomic_write(out / "study.md", lambda p: p.write_text(text))
    if any(r.metrics for r in runs):
        atomic_write(out / "study.png", lambda p: plot(p, runs))
    return summary, runs
