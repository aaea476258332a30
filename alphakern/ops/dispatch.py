"""What ``backend="auto"`` means, for every op in one place; the measurements behind each rule are
in benchmarks/results/ (README "Results").

- ``gate`` / ``alpha_relu``: Triton for the dtypes it takes on a GPU; on the CPU the native
  kernels when they are built and have f (``available`` never compiles); the torch backend
  elsewhere.
- ``bn_gate``: the fused native kernels for CPU tensors; on CUDA tensors the composition
  (F.batch_norm, then the gate on its own "auto" backend) — on an H100 the Triton fused op measured
  0.18–0.6× eager BN + gate (bench_bn_gate_gpu.json, 2026-12-05) and the CUDA C++ kernels have not
  run yet, so both are chosen by name only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alphakern.ops.backends import cpu_backend, triton_backend
from alphakern.ops.backends.native import bn_gate as native_bn
from alphakern.ops.backends.triton.common import INTERPRET
from alphakern.ops.core.activations import RELU, Activation

BN_GATE_GRANULARITIES = ("layer", "channel")  # what the fused BatchNorm + gate kernels take


def auto_backend(device_type: str, dtype: torch.dtype, act: Activation = RELU) -> str:
    """The gate's "auto" (see the module docstring)."""
    if device_type == "cuda" and dtype in triton_backend.DTYPES and triton_backend.available():
        return "triton"
    if (
        device_type == "cpu"
        and dtype in cpu_backend.DTYPES
        and act.name in cpu_backend.ACTIVATIONS
        and cpu_backend.available()
    ):
        return "cpu"
    return "torch"


def bn_gate_runs(name: str, x: Tensor, granularity: str) -> bool:
    """Can the fused BatchNorm + gate backend ``name`` take this x and granularity?"""
    if granularity not in BN_GATE_GRANULARITIES or x.dtype not in native_bn.DTYPES:
        return False
    if name in ("cpu", "cuda"):
        return x.device.type == name
    return x.device.type == "cuda" or (x.device.type == "cpu" and INTERPRET)


def auto_bn_gate_backend(x: Tensor, granularity: str) -> str:
    """bn_gate's "auto": "cpu" (fused) or "torch" (the composition), see the module docstring."""
    if x.device.type == "cpu" and bn_gate_runs("cpu", x, granularity) and native_bn.available():
        return "cpu"
    return "torch"
