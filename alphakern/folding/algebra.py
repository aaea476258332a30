"""The merges as pure tensor maths (as ``torch.nn.utils.fusion`` keeps its own): modules in, a new
module out, float64 arithmetic, the result in the first module's dtype and device; and the shape
arithmetic the passes and the policy need. Nothing here touches a graph."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def dense_weight(c: nn.Conv2d) -> torch.Tensor:
    """The conv's weight as the dense block-diagonal [out, in, kh, kw] it computes, in float64."""
    w = c.weight.detach().double()
    g = c.groups
    if g == 1:
        return w
    out, ipg = w.shape[:2]
    opg = out // g
    dense = w.new_zeros(out, ipg * g, *w.shape[2:])
    for j in range(g):
        dense[j * opg : (j + 1) * opg, j * ipg : (j + 1) * ipg] = w[j * opg : (j + 1) * opg]
    return dense


def _grouped(dense: torch.Tensor, groups: int) -> torch.Tensor:
    out, cin = dense.shape[:2]
    opg, ipg = out // groups, cin // groups
    return torch.cat([dense[j * opg : (j + 1) * opg, j * ipg : (j + 1) * ipg] for j in range(groups)])


def _bias(c: nn.Conv2d | nn.Linear) -> torch.Tensor:
    n = c.out_channels if isinstance(c, nn.Conv2d) else c.out_features
    return c.bias.detach().double() if c.bias is not None else c.weight.new_zeros(n, dtype=torch.float64)


