"""What the tests share (as attorch's tests/utils.py): dtypes, granularities, memory layouts, the
input makers and the per-gate broadcast. The oracle itself is in ``reference``."""

from __future__ import annotations

import torch

DTYPES = [torch.float32, torch.float16, torch.bfloat16]  # what the fused kernels take
GRANULARITIES = ["layer", "channel", "element"]  # γ per layer, per channel, per element of a sample
# (and "feature", γ per feature of the last dim, which must be asked for: tests/ops/test_features.py)
GATED = ["channel", "element"]


def set_alpha(model: torch.nn.Module, value: float) -> None:
    """Every gate of ``model`` at α = 1 or 0 exactly (γ = ±10, ν = 1e4 saturate both sigmoids)."""
    from alphakern import alpha_layers

    for _, m in alpha_layers(model):
        with torch.no_grad():
            m.gamma.fill_(10.0 if value == 1 else -10.0)
            m.nu.fill_(1e4)


# Named memory layouts of a test tensor; each test picks the ones it means (``layouts``).
LAYOUTS = {
    "contiguous": lambda t: t,
    "channels_last": lambda t: t.to(memory_format=torch.channels_last) if t.dim() == 4 else t,
    # dense, batch innermost in memory
    "batch_inner": lambda t: t.transpose(0, -1).contiguous().transpose(0, -1),
    # dense, dims 1..3 in another order (4-D)
    "permuted": lambda t: t.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1),
    "transposed_view": lambda t: t.transpose(1, 3),  # a view of a contiguous tensor (4-D)
    "strided": lambda t: torch.cat([t, t], dim=-1)[..., ::2],  # not dense, same shape
    "sliced": lambda t: t[:, ::2, 1:],  # not dense, a smaller shape (4-D)
    "expanded": lambda t: t[:1].expand(4, *t.shape[1:]),  # batch stride 0
}


def layouts(*names: str) -> list[str]:
    assert all(n in LAYOUTS for n in names), names
    return list(names)


def make(shape, dtype, device, layout: str = "contiguous", seed: int = 0):
    """(x, dy): x ~ 2·N(0, 1), dy ~ N(0, 1), rounded to ``dtype``, laid out as ``layout``."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 2).to(dtype)
    dy = torch.randn(shape, generator=g).to(dtype)
    return LAYOUTS[layout](x).to(device), LAYOUTS[layout](dy).to(device)


def gamma_shape(granularity: str, x: torch.Tensor) -> tuple:
    shapes = {"layer": (), "channel": tuple(x.shape[1:2]), "element": tuple(x.shape[1:])}
    return tuple(x.shape[-1:]) if granularity == "feature" else shapes[granularity]


def gates(granularity: str, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """γ of granularity ``granularity`` for x, uniform in [−2, 2): α from ~0.02 to ~0.98 at ν = 10."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(gamma_shape(granularity, x), generator=g) * 4 - 2).to(x.device)


def scalars(gamma: float, nu: float, device, dtype=torch.float32):
    return torch.tensor(gamma, dtype=dtype, device=device), torch.tensor(nu, dtype=dtype, device=device)


def per_gate(t: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor, granularity: str | None = None):
    """γ-shaped t broadcast over x: one value for the layer, per channel (dim 1) or per element
    of a sample (x.shape[1:]), shared over the batch — or, for ``granularity="feature"``, one per
    position of the last dim, shared over all the others (broadcasting's own trailing-dim rule)."""
    if granularity == "feature":
        assert gamma.shape == x.shape[-1:], (gamma.shape, x.shape)
        return t
    if gamma.numel() == 1:
        return t.reshape(())
    if gamma.shape == x.shape[1:2]:
        return t.reshape(1, -1, *([1] * (x.dim() - 2)))
    assert gamma.shape == x.shape[1:], (gamma.shape, x.shape)
    return t.reshape(1, *x.shape[1:])


def run(backend: str, x, gamma, nu, dy):
    """(y, dx, dγ) through the registered ops on ``backend``."""
    from alphakern.ops.alpha_relu import alpha_relu_backward_op, alpha_relu_op

    return (alpha_relu_op(x, gamma, nu, backend), *alpha_relu_backward_op(dy, x, gamma, nu, backend))


def run_public(backend: str, x, gamma, nu, dy, granularity: str | None = None, activation: str = "relu"):
    """(y, dx, dγ) through the public ``alphakern.gate`` (with ``granularity``) and autograd; the
    activation by the op's name (leaky_relu's slope 0.2, as the oracle's)."""
    import alphakern

    xg, gg = x.detach().clone().requires_grad_(), gamma.detach().clone().requires_grad_()
    approximate = (
        "tanh" if activation == "gelu_tanh" else "none"
    )  # the op's name for F.gelu(approximate="tanh")
    name = "gelu" if activation == "gelu_tanh" else activation
    y = alphakern.gate(xg, gg, nu, activation=name, negative_slope=0.2, approximate=approximate,
                       granularity=granularity, backend=backend)  # fmt: skip
    dx, dg = torch.autograd.grad(y, (xg, gg), dy)
    return y.detach(), dx, dg
