"""csrc/ compiles with nvcc (this machine has nvcc but no GPU), via the documented command."""

import os
from pathlib import Path

import pytest

from tests.reference import HAS_NVCC
from tests.subproc import run_python


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc (the CUDA toolkit) is not installed")
def test_build_cuda_command_compiles_csrc():
    env = dict(os.environ)
    env.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")  # one target keeps the test's build short
    proc = run_python("-m", "alphakern", "build-cuda", env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("alphakern CUDA backend built:")]
    assert line, proc.stdout
    assert Path(line[0].split(": ", 1)[1]).exists()


def test_build_failure_exits_nonzero_with_message(tmp_path):
    env = dict(os.environ, CUDA_HOME=str(tmp_path), TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"))
    proc = run_python("-m", "alphakern", "build-cuda", env=env)
    assert proc.returncode == 1
    assert "building alphakern's CUDA backend" in proc.stderr and "Fix the toolkit" in proc.stderr


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc (the CUDA toolkit) is not installed")
def test_cuda_kernels_use_16_byte_accesses_and_no_atomics(tmp_path):
    """The PTX of csrc/ for sm_90: vectorised global loads/stores, and no atomics (determinism)."""
    import subprocess
    import sysconfig

    import torch

    from alphakern.ops import cuda_ext

    home = cuda_ext._find_cuda_home()
    inc = Path(torch.__file__).parent / "include"
    ptx = tmp_path / "k.ptx"
    cmd = [
        f"{home}/bin/nvcc", "-ptx", "-arch=sm_90", "-std=c++20", "-O3", "--expt-relaxed-constexpr",
        "-isystem", str(inc), "-isystem", str(inc / "torch/csrc/api/include"),
        "-isystem", f"{home}/include", "-isystem", sysconfig.get_paths()["include"],
        "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
        "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
        str(cuda_ext.csrc_dir() / "alpha_relu_kernels.cu"), "-o", str(ptx),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = ptx.read_text()
    entries = [ln for ln in text.splitlines() if ln.startswith(".entry")]
    assert len(entries) == 7  # fwd and bwd for fp32/fp16/bf16, and the final dgamma sum
    assert "ld.global.nc.v4" in text or "ld.global.v4" in text
    assert "st.global.v4" in text
    assert "atom." not in text
