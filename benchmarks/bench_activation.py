#!/usr/bin/env python
"""Benchmark R_α: fused alphakern kernels vs eager PyTorch, F.prelu and torch.compile.

Every provider computes the same function (checked against a float64 oracle, the formula written
out here, before timing), forward only and forward+backward (dx and dγ). GPU: CUDA events around
each call, cycling over input sets larger than twice the L2 cache (median, p20, p80); the CNN's
small shapes also as CUDA-graph replays (host launch cost removed). CPU: providers interleaved
round-robin, medians with p20/p80. Effective GB/s counts the minimum traffic (forward: read x,
write y; backward: read x and dy, write dx) and is compared with the device-to-device copy
bandwidth measured in the same run. On a GPU the ≥ 16M-element sizes run first, then the CNN's
shapes, fp32 and bf16 before fp16, and the JSON is rewritten after every group, so a run cut short
keeps the numbers that matter most.

    python benchmarks/bench_activation.py            # full run on the device found
    python benchmarks/bench_activation.py --quick    # < 1 minute on a 2-core CPU
    python benchmarks/bench_activation.py --activation relu6,gelu,silu,hardswish
        # the gate x + α·(f(x) − x) for other f: 64×64×32×32 and 16M, layer and channel gates,
        # vs the eager blend and torch.compile of it (bench_activation_<device>_activations.json)
    python benchmarks/bench_activation.py --gates feature --activation gelu,gelu_tanh,silu
        # per-feature gates at transformer MLP shapes: ViT-S/16's 64×197×1536, BERT-base's
        # 8×512×3072 (bench_activation_<device>_features.json)
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import signal
import sys
import time
from pathlib import Path

import torch

from alphakern.files import atomic_write

sys.path.insert(0, str(Path(__file__).resolve().parent))
import providers  # noqa: E402
import timing  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CNN_SHAPES = [(64, 32, 32), (64, 16, 16), (64, 8, 8)]  # the reference CNN's activations (C, H, W)
MODES = ("fwd", "fwd+bwd")
PASSES = {"fwd": 2, "fwd+bwd": 5}  # fwd: x, y; bwd: x, dy, dx
CHECK_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def sizes(device: str, quick: bool) -> list[tuple[str, tuple[int, ...]]]:
    """(label, shape), the sizes that matter most first: large flat tensors, then the CNN's."""
    if quick:
        return [("cnn-b16-l1", (16, 64, 32, 32)), ("cnn-b64-l3", (64, 64, 8, 8))]
    flat_max = 28 if device == "cuda" else 24  # 256M elements on a GPU, 16M on a CPU
    large = [(f"flat-2^{p}", (2**p,)) for p in range(24, flat_max + 1, 2)]
    cnn = [(f"cnn-b{b}-l{i}", (b, *chw)) for b in (64, 512) for i, chw in enumerate(CNN_SHAPES, 1)]
    small = [(f"flat-2^{p}", (2**p,)) for p in (20, 22)]
    return large + cnn + small


GATED_LARGE = ("cnn-b256-l1", (256, 64, 32, 32))  # 16M elements with channels: the ≥ 16M target
# per-feature gates: the hidden activations of transformer MLPs (batch, tokens, hidden) — ViT-S/16 at
# 224² (197 tokens, 4·384) for a batch of 64, BERT-base (512 tokens, 4·768) for a batch of 8
FEATURE_SIZES = [("vit-s-mlp-b64", (64, 197, 1536)), ("bert-mlp-b8", (8, 512, 3072))]
FEATURE_SIZES_QUICK = [("vit-ti-mlp-b8", (8, 65, 768))]


# --activation: the sizes of the activations' table (4M = a 64-image batch of the CNN's first layer)
ACTIVATION_SIZES = [("flat-2^24", (2**24,)), ("cnn-b64-l1", (64, 64, 32, 32))]


