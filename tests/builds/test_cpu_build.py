"""Building the native CPU kernels from a clean cache, and what happens without a build (each test
in a child process with its own empty TORCH_EXTENSIONS_DIR: about a minute per build)."""

import os

import pytest

from tests.subproc import run_python

pytestmark = pytest.mark.slow  # each builds the CPU library from a clean cache

# y and dγ through the given backend, checked against the torch backend; prints the backend used
CHECK = """
import sys, torch, alphakern
from alphakern.ops.alpha_relu import alpha_relu_backward_op, alpha_relu_op
backend = sys.argv[1]
torch.manual_seed(0)
x = torch.randn(4, 3, 40, 40).to(memory_format=torch.channels_last)
dy, gamma, nu = torch.randn_like(x), torch.randn(3), torch.tensor(5.0)
used = alphakern.resolve_backend(None if backend == "auto" else backend, x)
y = alphakern.alpha_relu(x, torch.tensor(0.3), nu, backend=backend)
torch.testing.assert_close(y, alpha_relu_op(x, torch.tensor(0.3), nu, "torch"))
for b in (used, "torch"):
    print(b, [t.sum().item() for t in alpha_relu_backward_op(dy, x, gamma, nu, b)])
if used == "cpu":
    print("capability", torch.ops.alphakern_C.cpu_capability())
print("used", used)
"""


def _env(tmp_path, **extra) -> dict:
    return dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"), **extra)


def _used(proc) -> str:
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    (a, b) = [line.split(" ", 1)[1] for line in lines if line.startswith(("cpu ", "torch "))][:2]
    # the two backends' dx and dγ sums: both accumulate in fp32, in different orders
    assert eval(a) == pytest.approx(eval(b), rel=1e-4)
    return lines[-1].removeprefix("used ")


def test_auto_without_a_build_uses_torch_and_says_how_to_build(tmp_path):
    proc = run_python("-c", CHECK, "auto", env=_env(tmp_path))
    assert _used(proc) == "torch"
    assert "native CPU kernels are not built" in proc.stderr and "python -m alphakern build" in proc.stderr
    assert not list((tmp_path / "ext").rglob("*.so")), "auto must never compile"


def test_portable_build_from_a_clean_cache_then_auto_uses_it(tmp_path):
    """ATEN_CPU_CAPABILITY=default makes torch report a CPU without AVX2: backend="cpu" compiles the
    portable library (no -mavx2) from the clean cache once, saying so; `build` then finds it cached
    and `auto` uses it, with the same results. (One build for both concerns: the SIMD libraries'
    clean-cache builds are the packaging and mutant tests'.)"""
    env = _env(tmp_path, ATEN_CPU_CAPABILITY="default")
    first = run_python("-c", CHECK, "cpu", env=env, timeout=900)  # backend="cpu": builds once
    assert _used(first) == "cpu" and "capability DEFAULT" in first.stdout
    assert "compiling the native CPU kernels once" in first.stderr
    (lib,) = (tmp_path / "ext").rglob("*.so")
    built = lib.stat().st_mtime_ns
    again = run_python("-m", "alphakern", "build", "--only", "cpu", env=env)  # cached: no compile
    assert again.returncode == 0, again.stderr
    assert "alphakern CPU backend built (DEFAULT)" in again.stdout and "alphakern_cpu_default" in again.stdout
    assert "compiling" not in again.stderr and lib.stat().st_mtime_ns == built  # not rebuilt
    auto = run_python("-c", CHECK, "auto", env=env)
    assert _used(auto) == "cpu" and "capability DEFAULT" in auto.stdout
    assert "not built" not in auto.stderr and "compiling" not in auto.stderr
    assert lib.stat().st_mtime_ns == built


def test_build_failure_is_loud(tmp_path):
    env = _env(tmp_path, CXX="/nonexistent/c++")
    proc = run_python("-m", "alphakern", "build", "--only", "cpu", env=env)
    assert proc.returncode == 1
    assert "building alphakern's CPU backend" in proc.stderr and "backend='torch'" in proc.stderr
