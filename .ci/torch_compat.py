#!/usr/bin/env python
"""Compile csrc/ against another torch's headers and C++ standard: ``make torch-compat``.

The GPU machine runs torch 2.11 (C++17, its own headers); this machine builds with torch 2.14
(C++20). The first GPU run lost its CUDA C++ backend to exactly that gap: ``d.sum({0, 2})``,
accepted by 2.14's headers, is ambiguous under 2.11's. This compiles every native source — the CPU
ones to a syntax check, the CUDA ones to objects for one architecture — with the other version's
include tree and standard, so a GPU session never starts with a build that cannot work.

    python .ci/torch_compat.py                     # torch 2.11.0, sm_90; triton 3.6.0
    python .ci/torch_compat.py --torch 2.12.0 --arch 8.0 --triton ""

The wheel comes from the package index once (``pip download --no-deps``, ~530 MB) and is kept
under ``build/torch-compat/VERSION``; only its ``torch/include`` and ``cpp_extension.py`` are
unpacked. The flags are that version's own: its ``-std=`` and ``COMMON_NVCC_FLAGS``, read from its
``cpp_extension.py`` (nothing of it is imported or run).

The GPU machine's Triton (3.6; this machine's torch brings 3.8) likewise: installed apart
(``pip install --no-deps --target build/torch-compat/triton-VERSION``) and put first on PYTHONPATH
for ``tests/builds/test_triton_aot.py`` (every Triton kernel compiled for sm_80 and sm_90 by that
Triton, its PTX checked) and for the Triton tests of tests/ops in its interpreter.

``--suite`` (``make torch-compat SUITE=1``) also runs the whole test suite in a venv of that torch
and its own Triton (``build/torch-compat/venv-VERSION``, ~4.7 GB; ~15 min on 2 cores): the Python
code against that torch's APIs, and its real extension builder building csrc/. Exit status 1 if
anything fails.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alphakern.ops.backends.native import cpu, cuda  # noqa: E402  (the sources and flags)


def unpacked(version: str, cache: Path) -> Path:
    """``cache/VERSION/torch``: that wheel's include tree and cpp_extension.py."""
    where = cache / version
    torch_dir = where / "torch"
    if (torch_dir / "utils" / "cpp_extension.py").is_file():
        return torch_dir
    where.mkdir(parents=True, exist_ok=True)
    wheels = sorted(where.glob("torch-*.whl"))
    if not wheels:
        shown([sys.executable, "-m", "pip", "download", f"torch=={version}", "--no-deps",
               "--only-binary=:all:", "-d", str(where)])  # fmt: skip
        wheels = sorted(where.glob("torch-*.whl"))
    partial = where / "partial"  # unpacked here, then renamed: an interrupted unpack is never taken for whole
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(wheels[-1]) as z:
        keep = ("torch/include/", "torch/utils/cpp_extension.py")
        z.extractall(partial, members=[n for n in z.namelist() if n.startswith(keep)])
    os.replace(partial / "torch", torch_dir)
    partial.rmdir()
    return torch_dir


def flags_of(cpp_extension: Path) -> tuple[str, list[str]]:
    """(the ``-std=`` of its Linux builds, its COMMON_NVCC_FLAGS), from the source text."""
    text = cpp_extension.read_text()
    std = re.search(r"common_cflags \+= \['-std=(c\+\+\d+)'", text)
    if std is None:
        raise SystemExit(f"{cpp_extension}: no `common_cflags += ['-std=...']`: read its flags by hand")
    nvcc = []
    for node in ast.parse(text).body:
        names = [getattr(t, "id", None) for t in getattr(node, "targets", [])]
        if isinstance(node, ast.Assign) and "COMMON_NVCC_FLAGS" in names:
            nvcc = ast.literal_eval(node.value)
    return std.group(1), nvcc


def commands(
    torch_dir: Path, std: str, nvcc_flags: list[str], arch: str, cuda_home: str, out: Path
) -> dict[str, list[str]]:
    """Each source's compile command, with the flags alphakern's builds pass (cpu.flags, cuda.*FLAGS)."""
    inc = torch_dir / "include"
    includes = [f"-I{ROOT / 'csrc'}", f"-I{inc}", f"-I{inc / 'torch' / 'csrc' / 'api' / 'include'}",
                f"-I{cuda_home}/include", f"-I{sysconfig.get_paths()['include']}"]  # fmt: skip
    defines = ["-DTORCH_API_INCLUDE_EXTENSION_H", "-D_GLIBCXX_USE_CXX11_ABI=1"]
    cmds = {}
    for src in cpu.SOURCES:
        cmds[src] = ["c++", f"-std={std}", "-fPIC", "-fsyntax-only", *cpu.flags("AVX512"), *defines,
                     *includes, str(ROOT / "csrc" / src)]  # fmt: skip
    sm = arch.replace(".", "")
    for src in cuda.SOURCES:
        obj = str(out / (Path(src).name + ".o"))
        if src.endswith(".cpp"):
            cmds[src] = ["c++", f"-std={std}", "-fPIC", *cuda.CFLAGS, *defines, *includes, "-c",
                         str(ROOT / "csrc" / src), "-o", obj]  # fmt: skip
        else:
            cmds[src] = [f"{cuda_home}/bin/nvcc", f"-std={std}", *nvcc_flags, *cuda.CUDA_CFLAGS,
                         f"-gencode=arch=compute_{sm},code=sm_{sm}", "--compiler-options", "-fPIC", *defines,
                         *includes, "-c", str(ROOT / "csrc" / src), "-o", obj]  # fmt: skip
    return cmds


PIPED = dict(capture_output=True, text=True, cwd=ROOT)


