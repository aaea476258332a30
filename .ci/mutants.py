#!/usr/bin/env python
"""Mutation testing (mutmut 3) of the Python files a change touches, in a scratch copy of the tree
(the working tree is never edited): ``make mutants`` runs it.

    python .ci/mutants.py                                   # files changed since HEAD~1, tests/
    python .ci/mutants.py --files alphakern/ops/core/batchnorm.py --tests tests/ops/test_bn_gate.py \\
        -k "not triton and not cuda"

mutmut mutates each function of the files and runs the tests that reach it (its trampolines record
which); the score is the share of the decided mutants a test kills. A mutant that outlives its
timeout is not decided (here it was a survivor running the whole selection on a busy machine,
not a hang): the timeout is 50× the tests' own time, and timeouts are listed apart, as are the
mutants no selected test reaches (untested code, not equivalent mutants). mutmut's own state lives
in the scratch copy (``build/mutants`` by default), so a second call resumes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("alphakern", "tests", "csrc", "pyproject.toml", "setup.py")
# mutmut's result words and the emoji of its progress line, by what they mean for the score
KILLED, SURVIVED = ("killed",), ("survived",)


def changed_files(base: str) -> list[str]:
    """The package's Python files that differ from ``base`` (committed or not), __init__ left out."""
    out = subprocess.run(
        ["git", "diff", "--name-only", base, "--", "alphakern"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return sorted(f for f in out.split() if f.endswith(".py") and not f.endswith("__init__.py"))


def scratch_copy(dest: Path, files: list[str], tests: list[str], k: str | None) -> None:
    """The tree's sources and tests under ``dest`` (mutmut's state there kept), with a [tool.mutmut]
    table naming what to mutate and which tests to run."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src, dst = ROOT / name, dest / name
        if src.is_dir():
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        elif src.exists():
            shutil.copy(src, dst)
    selection = [*tests, *(["-k", k] if k else [])]
    table = "\n".join([
        "", "[tool.mutmut]",
        f"source_paths = {files!r}",
        f"pytest_add_cli_args_test_selection = {selection!r}",
        "pytest_add_cli_args = ['-p', 'no:cacheprovider', '-x', '-q']",
        "timeout_multiplier = 50.0",
        # a worker forked from a process whose tests started OpenMP threads hangs: fork from a server
        "process_isolation = 'forkserver'",
        "also_copy = ['alphakern', 'tests', 'csrc']",  # the package whole: mutants/ comes first on sys.path
    ]).replace('"', "'")  # fmt: skip
    with open(dest / "pyproject.toml", "a") as f:
        f.write(table + "\n")


def score(results: str) -> dict[str, int]:
    """Counts by status from ``mutmut results --all true`` (lines ``name: status``)."""
    counts: dict[str, int] = {}
    for line in results.splitlines():
        if ":" in line:
            status = line.rsplit(":", 1)[1].strip()
            counts[status] = counts.get(status, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="HEAD~1", help="the revision a change is measured from")
    p.add_argument("--files", nargs="*", help="the files to mutate (default: those changed since --base)")
    p.add_argument("--tests", nargs="*", default=["tests"], help="pytest paths of the tests to run")
    p.add_argument("-k", default=None, help="a pytest -k expression narrowing the tests")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "mutants")
    args = p.parse_args(argv)
    files = args.files or changed_files(args.base)
    if not files:
        print(f"no Python files of alphakern/ changed since {args.base}")
        return 0
    mutmut = Path(sys.executable).with_name("mutmut")
    scratch_copy(args.work, files, args.tests, args.k)
    print(
        f"mutating {', '.join(files)} in {args.work}; tests: {' '.join(args.tests)}"
        + (f" -k {args.k!r}" if args.k else "")
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the tests that want 2 threads ask for them
    subprocess.run([str(mutmut), "run"], cwd=args.work, env=env, check=False)
    results = subprocess.run(
        [str(mutmut), "results", "--all", "true"], cwd=args.work, capture_output=True, text=True
    ).stdout
    counts = score(results)
    killed = sum(counts.get(s, 0) for s in KILLED)
    survived = sum(counts.get(s, 0) for s in SURVIVED)
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if killed + survived:
        share = killed / (killed + survived)
        print(f"score: {killed}/{killed + survived} = {share:.0%} of the mutants a test reaches and "
              f"decides killed; {counts.get('timeout', 0)} timed out, "
              f"{counts.get('no tests', 0)} reached by no selected test")  # fmt: skip
    for line in results.splitlines():
        if line.rstrip().endswith(SURVIVED):
            print("survived:", line.split(":")[0].strip(), f"(mutmut show {line.split(':')[0].strip()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
