#!/usr/bin/env python
"""A training step of plain networks, built without the trainer: the eager ReLU network, its BN → ReLU
fused, the same network with channel gates, and those gates fused with their BatchNorm (``fuse_bn``:
BN → gate pairs and, in ResNets, the BN → add(skip) → gate tails). What a reader can reproduce
without alphakern's Trainer: each step is zero_grad, forward, cross-entropy, backward and an Adam
step on one fixed random batch (64 images, channels_last, fp32), the variants interleaved round by
round (machine noise hits all alike), the median step reported with its ratio to the eager ReLU
network's.

    python benchmarks/bench_step.py                       # CPU; JSON in results/bench_step_cpu.json
    python benchmarks/bench_step.py --models cnn --rounds 3 --steps 2   # smoke
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import alphakern
from alphakern.cifar_nets import relu_network
from alphakern.graph import fuse_bn
from alphakern.modules import BatchNormGate, materialize

RESULTS = Path(__file__).resolve().parent / "results"


def study_cnn() -> nn.Module:
    """The study's network, written out: (conv 3×3 → BN → ReLU → maxpool 2) ×3 with 64 channels,
    then a linear layer on the 4×4×64 features."""
    layers: list[nn.Module] = []
    cin = 3
    for _ in range(3):
        layers += [nn.Conv2d(cin, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2)]
        cin = 64
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 4 * 4, 10))


MODELS: dict[str, Callable[[], nn.Module]] = {"cnn": study_cnn, "resnet20": lambda: relu_network("resnet20")}


def variants(make: Callable[[], nn.Module]) -> dict[str, nn.Module]:
    """The four networks of one model, from the same initial weights."""
    torch.manual_seed(0)
    relu = make()
    gates = alphakern.linearize(copy.deepcopy(relu), granularity="channel")
    materialize(gates, (2, 3, 32, 32))
    return {
        "relu": relu,
        "relu, fused BN": fuse_bn(copy.deepcopy(relu), relu=True),
        "channel gates": gates,
        "channel gates, fused BN": fuse_bn(copy.deepcopy(gates)),
    }


def stepper(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def measure(model_name: str, rounds: int, steps: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 32, 32, generator=g).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,), generator=g)
    nets = variants(MODELS[model_name])
    fused = {k: sum(isinstance(m, BatchNormGate) for m in net.modules()) for k, net in nets.items()}
    steps_of = {k: stepper(m, x, y) for k, m in nets.items()}
    for fn in steps_of.values():  # warm-up: allocator, lazy init, the kernels' first calls
        fn(), fn()
    samples: dict[str, list[float]] = {k: [] for k in steps_of}
    for r in range(rounds):
        for k, fn in steps_of.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            samples[k].append((time.perf_counter() - t0) * 1e3 / steps)
        print(
            f"{model_name} round {r + 1}: "
            + ", ".join(f"{k} {v[-1]:.1f}" for k, v in samples.items())
            + " ms"
        )
    med = {k: statistics.median(v) for k, v in samples.items()}
    ratio = {k: v / med["relu"] for k, v in med.items()}
    for k in med:
        print(f"  {model_name} {k}: {med[k]:.1f} ms/step, {ratio[k]:.3f}x the eager ReLU network's")
    fused_bns = {k: n for k, n in fused.items() if n}
    return dict(step_ms_samples=samples, median_step_ms=med, vs_eager_relu=ratio, fused_bns=fused_bns)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="cnn,resnet20")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    p.add_argument("--json", type=Path, default=RESULTS / "bench_step_cpu.json")
    args = p.parse_args(argv)
    # backend="cpu" builds the fused kernels if they are stale, where "auto" would fall back
    alphakern.bn_gate(torch.randn(2, 3, 2, 2), torch.tensor(0.0), torch.tensor(1.0), backend="cpu")
    result: dict = dict(meta=dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=f"cpu ({platform.processor() or platform.machine()})", threads=torch.get_num_threads(),
        torch=torch.__version__, batch=64, layout="channels_last", optimizer="Adam",
        rounds=args.rounds, steps_per_round=args.steps,
    ))  # fmt: skip
    for name in args.models.split(","):
        result[name] = measure(name, args.rounds, args.steps)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
