"""The schemas of the native ops (namespace ``alphakern_C``), defined once here, and their fake
kernels, so torch.compile and opcheck can trace every one. The C++ libraries (csrc/cpu, csrc/cuda)
only register kernels for them (``TORCH_LIBRARY_IMPL``), as torchao does: either builds alone.

    layer_gate_fwd(x, gamma, nu) -> y                      one gate: gamma, nu 1-element tensors
    layer_gate_bwd(dy, x, gamma, nu) -> (dx, dgamma)
    gates_cols_fwd(x, slopes, A, G) -> y                   x flat [A, G], gate = column, slopes [G]
    gates_cols_bwd(dy, x, slopes, A, G) -> (dx, sums)      sums[g] = Σ dy·(f(x) − x) in column g
    gates_rows_fwd(x, slopes, C, B) -> y                   x flat [A, C, B], gate = c, slopes [C]
    gates_rows_bwd(dy, x, slopes, C, B) -> (dx, sums)
    gate_terms(gamma, nu) -> (slopes, dadg)                (CPU) per gate: 1 − α rounded to fp32
                                                           and dα/dγ in fp64, from one fp64 pass
    cpu_capability() -> str                                (CPU) the SIMD level it was built for

BatchNorm [+ residual] + gate, the whole op in one call per direction (``ops.bn_gate`` calls
these; csrc/common/bn_gate_host.h composes the passes below): x [N, C, ...] any layout, the
optional tensors as nn.BatchNorm2d has them, γ and ν the gate's.

    bn_gate(x, residual?, weight?, bias?, running_mean?, running_var?, gamma, nu, training, eps)
        -> (y, mean, var, invstd)                          the batch's statistics in training, else
                                                           copies of the running ones (not updated)
    bn_gate_backward(dy, x, residual?, weight?, bias?, mean, invstd, gamma, nu, training)
        -> (dx, dr, dweight, dbias, dgamma)                dr empty [0] without a residual

Its passes (per-channel tensors fp32 [C]; slopes: 1 − α per channel, repeated for a layer gate;
x contiguous or channels_last):

    bn_stats(x) -> (mean, var)                             biased, from fp64 sums of x and x²
    bn_gate_fwd(x, mean, invstd, weight, bias, slopes) -> y          y = G(z), z = x̂·w + b
    bn_gate_bwd_reduce(dy, x, mean, invstd, weight, bias, slopes) -> [3, C] fp64
                                                           Σ dz, Σ dz·x̂, Σ dy·(f(z) − z) per channel
    bn_gate_bwd_apply(dy, x, mean, invstd, weight, bias, slopes, ca, cb) -> dx
                                                           dx = w·invstd·(dz − ca − x̂·cb)

BatchNorm + residual add + gate (``ops.bn_gate`` with a residual): the same with s = z + r gated in
place of z (r laid out as x), and the apply pass also writing ∂L/∂r = ds.

    bn_add_gate_fwd(x, residual, mean, invstd, weight, bias, slopes) -> y            y = G(z + r)
    bn_add_gate_bwd_reduce(dy, x, residual, ...) -> [3, C] fp64     Σ ds, Σ ds·x̂, Σ dy·(f(s) − s)
    bn_add_gate_bwd_apply(dy, x, residual, ..., ca, cb) -> (dx, dr)

Every kernel op also takes ``act`` and ``neg`` (default 0: f = relu, R_α itself): the gate
x + α·(f(x) − x) of the activation with that code (``ops.core.activations.CODES``) and, for
leaky_relu, that negative slope. slopes are 1 − α per gate in fp32 (computed in fp64); the
sums are fp32 on CUDA and fp64 on the CPU; the chain rule to ∂L/∂γ is applied by the caller (``glue``).
"""

from __future__ import annotations

import torch
from torch import Tensor