def _new_conv(like: nn.Conv2d, w: torch.Tensor, b: torch.Tensor, stride, padding, groups: int) -> nn.Conv2d:
    out, ipg, kh, kw = w.shape
    conv = nn.Conv2d(ipg * groups, out, (kh, kw), stride=stride, padding=padding, groups=groups, bias=True)
    conv = conv.to(device=like.weight.device, dtype=like.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
    return conv.eval()


def compose_convs(c1: nn.Conv2d, c2: nn.Conv2d) -> nn.Conv2d:
    """One conv computing c2(c1(x)) (exactly, but at the border when c2 pads; see ``fold``)."""
    w1, w2 = dense_weight(c1), dense_weight(c2)
    s1, s2 = c1.stride, c2.stride
    # W[o, i] = Σ_m W2[o, m] ⋆ W1[m, i] with W1 dilated by the first stride: a transposed conv of
    # W2 (as a batch of o images with m channels) by W1 (m in, i out channels)
    w = F.conv_transpose2d(w2, w1, stride=s1)
    b = _bias(c2) + w2.sum((2, 3)) @ _bias(c1)
    groups = c1.groups if c1.groups == c2.groups else 1
    stride = (s1[0] * s2[0], s1[1] * s2[1])
    padding = tuple(p1 + p2 * s for p1, p2, s in zip(c1.padding, c2.padding, s1, strict=True))
    return _new_conv(c1, _grouped(w, groups) if groups > 1 else w, b, stride, padding, groups)


def _same_padding(c: nn.Conv2d) -> bool:
    return all(k % 2 == 1 and p == k // 2 for k, p in zip(c.kernel_size, c.padding, strict=True))


def with_identity(c: nn.Conv2d) -> nn.Conv2d | None:
    """c(x) + x as one conv: a centred identity kernel added (stride 1, odd k, 'same' padding)."""
    if c.in_channels != c.out_channels or c.stride != (1, 1) or not _same_padding(c):
        return None
    w = dense_weight(c).clone()
    kh, kw = c.kernel_size
    w[:, :, kh // 2, kw // 2] += torch.eye(c.out_channels, dtype=w.dtype, device=w.device)
    groups = c.groups
    return _new_conv(c, _grouped(w, groups) if groups > 1 else w, _bias(c), c.stride, c.padding, groups)


def with_shortcut(c: nn.Conv2d, s: nn.Conv2d) -> nn.Conv2d | None:
    """c(x) + s(x) for a 1×1 conv s of the same stride: s's kernel padded into c's centre."""
    if s.kernel_size != (1, 1) or s.padding != (0, 0) or s.stride != c.stride or not _same_padding(c):
        return None
    if s.in_channels != c.in_channels or s.out_channels != c.out_channels or s.padding_mode != "zeros":
        return None
    w = dense_weight(c).clone()
    kh, kw = c.kernel_size
    w[:, :, kh // 2, kw // 2] += dense_weight(s)[:, :, 0, 0]
    return _new_conv(c, w, _bias(c) + _bias(s), c.stride, c.padding, 1)


def compose_linears(l1: nn.Module, l2: nn.Module) -> nn.Linear:
    """One nn.Linear computing l2(l1(x)), each an ``nn.Linear`` or a transformers ``Conv1D``."""
    (w1, b1), (w2, b2) = linear_weights(l1), linear_weights(l2)
    return new_linear(w2 @ w1, b2 + w2 @ b1, l1.weight)


def conv_out(c: nn.Conv2d, hw: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(
        (h + 2 * p - k) // s + 1 for h, p, k, s in zip(hw, c.padding, c.kernel_size, c.stride, strict=True)
    )


def conv_macs(c: nn.Conv2d, out_shape: tuple[int, ...]) -> int:
    n_out = int(torch.tensor(out_shape).prod())
    return n_out * (c.in_channels // c.groups) * c.kernel_size[0] * c.kernel_size[1]


# -- an MLP whose activation is a per-feature gate of 0/1 weights -------------------------------
def linear_weights(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [out, in], b [out]) in float64 of an ``nn.Linear``, or of a Hugging Face ``Conv1D``
    (GPT-2's projections: y = x @ weight + bias, weight [in, out])."""
    if isinstance(m, nn.Linear):
        return m.weight.detach().double(), _bias(m)
    if is_conv1d(m):
        w = m.weight.detach().double().t()
        b = m.bias.detach().double() if m.bias is not None else w.new_zeros(w.shape[0])
        return w, b
    raise TypeError(f"linear_weights: an nn.Linear or a transformers Conv1D, got {type(m).__name__}")


def linear_dims(m: nn.Module) -> tuple[int, int]:
    """(out, in) of an ``nn.Linear`` or a transformers ``Conv1D``, off its weight's shape (no copy)."""
    if isinstance(m, nn.Linear):
        return m.out_features, m.in_features
    if is_conv1d(m):
        fan_in, fan_out = m.weight.shape
        return fan_out, fan_in
    raise TypeError(f"linear_dims: an nn.Linear or a transformers Conv1D, got {type(m).__name__}")


def is_conv1d(m: nn.Module) -> bool:
    """A Hugging Face ``Conv1D`` (a linear layer with its weight stored [in, out])."""
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf") and getattr(m, "weight", None) is not None


def new_linear(w: torch.Tensor, b: torch.Tensor | None, like: torch.Tensor) -> nn.Linear:
    """An eval-mode nn.Linear holding W [out, in] and b, in ``like``'s dtype and device."""
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None).to(device=like.device, dtype=like.dtype)
    with torch.no_grad():
        lin.weight.copy_(w)
        if b is not None:
            lin.bias.copy_(b)
    return lin.eval()


def mlp_split(w1, b1, keep, w2, b2) -> dict[str, tuple[torch.Tensor, torch.Tensor | None] | None]:
    """The MLP W2·g(W1·x + b1) + b2, g = f on the features in ``keep`` (bool [h]) and the identity
    on the rest (L), as its narrow MLP plus a linear bypass: ``narrow_in`` (W1[N], b1[N]),
    ``narrow_out`` (W2[:, N], no bias), ``bypass`` (W2[:, L]·W1[L], b2 + W2[:, L]·b1[L]) — or, when
    |L|·(d + d_out) < d·d_out, ``bypass_in`` (W1[L], no bias) and ``bypass_out`` (W2[:, L], that
    bias): fewer MACs as two thin factors. None for a part with no feature."""
    n, l_ = keep.nonzero().flatten(), (~keep).nonzero().flatten()
    bias = b2 + w2[:, l_] @ b1[l_]
    parts: dict = {
        "narrow_in": None,
        "narrow_out": None,
        "bypass": None,
        "bypass_in": None,
        "bypass_out": None,
    }
    if n.numel():
        parts["narrow_in"], parts["narrow_out"] = (w1[n], b1[n]), (w2[:, n], None)
    d, d_out = w1.shape[1], w2.shape[0]
    if l_.numel() * (d + d_out) < d * d_out:
        parts["bypass_in"], parts["bypass_out"] = (w1[l_], None), (w2[:, l_], bias)
    else:
        parts["bypass"] = (w2[:, l_] @ w1[l_], bias)
    return parts


def mlp_concat(
    w1, b1, keep, w2, b2
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The same MLP as two linears around one activation: ((W1[N]; W2[:, L]·W1[L]), its bias),
    then f on the first |N| outputs only, then ((W2[:, N], I), b2): the linear part's d_out
    features ride through the activation unchanged."""
    n, l_ = keep.nonzero().flatten(), (~keep).nonzero().flatten()
    first_w = torch.cat([w1[n], w2[:, l_] @ w1[l_]])
    first_b = torch.cat([b1[n], w2[:, l_] @ b1[l_]])
    eye = torch.eye(w2.shape[0], dtype=w2.dtype, device=w2.device)
    return (first_w, first_b), (torch.cat([w2[:, n], eye], dim=1), b2)


def mlp_macs(d: int, h: int, d_out: int, kept: int, form: str) -> int:
    """MACs per token of an MLP d → h → d_out with ``kept`` of its h features non-linear, as
    ``form``: "mlp" (unfolded), "split" or "concat"."""
    if form == "mlp":
        return d * h + h * d_out
    if form == "concat":
        return d * (kept + d_out) + (kept + d_out) * d_out
    linear = h - kept
    return d * kept + kept * d_out + min(d * d_out, linear * (d + d_out))
