"""alphakern.fold: every merge against the unfolded model in float64, the border cases refused or
measured, residual skips, linears, torchvision-style networks with random gate patterns, export."""

import copy
import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alphakern import discretize, linearize
from alphakern.cifar_nets import relu_network
from alphakern.folding import compose_convs, fold, fold_padding, fold_report
from alphakern.modules import FixedSlopeReLU, alpha_layers, materialize


def _rand_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and non-trivial BatchNorm statistics, float64, eval."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.double().eval()


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-10) -> None:
    """Equal within float64 rounding relative to the output's scale."""
    scale = b.abs().max().clamp_min(1e-300)
    assert a.shape == b.shape
    err = float(((a - b).abs().max() / scale).detach())
    assert err <= rtol, err


def C(i: int, o: int, k, **kw) -> dict:
    return dict(in_channels=i, out_channels=o, kernel_size=k, **kw)


# (c1, c2, input shape): ragged sizes, strides 1/2, groups, bias on/off, odd padding on the first
CONV_PAIRS = [
    (C(3, 5, 3, padding=1), C(5, 4, 1), (2, 3, 9, 11)),
    (C(3, 6, 3, stride=2, padding=1), C(6, 4, 3, stride=2), (2, 3, 17, 15)),
    (C(4, 4, (3, 1), padding=(2, 0), bias=False), C(4, 7, (1, 5), bias=False), (1, 4, 8, 13)),
    (C(6, 6, 3, padding=1, groups=6), C(6, 6, 3, groups=6), (2, 6, 10, 9)),  # dw -> dw: dw
    (C(4, 8, 1), C(8, 8, 3, groups=8), (2, 4, 7, 7)),  # pw -> dw: dense
    (C(8, 8, 3, padding=1, groups=8), C(8, 5, 1), (2, 8, 6, 9)),  # dw -> pw
    (C(4, 6, 2, groups=2), C(6, 4, 3, stride=2, groups=2), (3, 4, 12, 11)),
    (C(4, 6, 3, stride=2, groups=2), C(6, 3, 2), (1, 4, 13, 10)),
]


@pytest.mark.parametrize("k1,k2,shape", CONV_PAIRS, ids=[str(i) for i in range(len(CONV_PAIRS))])
def test_two_convs_compose_exactly(k1, k2, shape):
    torch.manual_seed(0)
    c1, c2 = nn.Conv2d(**k1).double(), nn.Conv2d(**k2).double()
    x = torch.randn(shape, dtype=torch.float64)
    merged = compose_convs(c1, c2)
    _close(merged(x), c2(c1(x)))
    assert merged.stride == (c1.stride[0] * c2.stride[0], c1.stride[1] * c2.stride[1])
    dims = zip(c1.kernel_size, c2.kernel_size, c1.stride, strict=True)
    assert merged.kernel_size == tuple(a + (b - 1) * s for a, b, s in dims)
    if c1.groups == c2.groups:
        assert merged.groups == c1.groups  # depthwise ∘ depthwise stays depthwise


@pytest.mark.parametrize("stride1", [1, 2])
def test_a_padded_second_conv_composes_exactly_but_at_the_border(stride1):
    """exact=False's merge: the output size and the interior are exact; only the ring that the
    second conv's padding reaches differs."""
    torch.manual_seed(1)
    c1 = nn.Conv2d(3, 5, 3, stride=stride1, padding=1).double()
    c2 = nn.Conv2d(5, 4, 3, padding=1).double()
    x = torch.randn(2, 3, 13, 12, dtype=torch.float64)
    want, got = c2(c1(x)), compose_convs(c1, c2)(x)
    assert got.shape == want.shape
    _close(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1])
    assert float((got - want).abs().max()) > 1e-6


def _chain(pad2: int) -> nn.Module:
    """conv-BN-[linear gate]-conv-BN-[dropout]-ReLU-pool-linear"""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Identity(),
        nn.Conv2d(8, 6, 3, padding=pad2, stride=2), nn.BatchNorm2d(6), nn.Dropout(0.3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5), nn.Linear(5, 4),
    )  # fmt: skip


