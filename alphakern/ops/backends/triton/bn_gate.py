"""Triton kernels of BatchNorm fused with the gate (the op: ``ops/bn_gate.py``; the same contract as
``backends/native/bn_gate.py``: statistics, forward, backward).

x is seen as [N, C, S] contiguous (tiles of [BLOCK_C, BLOCK_S], S innermost) or channels_last
(tiles of [BLOCK_M, BLOCK_C] over M = N·S rows of C): the inner dimension of a tile is the one
that is contiguous in memory. Per-channel parameters (mean, invstd, weight, bias, α and 1 − α in
fp32, from fp64) are loaded once per tile. The reductions (Σx, Σx²; Σdz, Σdz·x̂, Σdy·(f(z) − z))
write one fp32 partial per program and channel; the host adds them in fp64 in a fixed order (no
atomics: bitwise reproducible, the partition set by the shapes alone). z is recomputed from x in
every pass, never stored. int64 offsets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alphakern.ops.backends.triton.common import check_runnable, constexprs, device_ctx, tl, triton
from alphakern.ops.core import batchnorm as bn
from alphakern.ops.core.activations import Activation
from alphakern.ops.core.alpha import alpha_terms
from alphakern.ops.core.layout import like

TILE = 2048  # elements per program tile

if triton is not None:
    from alphakern.ops.backends.triton.common import _dsum, _dx, _y

    @triton.jit
    def _bc(v, CL: tl.constexpr):
        """A per-channel vector broadcast along the tile's other dimension."""
        if CL:
            out = v[None, :]
        else:
            out = v[:, None]
        return out

    @triton.jit
    def _tile(p0, p1, M, C, S, n_sb, CL: tl.constexpr, BM: tl.constexpr, BC: tl.constexpr):
        """(offsets, mask, channel indices) of program (p0, p1)'s tile. CL: rows m of C channels;
        else p0 = (n, block of S), a [BC, BM] tile with S innermost."""
        c = p1 * BC + tl.arange(0, BC)
        if CL:
            m = p0.to(tl.int64) * BM + tl.arange(0, BM)
            offs = m[:, None] * C + c[None, :]
            mask = (m < M)[:, None] & (c < C)[None, :]
        else:
            n = (p0 // n_sb).to(tl.int64)
            s = (p0 % n_sb) * BM + tl.arange(0, BM)
            offs = (n * C + c[:, None]) * S + s[None, :]
            mask = (c < C)[:, None] & (s < S)[None, :]
        return offs, mask, c

    @triton.jit
    def _load_params(mean_ptr, invstd_ptr, w_ptr, b_ptr, c, C, CL: tl.constexpr):
        cm = c < C
        mean = _bc(tl.load(mean_ptr + c, mask=cm, other=0.0), CL)
        invstd = _bc(tl.load(invstd_ptr + c, mask=cm, other=0.0), CL)
        w = _bc(tl.load(w_ptr + c, mask=cm, other=0.0), CL)
        b = _bc(tl.load(b_ptr + c, mask=cm, other=0.0), CL)
        return mean, invstd, w, b

    @triton.jit
    def _stats_kernel(
        x_ptr, shift_ptr, part_ptr, M, C, S, n_sb,
        CL: tl.constexpr, AX: tl.constexpr, BM: tl.constexpr, BC: tl.constexpr,
    ):  # fmt: skip
        """Σd, Σd² of d = x − k (k: the channel's shift) per channel of the tile."""
        p0, p1 = tl.program_id(0), tl.program_id(1)
        offs, mask, c = _tile(p0, p1, M, C, S, n_sb, CL, BM, BC)
        k = _bc(tl.load(shift_ptr + c, mask=c < C, other=0.0), CL)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, x - k, 0.0)
        base = part_ptr + p0.to(tl.int64) * 2 * C
        tl.store(base + c, tl.sum(d, axis=AX), mask=c < C)
        tl.store(base + C + c, tl.sum(d * d, axis=AX), mask=c < C)

    @triton.jit
    def _fwd_kernel(
        x_ptr, r_ptr, y_ptr, mean_ptr, invstd_ptr, w_ptr, b_ptr, a_ptr, om_ptr, M, C, S, n_sb,
        CL: tl.constexpr, BM: tl.constexpr, BC: tl.constexpr, ACT: tl.constexpr, NEG: tl.constexpr,
        RES: tl.constexpr,
    ):  # fmt: skip
        """RES: the residual at r_ptr is added before the gate."""
        offs, mask, c = _tile(tl.program_id(0), tl.program_id(1), M, C, S, n_sb, CL, BM, BC)
        mean, invstd, w, b = _load_params(mean_ptr, invstd_ptr, w_ptr, b_ptr, c, C, CL)
        a = _bc(tl.load(a_ptr + c, mask=c < C, other=0.0), CL)
        om = _bc(tl.load(om_ptr + c, mask=c < C, other=1.0), CL)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        z = (x - mean) * invstd * w + b
        if RES:
            z += tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + offs, _y(z, a, om, ACT, NEG).to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _bwd_kernel(
        dy_ptr, x_ptr, r_ptr, dx_ptr, dr_ptr, part_ptr, mean_ptr, invstd_ptr, w_ptr, b_ptr, a_ptr, om_ptr,
        ca_ptr, cb_ptr, M, C, S, n_sb,
        CL: tl.constexpr, AX: tl.constexpr, BM: tl.constexpr, BC: tl.constexpr, ACT: tl.constexpr,
        NEG: tl.constexpr, APPLY: tl.constexpr, RES: tl.constexpr,
    ):  # fmt: skip
        """APPLY = False: the partial sums of dz, dz·x̂ and dy·(f(z) − z); True: dx. RES: z + r is
        gated (r at r_ptr), and APPLY also writes dr = dz."""
        p0 = tl.program_id(0)
        offs, mask, c = _tile(p0, tl.program_id(1), M, C, S, n_sb, CL, BM, BC)
        mean, invstd, w, b = _load_params(mean_ptr, invstd_ptr, w_ptr, b_ptr, c, C, CL)
        a = _bc(tl.load(a_ptr + c, mask=c < C, other=0.0), CL)
        om = _bc(tl.load(om_ptr + c, mask=c < C, other=1.0), CL)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # 0 off the tile: adds 0
        xh = (x - mean) * invstd
        z = xh * w + b
        if RES:
            z += tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dz = _dx(z, dy, a, om, ACT, NEG)
        if APPLY:
            if RES:
                tl.store(dr_ptr + offs, dz.to(dr_ptr.dtype.element_ty), mask=mask)
            ca = _bc(tl.load(ca_ptr + c, mask=c < C, other=0.0), CL)
            cb = _bc(tl.load(cb_ptr + c, mask=c < C, other=0.0), CL)
            dx = w * invstd * (dz - ca - xh * cb)
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        else:
            base = part_ptr + p0.to(tl.int64) * 3 * C
            tl.store(base + c, tl.sum(dz, axis=AX), mask=c < C)
            tl.store(base + C + c, tl.sum(dz * xh, axis=AX), mask=c < C)
            tl.store(base + 2 * C + c, tl.sum(_dsum(z, dy, ACT, NEG), axis=AX), mask=c < C)


