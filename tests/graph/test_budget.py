"""Training to a ReLU budget: soft count, penalties, exact discretisation, the trainer's two phases,
--init/--distill, --gate-mode l1, and the errors that come before any training."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alphakern import linearize, relu_count
from alphakern.cifar_nets import relu_network
from alphakern.cli import main
from alphakern.data import probe
from alphakern.graph import apply_keep, discretize
from alphakern.graph.budget import (
    GateSite,
    budget_penalty,
    discretize_to_budget,
    gate_sites,
    keep_to_budget,
    keep_to_budget_by_units,
    l1_penalty,
    resolve_budget,
    soft_count,
)
from alphakern.modules import AlphaReLU, FixedSlopeReLU, alpha_layers, materialize
from alphakern.train import TrainConfig, Trainer, load_checkpoint
from tests.cifar_fixtures import write_cifar100, write_pickles
from tests.nets import Small
from tests.train_helpers import run, train_cfg

X = probe()


def _gated(granularity: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = materialize(linearize(Small(), granularity=granularity))
    with torch.no_grad():
        for _, m in alpha_layers(model):
            m.gamma.copy_(torch.randn(m.gamma.shape))  # distinct α per gate
            m.nu.fill_(5.0)
    return model


POSITIONS = {"layer": [16384, 16384, 2048], "channel": [1024, 1024, 256], "element": [1, 1, 1]}
GATES = {"layer": [1, 1, 1], "channel": [16, 16, 8], "element": [16384, 16384, 2048]}


@pytest.mark.parametrize("granularity", ["layer", "channel", "element"])
def test_gate_sites_and_soft_count_against_float64_formula(granularity):
    model = _gated(granularity)
    sites = gate_sites(model, X)
    assert [s.positions for s in sites] == POSITIONS[granularity]
    assert [s.gates for s in sites] == GATES[granularity]
    want = 0.0
    for s in sites:
        g, nu = s.module.gamma.detach().double(), s.module.nu.double()
        want += float(torch.sigmoid((torch.sigmoid(g) - 0.5) * nu).sum()) * s.positions
    soft = soft_count(sites)
    assert float(soft.detach()) == pytest.approx(want, rel=1e-5)
    soft.backward()
    assert all(s.module.gamma.grad is not None and s.module.gamma.grad.abs().sum() > 0 for s in sites)
    total = sum(s.relus for s in sites)
    assert total == relu_count(linearize(Small()), X) == 34816
    # SNL's L1 on the normalised count, AutoReP's hinge above the budget
    assert float(budget_penalty(sites, total, 2.0).detach()) == pytest.approx(2.0 * want / total, rel=1e-5)
    assert float(budget_penalty(sites, total, 2.0, budget=int(want) + 10).detach()) == 0.0
    over = budget_penalty(sites, total, 3.0, budget=1000)
    assert float(over.detach()) == pytest.approx(3.0 * (want - 1000) / total, rel=1e-5)
    a = torch.cat([s.module.alpha.double().flatten() for s in sites])
    assert float(l1_penalty(sites, 0.5).detach()) == pytest.approx(0.5 * float(a.mean()), rel=1e-5)


@pytest.mark.parametrize("granularity", ["layer", "channel", "element"])
@pytest.mark.parametrize("fraction", [0.9, 0.5, 0.1, 0.02])
def test_discretize_to_budget_keeps_the_highest_alpha_within_the_budget(granularity, fraction):
    model = _gated(granularity)
    total = relu_count(model, X)
    budget = resolve_budget(fraction, total)
    exact = discretize_to_budget(model, X, budget)
    assert not alpha_layers(exact) and alpha_layers(model)  # the original keeps its gates
    kept = relu_count(exact, X)
    sites = gate_sites(model, X)
    keep = keep_to_budget(sites, budget)
    pos = torch.cat([torch.full((s.gates,), s.positions) for s in sites])
    a = torch.cat([s.module.alpha.flatten() for s in sites])
    k = torch.cat([keep[s.name].flatten() for s in sites])
    assert kept == int((pos * k).sum()) <= budget
    if not k.all():  # filled: no gate left out would still fit
        assert budget - kept < int(pos[~k].min())
    if granularity == "element":
        assert kept == budget  # gates of one position each: met exactly
    # the highest α first: every kept gate that was not a smaller gap-filler beats every dropped one
    order = torch.argsort(-a, stable=True)
    prefix = int(torch.cumsum(pos[order], 0).le(budget).sum())
    assert k[order[:prefix]].all()
    # exact: every module is a ReLU, the identity or slopes of exactly 0 and 1
    for m in exact.modules():
        if isinstance(m, FixedSlopeReLU):
            assert set(m.slope.unique().tolist()) <= {0.0, 1.0}


def test_exact_model_computes_relu_where_kept_and_identity_elsewhere():
    model = _gated("channel")
    sites = gate_sites(model, X)
    keep = keep_to_budget(sites, 20000)
    exact = apply_keep(linearize(Small(), granularity="channel"), {})  # nothing changed: still gated
    assert alpha_layers(exact)
    exact = discretize_to_budget(model, X, 20000)
    x = torch.randn(2, 3, 32, 32)
    # oracle: the ReLU network with each channel's ReLU replaced by the identity where dropped
    ref = Small()
    ref.load_state_dict({k: v for k, v in model.state_dict().items() if not k.endswith((".gamma", ".nu"))})
    k1, k2, k3 = (keep[s.name].double().reshape(1, -1, 1, 1) for s in sites)
    with torch.no_grad():
        h = ref.c1(x).double()
        h = torch.where(k1.bool(), h.relu(), h)
        h = h + 1
        h = torch.where(k2.bool(), h.relu(), h)
        h = ref.c2(h.float()).double()
        h = torch.where(k3.bool(), h.relu(), h)
        want = ref.fc(h.float().mean((2, 3)))
        torch.testing.assert_close(exact(x), want, rtol=1e-5, atol=1e-5)


def test_relu_count_of_a_discretised_mixed_model_counts_slopes_not_one():
    model = _gated("element")
    with torch.no_grad():
        for _, m in alpha_layers(model):
            m.nu.fill_(200.0)  # decided gates
    mixed = discretize(model)
    slopes = [m.slope for m in mixed.modules() if isinstance(m, FixedSlopeReLU)]
    assert len(slopes) == 3
    assert relu_count(mixed, X) == sum(int((s != 1).sum()) for s in slopes) == relu_count(model, X)


def test_resolve_budget():
    assert resolve_budget(0.5, 1000) == 500 and resolve_budget(1, 1000) == 1000
    assert resolve_budget(300, 1000) == 300 and resolve_budget(1000.0, 1000) == 1000
    for bad, msg in ((0, "positive"), (-0.5, "positive"), (1001, "more than the network's 1000"),
                     (12.5, "must be whole"), (0.0001, "rounds to 0")):  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            resolve_budget(bad, 1000)


# -- the trainer ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_pickles(tmp_path_factory.mktemp("cifar"), n_per_batch=16, n_test=24)


def cfg(data_dir, out, **kw):
    return train_cfg(data_dir, out, **{"log_every": 2, "model": "resnet20", "granularity": "channel", **kw})


@pytest.fixture(scope="module")
def relu_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("relu") / "run"
    run(cfg(data_dir, out, activation="relu", epochs=1))
    return out


def test_budget_run_meets_budget_and_resumes_in_the_finetune_phase(data_dir, relu_run, tmp_path, monkeypatch):
    import alphakern.train.loop as loop

    calls = []
    real = loop._distill
    monkeypatch.setattr(loop, "_distill", lambda *a: calls.append(1) or real(*a))
    c = dict(budget=0.25, epochs=1, finetune_epochs=2, init=str(relu_run), distill=True)
    straight = run(cfg(data_dir, tmp_path / "a", **c))
    assert len(calls) == 2 * len(straight.train_batches)  # every fine-tuning step, no search step
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["relu_count_before"] == 188416 == relu_count(relu_network("resnet20"), X)
    assert m["relu_budget"] == 47104 and m["relu_count_after"] <= 47104
    assert m["relu_count_after"] == relu_count(straight.model, X)
    assert sum(d["kept"] for d in m["relu_layers"]) == m["relu_count_after"]
    assert sum(d["relus"] for d in m["relu_layers"]) == 188416 and len(m["relu_layers"]) == 19
    assert [e["phase"] for e in m["epochs"]] == ["search", "fine-tune", "fine-tune"]
    assert (tmp_path / "a" / "relu_budget.png").stat().st_size > 1000
    assert not alpha_layers(straight.model)  # frozen: nothing left to learn in the gates
    # stopped after the first fine-tuning epoch, resumed: the same weights bit for bit
    run(cfg(data_dir, tmp_path / "b", **{**c, "finetune_epochs": 1}))
    assert load_checkpoint(tmp_path / "b")["keep"] is not None
    resumed = run(cfg(data_dir, tmp_path / "b", **c), resume=True)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert straight.metrics["test_acc"] == resumed.metrics["test_acc"]


def test_budget_penalty_pulls_the_soft_count_during_the_search(data_dir, tmp_path):
    common = dict(model="cnn", granularity="channel", epochs=2, lr=0.05, nu_init=4.0)  # α can move
    free = run(cfg(data_dir, tmp_path / "a", penalty=0.0, **common))
    held = run(cfg(data_dir, tmp_path / "b", budget=0.1, penalty=50.0, **common))
    soft = [t.metrics["epochs"][-1]["soft_relu_count"] for t in (free, held)]
    assert soft[1] < 0.9 * soft[0], soft


def test_budget_without_finetuning_still_ends_exact(data_dir, tmp_path):
    t = run(cfg(data_dir, tmp_path / "r", budget=5000, epochs=1, model="cnn"))
    assert t.metrics["relu_count_after"] <= 5000 and t.metrics["relu_count_before"] == 86016
    assert not alpha_layers(t.model)


def test_init_copies_weights_and_distill_uses_the_relu_network(data_dir, relu_run, tmp_path):
    t = Trainer(cfg(data_dir, tmp_path / "d", budget=0.5, epochs=1, finetune_epochs=1, init=str(relu_run),
                    distill=True), progress=False)  # fmt: skip
    teacher_state = load_checkpoint(relu_run)["model"]
    own = t.model.state_dict()
    for k, v in teacher_state.items():
        assert torch.equal(own[k], v), k  # every weight of the ReLU run, gates fresh
    assert not alpha_layers(t.teacher) and not t.teacher.training
    x = torch.randn(4, 3, 32, 32)
    from alphakern.train.loop import DISTILL_T, _distill

    out = torch.randn(4, 10, dtype=torch.float64)
    with torch.no_grad():
        p = torch.softmax(t.teacher(x).double() / DISTILL_T, 1)
    q = torch.log_softmax(out / DISTILL_T, 1)
    want = (p * (p.log() - q)).sum(1).mean() * DISTILL_T**2
    assert float(_distill(out.float(), t.teacher, x)) == pytest.approx(float(want), rel=1e-4)
    with torch.no_grad():
        assert float(_distill(t.teacher(x), t.teacher, x)) == pytest.approx(0.0, abs=1e-6)


def test_alpha_init_starts_every_gate_there_from_a_relu_network(data_dir, relu_run, tmp_path):
    t = Trainer(cfg(data_dir, tmp_path / "s", budget=0.5, epochs=1, finetune_epochs=1, init=str(relu_run),
                    granularity="channel", nu_init=20.0, alpha_init=0.95), progress=False)  # fmt: skip
    layers = alpha_layers(t.model)
    assert layers
    for name, m in layers:  # --init copied the weights, not γ or ν: the gates start at α = 0.95
        assert float(m.nu) == 20.0, name
        a = torch.sigmoid((torch.sigmoid(m.gamma.detach().double()) - 0.5) * 20.0)  # the formula
        torch.testing.assert_close(a, torch.full_like(a, 0.95), rtol=0, atol=1e-7)
        assert m.gamma.requires_grad
    free = Trainer(cfg(data_dir, tmp_path / "h", budget=0.5, epochs=1, finetune_epochs=1, init=str(relu_run),
                       granularity="channel", nu_init=20.0), progress=False)  # fmt: skip
    assert all(float(m.alpha.max()) == 0.5 for _, m in alpha_layers(free.model))  # without it, γ = 0


def test_gate_mode_l1_holds_nu_and_pulls_alpha_down(data_dir, tmp_path):
    # lr 0.05: 16 Adam steps move γ far enough to see the pull
    common = dict(model="cnn", granularity="layer", gate_mode="l1", epochs=2, nu_init=4.0, lr=0.05)
    none = run(cfg(data_dir, tmp_path / "a", l1=0.0, **common))
    strong = run(cfg(data_dir, tmp_path / "b", l1=5.0, **common))
    for t in (none, strong):
        assert all(float(m.nu) == 4.0 for _, m in alpha_layers(t.model))  # no schedule
    mean = lambda t: sum(float(m.alpha) for _, m in alpha_layers(t.model)) / 3  # noqa: E731
    assert mean(strong) < mean(none) - 0.05
    default = Trainer(cfg(data_dir, tmp_path / "c", model="cnn", gate_mode="l1"), progress=False)
    assert all(float(m.nu) == 10.0 for _, m in alpha_layers(default.model))


def test_cifar100_trains_with_100_classes(tmp_path):
    data = write_cifar100(tmp_path / "data", n_train=40, n_test=20)
    t = run(TrainConfig(data_dir=str(data), out=str(tmp_path / "r"), dataset="cifar100", epochs=1,
                        batch_size=16, device="cpu", augment=True))  # fmt: skip
    assert t.model.fc.out_features == 100 and 0 <= t.metrics["test_acc"] <= 100


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--budget", "0"], "--budget must be positive"),
        (["--budget", "12.5"], "--budget must be a whole ReLU count when above 1"),
        (["--budget", "999999999"], "more than the network's 188416 ReLUs"),
        (["--penalty", "-1"], "--penalty must be a non-negative number"),
        (["--dataset", "svhn"], "argument --dataset: invalid choice: 'svhn'"),
        (["--gate-mode", "l2"], "argument --gate-mode: invalid choice: 'l2'"),
        (["--distill", "--finetune-epochs", "1"], "--distill needs --init RUN_DIR"),
        (["--gate-mode", "l1", "--nu-init", "0"], "--nu-init must be positive with --gate-mode l1"),
        (["--alpha-init", "1"], "--alpha-init must be between 0 and 1, got 1.0"),
        (
            ["--alpha-init", "0.95"],
            "alpha = 0.95 is out of reach at nu = 0: alpha = σ((σ(γ) − ½)·nu) spans "
            "(0.5, 0.5); start nu above 5.889",
        ),
        (["--alpha-init", "0.05", "--nu-init", "5"], "spans (0.07586, 0.9241); start nu above 5.889"),
        (["--alpha-init", "0.9", "--nu-init", "10", "--activation", "relu"], "--alpha-init needs learnable"),
        (["--budget", "0.5", "--activation", "relu"], "--budget needs learnable gates"),
        (["--finetune-epochs", "-1"], "--finetune-epochs must be a non-negative integer"),
        (["--init", "/nonexistent/run"], "no checkpoint at /nonexistent/run"),
        (["--budget-kind", "relu"], "--budget-kind scopes --budget/--penalty: give one of them"),
        (["--fold-units", "--penalty", "1"], "--fold-units keeps or drops a unit's gates together"),
        (["--fold-units", "--budget", "0.5", "--granularity", "channel"], "it needs --budget and"),
        (["--budget-kind", "tanh", "--budget", "0.5"], "argument --budget-kind: invalid choice: 'tanh'"),
        (
            ["--budget-kind", "gelu", "--budget", "0.5"],
            "--budget-kind gelu: the resnet20 has no gates of it (its gates: ['relu'])",
        ),
    ],
)
def test_budget_flags_refused_before_any_data_is_read(flags, message, tmp_path, capsys, monkeypatch):
    import alphakern.train.loop as loop

    def no_work(*a, **k):
        raise AssertionError("data read")

    monkeypatch.setattr(loop, "load_dataset", no_work)
    args = ["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--model", "resnet20", *flags]
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_init_from_another_model_is_refused(data_dir, relu_run, tmp_path):
    with pytest.raises(ValueError, match="a resnet20 on cifar10; this run trains a cnn"):
        Trainer(cfg(data_dir, tmp_path / "x", model="cnn", init=str(relu_run)), progress=False)


def test_alpha_gate_modules_are_what_the_budget_counts():
    """A gate with every α linear counts 0; the same model's unconverted ReLU still counts."""

    class Partly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = AlphaReLU(granularity="channel")

        def forward(self, x):
            return F.relu(self.gate(x)) * 2

    m = materialize(Partly())
    with torch.no_grad():
        m.gate.gamma.fill_(-50.0)
        m.gate.nu.fill_(100.0)
    assert relu_count(m, X) == 3 * 32 * 32


