"""Timing, memory and kernel-count helpers for the benchmarks (GPU via do_bench, CPU interleaved)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def quantiles(samples_ms: list[float]) -> tuple[float, float, float]:
    """(median, 20th, 80th percentile) of a list of times."""
    s = sorted(samples_ms)
    if len(s) == 1:
        return s[0], s[0], s[0]
    q = statistics.quantiles(s, n=10, method="inclusive")
    return statistics.median(s), q[1], q[7]


def gpu_time(fn: Callable[[], object], rep_ms: int = 40) -> tuple[float, float, float]:
    """Median, p20, p80 in ms with triton's do_bench (flushes L2 between runs)."""
    from triton.testing import do_bench

    med, p20, p80 = do_bench(fn, warmup=10, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return med, p20, p80


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


def copy_bandwidth_gbs(device: str, nbytes: int) -> float:
    """Measured copy bandwidth (bytes read + written per second) on ``device``, in GB/s."""
    n = nbytes // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    if device == "cuda":
        ms = gpu_time(lambda: dst.copy_(src))[0]
    else:
        dst.copy_(src)
        ms = cpu_time_interleaved({"copy": lambda: dst.copy_(src)}, budget_s=1.0)["copy"][0]
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
