"""Property-based tests (hypothesis) of folding, strong by construction rather than by the bugs its
authors thought of: the merges' weight algebra against float64 convolution over random kernels
(non-square), strides, paddings and groups; fold_units against a union-find over shared convs on
random conv chains; the budget's cut by units against the rule it promises (whole units, within
the budget, each unit left out because it did not fit after the higher-ranked ones)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from alphakern import linearize
from alphakern.folding import compose_convs, compose_linears, fold, fold_units, with_identity, with_shortcut
from alphakern.graph.budget import GateSite, keep_to_budget_by_units
from alphakern.modules import AlphaReLU

# derandomize: the same examples on every run (CI reproducible); no example database written
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def _randomize(m: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return m.double().eval()


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    got, want = got.detach(), want.detach()
    assert got.shape == want.shape
    scale = want.abs().max().clamp_min(1e-300)
    assert float((got - want).abs().max() / scale) <= 1e-10


@st.composite
def conv_pairs(draw):
    g = draw(st.sampled_from([1, 2]))
    c0, c1, c2 = (g * draw(st.integers(1, 3)) for _ in range(3))
    g2 = draw(st.sampled_from([1, g]))
    k1 = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    k2 = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s1 = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    s2 = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p1 = (draw(st.integers(0, k1[0] - 1)), draw(st.integers(0, k1[1] - 1)))
    first = nn.Conv2d(c0, c1, k1, stride=s1, padding=p1, groups=g, bias=draw(st.booleans()))
    p2 = (draw(st.integers(0, k2[0] - 1)), draw(st.integers(0, k2[1] - 1)))
    second = nn.Conv2d(c1, c2, k2, stride=s2, padding=p2, groups=g2, bias=draw(st.booleans()))
    hw = (draw(st.integers(10, 17)), draw(st.integers(10, 17)))  # the intermediate fits the second kernel
    return first, second, (2, c0, *hw), draw(st.integers(0, 2**16))


def _padding_moved(c1: nn.Conv2d, c2: nn.Conv2d) -> nn.Sequential:
    """The same two convs with c2's padding moved onto c1 (p1 + p2·s1; fold_padding's network):
    what one conv can compute exactly."""
    pad = tuple(p1 + p2 * s for p1, p2, s in zip(c1.padding, c2.padding, c1.stride, strict=True))
    a = nn.Conv2d(c1.in_channels, c1.out_channels, c1.kernel_size, c1.stride, pad, groups=c1.groups,
                  bias=c1.bias is not None)  # fmt: skip
    b = nn.Conv2d(c2.in_channels, c2.out_channels, c2.kernel_size, c2.stride, 0, groups=c2.groups,
                  bias=c2.bias is not None)  # fmt: skip
    a.load_state_dict(c1.state_dict())
    b.load_state_dict(c2.state_dict())
    return nn.Sequential(a, b).double()


@SETTINGS
@given(conv_pairs())
def test_compose_convs_is_the_composition(case):
    """compose_convs(c1, c2)(x) == c2(c1(x)) for any kernels (non-square), strides, paddings and
    groups — with c2's padding moved onto c1, the one form a single conv computes exactly (and
    the composition itself when c2 is unpadded) — wherever the sizes agree."""
    c1, c2, shape, seed = case
    c1, c2 = _randomize(c1, seed), _randomize(c2, seed + 1)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    want = _padding_moved(c1, c2)(x)
    if not any(c2.padding):
        _close(want, c2(c1(x)))
    merged = compose_convs(c1, c2)
    # one conv of kernel k1 + (k2 − 1)·s1 and stride s1·s2 has the composition's size unless a
    # stride leaves a ragged edge (fold refuses those: test_fold.py)
    k = [a + (b - 1) * s for a, b, s in zip(c1.kernel_size, c2.kernel_size, c1.stride, strict=True)]
    pads = [p1 + p2 * s for p1, p2, s in zip(c1.padding, c2.padding, c1.stride, strict=True)]
    size = [(h + 2 * p - kk) // (s1 * s2) + 1
            for h, p, kk, s1, s2 in zip(shape[2:], pads, k, c1.stride, c2.stride, strict=True)]  # fmt: skip
    assume(list(want.shape[2:]) == size)
    _close(merged(x), want)
    assert merged.groups == (c1.groups if c1.groups == c2.groups else 1)


@st.composite
def skip_convs(draw):
    c = draw(st.integers(1, 5))
    k = (draw(st.sampled_from([1, 3, 5])), draw(st.sampled_from([1, 3, 5])))
    groups = draw(st.sampled_from([1, c]))
    conv = nn.Conv2d(c, c, k, padding=(k[0] // 2, k[1] // 2), groups=groups, bias=draw(st.booleans()))
    return conv, (2, c, draw(st.integers(3, 9)), draw(st.integers(3, 9))), draw(st.integers(0, 2**16))


@SETTINGS
@given(skip_convs())
def test_with_identity_adds_the_input(case):
    """c(x) + x as one conv for odd, possibly non-square kernels and 'same' padding, grouped or not."""
    conv, shape, seed = case
    conv = _randomize(conv, seed)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    merged = with_identity(conv)
    assert merged is not None
    _close(merged(x), conv(x) + x)


@SETTINGS
@given(skip_convs(), st.integers(1, 2), st.integers(1, 4))
def test_with_shortcut_adds_the_1x1_conv(case, stride, out):
    conv, shape, seed = case
    c = conv.in_channels
    bias = conv.bias is not None
    body = nn.Conv2d(c, out, conv.kernel_size, stride=stride, padding=conv.padding, bias=bias)
    body, short = _randomize(body, seed), _randomize(nn.Conv2d(c, out, 1, stride=stride), seed + 1)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    merged = with_shortcut(body, short)
    assert merged is not None
    _close(merged(x), body(x) + short(x))


@SETTINGS
@given(*(st.integers(1, 6),) * 3, st.booleans(), st.booleans(), st.integers(0, 99))
def test_compose_linears_is_the_composition(i, h, o, b1, b2, seed):
    l1, l2 = _randomize(nn.Linear(i, h, bias=b1), seed), _randomize(nn.Linear(h, o, bias=b2), seed + 1)
    x = torch.randn(3, 2, i, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    _close(compose_linears(l1, l2)(x), l2(l1(x)))


def test_dilated_convs_are_left_alone_and_exact():
    m = _randomize(nn.Sequential(nn.Conv2d(2, 3, 3, dilation=2), nn.Conv2d(3, 2, (1, 3))), 0)
    x = torch.randn(2, 2, 11, 12, dtype=torch.float64)
    f = fold(m, x, policy="all")
    assert not f.fold_info.merged and any("dilation" in why for _, why in f.fold_info.not_merged)
    _close(f(x), m(x))


# -- fold_units against a union-find over shared convs -------------------------------------------
# blocks that make long linked chains likely: conv [bn] [identity] relu, and what breaks a chain
BLOCKS = [["conv", "bn", "relu"], ["conv", "relu"], ["conv", "id", "relu"], ["conv", "bn", "id", "relu"],
          ["pool"], ["conv"], ["relu"], ["bn"]]  # fmt: skip


def _build(pieces: list[str]) -> nn.Sequential:
    make = {"conv": lambda: nn.Conv2d(3, 3, 3, padding=1), "bn": lambda: nn.BatchNorm2d(3),
            "relu": nn.ReLU, "pool": lambda: nn.MaxPool2d(1), "id": nn.Identity}  # fmt: skip
    return nn.Sequential(*(make[p]() for p in pieces))


def _units_by_union_find(pieces: list[str]) -> list[tuple[str, ...]]:
    """Each ReLU between two convs (through BatchNorm and identities only) joins them; ReLUs that
    share a conv are one unit (union-find, independent of fold_units' forward chaining)."""
    through = {"bn", "id"}

    def conv_from(i: int, step: int) -> int | None:
        j = i + step
        while 0 <= j < len(pieces) and pieces[j] in through:
            j += step
        return j if 0 <= j < len(pieces) and pieces[j] == "conv" else None

    parent: dict[int, int] = {}

    def find(a: int) -> int:
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    linking = []
    for i, p in enumerate(pieces):
        if p == "relu":
            before, after = conv_from(i, -1), conv_from(i, +1)
            if before is not None and after is not None:
                linking.append(i)
                parent[find(("c", before))] = find(("g", i))
                parent[find(("c", after))] = find(("g", i))
    groups: dict = {}
    for i in linking:
        groups.setdefault(find(("g", i)), []).append(str(i))
    return sorted(tuple(g) for g in groups.values())


@settings(SETTINGS, max_examples=150)
@given(st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=8))
def test_fold_units_agree_with_a_union_find_over_shared_convs(blocks):
    pieces = [p for b in blocks for p in b]
    model = _build(pieces)
    got = sorted(fold_units(linearize(model)))
    assert got == _units_by_union_find(pieces)


