#!/usr/bin/env python
"""The transformer MLP fold alone: latency of Linear(d→4d) → GELU → Linear(4d→d) (the network
before linearisation) against its folded forms when 25/50/75/100 % of its hidden features are
linear — ``split`` (the narrow MLP plus a d×d bypass) and ``concat`` (one activation over |N| + d
features) from ``alphakern.folding.mlp``, and the form ``alphakern.fold`` keeps under its
"latency" policy — at 197 tokens (ViT at 224², patch 16), batch 1 and 64, d = 192/384/768
(ViT-Ti/S/B), eager fp32 and onnxruntime. Every folded form is checked against the discretised
MLP (its gate at α ∈ {0, 1}) before it is timed; timings are interleaved round-robin (medians,
p20/p80).

    python benchmarks/bench_mlp_fold.py                 # the full table (a few minutes on 2 cores)
    python benchmarks/bench_mlp_fold.py --quick         # d = 192, batch 1 and 8 (< 1 minute)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

import alphakern
from alphakern.files import atomic_write
from alphakern.folding.mlp import concat_modules, split_modules
from alphakern.modules import FixedGate
from alphakern.ops.core.activations import Activation

sys.path.insert(0, str(Path(__file__).resolve().parent))
import timing  # noqa: E402
from timing import device_name  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TOKENS = 197


def mlp(d: int, seed: int = 0) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(seed)
    return nn.Linear(d, 4 * d).eval(), nn.Linear(4 * d, d).eval()


def keep_pattern(h: int, linear_share: float, seed: int = 0) -> torch.Tensor:
    """bool [h]: which features keep the GELU — a random set of (1 − share)·h."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.ones(h, dtype=torch.bool)
    keep[torch.randperm(h, generator=g)[: round(linear_share * h)]] = False
    return keep


def ort_session(model: nn.Module, x: torch.Tensor):
    import onnxruntime as ort

    from alphakern.onnx_export import export_onnx

    path = Path(tempfile.mkdtemp()) / "m.onnx"
    export_onnx(model, x, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    # no spin-waiting after a run: it would steal the cores from the next provider in the round
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name, feed = s.get_inputs()[0].name, x.numpy()
    return lambda: s.run(None, {name: feed})


def bench_case(
    d: int, batch: int, share: float, budget: float, onnx: bool, device: str = "cpu", dtype=torch.float32
) -> list[dict]:
    """One (d, batch, share) case: every form checked, then timed (CPU: interleaved perf_counter;
    CUDA: events, each form in turn; folded in fp32, then cast to ``dtype``)."""
    l1, l2 = mlp(d)
    h = 4 * d
    keep = keep_pattern(h, share)
    gelu = nn.GELU()
    x = torch.randn(batch, TOKENS, d)
    original = nn.Sequential(l1, gelu, l2).eval()
    weight = keep.float()
    gated = nn.Sequential(
        l1, FixedGate(weight, activation=Activation("gelu"), granularity="feature"), l2
    ).eval()
    forms = {
        "gelu-mlp": original,
        "split": split_modules(l1, keep, gelu, l2),
        "concat": nn.Sequential(*concat_modules(l1, keep, gelu, l2)).eval(),
    }
    folded = alphakern.fold(gated, x, policy="latency")
    chosen = folded.fold_info.mlps[0]["form"] if folded.fold_info.mlps else None
    forms["fold(latency)"] = folded
    forms = {k: m.to(device=device, dtype=dtype) for k, m in forms.items()}
    gated, x = gated.to(device=device, dtype=dtype), x.to(device=device, dtype=dtype)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    with torch.no_grad():
        want = gated(x)
        for name, m in forms.items():
            if name != "gelu-mlp":
                err = (m(x) - want).abs().max().item()
                if not err <= tol * want.abs().max().item():
                    raise AssertionError(f"{name} is not the discretised MLP: max error {err:.3g}")
    rows = []
    runtimes = {"eager": {k: (lambda m=m: m(x)) for k, m in forms.items()}}
    if device != "cpu":
        onnx = False  # onnxruntime's CPU provider: the CPU table's
    if onnx:
        runtimes["onnxruntime"] = {k: ort_session(m, x) for k, m in forms.items()}
    macs = {
        "gelu-mlp": 2 * d * h,
        "split": d * int(keep.sum()) * 2 + d * d,
        "concat": 2 * d * (int(keep.sum()) + d),
    }
    for runtime, fns in runtimes.items():
        with torch.inference_mode():
            if device == "cpu":
                stats = timing.cpu_time_interleaved(fns, budget_s=budget)
            else:
                stats = {k: timing.gpu_time([f], rep_ms=1e3 * budget / len(fns)) for k, f in fns.items()}
        base = stats["gelu-mlp"][0]
        for name, (med, p20, p80) in stats.items():
            rows.append(dict(d=d, hidden=h, batch=batch, tokens=TOKENS, linear_share=share, dtype=str(dtype),
                             kept=int(keep.sum()), runtime=runtime, form=name,
                             chosen=chosen if name == "fold(latency)" else None, ms=med, ms_p20=p20,
                             ms_p80=p80, speedup=base / med, macs_per_token=macs.get(name)))  # fmt: skip
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dims", default=None, help="comma-separated d (default 192,384,768)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,64)")
    p.add_argument("--no-onnx", action="store_true")
    p.add_argument("--budget", type=float, default=None, help="seconds of timing per case and runtime")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: eager only, CUDA-event timing)")
    p.add_argument("--dtypes", default="float32", help="comma-separated: float32, bfloat16, float16")
    args = p.parse_args(argv)
    dtypes = [getattr(torch, v) for v in args.dtypes.split(",")]
    dims = [int(v) for v in args.dims.split(",")] if args.dims else ([192] if args.quick else [192, 384, 768])
    batches = (
        [int(v) for v in args.batches.split(",")] if args.batches else ([1, 8] if args.quick else [1, 64])
    )
    budget = args.budget if args.budget is not None else (0.5 if args.quick else 3.0)
    onnx = not args.no_onnx
    path = args.json or RESULTS / f"bench_mlp_fold_{args.device}{'-quick' if args.quick else ''}.json"
    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device_name=device_name(args.device), machine=platform.platform(), cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(), torch=torch.__version__, complete=False,
        timing="interleaved round-robin, perf_counter (median, p20, p80); speedup: gelu-mlp's / the form's",
    )  # fmt: skip
    rows: list[dict] = []

    def save() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: p.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1)))

    print(f"MLP fold on {meta['device_name']}, torch {torch.__version__}, {meta['torch_threads']} threads")
    for dtype in dtypes:
        for d in dims:
            for batch in batches:
                for share in (0.25, 0.5, 0.75, 1.0):
                    case = bench_case(d, batch, share, budget, onnx, args.device, dtype)
                    rows += case
                    save()
                    for r in case:
                        chosen = f" (kept: {r['chosen']})" if r["form"] == "fold(latency)" else ""
                        print(f"{r['dtype']:<14} d={d:4d} batch={batch:3d} linear={share:4.0%} "
                              f"{r['runtime']:<12} {r['form']:<14}{r['ms']:9.3f} ms  x{r['speedup']:5.2f}"
                              f"{chosen}")  # fmt: skip
    meta["complete"] = True
    save()
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