def test_chain_with_batchnorm_folds_to_fewer_layers_exactly():
    m = _rand_(_chain(pad2=0))
    x = torch.randn(2, 3, 15, 14, dtype=torch.float64)
    before = copy.deepcopy(m.state_dict())
    f = fold(m, x, policy="all")
    _close(f(x), m(x))
    kinds = [type(mod) for mod in f.modules() if not isinstance(mod, torch.fx.GraphModule)]
    assert kinds.count(nn.Conv2d) == 1 and kinds.count(nn.Linear) == 1 and nn.BatchNorm2d not in kinds
    assert nn.ReLU in kinds  # not merged across the kept ReLU
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())  # the argument untouched
    report = fold_report(m, f, x)
    assert report["before"]["depth"] == 4 and report["after"]["depth"] == 2
    assert report["after"]["params"] < report["before"]["params"] and report["after"]["macs"] > 0


def test_padded_second_conv_is_refused_when_exact_and_measured_otherwise():
    m = _rand_(_chain(pad2=1))
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    f = fold(m, x, policy="all")
    _close(f(x), m(x))
    assert sum(isinstance(mod, nn.Conv2d) for mod in f.modules()) == 2
    assert any("not exact at the border" in why for _, why in f.fold_info.not_merged)
    g = fold(m, x, exact=False, policy="all")
    assert sum(isinstance(mod, nn.Conv2d) for mod in g.modules()) == 1
    err = float((g(x) - m(x)).abs().max())
    assert g.fold_info.max_error == pytest.approx(err) and err > 1e-6  # the border differs
    # the interior is exact: the same network on a larger input, centre crop of the conv output
    inner = nn.Sequential(*list(m)[:5])
    inner_f = fold(inner, x, exact=False, policy="all")
    _close(inner_f(x)[..., 1:-1, 1:-1], inner(x)[..., 1:-1, 1:-1])


def _three(mid: nn.Module, stride1: int = 2) -> nn.Module:
    """conv(s1) - BN - [mid] - conv(pad 1) - [identity] - 1x1 conv(pad 1): a chain of three."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=stride1, padding=1), nn.BatchNorm2d(6), mid,
        nn.Conv2d(6, 5, (3, 5), padding=(1, 2)), nn.Identity(), nn.Conv2d(5, 4, 1, padding=1),
    )  # fmt: skip


@pytest.mark.parametrize("stride1", [1, 2])
def test_fold_padding_moves_a_chains_padding_to_its_head_so_fold_is_exact(stride1):
    m = _rand_(_three(nn.Identity(), stride1))
    x = torch.randn(2, 3, 11, 13, dtype=torch.float64)
    want_shape = m(x).shape
    assert fold_padding(m) == [("3", "5"), ("0", "3")]  # last link first
    convs = [c for c in m if isinstance(c, nn.Conv2d)]
    s = stride1
    # head: its own 1 + the middle's (1, 2)·s1 + the tail's 1·s1 (the middle's stride is 1)
    assert convs[0].padding == (1 + s + s, 1 + 2 * s + s)
    assert convs[1].padding == (0, 0) and convs[2].padding == (0, 0)
    assert m(x).shape == want_shape  # same output size, other values at the ring
    f = fold(m, x)  # exact=True, policy="latency": nothing refused for the border
    assert not any("border" in why for _, why in f.fold_info.not_merged)
    f = fold(m, x, policy="all")
    assert sum(isinstance(mod, nn.Conv2d) for mod in f.modules()) == 1
    _close(f(x), m(x))


def test_fold_padding_stops_at_what_is_not_linear_or_shared():
    assert fold_padding(_three(nn.ReLU())) == [("3", "5")]  # not across the kept ReLU
    mixed = FixedSlopeReLU(torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 1.0]), granularity="channel")
    assert fold_padding(_three(mixed)) == [("3", "5")]
    linear = FixedSlopeReLU(torch.ones(6), granularity="channel")
    assert fold_padding(_three(linear)) == [("3", "5"), ("0", "3")]

    class Shared(nn.Module):  # conv1's output also feeds the sum: its ring would be seen
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            h = self.c1(x)
            return self.c2(h) + h

    m = Shared()
    assert fold_padding(m) == [] and m.c2.padding == (1, 1)


def test_fold_padding_makes_resnet20_blocks_fold_exactly_and_sees_fused_pairs():
    from alphakern.graph import fuse_bn
    from alphakern.modules import BatchNormGate

    torch.manual_seed(0)
    net = materialize(linearize(relu_network("resnet20", 10)))
    with torch.no_grad():  # the gate inside every block linear, the one after the sum kept
        for name, gate in alpha_layers(net):
            gate.gamma.fill_(-3.0 if name.endswith(".relu") else 3.0)
            gate.nu.fill_(100.0)
    m = _rand_(discretize(net), 1)
    # a fused BN + ReLU (a BatchNorm2d subclass) hides its ReLU: nothing may move across it
    relus = fuse_bn(relu_network("resnet20", 10), relu=True)
    assert any(isinstance(mod, BatchNormGate) for mod in relus.modules())
    assert fold_padding(relus) == []
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    before = m(x)
    moved = fold_padding(m)
    assert moved == [(f"layers.{i}.conv1", f"layers.{i}.conv2") for i in reversed(range(9))]
    assert m(x).shape == before.shape
    f = fold(m, x, policy="all")
    _close(f(x), m(x))
    assert f.fold_info.not_merged == []
    report = fold_report(m, f, x, rounds=1)
    assert (report["before"]["depth"], report["after"]["depth"]) == (20, 11)  # a conv per block


class _Residual(nn.Module):
    """x + conv(bn(...)) with an identity skip, then one with a 1x1 projection shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 6, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(6)
        self.sc, self.sb = nn.Conv2d(4, 6, 1, stride=2, bias=False), nn.BatchNorm2d(6)

    def forward(self, x):
        out = self.b1(self.c1(x))
        out += x
        h = F.relu(out)
        return self.b2(self.c2(h)) + self.sb(self.sc(h))