# -- the budget's cut by units against the rule it promises ---------------------------------------
def _gate(alpha: float) -> AlphaReLU:
    m = AlphaReLU()
    with torch.no_grad():  # α = σ((σ(γ) − ½)·ν) with ν = 10: σ(γ) = ½ + logit(α)/10
        m.gamma.fill_(float(torch.logit(torch.tensor(0.5 + float(torch.logit(torch.tensor(alpha))) / 10))))
        m.nu.fill_(10.0)
    return m


@settings(SETTINGS, max_examples=300)
@given(st.data())
def test_cut_by_units_keeps_whole_units_within_the_budget_by_mean_alpha(data):
    n = data.draw(st.integers(1, 7))
    alphas = data.draw(st.lists(st.floats(0.05, 0.95), min_size=n, max_size=n))
    positions = data.draw(st.lists(st.integers(1, 20), min_size=n, max_size=n))
    labels = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))  # unit of each gate: few, large
    names = [f"g{i}" for i in range(n)]
    sites = [GateSite(nm, _gate(a), p, 1) for nm, a, p in zip(names, alphas, positions, strict=True)]
    units = {}
    for nm, lab in zip(names, labels, strict=True):
        units.setdefault(lab, []).append(nm)
    unit_list = [tuple(u) for u in units.values()]
    budget = data.draw(st.integers(1, sum(positions)))
    keep = keep_to_budget_by_units(sites, budget, unit_list)
    kept = {nm for nm in names if bool(keep[nm])}
    assert all(len({nm in kept for nm in u}) == 1 for u in unit_list)  # whole units
    cost = {u: sum(positions[names.index(nm)] for nm in u) for u in unit_list}
    assert sum(cost[u] for u in unit_list if u[0] in kept) <= budget
    # rank by the mean α of the module's (float32) α, ties in the given order
    mean = {u: np.mean([float(sites[names.index(nm)].module.alpha) for nm in u]) for u in unit_list}
    ranked = sorted(unit_list, key=lambda u: -mean[u])  # stable: the given order breaks ties
    used = 0
    for u in ranked:
        if u[0] in kept:
            used += cost[u]
        else:  # left out only because it did not fit after the higher-ranked units kept
            assert cost[u] > budget - used, (u, cost[u], budget, used)


