"""nvcc on csrc/'s .cu files for sm_90 (this machine has nvcc but no GPU) and the checks on what it
emits: PTX entries, 16-byte accesses, no atomics or approximate math, ptxas's register report."""

import re
import subprocess
import sysconfig
from pathlib import Path

import torch

from alphakern.ops.backends.native import cuda as cuda_ext


def nvcc(tmp_path, *args, source="cuda/layer_kernels.cu", csrc=None):
    """nvcc on a csrc/ .cu file (of ``csrc``, default the package's) for sm_90 with the flags torch's
    extension builder uses."""
    home = cuda_ext._find_cuda_home()
    inc = Path(torch.__file__).parent / "include"
    cmd = [
        f"{home}/bin/nvcc", "-arch=sm_90", "-std=c++20", *cuda_ext.CUDA_CFLAGS,
        "-isystem", str(inc), "-isystem", str(inc / "torch/csrc/api/include"),
        "-isystem", f"{home}/include", "-isystem", sysconfig.get_paths()["include"],
        "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
        "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
        *args, str((csrc or cuda_ext.csrc_dir()) / source),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def entries_of(ptx: str) -> dict[str, str]:
    """PTX text of each kernel, by mangled name."""
    parts = re.split(r"^(?:\.visible\s+)?\.entry\s+(\w+)", ptx, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


# f's codes (ops.core.activations.CODES) as they stand in a mangled instantiation's name; the
# smooth f (gelu, gelu_tanh, silu) call CUDA's expf/erff, whose PTX holds one ex2.approx after an
# exact range reduction: the only approximate instruction allowed, and only in them.
ACT_CODES = range(7)
SMOOTH = (3, 4, 5)
DTYPES = (("f", 4), ("6__half", 8), ("13__nv_bfloat16", 8))  # mangled T, elements in 16 bytes


def act_of(name: str) -> int:
    """f's code, the last int template argument (bn_gate.cu's kernels end with a bool after it)."""
    return int(re.search(r"Li(\d)E(Lb\dE)?EEv", name).group(1))


def check_math(entries: dict[str, str]) -> None:
    """No atomics (determinism); no approximate math (α's precision, IEEE division) except the
    ex2.approx inside expf/erff of the smooth f."""
    for name, text in entries.items():
        assert "atom." not in text, name
        approx = set(re.findall(r"\b(?:ex2|rcp|div|sqrt|lg2|tanh|sin|cos)\.approx[.\w]*", text))
        allowed = {"ex2.approx.ftz.f32"} if "kernelI" in name and act_of(name) in SMOOTH else set()
        assert approx <= allowed, (name, approx)


def compile_kept(tmp_path, source: str = "cuda/layer_kernels.cu", csrc=None) -> tuple[str, str]:
    """(PTX, ptxas -v's report) of one nvcc call on ``source``: a cubin for sm_90, its PTX kept."""
    stem = Path(source).stem
    kept = ("-keep", "-keep-dir", str(tmp_path))
    proc = nvcc(tmp_path, "-cubin", "-o", f"{stem}.cubin", "-Xptxas", "-v", *kept, source=source, csrc=csrc)
    (ptx,) = list(tmp_path.glob(f"{stem}*.ptx"))
    return ptx.read_text(), proc.stderr


def layer_ptx(tmp_path, csrc=None) -> str:
    """The PTX alone of ``csrc``'s layer_kernels.cu for sm_90 (no ptxas: what the mutants need)."""
    nvcc(tmp_path, "-ptx", "-o", "k.ptx", csrc=csrc)
    return (tmp_path / "k.ptx").read_text()


def check_layer_ptx(ptx: str) -> None:
    """test_cuda_build.py's checks of layer_kernels.cu's PTX (test_mutants.py runs them on mutants):
    every fwd/bwd kernel (each dtype and f) loads and stores 16 bytes; no atomics, no approximate
    math beyond expf's."""
    entries = entries_of(ptx)
    elementwise = {n: t for n, t in entries.items() if "fwd_kernel" in n or "bwd_kernel" in n}
    for kind in ("layer_gate_fwd_kernel", "layer_gate_bwd_kernel"):
        for dtype, _ in DTYPES:
            for act in ACT_CODES:
                (name,) = [n for n in elementwise if kind in n and f"I{dtype}Li{act}EE" in n]
                assert re.search(r"ld\.global(\.nc)?\.v4", entries[name]), name
                assert "st.global.v4" in entries[name], name
    # fwd and bwd per dtype and f, and the final sum
    assert len(elementwise) == 2 * 3 * 7 and len(entries) == 2 * 3 * 7 + 1, list(entries)
    check_math(entries)


def usage_of(stderr: str) -> list[tuple[str, int, int]]:
    """(kernel, spilled bytes, registers) per entry of ptxas -v."""
    rows = re.findall(
        r"Compiling entry function '(\w+)'.*?(\d+) bytes spill stores.*?Used (\d+) registers",
        stderr,
        flags=re.S,
    )
    return [(n, int(spill), int(regs)) for n, spill, regs in rows]