def test_residual_skips_are_absorbed_exactly():
    m = _rand_(_Residual())
    x = torch.randn(2, 4, 9, 10, dtype=torch.float64)
    f = fold(m, x, policy="all")
    _close(f(x), m(x))
    convs = [mod for mod in f.modules() if isinstance(mod, nn.Conv2d)]
    assert len(convs) == 2 and all(c.kernel_size == (3, 3) for c in convs)
    whats = " ".join(w for _, w in f.fold_info.merged)
    assert "identity skip absorbed" in whats and "1x1 shortcut absorbed" in whats


def test_flops_policy_refuses_a_merge_that_raises_macs():
    m = (
        nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3), nn.Conv2d(16, 16, 1))
        .double()
        .eval()
    )
    x = torch.randn(1, 16, 12, 12, dtype=torch.float64)
    f = fold(m, x, policy="flops")
    _close(f(x), m(x))
    assert any("raise MACs" in why for _, why in f.fold_info.not_merged)  # 3x3∘3x3 → 5x5: 25 > 18
    assert sum(isinstance(mod, nn.Conv2d) for mod in f.modules()) == 2  # the 1x1 still merged
    assert sum(isinstance(mod, nn.Conv2d) for mod in fold(m, x, policy="all").modules()) == 1


def test_latency_policy_keeps_the_model_exact():
    m = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    x = torch.randn(1, 8, 16, 16)
    f = fold(m, x)  # policy="latency": timed on the CPU, whichever way it goes
    torch.testing.assert_close(f(x), m(x), rtol=1e-5, atol=1e-5)
    assert len(f.fold_info.merged) + len(f.fold_info.not_merged) >= 1


