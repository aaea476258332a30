#!/usr/bin/env python
"""BatchNorm + gate fused (alphakern.functional.bn_gate) vs unfused, and what it buys a training step.

Two parts, each interleaving its variants round-robin so machine noise hits all alike (medians):

``--part op``: BN (training) + gate at the activation shapes of the reference CNN and ResNet-20,
forward and forward+backward, per f and gate granularity: the fused op vs eager BN + alphakern's gate
(what a linearized network runs without fusion), eager BN + the gate as a torch expression, and
torch.compile of that expression; with the share of the copy bandwidth the fused op's passes reach
(forward: 2 reads + 1 write of x; forward+backward: those + 4 reads + 1 write), against a copy
of x's size timed the same way.

``--part train``: the alphakern trainer's step time (batch 64, on-device batches, channels_last)
for the reference CNN and ResNet-20 with nn.ReLU (eager, and its BN → ReLU pairs fused), with
gates per layer/channel, and with the same gates fused (--fuse-bn).

    python benchmarks/bench_bn_gate.py                   # both parts, CPU; JSON in results/
    python benchmarks/bench_bn_gate.py --part op --quick
    python benchmarks/bench_bn_gate.py --part op --device cuda --no-compile   # GPU: Triton's fused op
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import compiled, copy_bandwidth_gbs, cpu_time_interleaved, device_name, gpu_time  # noqa: E402

import alphakern  # noqa: E402
from alphakern.files import atomic_write  # noqa: E402
from alphakern.functional import alpha, bn_gate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# the activations of the reference CNN (64 channels at 32, 16, 8) and ResNet-20 (16/32/64 at 32/16/8)
SHAPES = {
    "cnn": [(64, 64, 32, 32), (64, 64, 16, 16), (64, 64, 8, 8)],
    "resnet20": [(64, 16, 32, 32), (64, 32, 16, 16), (64, 64, 8, 8)],
}
F_OF = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu}


def _inputs(shape, granularity: str, device: str):
    g = torch.Generator().manual_seed(0)
    c = shape[1]
    cl = dict(device=device, memory_format=torch.channels_last)
    x = torch.randn(shape, generator=g).to(**cl).requires_grad_()
    dy = torch.randn(shape, generator=g).to(**cl)
    gamma = (
        (torch.rand(() if granularity == "layer" else (c,), generator=g) - 0.5).to(device).requires_grad_()
    )
    w, b = (t.to(device).requires_grad_() for t in (torch.rand(c, generator=g), torch.randn(c, generator=g)))
    return x, dy, gamma, torch.tensor(4.0, device=device), w, b


def providers(
    act: str, granularity: str, device: str, compile_: bool = True, cuda_kernels: bool = False
) -> dict:
    """name -> fn(x, r, gamma, nu, w, b, rm, rv): y (training-mode BN, the residual r added when
    it is not None, then the gate); the fused op on the native CPU kernels or on Triton (CUDA);
    with ``cuda_kernels`` also on csrc/'s CUDA kernels."""
    f = F_OF[act]
    fused = "cpu" if device == "cpu" else "triton"

    def bn(x, r, w, b, rm, rv):
        z = F.batch_norm(x, rm, rv, w, b, True)
        return z if r is None else z + r

    def expr(x, r, gamma, nu, w, b, rm, rv):
        z = bn(x, r, w, b, rm, rv)
        a = alpha(gamma, nu)
        a = a if gamma.dim() == 0 else a.view(1, -1, 1, 1)
        return z + a * (f(z) - z)

    def fused_on(backend: str):
        return lambda x, r, g, nu, w, b, rm, rv: bn_gate(
            x, g, nu, activation=act, residual=r, weight=w, bias=b, running_mean=rm, running_var=rv,
            backend=backend,
        )  # fmt: skip

    out = {
        "fused": fused_on(fused),
        "eager BN + alphakern gate": lambda x, r, g, nu, w, b, rm, rv: alphakern.gate(
            bn(x, r, w, b, rm, rv), g, nu, activation=act
        ),
        "eager BN + expression": expr,
    }
    if cuda_kernels and device != "cpu":
        out["fused (CUDA C++)"] = fused_on("cuda")
    if compile_:
        out["compile(BN + expression)"] = compiled(expr, dynamic=False)
    return out