def _p2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


class _Plan:
    """x as the kernels take it and the launch geometry: channels_last (CL) or [N, C, S]."""

    def __init__(self, x: Tensor) -> None:
        self.x, self.cl = bn.kernel_layout(x)
        n, c = x.shape[0], x.shape[1]
        self.C, self.S = c, x.numel() // max(n * c, 1)
        self.M = n * self.S
        if self.cl:
            self.BC = min(_p2(c), 64)
            self.BM = max(1, TILE // self.BC)
            self.n_sb = 1
            self.grid = (triton.cdiv(self.M, self.BM), triton.cdiv(c, self.BC))
        else:
            self.BM = min(_p2(self.S), 1024)
            self.BC = max(1, min(_p2(c), TILE // self.BM))
            self.n_sb = triton.cdiv(self.S, self.BM)
            self.grid = (n * self.n_sb, triton.cdiv(c, self.BC))
        self.geo = (self.M, self.C, self.S, self.n_sb)
        self.meta = dict(CL=self.cl, BM=self.BM, BC=self.BC)


def _weights(gamma: Tensor, nu: Tensor, c: int) -> tuple[Tensor, Tensor, Tensor]:
    """(α, 1 − α per channel in fp32 — a layer gate's repeated — and dα/dγ in fp64, γ's shape)."""
    a, om, dadg = alpha_terms(gamma.detach(), nu.detach())
    return a.float().reshape(-1).expand(c).contiguous(), om.float().reshape(-1).expand(c).contiguous(), dadg


def available() -> bool:
    return triton is not None


def _statistics(
    x: Tensor, training: bool, running_mean: Tensor | None, running_var: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, biased var, invstd) in fp32: of the batch (training) or the running ones."""
    if not training:
        return bn.running(running_mean, running_var, eps)
    p = _Plan(x)
    part = torch.empty(p.grid[0], 2, p.C, device=x.device, dtype=torch.float32)
    shift = bn.shift(x)
    with device_ctx(x):
        _stats_kernel[p.grid](p.x, shift, part, *p.geo, AX=0 if p.cl else 1, **p.meta)
    sums = part.double().sum(0)  # a fixed-order sum of the programs' partials
    count = x.numel() // p.C
    m = sums[0] / count  # E[x − k]
    var = (sums[1] / count - m * m).clamp_min(0)
    return (shift.double() + m).float(), var.float(), torch.rsqrt(var + eps).float()


def forward(
    x: Tensor, residual: Tensor | None, weight: Tensor | None, bias: Tensor | None,
    running_mean: Tensor | None, running_var: Tensor | None, gamma: Tensor, nu: Tensor, training: bool,
    eps: float, act: Activation,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(y, mean, biased var, invstd), the statistics fp32: the batch's (training) or copies of the
    running ones."""
    check_runnable(x)
    mean, var, invstd = _statistics(x, training, running_mean, running_var, eps)
    p = _Plan(x)
    w, b = bn.affine(weight, bias, p.C, x)
    a, om, _ = _weights(gamma, nu, p.C)
    y = torch.empty_like(p.x)
    r = p.x if residual is None else like(residual, p.x)  # RES=False never reads it
    with device_ctx(x):
        args = (p.x, r, y, mean, invstd, w, b, a, om, *p.geo)
        _fwd_kernel[p.grid](*args, **p.meta, **constexprs(act), RES=residual is not None)
    return bn.as_x(y, x), mean, var, invstd


def backward(
    dy: Tensor, x: Tensor, residual: Tensor | None, weight: Tensor | None, bias: Tensor | None,
    mean: Tensor, invstd: Tensor, gamma: Tensor, nu: Tensor, training: bool, act: Activation,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor]:  # fmt: skip
    """(∂L/∂x, ∂L/∂residual (None without one), ∂L/∂weight, ∂L/∂bias, ∂L/∂γ); the affine gradients
    in fp32."""
    check_runnable(x)
    p = _Plan(x)
    dyd = like(dy, p.x)
    w, b = bn.affine(weight, bias, p.C, x)
    a, om, dadg = _weights(gamma, nu, p.C)
    part = torch.empty(p.grid[0], 3, p.C, device=x.device, dtype=torch.float32)
    f = constexprs(act)
    dx = torch.empty_like(p.x)
    res = residual is not None
    r, dr = (like(residual, p.x), torch.empty_like(p.x)) if res else (p.x, dx)  # unread, unwritten
    zeros = torch.zeros_like(mean)
    kw = dict(AX=0 if p.cl else 1, RES=res, **p.meta, **f)
    with device_ctx(x):
        args = (dyd, p.x, r, dx, dr, part, mean, invstd, w, b, a, om)
        _bwd_kernel[p.grid](*args, zeros, zeros, *p.geo, APPLY=False, **kw)
        sums = part.double().sum(0)  # [3, C]: Σ dz, Σ dz·x̂, Σ dy·(f(z) − z)
        ca, cb = bn.centring(sums, training, x.numel() // max(p.C, 1), mean)
        _bwd_kernel[p.grid](*args, ca, cb, *p.geo, APPLY=True, **kw)
    return (bn.as_x(dx, x), bn.as_x(dr, x) if res else None, *bn.affine_and_gate_grads(sums, gamma, dadg))
