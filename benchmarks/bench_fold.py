"""What ``alphakern.fold`` buys on this machine: latency, depth, parameters and MACs of a discretised
network before and after folding, for synthetic gate patterns (no training: random weights and
BatchNorm statistics, which do not change what folds or how fast it runs).

Patterns (layer gates from ``linearize``): ``none`` (every ReLU kept: only BatchNorm folds),
``block`` (the first ReLU of every residual block linear, or every other ReLU of a VGG),
``all`` (every gate linear). Each pattern is folded exactly (``exact=True``: no merge whose
border would differ) and with ``exact=False`` (the border merges made; the max error relative to
the output's scale is recorded). Latency: eval, inference mode, fp32, interleaved rounds,
medians (``alphakern.fold_report``); with the onnx extra also both models exported to ONNX and run
by onnxruntime (CPU), interleaved, medians. MobileNetV2's ``block`` pattern makes both ReLU6 of every
other inverted-residual block linear (its pointwise–depthwise–pointwise chain, DepthShrinker's case).

    python benchmarks/bench_fold.py --json benchmarks/results/fold_cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch
from torch import nn

import alphakern
from alphakern.cifar_nets import relu_network
from alphakern.files import atomic_write
from alphakern.folding import POLICIES
from alphakern.modules import alpha_layers, materialize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import device_name  # noqa: E402

PATTERNS = ("none", "block", "all")  # gate patterns


def _mobilenet_block(gate_name: str) -> int:
    """The index of the inverted-residual block a MobileNetV2 gate sits in (features.N...), 0 for
    the stem and the last conv (never made linear by "block")."""
    parts = gate_name.split(".")
    n = int(parts[1]) if len(parts) > 1 and parts[0] == "features" and parts[1].isdigit() else 0
    return n if 1 < n < 18 else 0


def ort_latency_ms(models: dict[str, nn.Module], x: torch.Tensor, rounds: int) -> dict[str, float] | None:
    """Median batch latency of each model exported to ONNX and run by onnxruntime (CPU, its
    default threads), rounds interleaved; None without the onnx extra."""
    try:
        import onnxruntime as ort

        from alphakern.onnx_export import export_onnx
    except ImportError:
        return None
    import statistics
    import tempfile
    import time

    times: dict[str, list[float]] = {k: [] for k in models}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for k, m in models.items():
            path = export_onnx(m, x, Path(tmp) / f"{k}.onnx")
            sessions[k] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = x.numpy()
        for _ in range(rounds + 1):  # the first round warms up
            for k, s in sessions.items():
                t0 = time.perf_counter()
                s.run(None, {s.get_inputs()[0].name: feed})
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v[1:]) for k, v in times.items()}


def gated(name: str, pattern: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = materialize(alphakern.linearize(relu_network(name, 10)))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        layers = alpha_layers(net)
        for i, (gate_name, gate) in enumerate(layers):
            if pattern == "all":
                linear = True
            elif pattern == "block":  # a block's first ReLU ("...relu"; the second is "...relu_1")
                linear = (gate_name.endswith(".relu") and "layer" in gate_name) or (
                    name.startswith("vgg") and i % 2 == 1
                )
                if name == "mobilenet_v2":  # both ReLU6 of every other inverted-residual block
                    linear = _mobilenet_block(gate_name) % 2 == 1
            else:
                linear = False
            gate.gamma.fill_(-3.0 if linear else 3.0)
            gate.nu.fill_(100.0)  # α within 1e-40 of 0 or 1: discretize decides every gate
    return alphakern.discretize(net).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet20,vgg11_bn,resnet18,mobilenet_v2")
    p.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                   help="also time both models in onnxruntime (the onnx extra)")  # fmt: skip
    p.add_argument("--batches", default="1,64")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--policy", default="latency", choices=POLICIES)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: eager rows only (no onnx)")
    p.add_argument("--exact-only", action="store_true", help="only the exact folds (half the rows)")
    p.add_argument("--json", default="benchmarks/results/fold_cpu.json")
    args = p.parse_args()
    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        machine=device_name("cpu"),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
    )
    rows: list[dict] = []
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        for pattern in PATTERNS:
            model = gated(name, pattern).to(args.device)
            for batch in (int(b) for b in args.batches.split(",")):
                x = torch.randn(batch, 3, 32, 32, device=args.device)
                for exact in (True,) if args.exact_only else (True, False):
                    folded = alphakern.fold(model, x, exact=exact, policy=args.policy)
                    with torch.no_grad():
                        ref = model(x)
                        err = float((folded(x) - ref).abs().max() / ref.abs().max())
                    rounds = args.rounds if batch == 1 else max(3, args.rounds // 4)
                    rep = alphakern.fold_report(model, folded, x, rounds=rounds)
                    info = folded.fold_info
                    sides = {f"{k}_{side}": v for side in ("before", "after") for k, v in rep[side].items()}
                    ort_ms = (
                        ort_latency_ms({"before": model, "after": folded}, x, rounds)
                        if args.onnx and args.device == "cpu"
                        else None
                    )
                    if ort_ms:
                        sides.update(ort_ms_before=ort_ms["before"], ort_ms_after=ort_ms["after"],
                                     ort_speedup=ort_ms["before"] / ort_ms["after"])  # fmt: skip
                    row = dict(model=name, pattern=pattern, batch=batch, exact=exact, policy=args.policy,
                               rel_error=err, merged=len(info.merged), not_merged=len(info.not_merged),
                               **sides, speedup=rep["speedup"])  # fmt: skip
                    rows.append(row)
                    text = json.dumps(dict(meta=meta, rows=rows), indent=1)
                    atomic_write(out, lambda p, text=text: p.write_text(text))  # a stopped run keeps its rows
                    print(f"{name:<9} {pattern:<6} b{batch:<3} exact={exact!s:<5} "
                          f"depth {row['depth_before']:>2}->{row['depth_after']:<2} "
                          f"MACs {row['macs_before'] / 1e6:7.1f}M->{row['macs_after'] / 1e6:7.1f}M  "
                          f"{row['latency_ms_before']:8.3f} -> {row['latency_ms_after']:8.3f} ms  "
                          f"x{row['speedup']:.2f}  rel.err {err:.1e}  "
                          f"onnxruntime x{row.get('ort_speedup', float('nan')):.2f}", flush=True)  # fmt: skip
    print("wrote", args.json)


if __name__ == "__main__":
    main()
