"""Timing, memory and kernel-count helpers for the benchmarks.

GPU: CUDA events around each call, cycling over input sets whose total exceeds twice the L2
cache, so every call reads its inputs from device memory — instead of do_bench's L2 flush by
``zero_()``, whose dirty lines are written back inside the timed region (up to ~17 µs on an H100).
Small shapes are also timed as CUDA-graph replays: plain minus graph is the host's launch cost.
CPU: providers interleaved round-robin so machine noise hits all alike.
"""

from __future__ import annotations

import itertools
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model (/proc/cpuinfo): a timing is only read beside its machine,
    and the dev machines differ from session to session."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def quantiles(samples_ms: list[float]) -> tuple[float, float, float]:
    """(median, 20th, 80th percentile) of a list of times."""
    s = sorted(samples_ms)
    if len(s) == 1:
        return s[0], s[0], s[0]
    q = statistics.quantiles(s, n=10, method="inclusive")
    return statistics.median(s), q[1], q[7]


def input_sets_for(bytes_per_set: int, l2_bytes: int | None = None, max_sets: int = 64) -> int:
    """How many input sets to cycle through so that together they are ≥ 2× the L2 cache."""
    if l2_bytes is None:
        l2_bytes = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    return max(1, min(max_sets, math.ceil(2 * l2_bytes / max(bytes_per_set, 1))))


def _events(n: int) -> list[torch.cuda.Event]:
    return [torch.cuda.Event(enable_timing=True) for _ in range(n)]


def gpu_time(
    calls: Sequence[Callable[[], object]], rep_ms: float = 40.0, max_reps: int = 2000
) -> tuple[float, float, float]:
    """Median, p20, p80 in ms of one call, cycling over ``calls`` (one per input set)."""
    for c in calls:  # warm-up: allocator, autotuning, lazy init
        c()
    torch.cuda.synchronize()
    start, end = _events(2)
    start.record()
    for c in calls:
        c()
    end.record()
    torch.cuda.synchronize()
    per_call = max(start.elapsed_time(end) / len(calls), 1e-3)
    reps = int(min(max_reps, max(10 * len(calls), rep_ms / per_call)))
    starts, ends = _events(reps), _events(reps)
    for i in range(reps):
        starts[i].record()
        calls[i % len(calls)]()
        ends[i].record()
    torch.cuda.synchronize()
    return quantiles([s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)])


def gpu_time_graph(
    calls: Sequence[Callable[[], object]], rep_ms: float = 40.0, max_reps: int = 500
) -> tuple[float, float, float]:
    """Like gpu_time, but each replay runs all ``calls`` captured in one CUDA graph (no host
    launch cost); returns ms per call."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up off the default stream, as capture requires
        for _ in range(3):
            for c in calls:
                c()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for c in calls:
            c()
    graph.replay()
    torch.cuda.synchronize()
    start, end = _events(2)
    start.record()
    graph.replay()
    end.record()
    torch.cuda.synchronize()
    reps = int(min(max_reps, max(10, rep_ms / max(start.elapsed_time(end), 1e-3))))
    starts, ends = _events(reps), _events(reps)
    for i in range(reps):
        starts[i].record()
        graph.replay()
        ends[i].record()
    torch.cuda.synchronize()
    return quantiles([s.elapsed_time(e) / len(calls) for s, e in zip(starts, ends, strict=True)])


def cpu_time_interleaved(
    fns: dict[str, Callable[[], object]], budget_s: float, min_rounds: int = 5, max_rounds: int = 60
) -> dict[str, tuple[float, float, float]]:
    """Round-robin over providers so that machine noise hits all alike; returns ms quantiles."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget_s):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) * 1e3)
        rounds += 1
    return {k: quantiles(v) for k, v in samples.items()}


def compiled(fn, **kwargs):
    """torch.compile(fn) with dynamo's caches cleared first. A benchmark compiles the same function
    (one code object) for case after case, and past dynamo's recompile limit (8) dynamo silently
    runs it eagerly: the "compile" column would time eager PyTorch from the ninth variant on."""
    torch._dynamo.reset()
    return torch.compile(fn, **kwargs)


def copy_bandwidth_gbs(device: str, nbytes: int, rotate_bytes: int | None = None) -> float:
    """Measured copy bandwidth (bytes read + written per second) on ``device``, in GB/s. With
    ``rotate_bytes`` (CPU), each copy is on the next of (src, dst) pairs that together span it, so
    that a copy of a cache-sized tensor does not find its data where the last copy left it."""
    n = nbytes // 4
    # dst zero-filled: its pages faulted in here, not inside a timed copy
    pairs = [(torch.randn(n, device=device), torch.zeros(n, device=device))
             for _ in range(max(1, (rotate_bytes or nbytes) // nbytes))]  # fmt: skip
    src, dst = pairs[0]
    if device == "cuda":  # 1 GiB: far beyond L2, no rotation needed
        ms = gpu_time([lambda: dst.copy_(src)])[0]
    else:
        dst.copy_(src)
        turn = itertools.count()

        def copy() -> None:
            s, d = pairs[next(turn) % len(pairs)]
            d.copy_(s)

        ms = cpu_time_interleaved({"copy": copy}, budget_s=1.0)["copy"][0]
    return 2 * n * 4 / (ms * 1e-3) / 1e9


def peak_extra_mb(fn: Callable[[], object], device: str) -> float | None:
    """Peak memory allocated by one call beyond what was allocated before it (CUDA only)."""
    if device != "cuda":
        return None  # the CPU allocator keeps no statistics
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def cuda_kernel_count(fn: Callable[[], object]) -> int | None:
    """Number of GPU kernels (and memsets/copies) one call launches, from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA)
