"""The backends, each behind one contract, so the op (``ops.alpha_relu``) treats them alike:

    NAME: str                      the ``backend=`` name
    DTYPES: tuple[torch.dtype]     the x dtypes it computes
    ACTIVATIONS: tuple[str]        the activations f it has kernels for (ops.core.activations)
    available() -> bool            it can run here now (never compiles anything)
    forward(x, gamma, nu, granularity, act=RELU) -> y
    backward(dy, x, gamma, nu, granularity, act=RELU) -> (dx, dgamma)

``granularity`` is γ's granularity ("layer", "channel", "element"), resolved once by the op; x, γ and ν
have passed ``ops.core.checks.check_inputs``. y and dx are laid out like ``torch.empty_like(x)``,
dγ has γ's shape and dtype. ``act`` is an ``ops.core.activations.Activation``; f = relu is
what ``alpha_relu`` runs.
"""

from __future__ import annotations

from types import ModuleType

from alphakern.ops.backends import torch as torch_backend
from alphakern.ops.backends import triton as triton_backend
from alphakern.ops.backends.native import cpu as cpu_backend
from alphakern.ops.backends.native import cuda as cuda_backend
from alphakern.ops.core.checks import BACKEND_NAMES, check_backend

REGISTRY: dict[str, ModuleType] = {
    m.NAME: m for m in (torch_backend, triton_backend, cuda_backend, cpu_backend)
}
assert tuple(REGISTRY) == BACKEND_NAMES, (tuple(REGISTRY), BACKEND_NAMES)


def get(name: str) -> ModuleType:
    """The backend module called ``name`` (ValueError listing the names otherwise)."""
    return REGISTRY[check_backend(name)]
