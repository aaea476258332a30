#!/usr/bin/env python
"""A training step of plain networks, built without the trainer: the eager ReLU network, its BN → ReLU
fused, the same network with channel gates, and those gates fused with their BatchNorm (``fuse_bn``:
BN → gate pairs and, in ResNets, the BN → add(skip) → gate tails). What a reader can reproduce
without alphakern's Trainer: each step is zero_grad, forward, cross-entropy, backward and an Adam
step on the next of 16 random batches (64 images with random labels, channels_last, fp32), the
variants interleaved round by round (machine noise hits all alike), the median step reported with
its ratio to the eager ReLU network's. Not one fixed batch: a network fits it within ~20 steps, its
gradients shrink into float32's subnormal range, and subnormal arithmetic on the CPU is slow (the
floor below went from 90 to 800 ms per step), which times arithmetic no training run does.

Two figures bound what any fusion of BatchNorm, the add and the gate can reach (issue 32): the
**floor**, the same step with every BatchNorm and ReLU replaced by nn.Identity (convolutions, adds,
pools, the loss and Adam kept), timed in the same rounds; and the **fused ops' traffic**, the bytes
the fused ops of one step read and write as designed (8 tensor passes per BN → gate, 11 per BN →
add → gate) divided by the copy bandwidth measured at each activation's size, out of L2. floor + traffic is
what the fused network would step at if its ops ran at copy speed and its gates cost nothing.

    python benchmarks/bench_step.py                       # CPU; JSON in results/bench_step_cpu.json
    python benchmarks/bench_step.py --models cnn --rounds 3 --steps 2   # smoke
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
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
from alphakern.files import atomic_write
from alphakern.graph import fuse_bn
from alphakern.modules import BatchNormGate, materialize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import copy_bandwidth_gbs, device_name  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BATCHES = 16  # random batches the steps cycle through


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


def floor_network(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every BatchNorm2d and ReLU an nn.Identity: the step's cost when they
    cost nothing."""
    net = copy.deepcopy(model)
    for name, m in list(net.named_modules()):
        if isinstance(m, (nn.BatchNorm2d, nn.ReLU)):
            net.set_submodule(name, nn.Identity())
    return net


def fused_traffic(model: nn.Module, x: torch.Tensor) -> list[tuple[int, int]]:
    """(bytes of x, tensor passes) of each fused BN op in one training step of ``model`` (a copy
    runs one forward): forward, x read for the statistics, then x (and the residual) read and y
    written; backward, dy and x read for the sums, then again while dx is written (8 passes); with a
    residual in fp32 the sums pass also reads it and writes dr, which the apply pass reads with x
    while it writes dx (11; fp16/bf16 recompute dz from dy and the residual instead: 12)."""
    net = copy.deepcopy(model).to(memory_format=torch.channels_last).train()
    calls: list[tuple[int, int]] = []

    def record(mod: nn.Module, args: tuple) -> None:
        x = args[0]
        passes = 8 if len(args) == 1 else 11 if x.dtype == torch.float32 else 12
        calls.append((x.numel() * x.element_size(), passes))

    for m in net.modules():
        if isinstance(m, BatchNormGate):
            m.register_forward_pre_hook(record)
    with torch.no_grad():
        net(x)
    return calls


def variants(make: Callable[[], nn.Module]) -> dict[str, nn.Module]:
    """The four networks of one model, from the same initial weights, and the floor."""
    torch.manual_seed(0)
    relu = make()
    gates = alphakern.linearize(copy.deepcopy(relu), granularity="channel")
    materialize(gates, (2, 3, 32, 32))
    return {
        "relu": relu,
        "relu, fused BN": fuse_bn(copy.deepcopy(relu), relu=True),
        "channel gates": gates,
        "channel gates, fused BN": fuse_bn(copy.deepcopy(gates)),
        "floor: no BN, no ReLU": floor_network(relu),
    }


def stepper(model: nn.Module, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> Callable[[], None]:
    """One training step per call, on batches xs[i], ys[i] in turn."""
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    i = 0

    def step() -> None:
        nonlocal i
        x, y = xs[i % len(xs)], ys[i % len(xs)]
        i += 1
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def measure(model_name: str, rounds: int, steps: int) -> dict:
    g = torch.Generator().manual_seed(0)
    cl = torch.channels_last
    xs = [torch.randn(64, 3, 32, 32, generator=g).to(memory_format=cl) for _ in range(BATCHES)]
    ys = [torch.randint(0, 10, (64,), generator=g) for _ in range(BATCHES)]
    nets = variants(MODELS[model_name])
    fused = {k: sum(isinstance(m, BatchNormGate) for m in net.modules()) for k, net in nets.items()}
    steps_of = {k: stepper(m, xs, ys) for k, m in nets.items()}
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
    calls = fused_traffic(nets["channel gates, fused BN"], xs[0])
    # one tensor pass (read or write) at copy speed, out of the 2 MiB L2 as a step's activations are
    pass_ms = {
        n: n / (copy_bandwidth_gbs("cpu", n, rotate_bytes=64 * 2**20) * 1e6)
        for n in sorted({n for n, _ in calls})
    }
    traffic = sum(passes * pass_ms[n] for n, passes in calls)
    bound = med["floor: no BN, no ReLU"] + traffic
    mb = sum(n * p for n, p in calls) / 1e6
    print(
        f"  {model_name}: fused ops' traffic {mb:.0f} MB = {traffic:.1f} ms at "
        f"copy speed; floor + traffic {bound:.1f} ms = {bound / med['relu']:.3f}x the eager ReLU network's"
    )
    return dict(
        step_ms_samples=samples, median_step_ms=med, vs_eager_relu=ratio, fused_bns=fused_bns,
        fused_traffic=dict(
            calls=[dict(bytes=n, passes=p) for n, p in calls], copy_pass_ms=pass_ms, ms=traffic,
            floor_plus_traffic_ms=bound, floor_plus_traffic_vs_eager_relu=bound / med["relu"],
        ),
    )  # fmt: skip


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
        device=device_name("cpu"), threads=torch.get_num_threads(),
        torch=torch.__version__, batch=64, layout="channels_last", optimizer="Adam",
        rounds=args.rounds, steps_per_round=args.steps,
        allocator={k: v for k, v in os.environ.items() if k == "LD_PRELOAD" or k.startswith("MALLOC_")},
    ))  # fmt: skip
    for name in args.models.split(","):
        result[name] = measure(name, args.rounds, args.steps)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.json, lambda p: p.write_text(json.dumps(result, indent=1)))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