def _case(
    model: str,
    shape,
    act: str,
    granularity: str,
    budget_s: float,
    device: str,
    compile_: bool,
    cuda_kernels: bool,
    residual: bool = False,
) -> list[dict]:
    """Both modes of one (shape, f, gate granularity, with a residual or not): the providers'
    medians, fused first."""
    x, dy, gamma, nu, w, b = _inputs(shape, granularity, device)
    r = torch.randn_like(dy).requires_grad_() if residual else None
    rm, rv = torch.zeros(shape[1], device=device), torch.ones(shape[1], device=device)
    args = (x, r, gamma, nu, w, b, rm, rv)
    bw = copy_bandwidth_gbs(device, x.numel() * x.element_size())  # at this size: caches alike
    provs = providers(act, granularity, device, compile_, cuda_kernels)

    def fwd(fn):
        with torch.no_grad():
            fn(*args)

    def fwd_bwd(fn):
        for t in (x, r, gamma, w, b):
            if t is not None:
                t.grad = None
        fn(*args).backward(dy)

    with torch.no_grad():  # every provider computes the same y before any is timed
        ys = {k: fn(x, r, gamma, nu, w, b, rm.clone(), rv.clone()) for k, fn in provs.items()}
        want = ys["eager BN + expression"]
        bad = [k for k, y in ys.items() if not torch.allclose(y, want, rtol=1e-4, atol=1e-4)]
    check = "ok" if not bad else f"differs: {bad}"
    rows = []
    for mode, call in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
        fns = {k: (lambda fn=fn, call=call: call(fn)) for k, fn in provs.items()}
        for fn in fns.values():  # warm-up (compilation)
            fn()
        if device == "cpu":
            t = cpu_time_interleaved(fns, budget_s=budget_s)
        else:  # CUDA events around each call
            t = {k: gpu_time([fn]) for k, fn in fns.items()}
        # tensor-sized reads + writes of the fused op: x (+ r), y; + dy, x (+ r); + dy, x (+ r), dx (+ dr)
        passes = (3 if mode == "fwd" else 8) + (1 if mode == "fwd" else 4) * residual
        fused_ms = t["fused"][0]
        gbs = passes * x.numel() * x.element_size() / fused_ms / 1e6
        row = dict(
            model=model, shape=list(shape), activation=act, gates=granularity, residual=residual, mode=mode,
            ms={k: v[0] for k, v in t.items()},
            speedup={k: v[0] / fused_ms for k, v in t.items() if k != "fused"},
            fused_gbs=gbs, copy_gbs=bw, bandwidth_share=gbs / bw, check=check,
        )  # fmt: skip
        rows.append(row)
        sp = ", ".join(f"{k} {v:.2f}x" for k, v in row["speedup"].items())
        tail = " + residual" if residual else ""
        print(f"{model} {tuple(shape)} {act} {granularity}{tail} {mode}: fused {fused_ms:.2f} ms "
              f"({gbs / bw:.0%} of copy bandwidth); fused vs {sp}", flush=True)  # fmt: skip
    return rows


def op_part(
    rows: list,
    quick: bool,
    budget_s: float,
    device: str = "cpu",
    compile_: bool = True,
    cuda_kernels: bool = False,
) -> list[dict]:
    """Appends to ``rows`` as it goes (an interrupted run keeps what it measured)."""
    acts = ("relu",) if quick else ("relu", "silu")
    models = {"cnn": SHAPES["cnn"][:1]} if quick else SHAPES
    for model, shapes in models.items():
        for shape in shapes:
            for act in acts:
                for granularity in ("layer", "channel"):
                    rows += _case(model, shape, act, granularity, budget_s, device, compile_, cuda_kernels)
    # the tails of ResNet-20's blocks: BN → add(skip) → gate (bn_add_gate), channel gates
    for shape in SHAPES["resnet20"][:1] if quick else SHAPES["resnet20"]:
        for act in acts:
            rows += _case("resnet20", shape, act, "channel", budget_s, device, compile_, cuda_kernels, True)
    return rows


