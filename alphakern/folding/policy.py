"""Which merges ``fold`` keeps: ``"flops"`` those that do not raise MACs, ``"latency"`` those that
time faster on the device at the example's shapes (a cached table of median times), ``"all"``
every mergeable one."""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from alphakern.folding.algebra import conv_macs

POLICIES = ("latency", "flops", "all")


class Policy:
    """A policy and the device it times on, with its latency cache."""

    def __init__(self, name: str, device: torch.device) -> None:
        self.name, self.device = self.check(name), device
        self.latency_cache: dict[tuple, float] = {}

    @staticmethod
    def check(name: str) -> str:
        if name not in POLICIES:
            raise ValueError(f"policy must be one of {list(POLICIES)}, got {name!r}")
        return name

    def rejected(
        self, merged: nn.Conv2d, parts: list[tuple[nn.Conv2d, tuple[int, ...]]], in_shape: tuple[int, ...]
    ) -> str | None:
        """Why the merge of the convs ``parts`` (each with its output shape) into ``merged`` is
        not kept, or None."""
        if self.name == "all":
            return None
        before = sum(conv_macs(c, shape) for c, shape in parts)
        after = conv_macs(merged, parts[-1][1])
        if self.name == "flops":
            return f"merging would raise MACs ({before} -> {after})" if after > before else None
        t_before = self.latency([c for c, _ in parts], in_shape)
        t_after = self.latency([merged], in_shape)
        if t_after >= t_before:
            return f"not faster on {self.device.type} ({t_before * 1e3:.3f} -> {t_after * 1e3:.3f} ms)"
        return None

    def linears_rejected(self, d_in: int, hidden: int, d_out: int) -> str | None:
        """Why Linear(d_in → hidden) → Linear(hidden → d_out) is not merged into one, or None: the MAC
        rule under "latency" too (a product of two thin matrices is rarely slower than one
        matrix of the same MACs)."""
        if self.name != "all" and d_in * d_out > hidden * (d_in + d_out):
            return "merging would raise MACs"
        return None

    def latency(self, convs: list[nn.Conv2d], in_shape: tuple[int, ...]) -> float:
        """Median seconds of the convs in sequence on the device, cached per (convs, shape)."""
        key = (tuple(_conv_key(c) for c in convs), tuple(in_shape), self.device.type)
        if key not in self.latency_cache:
            seq = nn.Sequential(*(copy.deepcopy(c) for c in convs)).to(self.device).eval()
            x = torch.randn(in_shape, device=self.device, dtype=convs[0].weight.dtype)
            self.latency_cache[key] = median_seconds(lambda: seq(x), self.device)
        return self.latency_cache[key]

    def time_module(self, m: nn.Module, x: torch.Tensor) -> float:
        """Median seconds of ``m(x)`` on the device (a copy of m moved there)."""
        m = copy.deepcopy(m).to(self.device).eval()
        x = x.to(self.device)
        return median_seconds(lambda: m(x), self.device)


def _conv_key(c: nn.Conv2d) -> tuple:
    return (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.groups, c.bias is not None)


def median_seconds(fn, device: torch.device, rounds: int = 7) -> float:
    with torch.inference_mode():
        fn()
        times = []
        for _ in range(rounds):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)
