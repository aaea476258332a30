"""A wheel built from the tree carries what an installed alphakern needs at run time."""

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
def test_wheel_ships_the_cuda_sources(tmp_path):
    # from a clean copy of what the package is built from: a build/ left in the tree would hide a
    # file the configuration no longer ships
    src = tmp_path / "src"
    shutil.copytree(ROOT / "alphakern", src / "alphakern", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
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

    for src in (*cuda_ext.SOURCES, *cuda_ext.HEADERS, *cpu_ext.SOURCES, *cpu_ext.HEADERS):
        assert f"alphakern/csrc/{src}" in names, sorted(names)
    # installed (unpacked as pip would), alphakern finds them there, away from the source tree
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "from alphakern.ops.backends.native import cuda; print(cuda.csrc_dir())"
    found = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site)},
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == str(site / "alphakern" / "csrc")