@pytest.mark.parametrize("granularity", ["layer", "channel", "element"])
def test_per_sample_counts_are_the_same_for_batch_1_and_batch_7(granularity):
    """gate_sites' positions, the soft count and relu_count are per sample: 7 images (the first of
    them the batch-1 image) give the counts of one. Counting per batch would scale them by 7."""
    model = _gated(granularity)
    seven = torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    one = seven[:1]
    s1, s7 = gate_sites(model, one), gate_sites(model, seven)
    assert [(s.positions, s.gates) for s in s7] == [(s.positions, s.gates) for s in s1]
    assert [s.positions for s in s7] == POSITIONS[granularity]
    assert float(soft_count(s7)) == float(soft_count(s1))
    assert relu_count(model, seven) == relu_count(model, one) > 0
    plain = Small()  # ReLUs that are not gates, seen through the torch-function mode
    assert relu_count(plain, seven) == relu_count(plain, one) == 16384 + 16384 + 2048
    exact = discretize_to_budget(model, one, 20000)  # FixedSlopeReLU / ReLU / Identity counted
    assert relu_count(exact, seven) == relu_count(exact, one) <= 20000


def test_budget_kind_scopes_the_budget_penalty_and_cut_to_one_kind():
    """--budget-kind silu on a network with ReLU and SiLU gates: the budget is a share of the SiLUs,
    the penalty's gradient reaches the SiLU gates only, the cut meets the SiLU budget, and the ReLU
    gates are made exact by rounding α at ½ whatever the budget."""
    from alphakern.graph import nonlinearity_count
    from alphakern.modules import AlphaGate
    from alphakern.train.build import Budget

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), AlphaGate(activation="relu", granularity="channel"),
        nn.Conv2d(8, 6, 3, padding=1), AlphaGate(activation="silu", granularity="channel"),
    )  # fmt: skip
    x = torch.randn(2, 3, 5, 5)
    materialize(model, x.shape)
    with torch.no_grad():
        model[1].gamma.copy_(torch.linspace(-2, 2, 8))  # α < ½ for half the ReLU gates
        model[3].gamma.copy_(torch.linspace(-1, 1, 6))
        for g in (model[1], model[3]):
            g.nu.fill_(4.0)
    c = TrainConfig(data_dir=".", budget=0.25, budget_kind="silu")
    b = Budget.of(c, model, x)
    assert nonlinearity_count(model, x) == {"relu": 8 * 25, "silu": 6 * 25} == b.kinds_before
    assert b.scope_total == 6 * 25 and b.budget == 37 and [s.name for s in b.scoped] == ["3"]
    b.penalty().backward()
    assert model[1].gamma.grad is None or not model[1].gamma.grad.any()
    assert model[3].gamma.grad.abs().min() > 0
    keep = b.exact_keep()
    assert keep["1"].tolist() == (model[1].alpha >= 0.5).tolist()  # rounding, not the budget
    assert keep["3"].tolist() == [False] * 5 + [True]  # the highest α while 25 positions fit in 37
    # the same budget over all kinds together: a share of 350, over both kinds' gates
    both = Budget.of(TrainConfig(data_dir=".", budget=0.25), model, x)
    assert both.budget == 87 and len(both.scoped) == 2 and both.scope_total == 350