def groups(
    device: str,
    quick: bool,
    dtypes: list[torch.dtype],
    gates: tuple[str, ...] = ("layer",),
    activation_table: bool = False,
) -> list:
    """(label, shape, dtype, mode, gates) in run order — the ≥ 16M sizes of every granularity first,
    then the CNN's shapes, then small flat ones; fp32/bf16 for all before fp16. Per-channel and
    per-element gates run on the 4-D shapes only (a flat tensor has no channels)."""
    shapes = ACTIVATION_SIZES if activation_table and not quick else sizes(device, quick)
    large = [(lab, s) for lab, s in shapes if math.prod(s) >= 2**24 and len(s) == 1]
    four_d = [(lab, s) for lab, s in shapes if len(s) == 4]
    small = [(lab, s) for lab, s in shapes if (lab, s) not in large + four_d]
    items = []
    if "feature" in gates:  # transformer shapes only (a (B, T, D) x)
        items += [(lab, s, "feature") for lab, s in (FEATURE_SIZES_QUICK if quick else FEATURE_SIZES)]
        gates = tuple(g for g in gates if g != "feature")
    for gate in gates:  # the ≥ 16M sizes
        items += [
            (lab, s, gate) for lab, s in (large if gate == "layer" else ([] if quick else [GATED_LARGE]))
        ]
    for gate in gates:
        items += [(lab, s, gate) for lab, s in four_d]
    if "layer" in gates:
        items += [(lab, s, "layer") for lab, s in small]
    first = [d for d in dtypes if d != torch.float16]
    later = [d for d in dtypes if d == torch.float16]
    return [
        (lab, s, dt, mode, gate)
        for dts in (first, later)
        for lab, s, gate in items
        for dt in dts
        for mode in MODES
    ]


def gate_view(t, x, gates="layer"):
    """Per-gate values broadcast over x: scalar, (1, C, 1, 1), (1, *x.shape[1:]) or, per feature,
    (D,) over the last dim."""
    if t.numel() == 1 or gates == "feature":
        return t
    return t.reshape(1, -1, *([1] * (x.dim() - 2))) if t.shape == x.shape[1:2] else t.unsqueeze(0)


def make_gamma(gates: str, shape, device):
    if gates == "layer":
        return torch.tensor(0.3, device=device)
    g = torch.Generator().manual_seed(1)
    gshape = {"channel": shape[1:2], "element": shape[1:], "feature": shape[-1:]}[gates]
    return (torch.rand(gshape, generator=g) - 0.5).to(device)


# PyTorch's own f in float64 for the oracle (gelu_tanh: F.gelu's tanh approximation)
ORACLE_F = {
    "relu6": torch.nn.functional.relu6,
    "leaky_relu": torch.nn.functional.leaky_relu,
    "gelu": torch.nn.functional.gelu,
    "gelu_tanh": lambda v: torch.nn.functional.gelu(v, approximate="tanh"),
    "silu": torch.nn.functional.silu,
    "hardswish": torch.nn.functional.hardswish,
}


def reference(x, gamma, nu, dy, activation="relu", gates="layer"):
    """(y, dx, dγ) in float64 by autograd of x + α·relu(−x) — or x + α·(f(x) − x) with PyTorch's
    own f — α = σ((σ(γ) − ½)·ν) per gate, written out here rather than taken from alphakern or a
    provider: the oracle must not share their code."""
    x64 = x.detach().double().requires_grad_()
    g64 = gamma.detach().double().requires_grad_()
    a = torch.sigmoid((torch.sigmoid(g64) - 0.5) * nu.double())
    h = torch.relu(-x64) if activation == "relu" else ORACLE_F[activation](x64) - x64
    y = x64 + gate_view(a, x64, gates) * h
    dx, dg = torch.autograd.grad(y, (x64, g64), dy.double())
    return y.detach(), dx, dg