def shown(cmd: list[str], env: dict | None = None) -> None:
    """Run a set-up step (a download, an install, a build), printed first; its failure ends the tool."""
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)


def reported(what: str, proc: subprocess.CompletedProcess) -> bool:
    """ok or FAILED, what ran and pytest's summary line (its whole tail on a failure)."""
    ok = proc.returncode == 0
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    print(f"{'ok    ' if ok else 'FAILED'} {what}: {last}", flush=True)
    if not ok:
        print((proc.stdout + proc.stderr)[-12000:], flush=True)
    return ok


# What runs under the other Triton: its compiler (sm_80 and sm_90, the PTX checked) and its
# interpreter (every Triton test of tests/ops against the float64 oracle).
TRITON_RUNS = {
    "compile for sm_80 and sm_90": ("tests/builds/test_triton_aot.py",),
    "pass the ops' tests in its interpreter": ("tests/ops", "-k", "triton", "-n", "2"),
}


def triton_check(version: str, cache: Path) -> bool:
    """The Triton kernels under Triton ``version``, installed apart and first on the path. Its
    interpreter takes numpy < 2.4 (3.6's calls int() on one-element arrays, which 2.4 refuses)."""
    target = cache / f"triton-{version}"
    if not (target / "triton" / "__init__.py").is_file():
        shown([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
               f"triton=={version}", "numpy<2.4"])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    probe = [sys.executable, "-c", "import alphakern, triton; print(triton.__version__)"]
    got = subprocess.run(probe, env=env, **PIPED).stdout.strip()
    if got != version:
        print(f"FAILED triton {version}: the tests would import triton {got or '(none)'}", flush=True)
        return False
    ok = True
    for what, tests in TRITON_RUNS.items():
        run_env = dict(env, TRITON_INTERPRET="1") if "interpreter" in what else env
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
        proc = subprocess.run(cmd, env=run_env, **PIPED)
        ok &= reported(f"the Triton kernels {what} with triton {version}", proc)
    return ok


def suite(version: str, torchvision: str, cuda_home: str, cache: Path) -> bool:
    """The whole test suite (make test's command) in a venv of torch ``version`` and its Triton, with
    an extension cache of its own (a build for one torch would replace the other's)."""
    venv = cache / f"venv-{version}"
    py = venv / "bin" / "python"
    done = venv / ".alphakern-installed"
    if not done.is_file():
        shown([sys.executable, "-m", "venv", str(venv)])
        # numpy < 2.4: Triton 3.6's interpreter calls int() on one-element arrays, which 2.4 refuses
        shown([str(py), "-m", "pip", "install", "-q", f"torch=={version}", f"torchvision=={torchvision}",
               "numpy<2.4", "-e", f"{ROOT}[dev]"])  # fmt: skip
        done.touch()
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(cache / f"extensions-{version}"), HF_HUB_OFFLINE="1")
    env["CUDA_HOME"] = cuda_home
    env.pop("TRITON_INTERPRET", None)  # tests/conftest.py sets it where there is no GPU
    shown([str(py), "-m", "alphakern", "build", "--only", "cpu"], env=env)
    cmd = [str(py), "-m", "pytest", "-q", "-n", "2", "--dist", "worksteal", "-p", "no:cacheprovider"]
    return reported(f"the test suite under torch {version}", subprocess.run(cmd, env=env, **PIPED))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--torch", default="2.11.0", help="the torch version whose headers to compile against")
    p.add_argument("--arch", default="9.0", help="the CUDA architecture of the objects")
    p.add_argument("--cache", type=Path, default=ROOT / "build" / "torch-compat")
    p.add_argument("--triton", default="3.6.0", help="the Triton to compile the kernels with ('': none)")
    p.add_argument("--suite", action="store_true", help="also the whole test suite in a venv of that torch")
    p.add_argument("--torchvision", default="0.26.0", help="--suite: the torchvision of that torch")
    p.add_argument("--only", help="comma-separated sources to compile (default: all), e.g. cuda/bn_gate.cu")
    args = p.parse_args()
    cuda_home = cuda._find_cuda_home()  # as the cuda backend's build finds the toolkit
    if cuda_home is None:
        raise SystemExit("no CUDA toolkit (nvcc) found: set CUDA_HOME")
    torch_dir = unpacked(args.torch, args.cache)
    std, nvcc_flags = flags_of(torch_dir / "utils" / "cpp_extension.py")
    print(f"torch {args.torch}: -std={std}, nvcc {' '.join(nvcc_flags)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(torch_dir, std, nvcc_flags, args.arch, cuda_home, Path(tmp))
        if args.only:
            unknown = set(args.only.split(",")) - set(cmds)
            if unknown:
                raise SystemExit(f"--only: no source {sorted(unknown)}; the sources: {', '.join(cmds)}")
            cmds = {k: v for k, v in cmds.items() if k in args.only.split(",")}

        def compile_one(item: tuple[str, list[str]]) -> tuple[str, subprocess.CompletedProcess]:
            return item[0], subprocess.run(item[1], capture_output=True, text=True)

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            results = list(pool.map(compile_one, cmds.items()))
    failed = 0
    for src, proc in results:
        ok = proc.returncode == 0
        failed += not ok
        print(f"{'ok    ' if ok else 'FAILED'} {src}", flush=True)
        if not ok:
            print(" ".join(cmds[src]) + "\n" + (proc.stdout + proc.stderr)[-6000:], flush=True)
    print(f"{len(results) - failed} of {len(results)} sources compile against torch {args.torch}")
    triton_ok = not args.triton or args.only or triton_check(args.triton, args.cache)
    suite_ok = not args.suite or args.only or suite(args.torch, args.torchvision, cuda_home, args.cache)
    return 1 if failed or not triton_ok or not suite_ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