def test_fold_units_group_the_gates_whose_removal_folds():
    """ResNet-20: a block's inner gate alone (between conv1 and conv2; the gates after the sums
    link nothing); MobileNetV2: the expansion and depthwise gates of each block (the stem's with the
    first block's depthwise); VGG: the gates between two convs with no pooling between."""
    from alphakern.folding import fold_units

    assert fold_units(linearize(relu_network("resnet20"))) == [(f"layers.{i}.relu",) for i in range(9)]
    units = fold_units(linearize(relu_network("mobilenet_v2")))
    assert units[0] == ("features.0.2", "features.1.conv.0.2")
    assert units[1:] == [(f"features.{b}.conv.0.2", f"features.{b}.conv.1.2") for b in range(2, 18)]
    assert fold_units(linearize(relu_network("vgg11_bn"))) == [
        ("features.10",),
        ("features.17",),
        ("features.24",),
    ]


def test_budget_by_fold_units_keeps_or_drops_a_unit_whole(data_dir, tmp_path):
    from alphakern.folding import fold_units

    torch.manual_seed(0)
    net = materialize(linearize(relu_network("mobilenet_v2")))
    with torch.no_grad():
        for _, m in alpha_layers(net):
            m.gamma.copy_(torch.randn(()))
            m.nu.fill_(5.0)
    sites, units = gate_sites(net, X), fold_units(net)
    total = sum(s.relus for s in sites)
    for fraction in (0.3, 0.5, 0.8):
        budget = int(fraction * total)
        keep = keep_to_budget_by_units(sites, budget, units)
        assert all(len({bool(keep[n]) for n in u}) == 1 for u in units)  # whole units
        kept = sum(s.relus for s in sites if keep[s.name])
        assert kept <= budget and kept > budget - max(
            sum(s.relus for s in sites if s.name in u) for u in units
        )
        assert any(not keep[u[0]] for u in units)  # something folds
    # the trainer (MobileNetV2: units of two gates): the run's kept gates are whole units
    t = run(cfg(data_dir, tmp_path / "r", model="mobilenet_v2", granularity="layer", budget=0.5, epochs=1,
                fold_units=True))  # fmt: skip
    m = t.metrics
    assert m["relu_count_after"] <= m["relu_budget"]
    kept = {d["name"]: d["kept"] for d in m["relu_layers"]}
    assert all(len({kept[n] > 0 for n in u}) == 1 for u in units)
    assert any(kept[u[0]] == 0 for u in units)