def _pattern(model: nn.Module, seed: int) -> nn.Module:
    """Random gate decisions (about half linear), made exact by discretize."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, gate in alpha_layers(model):
            gate.gamma.copy_(torch.where(torch.rand(gate.gamma.shape, generator=g) < 0.5, -3.0, 3.0))
            gate.nu.fill_(100.0)
    return discretize(model)


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "vgg11_bn"])
@pytest.mark.parametrize("seed", [0, 1])
def test_networks_with_random_gate_patterns_fold_exactly(name, seed):
    torch.manual_seed(seed)
    net = materialize(linearize(relu_network(name, 10)))
    net(torch.randn(2, 3, 32, 32))
    m = _rand_(_pattern(net, seed), seed)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    f = fold(m, x, policy="all")
    _close(f(x), m(x))
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in f.modules())
    report = fold_report(m, f, x, rounds=1)
    assert report["after"]["depth"] <= report["before"]["depth"]


def test_mixed_channel_gates_are_not_merged_but_all_linear_ones_are():
    mixed = FixedSlopeReLU(torch.tensor([1.0, 0.0, 1.0, 1.0]), granularity="channel")
    linear = FixedSlopeReLU(torch.ones(4), granularity="channel")
    m = nn.Sequential(nn.Conv2d(3, 4, 3), mixed, nn.Conv2d(4, 4, 1), linear, nn.Conv2d(4, 2, 1))
    m = _rand_(m)
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    f = fold(m, x, policy="all")
    _close(f(x), m(x))
    assert sum(isinstance(mod, nn.Conv2d) for mod in f.modules()) == 2


def test_folded_model_exports():
    m = _rand_(_chain(pad2=0)).float()
    x = torch.randn(2, 3, 15, 14)
    f = fold(m, x, policy="all")
    ep = torch.export.export(f, (x,))
    torch.testing.assert_close(ep.module()(x), m(x), rtol=1e-4, atol=1e-5)


def test_bad_arguments():
    m = nn.Sequential(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match=r"policy must be one of \['latency', 'flops', 'all'\], got 'fast'"):
        fold(m, torch.zeros(1, 3, 4, 4), policy="fast")
    with pytest.raises(TypeError, match="example_input must be a torch.Tensor, got list"):
        fold(m, [1, 2])


def test_cli_folds_a_budget_run_and_refuses_undecided_gates(tmp_path, capsys):
    import json

    from alphakern.cli import main
    from tests.cifar_fixtures import write_pickles
    from tests.train_helpers import run, train_cfg

    data = write_pickles(tmp_path / "cifar", n_per_batch=16, n_test=24)
    common = dict(model="resnet20", granularity="layer", epochs=1, log_every=2)
    undecided = tmp_path / "undecided"
    run(train_cfg(data, undecided, **common))  # one short epoch: every gate still near α = ½
    assert main(["fold", str(undecided)]) == 2
    err = capsys.readouterr().err
    assert "gates not yet ReLU or identity" in err and "layers.0.relu" in err
    exact = tmp_path / "exact"
    run(train_cfg(data, exact, budget=0.5, **common))  # gates made exact to the budget
    assert main(["fold", str(exact), "--policy", "all", "--out", str(tmp_path / "f")]) == 0
    result = json.loads((tmp_path / "f" / "fold.json").read_text())
    assert result["test_acc_after"] == pytest.approx(result["test_acc_before"], abs=1e-9)
    assert result["report"]["after"]["depth"] <= result["report"]["before"]["depth"]
    program = torch.export.load(str(tmp_path / "f" / "folded.pt2"))
    assert program.module()(torch.zeros(3, 3, 32, 32)).shape == (3, 10)
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
        import onnxruntime as ort

        assert main(["fold", str(exact), "--policy", "all", "--out", str(tmp_path / "g"),
                     "--onnx", str(tmp_path / "onnx")]) == 0  # fmt: skip
        x = torch.randn(3, 3, 32, 32)
        for name in ("unfolded", "folded"):
            path = str(tmp_path / "onnx" / f"{name}.onnx")
            s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            out = torch.from_numpy(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0])
            torch.testing.assert_close(out, program.module()(x), rtol=1e-4, atol=1e-4)
    assert main(["fold", str(tmp_path / "nothing")]) == 2


def test_trainer_fold_padding_fine_tunes_the_network_that_folds_exactly(tmp_path):
    import json

    from alphakern.cli import main
    from tests.cifar_fixtures import write_pickles
    from tests.train_helpers import run, train_cfg

    with pytest.raises(ValueError, match="--fold-padding acts when the gates are made exact"):
        train_cfg(tmp_path, tmp_path, model="resnet20", fold_padding=True)
    data = write_pickles(tmp_path / "cifar", n_per_batch=16, n_test=24)
    out = tmp_path / "run"
    # a small budget: most gates linear, so conv chains inside blocks exist whichever gates stay
    cfg = train_cfg(data, out, model="resnet20", epochs=1, finetune_epochs=1, budget=0.05, fold_padding=True)
    t = run(cfg)
    moved = t.metrics["padding_moved"]
    assert moved and all(t.model.get_submodule(b).padding == (0, 0) for _, b in moved)
    assert main(["fold", str(out), "--policy", "all", "--out", str(tmp_path / "f")]) == 0
    result = json.loads((tmp_path / "f" / "fold.json").read_text())
    assert result["test_acc_after"] == pytest.approx(result["test_acc_before"], abs=1e-9)
    # every moved chain merges; what is still refused at the border is a chain that only exists
    # once a block absorbed its skip (the conv before it had two readers when the padding moved)
    assert sum("convs merged" in entry[-1] for entry in result["merged"]) >= len(moved)


class _NonSquareSkips(nn.Module):
    """An identity skip and a 1×1 projection shortcut around convs with non-square kernels."""

    def __init__(self, k: tuple[int, int]) -> None:
        super().__init__()
        pad = (k[0] // 2, k[1] // 2)
        self.body = nn.Conv2d(4, 4, k, padding=pad)
        self.conv, self.short = nn.Conv2d(4, 6, k, padding=pad), nn.Conv2d(4, 6, 1)

    def forward(self, x):
        h = F.relu(self.body(x) + x)
        return self.conv(h) + self.short(h)


@pytest.mark.parametrize("k", [(1, 3), (3, 1), (3, 5), (5, 1)], ids=str)
def test_skips_around_non_square_kernels_are_absorbed_exactly(k):
    """The identity (and the 1×1 kernel) goes to the centre of each axis: row k_h // 2, column
    k_w // 2 — a square-kernel test cannot tell the two apart."""
    m = _rand_(_NonSquareSkips(k))
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64)
    f = fold(m, x, policy="all")
    whats = " ".join(w for _, w in f.fold_info.merged)
    assert "identity skip absorbed" in whats and "1x1 shortcut absorbed" in whats
    _close(f(x), m(x))