NAMESPACE = "alphakern_C"
_ACT = "int act=0, float neg=0.01"  # f: its code (ops.core.activations.CODES; 0 = relu), leaky's slope
SCHEMAS = {
    "layer_gate_fwd": f"(Tensor x, Tensor gamma, Tensor nu, {_ACT}) -> Tensor",
    "layer_gate_bwd": f"(Tensor dy, Tensor x, Tensor gamma, Tensor nu, {_ACT}) -> (Tensor, Tensor)",
    "gates_cols_fwd": f"(Tensor x, Tensor slopes, int A, int G, {_ACT}) -> Tensor",
    "gates_cols_bwd": f"(Tensor dy, Tensor x, Tensor slopes, int A, int G, {_ACT}) -> (Tensor, Tensor)",
    "gates_rows_fwd": f"(Tensor x, Tensor slopes, int C, int B, {_ACT}) -> Tensor",
    "gates_rows_bwd": f"(Tensor dy, Tensor x, Tensor slopes, int C, int B, {_ACT}) -> (Tensor, Tensor)",
    "gate_terms": "(Tensor gamma, Tensor nu) -> (Tensor, Tensor)",
    "bn_gate": (
        "(Tensor x, Tensor? residual, Tensor? weight, Tensor? bias, Tensor? running_mean, "
        f"Tensor? running_var, Tensor gamma, Tensor nu, bool training, float eps, {_ACT}) "
        "-> (Tensor, Tensor, Tensor, Tensor)"
    ),
    "bn_gate_backward": (
        "(Tensor dy, Tensor x, Tensor? residual, Tensor? weight, Tensor? bias, Tensor mean, Tensor invstd, "
        f"Tensor gamma, Tensor nu, bool training, {_ACT}) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    "bn_stats": "(Tensor x) -> (Tensor, Tensor)",
    "bn_gate_fwd": (
        f"(Tensor x, Tensor mean, Tensor invstd, Tensor weight, Tensor bias, Tensor slopes, {_ACT}) -> Tensor"
    ),
    "bn_gate_bwd_reduce": (
        "(Tensor dy, Tensor x, Tensor mean, Tensor invstd, Tensor weight, Tensor bias, Tensor slopes, "
        f"{_ACT}) -> Tensor"
    ),
    "bn_gate_bwd_apply": (
        "(Tensor dy, Tensor x, Tensor mean, Tensor invstd, Tensor weight, Tensor bias, Tensor slopes, "
        f"Tensor ca, Tensor cb, {_ACT}) -> Tensor"
    ),
    "bn_add_gate_fwd": (
        "(Tensor x, Tensor residual, Tensor mean, Tensor invstd, Tensor weight, Tensor bias, Tensor slopes, "
        f"{_ACT}) -> Tensor"
    ),
    "bn_add_gate_bwd_reduce": (
        "(Tensor dy, Tensor x, Tensor residual, Tensor mean, Tensor invstd, Tensor weight, Tensor bias, "
        f"Tensor slopes, {_ACT}) -> Tensor"
    ),
    "bn_add_gate_bwd_apply": (
        "(Tensor dy, Tensor x, Tensor residual, Tensor mean, Tensor invstd, Tensor weight, Tensor bias, "
        f"Tensor slopes, Tensor ca, Tensor cb, {_ACT}) -> (Tensor, Tensor)"
    ),
    "cpu_capability": "() -> str",
}

# Kept alive for the process: dropping the Library object would deregister the schemas.
_LIB = torch.library.Library(NAMESPACE, "DEF")
for _name, _schema in SCHEMAS.items():
    _LIB.define(_name + _schema)


def _sums(x: Tensor, n: int) -> Tensor:
    return x.new_empty((n,), dtype=torch.float64 if x.device.type == "cpu" else torch.float32)


@torch.library.register_fake(f"{NAMESPACE}::layer_gate_fwd")
def _(x: Tensor, gamma: Tensor, nu: Tensor, act: int = 0, neg: float = 0.01) -> Tensor:
    return torch.empty_like(x)


@torch.library.register_fake(f"{NAMESPACE}::layer_gate_bwd")
def _(
    dy: Tensor, x: Tensor, gamma: Tensor, nu: Tensor, act: int = 0, neg: float = 0.01
) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(gamma, memory_format=torch.contiguous_format)


@torch.library.register_fake(f"{NAMESPACE}::gates_cols_fwd")
def _(x: Tensor, slopes: Tensor, A: int, G: int, act: int = 0, neg: float = 0.01) -> Tensor:
    return torch.empty_like(x)


@torch.library.register_fake(f"{NAMESPACE}::gates_cols_bwd")
def _(
    dy: Tensor, x: Tensor, slopes: Tensor, A: int, G: int, act: int = 0, neg: float = 0.01
) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), _sums(x, G)


