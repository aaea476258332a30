"""pytest-benchmark view of the CPU providers (not part of the default test run):

.venv/bin/python -m pytest benchmarks/ --benchmark-only
"""

import providers
import pytest
import torch

SHAPE = (64, 64, 32, 32)  # the reference CNN's first activation at batch 64
CPU_PROVIDERS = ["eager", "prelu", "alphakern-torch"]


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(0)
    x = torch.randn(SHAPE, requires_grad=True)
    gamma = torch.tensor(0.3, requires_grad=True)
    return x, gamma, torch.tensor(10.0), torch.randn(SHAPE)


@pytest.mark.parametrize("name", CPU_PROVIDERS)
def test_forward(benchmark, inputs, name):
    fn = providers.available("cpu")[name]
    x, gamma, nu, _ = inputs
    with torch.no_grad():
        benchmark(fn, x, gamma, nu)


@pytest.mark.parametrize("name", CPU_PROVIDERS)
def test_forward_backward(benchmark, inputs, name):
    fn = providers.available("cpu")[name]
    x, gamma, nu, dy = inputs
    benchmark(lambda: torch.autograd.grad(fn(x, gamma, nu), (x, gamma), dy))
