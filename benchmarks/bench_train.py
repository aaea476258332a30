#!/usr/bin/env python
"""Training throughput: the original study's loop vs ``alphakern train``, same model and device.

Measures images/s of (a) our equivalent of the notebook's loop (DataLoader + PIL/ToTensor,
per-step .item() calls, unfused R_α), (b) the alphakern trainer (on-device batches, fused
AlphaReLU, no per-step sync), and (c) the cost of learning the non-linearity: the alphakern
trainer's step time with AlphaReLU over the same network with nn.ReLU. Rounds are interleaved.

    python benchmarks/bench_train.py --data-dir DATA            # throughput on the device found
    python benchmarks/bench_train.py --synthetic                # random images (throughput only)
    python benchmarks/bench_train.py --data-dir DATA --baseline-epochs 10   # + baseline accuracy
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import signal
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import notebook_baseline as nb  # noqa: E402
from timing import device_name  # noqa: E402

from alphakern.data import Cifar10, DatasetError, load_cifar10  # noqa: E402
from alphakern.files import atomic_write  # noqa: E402
from alphakern.train import TrainConfig, Trainer, resolve_device  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic(n_train: int = 50000, n_test: int = 10000) -> Cifar10:
    g = torch.Generator().manual_seed(0)
    mk = lambda n: torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)  # noqa: E731
    return Cifar10(
        mk(n_train),
        torch.randint(0, 10, (n_train,), generator=g),
        mk(n_test),
        torch.randint(0, 10, (n_test,), generator=g),
        "synthetic",
    )


def baseline_round(data: Cifar10, device, steps: int) -> float:
    """images/s of the notebook loop over `steps` steps (after 5 warm-up steps)."""
    torch.manual_seed(0)
    train_loader, _, _ = nb.loaders(data.train_x, data.train_y, data.test_x, data.test_y)
    model = nb.NotebookCNN().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    nb.train_steps(model, opt, train_loader, device, max_steps=5)
    seen, secs = nb.train_steps(model, opt, train_loader, device, max_steps=steps)
    return seen / secs


def alphakern_round(trainer: Trainer) -> float:
    """images/s of one alphakern training epoch (its length set by limit_train)."""
    return trainer.train_epoch()["images_per_s"]


def make_trainer(data: Cifar10, device: str, steps: int, **kw) -> Trainer:
    cfg = TrainConfig(device=device, limit_train=steps * 64, out="/nonexistent", log_every=10**9, **kw)
    t = Trainer(cfg, data, progress=False)
    alphakern_round(t)  # warm-up (allocations, autotuning, compilation)
    return t


def baseline_accuracy(data: Cifar10, device, epochs: int, softmax: bool = True) -> dict:
    """Train the notebook loop for `epochs` epochs; test accuracy and learned γ."""
    torch.manual_seed(0)
    train_loader, val_loader, test_loader = nb.loaders(data.train_x, data.train_y, data.test_x, data.test_y)
    model = nb.NotebookCNN(softmax=softmax).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        nb.train_steps(model, opt, train_loader, device)
        val = nb.evaluate(model, val_loader, device)
        print(f"baseline epoch {epoch + 1}/{epochs}: val acc {val[1]:.2f}%", flush=True)
    test_loss, test_acc = nb.evaluate(model, test_loader, device)
    gammas = [float(m.gamma) for m in (model.nl1, model.nl2, model.nl3)]
    alphas = [m.alpha_history[-1] for m in (model.nl1, model.nl2, model.nl3)]
    return dict(
        epochs=epochs, softmax=softmax, test_loss=test_loss, test_acc=test_acc, gamma=gammas, alpha=alphas
    )


def summarize(rates: dict[str, list[float]]) -> dict:
    """Medians, speedups over the notebook loop and the AlphaReLU/nn.ReLU cost of what was measured."""
    med = {k: statistics.median(v) for k, v in rates.items() if v}
    out: dict = dict(images_per_s=rates, median_images_per_s=med)
    base = med.get("notebook loop")
    if base:
        out["speedup_vs_notebook"] = {k: v / base for k, v in med.items()}
    pairs = {
        "nonlinearity_cost": ("alphakern (nn.ReLU)", "alphakern (AlphaReLU)"),
        "nonlinearity_cost_compiled": ("alphakern --compile (nn.ReLU)", "alphakern --compile (AlphaReLU)"),
    }
    for key, (relu, alpha) in pairs.items():
        if relu in med and alpha in med:
            out[key] = med[relu] / med[alpha]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="CIFAR-10 (either layout); else --synthetic")
    p.add_argument("--synthetic", action="store_true", help="random images: throughput only")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=None, help="training steps per timed round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant")
    p.add_argument("--baseline-epochs", type=int, default=0, help="also train the baseline fully")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants (GPU)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    # From the start, SIGTERM (`timeout`) stops like Ctrl-C: whatever was measured is written.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    device = resolve_device(args.device)
    if args.synthetic or args.data_dir is None:
        data = synthetic()
    else:
        try:
            data = load_cifar10(args.data_dir)
        except DatasetError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    steps = args.steps or (100 if device.type == "cpu" else 400)
    dev = str(device)
    out = args.json or RESULTS / f"bench_train_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"training throughput on {dev} ({data.source}), batch 64, {steps} steps a round, {args.rounds} rounds"
    )
    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=dev,
        device_name=torch.cuda.get_device_name() if device.type == "cuda" else device_name("cpu"),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        data=data.source,
        steps_per_round=steps,
        rounds=args.rounds,
        complete=False,
    )
    names = ["notebook loop", "alphakern (AlphaReLU)", "alphakern (nn.ReLU)"]
    if device.type == "cuda" and not args.no_compile:
        names += ["alphakern --compile (AlphaReLU)", "alphakern --compile (nn.ReLU)"]
    rates: dict[str, list[float]] = {k: [] for k in names}
    extra: dict = {}

    def save() -> None:
        result = dict(meta=meta, **summarize(rates), **extra)
        atomic_write(out, lambda p: p.write_text(json.dumps(result, indent=1)))

    try:  # the first save too: a SIGTERM just after its rename must not escape main
        save()
        variants = {}
        for name in names[1:]:  # warm-ups (compilation) are interruptible too
            kw = dict(activation="alpha" if "AlphaReLU" in name else "relu", compile="--compile" in name)
            variants[name] = make_trainer(data, dev, steps, **kw)
            if name == "alphakern (AlphaReLU)":
                meta["alphakern_defaults"] = dataclasses.asdict(variants[name].cfg)
        for r in range(args.rounds):
            rates["notebook loop"].append(baseline_round(data, device, steps))
            for name, t in variants.items():
                rates[name].append(alphakern_round(t))
            save()
            print(
                f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()) + " img/s",
                flush=True,
            )
        meta["complete"] = True
    except KeyboardInterrupt:
        print(
            f"interrupted after {len(rates['alphakern (nn.ReLU)'])} rounds; saving what was measured",
            file=sys.stderr,
        )
    result = summarize(rates)
    med = result["median_images_per_s"]
    if med:
        print(f"\n{'variant':<34} {'img/s':>9} {'vs notebook':>12}")
        for k, v in med.items():
            print(f"{k:<34} {v:9.0f} {result.get('speedup_vs_notebook', {}).get(k, float('nan')):11.2f}x")
    for key in ("nonlinearity_cost", "nonlinearity_cost_compiled"):
        if key in result:
            print(f"{key} (step time AlphaReLU / nn.ReLU): {result[key]:.3f}")
    if meta["complete"] and args.baseline_epochs:
        extra["baseline_accuracy"] = baseline_accuracy(data, device, args.baseline_epochs)
        print(f"notebook loop after {args.baseline_epochs} epochs: {extra['baseline_accuracy']}")
    save()
    print(f"wrote {out}")
    return 0 if meta["complete"] else 130


if __name__ == "__main__":
    sys.exit(main())