def _conv_chain(*parts: str) -> nn.Sequential:
    """conv–BN–ReLU per "g", a max-pool per "p", a last conv: the gates between convs."""
    layers: list[nn.Module] = []
    for p in parts:
        gate = [nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()]
        layers += gate if p == "g" else [nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Conv2d(4, 4, 1))


def test_fold_units_join_every_gate_of_a_linear_chain_into_one_unit():
    """conv–BN–ReLU ×3 → conv: three gates linked conv to conv are ONE unit (the union is
    transitive); a pooling cuts a chain, and the gate before it links nothing."""
    from alphakern.folding import fold_units

    assert fold_units(linearize(_conv_chain("g", "g", "g"))) == [("2", "5", "8")]
    assert fold_units(linearize(_conv_chain("g", "g", "g", "g"))) == [("2", "5", "8", "11")]
    assert fold_units(linearize(_conv_chain("g", "g", "p", "g", "g"))) == [("2",), ("9", "12")]


def _gate_at(alpha_value: float, nu: float = 10.0) -> AlphaReLU:
    """A layer gate whose α is ``alpha_value``: σ(γ) = ½ + logit(α)/ν."""
    m = AlphaReLU()
    logit = torch.logit(torch.tensor(alpha_value, dtype=torch.float64))
    with torch.no_grad():
        m.gamma.fill_(float(torch.logit(0.5 + logit / nu)))
        m.nu.fill_(nu)
    assert abs(float(m.alpha) - alpha_value) < 1e-5
    return m