def check(outputs, ref, x, dy, dtype) -> str:
    """'ok' or what differs, comparing a provider's outputs with the float64 oracle."""
    tol = CHECK_TOL[dtype]
    for name, got, want in zip(("y", "dx"), outputs[:2], ref[:2], strict=False):
        if got is None:
            continue
        scale = want.abs().max().clamp_min(1e-30)
        err = ((got.double() - want).abs().max() / scale).item()
        if not err <= tol:
            return f"{name} off by {err:.2e} (relative to max)"
    if len(outputs) > 2:  # a reduction per gate: relative to the largest gate's gradient
        scale = ref[2].abs().max().clamp_min(1e-30)
        err = ((outputs[2].double() - ref[2]).abs().max() / scale).item()
        if not err <= 10 * tol:
            return f"dgamma off by {err:.2e} (relative to max)"
    return "ok"


def make_call(fn, mode, x, gamma, nu, dy, gates="layer"):
    g = "feature" if gates == "feature" else None  # the one granularity a call must name
    if mode == "fwd":
        return lambda: fn(x, gamma, nu, g)
    xg = x.detach().requires_grad_()
    gg = gamma.detach().requires_grad_()
    return lambda: torch.autograd.grad(fn(xg, gg, nu, g), (xg, gg), dy)


_KERNELS: dict[tuple, int | None] = {}  # launches depend on (provider, mode, dtype), not on size
_COMPILED = {}


def compiled_eager(activation: str = "relu"):
    """torch.compile of the eager expression, shared by all rows of an activation. dynamic=True:
    one compile per (rank, dtype, mode) instead of one per shape, so compile time stays bounded."""
    if activation not in _COMPILED:
        for knob in ("recompile_limit", "cache_size_limit"):  # the name changed across versions
            if hasattr(torch._dynamo.config, knob):
                setattr(torch._dynamo.config, knob, 16)
        _COMPILED[activation] = torch.compile(providers.eager_gate(activation), dynamic=True)
    return _COMPILED[activation]