class _SharedOutput(nn.Module):
    """A conv whose output two nodes read (the next conv and a concatenation), a linear likewise."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1)
        self.l1, self.l2 = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        h = self.c1(x)
        h = torch.cat([self.c2(h), h], 1)
        z = self.l1(h)
        return torch.cat([self.l2(z), z], -1)


def test_a_layer_whose_output_another_node_reads_is_not_merged():
    m = _rand_(_SharedOutput())
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    f = fold(m, x, policy="all")
    assert not f.fold_info.merged, f.fold_info.merged
    _close(f(x), m(x))


def _random_bn_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


def test_functional_batch_norms_fold_like_modules():
    """timm's BatchNormAct2d reaches fx as F.batch_norm on the module's statistics: every one of
    regnetx_002's 44 folds into its conv, exactly (float64)."""
    timm = pytest.importorskip("timm")
    with torch.no_grad():
        model = _random_bn_statistics(timm.create_model("regnetx_002", pretrained=False, num_classes=10))
    model = model.double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    folded = fold(model, x, policy="all")
    merged = [what for _, what in folded.fold_info.merged if what.startswith("batch norm folded")]
    assert len(merged) == 44
    assert not any(n.op == "call_function" and n.target is F.batch_norm for n in folded.graph.nodes)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-9, atol=1e-10)


class _FunctionalBN(nn.Module):
    def __init__(self, training: bool, after_add: bool) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.training_bn, self.after_add = training, after_add

    def forward(self, x):
        y = self.conv(x)
        y = y + 1 if self.after_add else y
        return F.batch_norm(y, self.bn.running_mean, self.bn.running_var, self.bn.weight, self.bn.bias,
                            self.training_bn, 0.1, 1e-5)  # fmt: skip


@pytest.mark.parametrize(
    "training,after_add,why",
    [(True, False, "a functional batch norm in training mode"), (False, True, "not right after a conv")],
)
def test_batch_norms_not_folded_are_named_with_the_reason(training, after_add, why):
    model = _FunctionalBN(training, after_add).eval()
    folded = fold(model, torch.randn(2, 3, 8, 8), policy="all")
    assert [w for _, w in folded.fold_info.not_merged if why in w], folded.fold_info.not_merged


def test_fold_padding_leaves_a_padding_it_cannot_move_alone():
    """A reflect-padded or dilated conv keeps its padding (moving it would change the values)."""
    for odd in (dict(padding_mode="reflect"), dict(dilation=2, padding=(2, 2))):
        m = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.Identity(), nn.Conv2d(6, 4, 3, **{"padding": 1, **odd})
        )
        assert fold_padding(m) == [] and m[0].padding == (1, 1) and m[2].padding == odd.get("padding", (1, 1))


def test_fold_leaves_a_training_eager_model_in_training_mode():
    """fold traces an eval-mode copy: the caller's modules keep their mode (a shallow copy's eval()
    would reach them through the shared module dict)."""
    m = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Identity(), nn.Conv2d(4, 2, 1)
    ).train()
    fold(m, torch.randn(2, 3, 6, 6), policy="all")
    assert all(sub.training for sub in m.modules())