@pytest.mark.parametrize(
    "alphas,kept",
    [((0.6, 0.6, 0.9), {"c"}),  # mean 0.6 < 0.9: c first, then the unit does not fit (a sum: a, b)
     ((0.95, 0.93, 0.9), {"a", "b"}),  # mean 0.94 > 0.9: the unit first, and c no longer fits
     ((0.2, 0.9, 0.6), {"c"})],  # mean 0.55 < 0.6, though b alone is the highest α
    ids=["sum-would-win", "mean-wins", "max-would-win"],
)  # fmt: skip
def test_budget_by_units_ranks_a_unit_by_its_mean_alpha(alphas, kept):
    """Which units are kept, not only how many positions: a unit (a, b) against a gate c, 10
    positions each, a budget of 20."""
    sites = [GateSite(n, _gate_at(a), 10, 1) for n, a in zip("abc", alphas, strict=True)]
    keep = keep_to_budget_by_units(sites, 20, [("a", "b")])
    assert {n for n, k in keep.items() if bool(k)} == kept


# -- what a mutation run of budget, discretize and counting found untested -------------------------


def test_resolve_budget_reads_numbers_above_one_as_whole_counts():
    assert resolve_budget(2, 1000) == 2 and resolve_budget(2.0, 1000) == 2
    with pytest.raises(ValueError, match=r"^--budget above 1 is a ReLU count and must be whole, got 1.5$"):
        resolve_budget(1.5, 1000)