def inputs(shape, dtype, device, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(shape, device=device, generator=g).to(dtype)
    dy = torch.randn(shape, device=device, generator=g).to(dtype)
    return x, dy


GRAPH_MAX_NUMEL = 2**22  # CUDA-graph timing where launch cost can matter: the CNN's shapes


def bench_group(device, label, shape, dtype, mode, provs, budget_s, gates="layer", activation="relu"):
    """Time every provider on one (shape, dtype, mode, gates, activation); returns row dicts."""
    x, dy = inputs(shape, dtype, device, seed=0)
    gamma = make_gamma(gates, shape, device)
    provs = {k: v for k, v in provs.items() if providers.supports(k, gates)}
    nu = torch.tensor(10.0, device=device)
    ref = reference(x, gamma, nu, dy, activation, gates)
    if mode == "fwd":
        ref = ref[:1]
    # GPU: more input sets (fresh random data each) until they outgrow L2 twice over
    n_sets = 1
    if device == "cuda":
        n_sets = timing.input_sets_for(x.numel() * x.element_size() * (1 if mode == "fwd" else 2))
    sets = [(x, dy)] + [inputs(shape, dtype, device, seed=s) for s in range(1, n_sets)]
    rows, calls = [], {}
    for name, fn in provs.items():
        row = dict(
            provider=name,
            label=label,
            shape=list(shape),
            numel=x.numel(),
            dtype=str(dtype).removeprefix("torch."),
            mode=mode,
            gates=gates,
            activation=activation,
            input_sets=n_sets,
        )
        try:
            if name == "compile":
                fn = compiled_eager(activation)
            call = make_call(fn, mode, x, gamma, nu, dy, gates)
            t0 = time.perf_counter()
            out = call()  # first call: compiles / autotunes / builds
            if device == "cuda":
                torch.cuda.synchronize()
            if name == "compile":  # first call: includes (re)compilation when one happens
                row["compile_s"] = round(time.perf_counter() - t0, 3)
            outs = (out,) if mode == "fwd" else (None, *out)
            if mode == "fwd":
                row["check"] = check(outs, ref, x, dy, dtype)
            else:
                # y of the same provider for the forward part of the check
                y = fn(x, gamma, nu, "feature" if gates == "feature" else None)
                row["check"] = check((y, outs[1], outs[2]), ref, x, dy, dtype)
            if row["check"] == "ok":
                calls[name] = [call] + [
                    make_call(fn, mode, xs, gamma, nu, dys, gates) for xs, dys in sets[1:]
                ]
        except Exception as e:  # report and carry on with the other providers
            row["check"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        rows.append(row)
    del ref
    graph_stats = {}
    if device == "cuda":
        stats = {k: timing.gpu_time(c) for k, c in calls.items()}
        if x.numel() <= GRAPH_MAX_NUMEL:
            for k, c in calls.items():
                try:
                    graph_stats[k] = timing.gpu_time_graph(c)
                except Exception as e:  # a provider that cannot be captured: say so, keep the rest
                    graph_stats[k] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    else:
        stats = timing.cpu_time_interleaved({k: c[0] for k, c in calls.items()}, budget_s=budget_s)
    nbytes = x.numel() * x.element_size() * PASSES[mode]
    for row in rows:
        name = row["provider"]
        if name not in stats:
            continue
        med, p20, p80 = stats[name]
        row.update(ms=med, ms_p20=p20, ms_p80=p80, gbps=nbytes / (med * 1e-3) / 1e9)
        g = graph_stats.get(name)
        if isinstance(g, tuple):
            row.update(
                ms_graph=g[0], ms_graph_p20=g[1], ms_graph_p80=g[2], gbps_graph=nbytes / (g[0] * 1e-3) / 1e9
            )
        elif g is not None:
            row["graph"] = g
        row["peak_extra_mb"] = timing.peak_extra_mb(calls[name][0], device)
        if device == "cuda":
            key = (name, mode, row["dtype"], gates, activation)
            if key not in _KERNELS:
                _KERNELS[key] = timing.cuda_kernel_count(calls[name][0])
            row["kernels"] = _KERNELS[key]
    for row in rows:
        for base in ("eager", "compile"):
            b = stats.get(base)
            if b and "ms" in row:
                row[f"speedup_vs_{base}"] = b[0] / row["ms"]
    return rows


def fmt_row(r, copy_gbs):
    if "ms" not in r:
        return f"  {r['provider']:<17} {r['check']}"
    pct = 100 * r["gbps"] / copy_gbs
    extra = []
    if r.get("kernels") is not None:
        extra.append(f"{r['kernels']} kernels")
    if r.get("peak_extra_mb") is not None:
        extra.append(f"+{r['peak_extra_mb']:.0f} MiB")
    if "compile_s" in r:
        extra.append(f"compile {r['compile_s']:.1f}s")
    if "ms_graph" in r:
        extra.append(f"graph {r['ms_graph']:.4f} ms")
    return (
        f"  {r['provider']:<17} {r['ms']:9.4f} ms [{r['ms_p20']:.4f}, {r['ms_p80']:.4f}]"
        f" {r['gbps']:8.1f} GB/s {pct:5.1f}% copy"
        f"  x{r.get('speedup_vs_eager', float('nan')):5.2f} eager"
        f"  x{r.get('speedup_vs_compile', float('nan')):5.2f} compile  {' '.join(extra)}"
    )


def plot(rows, path, title, copy_gbs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = sorted({r["dtype"] for r in rows})
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6.5 * len(dtypes), 4.8), squeeze=False)
    for ax, dt in zip(axes[0], dtypes, strict=False):
        sel = [r for r in rows if r["dtype"] == dt and r["mode"] == "fwd+bwd" and "gbps" in r]
        for prov in dict.fromkeys(r["provider"] for r in sel):
            mine = [r for r in sel if r["provider"] == prov]
            flat = sorted((r["numel"], r["gbps"]) for r in mine if r["label"].startswith("flat"))
            cnn = [(r["numel"], r["gbps"]) for r in mine if r["label"].startswith("cnn")]
            (line,) = ax.plot([p[0] for p in flat], [p[1] for p in flat], marker="o", label=prov)
            ax.scatter([p[0] for p in cnn], [p[1] for p in cnn], marker="x", s=60, color=line.get_color())
        ax.axhline(copy_gbs, color="k", linestyle="--", linewidth=1, label="copy bandwidth")
        ax.set_xscale("log")
        ax.set_xlabel("elements")
        ax.set_ylabel("effective GB/s (forward+backward)")
        ax.set_title(f"{dt} (lines: flat tensors; x: the CNN's activation shapes)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def plot_activations(rows, path, title):
    """Per activation: the speed-up over the eager blend of each provider, forward+backward, one
    bar group per (size, gates, dtype)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acts = list(dict.fromkeys(r["activation"] for r in rows))
    every = [p for p in dict.fromkeys(r["provider"] for r in rows) if p != "eager"]
    color = {p: f"C{i}" for i, p in enumerate(every)}  # one colour per provider in every panel
    fig, axes = plt.subplots(1, len(acts), figsize=(4.2 * len(acts), 4.2), squeeze=False, sharey=True)
    for ax, act in zip(axes[0], acts, strict=True):
        sel = [r for r in rows if r["activation"] == act and r["mode"] == "fwd+bwd" and "ms" in r]
        cases = list(dict.fromkeys((r["label"], r["gates"], r["dtype"]) for r in sel))
        provs = [p for p in dict.fromkeys(r["provider"] for r in sel) if p != "eager"]
        width = 0.8 / max(len(provs), 1)
        for j, prov in enumerate(provs):
            vals = [
                next((r.get("speedup_vs_eager", 0.0) for r in sel if r["provider"] == prov
                      and (r["label"], r["gates"], r["dtype"]) == c), 0.0)
                for c in cases
            ]  # fmt: skip
            ax.bar([i + j * width for i in range(len(cases))], vals, width, label=prov, color=color[prov])
        ax.axhline(1.0, color="k", linewidth=1)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))])
        ax.set_xticklabels([f"{lab}\n{g} {dt}" for lab, g, dt in cases], fontsize=7)
        ax.set_title(act)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("speed-up over the eager blend")
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--quick", action="store_true", help="two small shapes, fp32 (< 1 min on CPU)")
    p.add_argument("--json", type=Path, help="where to write every row (default under benchmarks/results/)")
    p.add_argument("--plot", type=Path, help="GB/s vs size per provider, forward+backward (PNG)")
    p.add_argument("--budget", type=float, default=None, help="CPU seconds per (shape, mode) group")
    p.add_argument("--providers", default=None, help="comma-separated subset of providers")
    p.add_argument("--skip", default="", help="comma-separated providers not to set up (e.g. alphakern-cuda)")
    p.add_argument(
        "--gates",
        default="layer",
        help="comma-separated: layer, channel, element, feature (γ per layer/channel/element, or per "
        "feature of the last dim at transformer MLP shapes)",
    )
    p.add_argument("--sizes", default=None, help="comma-separated size labels to keep (e.g. cnn-b64-l3)")
    p.add_argument(
        "--dtypes", default=None, help="comma-separated, e.g. float32,bfloat16 (GPU default: all three)"
    )
    p.add_argument(
        "--activation",
        default=None,
        help="comma-separated f of the gate x + α·(f(x) − x): relu, relu6, leaky_relu, gelu, gelu_tanh, "
        "silu, hardswish (the activations' sizes; default: R_α over every size)",
    )
    args = p.parse_args(argv)
    acts = args.activation.split(",") if args.activation else ["relu"]
    for a in acts:
        if a not in providers.F_OF:
            p.error(f"--activation: {a!r} is not one of {', '.join(providers.F_OF)}")

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    name = timing.device_name(device)
    slug = "cpu" if device == "cpu" else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    table = "_features" if args.gates == "feature" else ("_activations" if args.activation else "")
    suffix = table + ("-quick" if args.quick else "")
    json_path = args.json or RESULTS / f"bench_activation_{slug}{suffix}.json"
    plot_path = args.plot or json_path.with_suffix(".png")
    dtypes = (
        [torch.float32] if device == "cpu" or args.quick else [torch.float32, torch.bfloat16, torch.float16]
    )
    if args.dtypes:
        dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    budget = args.budget if args.budget is not None else (0.6 if args.quick else 3.0)

    provs_of = {a: providers.available(device, skip=tuple(args.skip.split(",")), activation=a) for a in acts}
    if args.providers:
        keep = args.providers.split(",")
        provs_of = {a: {k: v for k, v in pv.items() if k in keep} for a, pv in provs_of.items()}
    provs = {k: None for pv in provs_of.values() for k in pv}
    l2 = torch.cuda.get_device_properties(0).L2_cache_size if device == "cuda" else None
    copy_gbs = timing.copy_bandwidth_gbs(device, 2**30 if device == "cuda" else 2**26)
    threads = torch.get_num_threads()
    print(f"alphakern activation benchmark on {device}: {name}")
    print(f"torch {torch.__version__}, threads {threads}, measured copy bandwidth {copy_gbs:.1f} GB/s")
    print(f"providers: {', '.join(provs)}" + (f"; activations: {', '.join(acts)}" if args.activation else ""))

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=device,
        device_name=name,
        machine=platform.platform(),
        cpu_count=os.cpu_count(),
        torch_threads=threads,
        torch=torch.__version__,
        triton=triton_version,
        cuda=torch.version.cuda,
        copy_gbs=copy_gbs,
        quick=args.quick,
        complete=False,
        providers=list(provs),
        activations=acts,
        l2_bytes=l2,
        timing="CUDA events per call over input sets >= 2x L2 (median, p20, p80); ms_graph: CUDA-graph "
        f"replays for <= {GRAPH_MAX_NUMEL} elements"
        if device == "cuda"
        else "interleaved round-robin, perf_counter (median, p20, p80)",
        bytes_model="fwd: 2 passes (x, y); fwd+bwd: 5 passes (x, y, x, dy, dx)",
    )
    from tqdm import tqdm

    def save() -> None:  # after every group, atomically: an interrupted run keeps its rows
        json_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(json_path, lambda p: p.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1)))

    todo = [
        (*g, a)
        for a in acts
        for g in groups(device, args.quick, dtypes, tuple(args.gates.split(",")), bool(args.activation))
        if args.sizes is None or g[0] in args.sizes.split(",")
    ]
    if not todo:
        p.error(f"--sizes {args.sizes}: no size of this run has that label")
    rows = []
    # SIGTERM (e.g. from `timeout`) stops like Ctrl-C: the rows so far are saved and plotted.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for lab, shape, dt, mode, gate, act in tqdm(
            todo, desc="benchmark", file=sys.stderr, leave=False, disable=None
        ):
            group = bench_group(device, lab, shape, dt, mode, provs_of[act], budget, gate, act)
            rows += group
            save()
            what = f"{lab} {tuple(shape)} {str(dt).removeprefix('torch.')} {mode} gates={gate}"
            tqdm.write(what + (f" f={act}" if args.activation else ""))
            for r in group:
                tqdm.write(fmt_row(r, copy_gbs))
        meta["complete"] = True
    except KeyboardInterrupt:
        print(f"interrupted after {len(rows)} rows; saving what was measured", file=sys.stderr)
    save()
    if rows and (args.activation or "feature" in args.gates):
        plot_activations(rows, plot_path, f"x + alpha*(f(x) - x), forward+backward, on {name}")
    elif rows:
        plot(rows, plot_path, f"R_alpha forward+backward on {name}", copy_gbs)
    print(f"wrote {json_path}" + (f" and {plot_path}" if rows else ""))
    bad = [r for r in rows if r["check"] != "ok"]
    for r in bad:
        print(
            f"CHECK FAILED: {r['provider']} {r['label']} {r['dtype']} {r['mode']} {r['gates']} "
            f"{r['activation']}: {r['check']}"
        )
    if not meta["complete"]:
        return 130
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
