"""Run the project's scripts and commands the way a user would: in a child Python process."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_python(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python ARGS...`` from the repository root, capturing text output."""
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