def test_keep_to_budget_of_no_gates_keeps_nothing():
    assert keep_to_budget([], 10) == {}


def _set(model, gammas, nu=50.0):
    with torch.no_grad():
        for (_, m), g in zip(alpha_layers(model), gammas, strict=True):
            m.gamma.fill_(g)
            m.nu.fill_(nu)
    return model


def test_discretize_keeps_an_undecided_layer_gate_and_goes_on_past_it():
    model = _set(materialize(linearize(Small(), granularity="layer")), (0.0, 2.0, -2.0))  # α ½, 1, 0
    names = [n for n, _ in alpha_layers(model)]
    out = discretize(model)
    mods = dict(out.named_modules())
    assert isinstance(mods[names[0]], AlphaReLU)
    assert isinstance(mods[names[1]], nn.ReLU) and isinstance(mods[names[2]], nn.Identity)
    assert [n for n, _ in alpha_layers(model)] == names  # the model itself is left alone


@pytest.mark.parametrize("granularity", ["channel", "element"])
def test_discretize_fixes_undecided_gates_per_channel_or_element_at_their_alpha(granularity):
    model = _set(materialize(linearize(Small(), granularity=granularity)), (0.0, 0.0, 0.0), nu=1.0)
    out = discretize(model)
    fixed = [m for m in out.modules() if isinstance(m, FixedSlopeReLU)]
    assert len(fixed) == 3 and not list(alpha_layers(out))
    want = 1 - alpha_layers(model)[0][1].alpha
    for m in fixed:
        torch.testing.assert_close(m.slope, torch.full_like(m.slope, float(want.flatten()[0])))
    torch.testing.assert_close(out(X), model(X))


