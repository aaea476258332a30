"""Fixtures of the build tests."""

import pytest

from tests.builds.nvcc import compile_kept
from tests.reference import HAS_NVCC


@pytest.fixture(scope="session")
def layer_kernels(tmp_path_factory) -> tuple[str, str]:
    """The package's layer_kernels.cu compiled once per session (its PTX and register report are
    checked by test_cuda_build.py, and test_mutants.py checks its mutants against the same checks)."""
    if not HAS_NVCC:
        pytest.skip("nvcc (the CUDA toolkit) is not installed")
    return compile_kept(tmp_path_factory.mktemp("layer_kernels"))
