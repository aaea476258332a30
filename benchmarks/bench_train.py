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
import platform
import signal
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import notebook_baseline as nb  # noqa: E402

from alphakern.data import Cifar10, DatasetError, load_cifar10  # noqa: E402
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="CIFAR-10 (either layout); else --synthetic")
    p.add_argument("--synthetic", action="store_true", help="random images: throughput only")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=None, help="training steps per timed round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant")
    p.add_argument("--baseline-epochs", type=int, default=0, help="also train the baseline fully")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

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
    print(
        f"training throughput on {dev} ({data.source}), batch 64, {steps} steps a round, {args.rounds} rounds"
    )

    variants = {
        "alphakern (AlphaReLU)": make_trainer(data, dev, steps, activation="alpha"),
        "alphakern (nn.ReLU)": make_trainer(data, dev, steps, activation="relu"),
    }
    if device.type == "cuda":
        variants["alphakern --compile (AlphaReLU)"] = make_trainer(
            data, dev, steps, activation="alpha", compile=True
        )
        variants["alphakern --compile (nn.ReLU)"] = make_trainer(
            data, dev, steps, activation="relu", compile=True
        )
    rates: dict[str, list[float]] = {"notebook loop": [], **{k: [] for k in variants}}
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `timeout`: keep the finished rounds
    try:
        for r in range(args.rounds):
            row = {"notebook loop": baseline_round(data, device, steps)}
            row.update({name: alphakern_round(t) for name, t in variants.items()})
            for k, v in row.items():
                rates[k].append(v)
            print(
                f"round {r + 1}: " + ", ".join(f"{k} {v:.0f}" for k, v in row.items()) + " img/s", flush=True
            )
    except KeyboardInterrupt:
        print(f"interrupted after {len(rates['notebook loop'])} rounds", file=sys.stderr)
        if not rates["notebook loop"]:
            return 130
    med = {k: statistics.median(v) for k, v in rates.items()}
    base = med["notebook loop"]
    print(f"\n{'variant':<34} {'img/s':>9} {'vs notebook':>12}")
    for k, v in med.items():
        print(f"{k:<34} {v:9.0f} {v / base:11.2f}x")
    cost = med["alphakern (nn.ReLU)"] / med["alphakern (AlphaReLU)"]
    print(f"cost of learning the non-linearity (step time AlphaReLU / nn.ReLU): {cost:.3f}")
    result = dict(
        meta=dict(
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            device=dev,
            device_name=torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
            torch=torch.__version__,
            threads=torch.get_num_threads(),
            data=data.source,
            steps_per_round=steps,
            rounds=args.rounds,
            alphakern_defaults=dataclasses.asdict(variants["alphakern (AlphaReLU)"].cfg),
        ),
        images_per_s=rates,
        median_images_per_s=med,
        speedup_vs_notebook={k: v / base for k, v in med.items()},
        nonlinearity_cost=cost,
    )
    if device.type == "cuda" and "alphakern --compile (nn.ReLU)" in med:
        result["nonlinearity_cost_compiled"] = (
            med["alphakern --compile (nn.ReLU)"] / med["alphakern --compile (AlphaReLU)"]
        )
        print(f"same, both compiled: {result['nonlinearity_cost_compiled']:.3f}")
    if args.baseline_epochs:
        result["baseline_accuracy"] = baseline_accuracy(data, device, args.baseline_epochs)
        print(f"notebook loop after {args.baseline_epochs} epochs: {result['baseline_accuracy']}")
    out = args.json or RESULTS / f"bench_train_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