def test_discretize_to_budget_and_apply_keep_refusals():
    model = _gated("layer")
    names = [n for n, _ in alpha_layers(model)]
    out = discretize_to_budget(model, X, 20000)
    assert [n for n, _ in alpha_layers(model)] == names and not list(alpha_layers(out))
    with pytest.raises(ValueError, match=r"^c1 is not an AlphaGate of this model$"):
        apply_keep(model, {"c1": torch.tensor(True)})
    sites = gate_sites(_gated("channel"), X)
    with pytest.raises(ValueError, match=r"^keeping gates by fold units needs gates per layer "
                       r"\(--granularity layer\)$"):  # fmt: skip
        keep_to_budget_by_units(sites, 100, [])


@pytest.mark.parametrize("granularity", ["layer", "channel", "element"])
def test_counts_are_whole_numbers(granularity):
    from alphakern.graph.counting import nonlinearity_count

    model = _gated(granularity)
    assert type(relu_count(model, X)) is int
    kept = apply_keep(
        copy.deepcopy(model), {n: torch.rand(m.gamma.shape) < 0.5 for n, m in alpha_layers(model)}
    )
    assert type(relu_count(kept, X)) is int
    assert all(type(v) is int for v in nonlinearity_count(Small(), X).values())


def test_discretize_and_its_budget_form_leave_an_eager_model_alone():
    """Gates nested in an eager model (fx models rebuild their module dict on copy; these do not)."""

    def block(cin):
        return nn.Sequential(nn.Conv2d(cin, 4, 3, padding=1), AlphaReLU())

    model = _set(materialize(nn.Sequential(block(3), block(4)), (1, 3, 8, 8)), (2.0, -2.0))
    for out in (discretize(model), discretize_to_budget(model, torch.randn(1, 3, 8, 8), 256)):
        assert not list(alpha_layers(out))
        assert [type(model.get_submodule(n)) for n in ("0.1", "1.1")] == [AlphaReLU, AlphaReLU]
