"""Memory-layout helpers shared by the backends (dense layouts seen as flat arrays).

Every backend works on tensors as flat arrays in *memory order*, so that the output keeps the
input's memory format (contiguous, channels_last, any dense permutation) without a copy.
"""

from __future__ import annotations

import torch


def is_dense(t: torch.Tensor) -> bool:
    """True when ``t`` covers exactly ``numel`` consecutive storage elements (any dim order)."""
    if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
        return True
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride(), strict=True), key=lambda p: p[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def flat(t: torch.Tensor) -> torch.Tensor:
    """A 1-D view of a dense tensor in memory order."""
    return t.as_strided((t.numel(),), (1,))


def like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` laid out exactly like the dense tensor ``ref`` (a copy only when the strides differ)."""
    if t.stride() == ref.stride() and is_dense(t):
        return t
    return torch.empty_like(ref, dtype=t.dtype).copy_(t)


def dense_input(x: torch.Tensor) -> torch.Tensor:
    """x laid out as ``empty_like(x)`` would be, for a kernel that allocates its own output:
    x itself when dense, else gathered once."""
    return x if is_dense(x) else like(x, torch.empty_like(x))


def dense_input_and_output(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x laid out like the output, the output) — the output is ``empty_like(x)``, as the fake op says."""
    out = torch.empty_like(x)
    return like(x, out), out