@torch.library.register_fake(f"{NAMESPACE}::gates_rows_fwd")
def _(x: Tensor, slopes: Tensor, C: int, B: int, act: int = 0, neg: float = 0.01) -> Tensor:
    return torch.empty_like(x)


@torch.library.register_fake(f"{NAMESPACE}::gates_rows_bwd")
def _(
    dy: Tensor, x: Tensor, slopes: Tensor, C: int, B: int, act: int = 0, neg: float = 0.01
) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), _sums(x, C)


@torch.library.register_fake(f"{NAMESPACE}::gate_terms")
def _(gamma: Tensor, nu: Tensor) -> tuple[Tensor, Tensor]:
    shape = gamma.shape
    return gamma.new_empty(shape, dtype=torch.float32), gamma.new_empty(shape, dtype=torch.float64)


def ops():
    """The namespace the libraries register into (``torch.ops.alphakern_C``)."""
    return getattr(torch.ops, NAMESPACE)


@torch.library.register_fake(f"{NAMESPACE}::bn_gate")
def _(x, residual, weight, bias, running_mean, running_var, gamma, nu, training, eps, act=0, neg=0.01):
    c = x.shape[1]
    return torch.empty_like(x), *(x.new_empty((c,), dtype=torch.float32) for _ in range(3))


@torch.library.register_fake(f"{NAMESPACE}::bn_gate_backward")
def _(dy, x, residual, weight, bias, mean, invstd, gamma, nu, training, act=0, neg=0.01):
    c = x.shape[1]
    dr = x.new_empty((0,)) if residual is None else torch.empty_like(x)
    f32 = dict(dtype=torch.float32)
    dw, db = x.new_empty((c,), **f32), x.new_empty((c,), **f32)
    return torch.empty_like(x), dr, dw, db, torch.empty_like(gamma)


@torch.library.register_fake(f"{NAMESPACE}::bn_stats")
def _(x: Tensor) -> tuple[Tensor, Tensor]:
    c = x.shape[1]
    return x.new_empty((c,), dtype=torch.float32), x.new_empty((c,), dtype=torch.float32)


@torch.library.register_fake(f"{NAMESPACE}::bn_gate_fwd")
def _(x, mean, invstd, weight, bias, slopes, act: int = 0, neg: float = 0.01) -> Tensor:
    return torch.empty_like(x)


@torch.library.register_fake(f"{NAMESPACE}::bn_gate_bwd_reduce")
def _(dy, x, mean, invstd, weight, bias, slopes, act: int = 0, neg: float = 0.01) -> Tensor:
    return x.new_empty((3, x.shape[1]), dtype=torch.float64)


@torch.library.register_fake(f"{NAMESPACE}::bn_gate_bwd_apply")
def _(dy, x, mean, invstd, weight, bias, slopes, ca, cb, act: int = 0, neg: float = 0.01) -> Tensor:
    return torch.empty_like(x)


@torch.library.register_fake(f"{NAMESPACE}::bn_add_gate_fwd")
def _(x, residual, mean, invstd, weight, bias, slopes, act: int = 0, neg: float = 0.01) -> Tensor:
    return torch.empty_like(x)


@torch.library.register_fake(f"{NAMESPACE}::bn_add_gate_bwd_reduce")
def _(dy, x, residual, mean, invstd, weight, bias, slopes, act: int = 0, neg: float = 0.01) -> Tensor:
    return x.new_empty((3, x.shape[1]), dtype=torch.float64)


@torch.library.register_fake(f"{NAMESPACE}::bn_add_gate_bwd_apply")
def _(
    dy, x, residual, mean, invstd, weight, bias, slopes, ca, cb, act: int = 0, neg: float = 0.01
) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(x)
