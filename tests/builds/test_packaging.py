"""A wheel built from the tree carries what an installed alphakern needs at run time."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.subproc import ROOT


@pytest.mark.slow
@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import setuptools, wheel"], capture_output=True).returncode != 0,
    reason="building a wheel needs setuptools and wheel (make test installs them)",
)
def test_wheel_ships_the_sources_and_its_cpu_backend_builds_outside_the_tree(tmp_path):
    """The wheel carries csrc/ (top level in the tree) as alphakern/_csrc; installed into a target
    directory, away from the source tree, alphakern finds the sources there, builds its CPU
    backend into a fresh extension cache and runs a gate against the formula."""
    # from a clean copy of what the package is built from: a build/ left in the tree would hide a
    # file the configuration no longer ships
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "_csrc")
    for name in ("alphakern", "csrc"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, src / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), "-q"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = tmp_path.glob("alphakern-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    from alphakern.ops.backends.native import cpu as cpu_ext
    from alphakern.ops.backends.native import cuda as cuda_ext

    for name in (*cuda_ext.SOURCES, *cuda_ext.HEADERS, *cpu_ext.SOURCES, *cpu_ext.HEADERS):
        assert f"alphakern/_csrc/{name}" in names, sorted(names)
    # installed as pip would (the wheel unpacked into a target directory)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = """
import torch, alphakern
from alphakern.ops.backends.native import cpu, cuda
print(cuda.csrc_dir())
cpu.build()
x = torch.linspace(-3, 3, 1000)
gamma, nu = torch.tensor(0.4), torch.tensor(5.0)
a = torch.sigmoid((torch.sigmoid(gamma.double()) - 0.5) * 5.0)
want = x.double() + a * torch.relu(-x.double())
got = alphakern.alpha_relu(x, gamma, nu, backend="cpu")
assert (got.double() - want).abs().max() < 1e-6, (got, want)
print(alphakern.__file__)
"""
    # -O0: where the sources come from is under test, not the optimiser (`make` built the -O3 library
    # the other tests run on); a third of the compile time
    env = {**os.environ, "PYTHONPATH": str(site), "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"),
           "ALPHAKERN_CPU_CFLAGS": "-O0"}  # fmt: skip
    env.pop("ALPHAKERN_BACKEND", None)
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                           env=env, timeout=600)  # fmt: skip
    assert found.returncode == 0, found.stdout + found.stderr
    csrc, init = found.stdout.strip().splitlines()[-2:]
    assert csrc == str(site / "alphakern" / "_csrc") and init == str(site / "alphakern" / "__init__.py")
