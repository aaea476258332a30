"""The Triton kernels compile for sm_80 and sm_90 without a GPU, as the GPU needs them: 16-byte
accesses in every entry point at a ragged size, no atomics, no approximate math, few registers.

The interpreter (how CI runs the kernels) accepts code the real compiler rejects; this closes the gap.
"""

import json
import os

import pytest

from alphakern.ops.backends import triton_backend as alpha_relu_triton
from tests.subproc import run_python

# 256-thread programs at ≤ 64 registers a thread: ≥ 4 programs (32 warps) resident per SM
MAX_REGISTERS = 64


@pytest.mark.skipif(not alpha_relu_triton.available(), reason="triton is not installed")
def test_kernels_compile_for_ampere_and_hopper():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = run_python("tests/aot_compile_triton.py", "80", "90", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps({k: {n: v["registers"] for n, v in ks.items()} for k, ks in report.items()}))
    acts = {k: report.pop(k) for k in [k for k in report if k.endswith("-activations")]}
    bns = {k: report.pop(k) for k in [k for k in report if k.endswith("-bn_gate")]}
    assert len(report) == 6 and len(acts) == 2  # 2 archs x 3 dtypes; the other activations per arch
    assert len(bns) == 2
    for key, kernels in bns.items():  # 2 layouts x (stats; fwd, bwd, apply x relu, silu x residual or not)
        assert len(kernels) == 2 * (1 + 3 * 2 * 2), kernels.keys()
        for name, k in kernels.items():
            assert k["v4_loads"] > 0 and k["atomics"] == 0, (key, name, k)
            if "fwd" in name or "apply" in name:
                assert k["v4_stores"] > 0, (key, name, k)
            if name.endswith("relu"):
                assert k["approx_math"] == 0, (key, name, k)
            if k["registers"] is not None:  # 4-warp programs: 96 registers still leave 5 per SM
                assert k["registers"] <= 96, (key, name, k)
    for key, kernels in acts.items():
        assert len(kernels) == 2 * 6, kernels.keys()  # fwd and bwd of relu6 ... hardswish
        for name, k in kernels.items():
            assert k["v4_loads"] > 0 and k["v4_stores"] > 0 and k["atomics"] == 0, (key, name, k)
            if k["registers"] is not None:
                assert k["registers"] <= MAX_REGISTERS, (key, name, k)
    for key, kernels in report.items():
        for name in ("fwd", "bwd", "cols_fwd", "cols_bwd", "rows_fwd", "rows_bwd"):
            # the full tiles' accesses of x, y, dy, dx are 16-byte vectors although n is ragged
            assert kernels[name]["v4_loads"] > 0 and kernels[name]["v4_stores"] > 0, (key, name, kernels)
        for name, k in kernels.items():
            assert k["atomics"] == 0 and k["approx_math"] == 0, (key, name, k)
            if k["registers"] is not None:
                assert k["registers"] <= MAX_REGISTERS, (key, name, k)