@st.composite
def any_convs(draw):
    """Convs of every kind the merges may be handed, foldable or not."""
    cin, cout = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    return nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=draw(st.booleans())), draw(st.integers(0, 2**16))


BREAKS = ["none", "channels", "stride", "even kernel", "padding"]


@st.composite
def skip_cases(draw, breaks):
    """A conv that a skip merge takes (odd kernel, 'same' padding), then at most one thing broken."""
    c = draw(st.integers(1, 3))
    k = (2 * draw(st.integers(0, 2)) + 1, 2 * draw(st.integers(0, 2)) + 1)
    args = dict(in_channels=c, out_channels=c, kernel_size=k, stride=1, padding=(k[0] // 2, k[1] // 2))
    broken = draw(st.sampled_from(breaks))
    axis = draw(st.integers(0, 1))
    if broken == "channels":
        args["out_channels"] = c + 1
    elif broken == "stride":
        args["stride"] = (2, 1) if axis == 0 else (1, 2)
    elif broken == "even kernel":
        args["kernel_size"] = (k[0] + 1, k[1]) if axis == 0 else (k[0], k[1] + 1)
    elif broken == "padding":
        args["padding"] = (k[0] // 2 + 1, k[1] // 2) if axis == 0 else (k[0] // 2, k[1] // 2 + 1)
    return nn.Conv2d(**args, bias=draw(st.booleans())), broken, draw(st.integers(0, 2**16))


def _x(c: int, seed: int) -> torch.Tensor:
    return torch.randn(2, c, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@SETTINGS
@given(skip_cases(BREAKS))
def test_with_identity_merges_exactly_what_it_can_and_refuses_each_thing_it_cannot(case):
    conv, broken, seed = case
    conv = _randomize(conv, seed)
    merged = with_identity(conv)
    assert (merged is not None) == (broken == "none"), broken
    if merged is not None:
        x = _x(conv.in_channels, seed)
        _close(merged(x), conv(x) + x)


SHORTCUT_BREAKS = ["none", "kernel", "padding", "stride", "in", "out", "mode", "body"]


@SETTINGS
@given(skip_cases(["none"]), st.sampled_from(SHORTCUT_BREAKS), st.integers(1, 2))
def test_with_shortcut_merges_exactly_what_it_can_and_refuses_each_thing_it_cannot(case, broken, stride):
    body, _, seed = case
    c, k, p = body.in_channels, body.kernel_size, body.padding
    if broken == "body":  # a body whose padding is not 'same'
        p = (p[0] + 1, p[1])
    body = nn.Conv2d(c, c, k, stride=stride, padding=p, bias=body.bias is not None)
    short = dict(in_channels=c, out_channels=c, kernel_size=1, stride=stride, padding=0, padding_mode="zeros")
    change = {
        "kernel": dict(kernel_size=3), "padding": dict(padding=1), "stride": dict(stride=3 - stride),
        "in": dict(in_channels=c + 1), "out": dict(out_channels=c + 1), "mode": dict(padding_mode="reflect"),
    }  # fmt: skip
    short.update(change.get(broken, {}))
    body, short = _randomize(body, seed), _randomize(nn.Conv2d(**short), seed + 1)
    merged = with_shortcut(body, short)
    assert (merged is not None) == (broken == "none"), broken
    if merged is not None:
        x = _x(c, seed)
        _close(merged(x), body(x) + short(x))


@SETTINGS
@given(any_convs(), st.sampled_from([1, 2]), st.integers(5, 9), st.integers(5, 9))
def test_conv_out_and_macs_are_what_the_conv_computes(case, groups, h, w):
    """Against the conv itself: its output's shape, and torch's FLOP counter (2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    from alphakern.folding.algebra import conv_macs, conv_out

    conv, _ = case
    conv = nn.Conv2d(conv.in_channels * groups, conv.out_channels * groups, conv.kernel_size, conv.stride,
                     conv.padding, groups=groups)  # fmt: skip
    x = torch.zeros(1, conv.in_channels, h, w)
    with FlopCounterMode(display=False) as counter:
        y = conv(x)
    assert conv_out(conv, (h, w)) == tuple(y.shape[2:])
    macs = conv_macs(conv, tuple(y.shape[1:]))
    assert type(macs) is int and macs * 2 == counter.get_total_flops()


def test_conv_problem_names_padding_that_is_not_zeros_and_dilation():
    from alphakern.folding.chains import conv_problem

    assert conv_problem(nn.Conv2d(2, 2, 3, padding=1)) is None
    assert conv_problem(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")) == (
        "padding (1, 1) (reflect) is left alone"
    )
    assert conv_problem(nn.Conv2d(2, 2, 3, padding="same")) == "padding 'same' (zeros) is left alone"
    assert conv_problem(nn.Conv2d(2, 2, 3, dilation=2)) == "dilation (2, 2) is left alone"
