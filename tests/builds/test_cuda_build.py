"""csrc/ compiles with nvcc (this machine has nvcc but no GPU), via the documented command."""

import os
import re
from pathlib import Path

import pytest

from tests.builds.nvcc import (
    ACT_CODES,
    DTYPES,
    act_of,
    check_layer_ptx,
    check_math,
    compile_kept,
    entries_of,
    usage_of,
)
from tests.reference import HAS_NVCC
from tests.subproc import run_python

pytestmark = pytest.mark.slow  # nvcc


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc (the CUDA toolkit) is not installed")
def test_build_cuda_command_compiles_csrc(tmp_path):
    # a fresh extension cache: in the default one a current build is reused and nothing compiles
    # (and a test has no business writing the user's cache)
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"))
    env.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")  # one target keeps the test's build short
    proc = run_python("-m", "alphakern", "build-cuda", env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("alphakern CUDA backend built:")]
    assert line, proc.stdout
    lib = Path(line[0].split(": ", 1)[1])
    assert lib.exists() and lib.is_relative_to(tmp_path / "ext"), lib  # built here, just now


def test_build_failure_exits_nonzero_with_message(tmp_path):
    env = dict(os.environ, CUDA_HOME=str(tmp_path), TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"))
    proc = run_python("-m", "alphakern", "build-cuda", env=env)
    assert proc.returncode == 1
    assert "building alphakern's CUDA backend" in proc.stderr and "Fix the toolkit" in proc.stderr


def test_cuda_kernels_use_16_byte_accesses_and_no_atomics(layer_kernels):
    """The PTX of csrc/ for sm_90: every fwd/bwd kernel (each dtype and f) has vectorised global
    loads and stores (each entry on its own), none has atomics (determinism) or approximate math
    beyond expf's (α's precision)."""
    check_layer_ptx(layer_kernels[0])


def test_cuda_backward_fits_eight_blocks_per_sm(layer_kernels):
    """__launch_bounds__(256, 8) for relu: its backward within 32 registers; (256, 6) for the other
    f: within 40. Nothing spilled."""
    report = layer_kernels[1]
    bwd = [row for row in usage_of(report) if "bwd_kernel" in row[0]]
    print({name: regs for name, _, regs in bwd})
    assert len(bwd) == 3 * 7, report[-3000:]
    for name, spill, regs in bwd:
        assert regs <= (32 if act_of(name) == 0 else 40) and spill == 0, (name, regs, spill)


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc (the CUDA toolkit) is not installed")
def test_gate_kernels_ptx_and_registers(tmp_path):
    """gate_kernels.cu for sm_90 (one compile, its PTX kept): each vectorised instantiation (16 bytes:
    4 fp32 or 8 fp16/bf16 elements) of the four gate kernels, for every f, loads and stores 16 bytes;
    no atomics, no approximate math beyond expf's; nothing spilled."""
    ptx, report = compile_kept(tmp_path, source="cuda/gate_kernels.cu")
    entries = entries_of(ptx)
    kinds = ("gates_cols_fwd", "gates_cols_bwd", "gates_rows_fwd", "gates_rows_bwd")
    for kind in kinds:
        for dtype, vec in DTYPES:
            for act in ACT_CODES:
                (name,) = [n for n in entries if kind in n and f"I{dtype}Li{vec}ELi{act}EE" in n]
                assert re.search(r"ld\.global(\.nc)?\.v4", entries[name]), name
                assert re.search(r"st\.global\.v4", entries[name]), name
    # each kernel x dtype x (vectorised, scalar) x f + column sum
    assert len(entries) == 4 * 3 * 2 * 7 + 1
    check_math(entries)
    usage = usage_of(report)
    assert len(usage) == len(entries), report[-2000:]
    assert all(spill == 0 for _, spill, _ in usage), [u for u in usage if u[1]]


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc (the CUDA toolkit) is not installed")
def test_bn_gate_kernels_ptx_and_registers(tmp_path):
    """bn_gate.cu for sm_90 (one compile, its PTX kept): every instantiation — layout (rows, cols) x
    mode x dtype x (vectorised, scalar) x f x (with a residual or not), the statistics once per
    dtype — exists; the vectorised ones load (and, fwd/apply, store) 16 bytes, the residual's too
    (and apply's dr); no atomics; no approximate math beyond expf's. No
    spills but the few bytes some smooth/hardswish instantiations save around IEEE division's
    out-of-line slow path (f ≥ gelu_tanh; at most 16 bytes)."""
    ptx, report = compile_kept(tmp_path, source="cuda/bn_gate.cu")
    entries = entries_of(ptx)
    modes = {0: "stats", 1: "fwd", 2: "reduce", 3: "apply"}
    for layout in ("bn_rows_kernel", "bn_cols_kernel"):
        for dtype, vec in DTYPES:
            for mode in modes:
                for act, res in [(0, 0)] if mode == 0 else [(a, r) for a in ACT_CODES for r in (0, 1)]:
                    key = f"I{dtype}Li{vec}ELi{mode}ELi{act}ELb{res}EE"
                    (name,) = [n for n in entries if layout in n and key in n]
                    loads = len(re.findall(r"ld\.global(\.nc)?\.v4", entries[name]))
                    assert loads >= 1 + (mode > 1) + res, (name, loads)  # x, dy, r
                    if mode in (1, 3):
                        stores = len(re.findall(r"st\.global\.v4", entries[name]))
                        assert stores >= 1 + (mode == 3 and res), (name, stores)  # y or dx, dr
    assert len(entries) == 2 * 3 * 2 * (1 + 3 * 7 * 2), len(entries)
    check_math(entries)
    usage = usage_of(report)
    assert len(usage) == len(entries), report[-2000:]
    for name, spill, _ in usage:
        assert spill == 0 or (act_of(name) >= 4 and spill <= 16), (name, spill)