def train_part(steps: dict, rounds: int, data_dir: str | None) -> dict:
    from bench_train import alphakern_round, make_trainer, synthetic

    from alphakern.data import load_cifar10

    data = load_cifar10(data_dir) if data_dir else synthetic()
    variants = {
        "nn.ReLU": dict(activation="relu"),
        "nn.ReLU, fused BN": dict(activation="relu", fuse_bn=True),
        "layer gates": dict(granularity="layer"),
        "layer gates, fused BN": dict(granularity="layer", fuse_bn=True),
        "channel gates": dict(granularity="channel"),
        "channel gates, fused BN": dict(granularity="channel", fuse_bn=True),
    }
    out: dict = dict(data=data.source)
    for model, n in steps.items():
        trainers = {k: make_trainer(data, "cpu", n, model=model, **kw) for k, kw in variants.items()}
        rates: dict[str, list[float]] = {k: [] for k in trainers}
        for r in range(rounds):
            for k, t in trainers.items():
                rates[k].append(alphakern_round(t))
            line = ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items())
            print(f"{model} round {r + 1}: {line} img/s", flush=True)
        med = {k: statistics.median(v) for k, v in rates.items()}
        step_ms = {k: 64e3 / v for k, v in med.items()}
        vs_relu = {k: v / step_ms["nn.ReLU"] for k, v in step_ms.items()}
        best = min(step_ms["nn.ReLU"], step_ms["nn.ReLU, fused BN"])  # the better ReLU baseline
        vs_best = {k: v / best for k, v in step_ms.items()}
        out[model] = dict(images_per_s=rates, step_ms=step_ms, vs_relu=vs_relu, vs_best_relu=vs_best)
        for k, v in vs_relu.items():
            print(f"  {model} {k}: {step_ms[k]:.1f} ms/step, {v:.3f}x the nn.ReLU network's step, "
                  f"{vs_best[k]:.3f}x the better ReLU network's")  # fmt: skip
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("op", "train", "both"), default="both")
    p.add_argument("--quick", action="store_true", help="one shape, relu, a short budget (smoke test)")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 for --part train (else random images)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="the op part's device")
    p.add_argument(
        "--no-compile", action="store_true", help="no torch.compile provider (its compiles are slow)"
    )
    p.add_argument(
        "--cuda-kernels", action="store_true", help="also time the fused op on csrc/'s CUDA kernels (built)"
    )
    p.add_argument("--json", type=Path, default=None, help="default: results/bench_bn_gate_<device>.json")
    args = p.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device", file=sys.stderr)
        return 2
    args.json = args.json or RESULTS / f"bench_bn_gate_{device}.json"
    if device == "cpu" or args.part != "op":
        # backend="cpu" builds the fused kernels if they are stale, where "auto" (the trainer's)
        # would fall back to the unfused composition
        bn_gate(torch.randn(2, 3, 2, 2), torch.tensor(0.0), torch.tensor(1.0), backend="cpu")
    name = device_name(device)
    result: dict = dict(meta=dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=f"{device} ({name})", threads=torch.get_num_threads(),
        torch=torch.__version__, dtype="float32", layout="channels_last", batch=64,
    ))  # fmt: skip
    # SIGTERM (`timeout`, gpu_check.sh's slots) stops like Ctrl-C: what was measured is written
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result["meta"]["complete"] = False
    try:
        if args.part in ("op", "both"):
            result["op"] = []
            budget = 0.5 if args.quick else 3.0
            op_part(result["op"], args.quick, budget, device, not args.no_compile, args.cuda_kernels)
        if args.part in ("train", "both"):
            steps = {"cnn": 4} if args.quick else {"cnn": 60, "resnet20": 30}
            result["train"] = train_part(steps, 1 if args.quick else args.rounds, args.data_dir)
        result["meta"]["complete"] = True
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", file=sys.stderr)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    if args.part != "both" and args.json.exists():  # one part re-run: keep the other's results
        kept = json.loads(args.json.read_text())
        kept.setdefault("meta_by_part", {})[args.part] = result["meta"]
        result = {**kept, **{k: v for k, v in result.items() if k != "meta"}}
    atomic_write(args.json, lambda p: p.write_text(json.dumps(result, indent=1)))
    print(f"wrote {args.json}")
    return 0 if result["meta"]["complete"] else 130


if __name__ == "__main__":
    sys.exit(main())
