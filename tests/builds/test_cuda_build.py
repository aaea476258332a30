"""csrc/ compiles with nvcc (this machine has nvcc but no GPU), via the documented command."""

import os
import re
from pathlib import Path

import pytest

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


def _nvcc(tmp_path, *args, source="cuda/layer_kernels.cu", csrc=None):
    """nvcc on a csrc/ .cu file (of ``csrc``, default the package's) for sm_90 with the flags torch's
    extension builder uses."""
    import subprocess
    import sysconfig

    import torch

    from alphakern.ops.backends.native import cuda as cuda_ext

    home = cuda_ext._find_cuda_home()
    inc = Path(torch.__file__).parent / "include"
    cmd = [
        f"{home}/bin/nvcc", "-arch=sm_90", "-std=c++20", "-O3", "--expt-relaxed-constexpr",
        "-isystem", str(inc), "-isystem", str(inc / "torch/csrc/api/include"),
        "-isystem", f"{home}/include", "-isystem", sysconfig.get_paths()["include"],
        "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
        "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
        *args, str((csrc or cuda_ext.csrc_dir()) / source),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _entries(ptx: str) -> dict[str, str]:
    """PTX text of each kernel, by mangled name."""
    parts = re.split(r"^(?:\.visible\s+)?\.entry\s+(\w+)", ptx, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


# f's codes (ops.core.activations.CODES) as they stand in a mangled instantiation's name; the
# smooth f (gelu, gelu_tanh, silu) call CUDA's expf/erff, whose PTX holds one ex2.approx after an
# exact range reduction: the only approximate instruction allowed, and only in them.
ACT_CODES = range(7)
SMOOTH = (3, 4, 5)
DTYPES = (("f", 4), ("6__half", 8), ("13__nv_bfloat16", 8))  # mangled T, elements in 16 bytes


def _act(name: str) -> int:
    """f's code, the last int template argument (bn_gate.cu's kernels end with a bool after it)."""
    return int(re.search(r"Li(\d)E(Lb\dE)?EEv", name).group(1))


def _check_math(entries: dict[str, str]) -> None:
    """No atomics (determinism); no approximate math (α's precision, IEEE division) except the
    ex2.approx inside expf/erff of the smooth f."""
    for name, text in entries.items():
        assert "atom." not in text, name
        approx = set(re.findall(r"\b(?:ex2|rcp|div|sqrt|lg2|tanh|sin|cos)\.approx[.\w]*", text))
        allowed = {"ex2.approx.ftz.f32"} if "kernelI" in name and _act(name) in SMOOTH else set()
        assert approx <= allowed, (name, approx)


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc (the CUDA toolkit) is not installed")
def test_cuda_kernels_use_16_byte_accesses_and_no_atomics(tmp_path):
    """The PTX of csrc/ for sm_90: every fwd/bwd kernel (each dtype and f) has vectorised global
    loads and stores (each entry on its own), none has atomics (determinism) or approximate math
    beyond expf's (α's precision)."""
    check_layer_ptx(tmp_path)


def check_layer_ptx(tmp_path, csrc=None):
    """The checks of the test above, on ``csrc`` (tests/builds/test_mutants.py runs them on mutants)."""
    _nvcc(tmp_path, "-ptx", "-o", "k.ptx", csrc=csrc)
    entries = _entries((tmp_path / "k.ptx").read_text())
    elementwise = {n: t for n, t in entries.items() if "fwd_kernel" in n or "bwd_kernel" in n}
    for kind in ("layer_gate_fwd_kernel", "layer_gate_bwd_kernel"):
        for dtype, _ in DTYPES:
            for act in ACT_CODES:
                (name,) = [n for n in elementwise if kind in n and f"I{dtype}Li{act}EE" in n]
                assert re.search(r"ld\.global(\.nc)?\.v4", entries[name]), name
                assert "st.global.v4" in entries[name], name
    # fwd and bwd per dtype and f, and the final sum
    assert len(elementwise) == 2 * 3 * 7 and len(entries) == 2 * 3 * 7 + 1, list(entries)
    _check_math(entries)


def _usage(stderr: str) -> list[tuple[str, int, int]]:
    """(kernel, spilled bytes, registers) per entry of ptxas -v."""
    rows = re.findall(
        r"Compiling entry function '(\w+)'.*?(\d+) bytes spill stores.*?Used (\d+) registers",
        stderr,
        flags=re.S,
    )
    return [(n, int(spill), int(regs)) for n, spill, regs in rows]


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc (the CUDA toolkit) is not installed")
def test_cuda_backward_fits_eight_blocks_per_sm(tmp_path):
    """__launch_bounds__(256, 8) for relu: its backward within 32 registers; (256, 6) for the other
    f: within 40. Nothing spilled."""
    proc = _nvcc(tmp_path, "-cubin", "-o", "k.cubin", "-Xptxas", "-v")
    bwd = [row for row in _usage(proc.stderr) if "bwd_kernel" in row[0]]
    print({name: regs for name, _, regs in bwd})
    assert len(bwd) == 3 * 7, proc.stderr[-3000:]
    for name, spill, regs in bwd:
        assert regs <= (32 if _act(name) == 0 else 40) and spill == 0, (name, regs, spill)


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc (the CUDA toolkit) is not installed")
def test_gate_kernels_ptx_and_registers(tmp_path):
    """gate_kernels.cu for sm_90: each vectorised instantiation (16 bytes: 4 fp32 or 8 fp16/bf16
    elements) of the four gate kernels, for every f, loads and stores 16 bytes; no atomics, no
    approximate math beyond expf's; nothing spilled."""
    _nvcc(tmp_path, "-ptx", "-o", "g.ptx", source="cuda/gate_kernels.cu")
    entries = _entries((tmp_path / "g.ptx").read_text())
    kinds = ("gates_cols_fwd", "gates_cols_bwd", "gates_rows_fwd", "gates_rows_bwd")
    for kind in kinds:
        for dtype, vec in DTYPES:
            for act in ACT_CODES:
                (name,) = [n for n in entries if kind in n and f"I{dtype}Li{vec}ELi{act}EE" in n]
                assert re.search(r"ld\.global(\.nc)?\.v4", entries[name]), name
                assert re.search(r"st\.global\.v4", entries[name]), name
    # each kernel x dtype x (vectorised, scalar) x f + column sum
    assert len(entries) == 4 * 3 * 2 * 7 + 1
    _check_math(entries)
    proc = _nvcc(tmp_path, "-cubin", "-o", "g.cubin", "-Xptxas", "-v", source="cuda/gate_kernels.cu")
    usage = _usage(proc.stderr)
    assert len(usage) == len(entries), proc.stderr[-2000:]
    assert all(spill == 0 for _, spill, _ in usage), [u for u in usage if u[1]]


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc (the CUDA toolkit) is not installed")
def test_bn_gate_kernels_ptx_and_registers(tmp_path):
    """bn_gate.cu for sm_90 (one compile, its PTX kept): every instantiation — layout (rows, cols) x
    mode x dtype x (vectorised, scalar) x f x (with a residual or not), the statistics once per
    dtype — exists; the vectorised ones load (and, fwd/apply, store) 16 bytes, the residual's too
    (and apply's dr); no atomics; no approximate math beyond expf's. No
    spills but the few bytes some smooth/hardswish instantiations save around IEEE division's
    out-of-line slow path (f ≥ gelu_tanh; at most 16 bytes)."""
    proc = _nvcc(tmp_path, "-cubin", "-o", "b.cubin", "-Xptxas", "-v", "-keep", "-keep-dir", str(tmp_path),
                 source="cuda/bn_gate.cu")  # fmt: skip
    (ptx,) = list(tmp_path.glob("bn_gate*.ptx"))
    entries = _entries(ptx.read_text())
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
    _check_math(entries)
    usage = _usage(proc.stderr)
    assert len(usage) == len(entries), proc.stderr[-2000:]
    for name, spill, _ in usage:
        assert spill == 0 or (_act(name) >= 4 and spill <= 16), (name, spill)
