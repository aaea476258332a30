"""The suite against planted bugs in the native sources: a mutant of csrc/ must fail a test.

- CPU: the mutated library is built at -O0 into a fresh TORCH_EXTENSIONS_DIR (tests/reference.py
  builds rather than skips there) and the CPU kernel tests must fail on it.
- CUDA (no GPU here): the compile-level checks (PTX of sm_90) must reject the mutant. A mutant
  that only changes results on a GPU is caught by tests/ops/test_gpu.py where one is present, not here.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.builds.nvcc import check_layer_ptx, layer_ptx
from tests.subproc import ROOT

pytestmark = pytest.mark.slow


def _copy_with(tmp_path: Path, path: str, old: str, new: str) -> Path:
    """A copy of the package and its tests with one source edit (``old`` must occur once)."""
    dst = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.so")
    for name in ("alphakern", "tests", "csrc"):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    f = dst / path
    text = f.read_text()
    assert text.count(old) == 1, (path, old)
    f.write_text(text.replace(old, new))
    return dst


# (source, original, mutant, tests that must fail): each a plausible slip in csrc/cpu/
CPU = "csrc/cpu/gate.cpp"
BN = "csrc/cpu/bn_gate.cpp"
GATE_TESTS = ("tests/ops/test_cpu_kernels.py", "tests/ops/test_parity.py", "-k", "cpu")
BN_TESTS = ("tests/ops/test_bn_gate.py", "-k", "cpu")
TAIL = "  if (i < n) {\n    const int64_t t = n - i;\n    io::load(x + i, v, t);"
CPU_MUTANTS = {
    # the forward's vector loop skips a 1-element tail
    "fwd-tail-of-1-dropped": (CPU, TAIL, TAIL.replace("i < n", "i + 1 < n"), GATE_TESTS),
    # the backward's slope at x = 0 taken from the negative side
    "dx-slope-at-zero": (
        "csrc/cpu/vec_io.h",
        "g[k], xv[k] >= zero);",
        "g[k], xv[k] > zero);",
        GATE_TESTS,
    ),
    # BN + gate: the gate's backward (and its dgamma sum) taken at x-hat instead of z
    "bn-gate-at-xhat": (
        BN,
        "bwd_math<N, ACT>(g, z, s, c, ns);",
        "bwd_math<N, ACT>(g, xh, s, c, ns);",
        BN_TESTS,
    ),
    # BN + gate, channels_last: the second fp32 vector of a 16-wide fp16/bf16 step reads channel c's
    # parameters instead of c + 8's
    "bn-gate-cl-lane": (
        BN,
        "L[k] = lane_at(p, c + k * fVec::size(), cnt);",
        "L[k] = lane_at(p, c, cnt);",
        BN_TESTS,
    ),
}


@pytest.mark.parametrize("mutant", list(CPU_MUTANTS))
def test_a_cpu_kernel_mutant_fails_the_cpu_tests(tmp_path, mutant):
    path, old, new, tests = CPU_MUTANTS[mutant]
    tree = _copy_with(tmp_path, path, old, new)
    # unoptimised: a third of an -O3 build's compile time; a mutant's logic fails the same tests
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"), PYTHONPATH=str(tree),
               ALPHAKERN_CPU_CFLAGS="-O0")  # fmt: skip
    env.pop("ALPHAKERN_TESTS_NO_NATIVE", None)
    where = subprocess.run(
        [sys.executable, "-c", "import alphakern; print(alphakern.__file__)"],
        cwd=tree, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert where.stdout.strip() == str(tree / "alphakern" / "__init__.py"), where  # the mutant is tested
    proc = subprocess.run(
        # not the slow tests: at -O0 the CPU kernels' 2**31-element tests alone took 5 minutes
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow", *tests],
        cwd=tree, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and " failed" in out, out[-3000:]  # 1: tests failed (not an error)


CUDA_MUTANTS = {
    # dγ partials accumulated with an atomic: nondeterministic order
    "atomic-partials": ("csrc/cuda/layer_kernels.cu",
                        "if (threadIdx.x == 0) partials[blockIdx.x] = total;",
                        "if (threadIdx.x == 0) atomicAdd(partials, total);"),
    # α through fp32 fast-math exp: approximate ex2, whose error ν amplifies
    "approximate-alpha": ("csrc/common/alpha_terms.h", "return 1.0 / (1.0 + exp(-v));",
                          "return 1.0 / (1.0 + __expf(-v));"),
    # the forward's 16-byte store split into scalar stores
    "split-store": ("csrc/cuda/layer_kernels.cu", "yv[j] = out;",
                    "for (int k = 0; k < N; ++k) y[j * N + k] = out.v[k];"),
    # silu's division through the fast intrinsic: approximate, unlike the CPU and Triton forms
    "fast-divide": ("csrc/cuda/elementwise.cuh", "return x / (1.0f + expf(-x));",
                    "return __fdividef(x, 1.0f + expf(-x));"),
}  # fmt: skip


@pytest.mark.parametrize("mutant", list(CUDA_MUTANTS))
def test_a_cuda_kernel_mutant_fails_the_ptx_checks(tmp_path, layer_kernels, mutant):
    tree = _copy_with(tmp_path, *CUDA_MUTANTS[mutant])
    check_layer_ptx(layer_kernels[0])  # the original passes (compiled once per session) ...
    ptx = layer_ptx(tmp_path, csrc=tree / "csrc")  # the mutant compiles ...
    with pytest.raises(AssertionError):  # ... and fails them
        check_layer_ptx(ptx)
