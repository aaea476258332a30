"""F.prelu's gradients on CUDA against the formula, printed per shape, dtype and whether the
weight requires grad: bench_activation's `prelu` rows failed their float64 check on the H100
(2026-12-05, torch 2.11: dx off by 2-33 % of its max) and pass on the CPU. A diagnosis for
gpu_check.sh, not a test: it prints, it asserts nothing."""

import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    raise SystemExit("prelu_check: no CUDA device")
for shape in ((4096,), (2**24,), (64, 64, 32, 32)):
    for dt in (torch.float32, torch.bfloat16):
        x = torch.randn(shape, device="cuda").to(dt)
        dy = torch.randn(shape, device="cuda").to(dt)
        for rg in (False, True):
            w = torch.tensor([0.32], device="cuda", dtype=dt, requires_grad=rg)
            xg = x.clone().requires_grad_()
            y = F.prelu(xg, w)
            gs = torch.autograd.grad(y, (xg, w) if rg else (xg,), dy)
            wd = w.detach().float()
            ref = torch.where(x > 0, dy.float(), dy.float() * wd)
            refy = torch.where(x > 0, x.float(), x.float() * wd)
            bad = ((gs[0].float() - ref).abs() > 1e-2 * ref.abs().max()).nonzero()
            print(
                shape,
                dt,
                "w.requires_grad",
                rg,
                "max|dx err|",
                (gs[0].float() - ref).abs().max().item(),
                "max|y err|",
                (y.float() - refy).abs().max().item(),
                "bad",
                bad.shape[0],
                "first bad x",
                x.flatten()[bad[:3, 0]].tolist() if bad.numel() and x.dim() == 1 else "",
            )
