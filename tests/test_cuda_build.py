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
