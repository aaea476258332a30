"""The linearisation methods (alphakern.graph.methods): each meets its budget after its cut, its
penalty and schedule move toward the budget, its state resumes bit for bit, it reads validation and
never the test set, and what it does not support is refused by name."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alphakern import linearize, relu_count
from alphakern.data import probe
from alphakern.graph import apply_keep
from alphakern.graph.budget import gate_sites
from alphakern.graph.methods import (
    METHODS,
    SNL,
    AutoReP,
    HysteresisGate,
    MaskGate,
    Random,
    Scope,
    Stage,
    make_method,
    stages,
)
from alphakern.modules import AlphaGate, AlphaReLU, alpha_layers, materialize
from alphakern.train import TrainConfig, Trainer, load_checkpoint
from tests.cifar_fixtures import write_pickles
from tests.nets import Small
from tests.train_helpers import run, train_cfg

X = probe()


TOTAL = 2 * 16 * 32 * 32 + 8 * 16 * 16  # 34816 ReLUs per sample


def _prepared(method, granularity="element", seed=0):
    torch.manual_seed(seed)
    model = materialize(linearize(Small(), granularity=granularity))
    return method.prepare(model)


def _scope(model, budget):
    sites = gate_sites(model, X)
    return Scope(sites, sum(s.relus for s in sites), budget, sites)


# -- the gates -------------------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["channel", "element", "feature"])
def test_mask_gate_is_the_blend_of_f_and_the_identity_in_float64(granularity):
    torch.manual_seed(0)
    g = MaskGate.like(materialize(AlphaGate(granularity=granularity), (2, 4, 5, 6)))
    assert g.gamma.shape == {"channel": (4,), "element": (4, 5, 6), "feature": (6,)}[granularity]
    assert bool((g.gamma == 1).all())  # SNL's masks start at 1: the ReLU network
    with torch.no_grad():
        g.gamma.copy_(torch.randn(g.gamma.shape))
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    m = g.gamma.double()
    m = m.view(4, 1, 1) if granularity == "channel" else m  # element (4, 5, 6), feature (6,): broadcast
    want = m * x.clamp_min(0) + (1 - m) * x  # the formula, written here
    torch.testing.assert_close(g.double()(x), want)


def test_hysteresis_gate_moves_its_mask_only_outside_the_band():
    g = HysteresisGate.like(materialize(AlphaGate(granularity="element"), (1, 6)))
    band = g.band
    with torch.no_grad():
        g.mask.copy_(torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
        g.gamma.copy_(torch.tensor([-2 * band, -band / 2, band / 2, band / 2, 2 * band, -2 * band]))
    g.train()(torch.randn(3, 6))
    # a kept element goes only below −band; a dropped one returns only above +band
    assert g.mask.tolist() == [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    g.eval()
    with torch.no_grad():
        g.gamma.fill_(-1.0)
    g(torch.randn(3, 6))
    assert g.mask.tolist() == [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]  # evaluation never moves it


def test_hysteresis_state_travels_in_the_state_dict():
    """A dropped element whose a sits inside the band stays dropped after a save and load: the
    mask is state, not a function of a."""
    g = HysteresisGate.like(materialize(AlphaGate(granularity="element"), (1, 3)))
    with torch.no_grad():
        g.mask.copy_(torch.tensor([0.0, 1.0, 0.0]))
        g.gamma.copy_(torch.tensor([g.band / 2, -g.band / 2, 1.0]))
    fresh = HysteresisGate.like(materialize(AlphaGate(granularity="element"), (1, 3)))
    fresh.load_state_dict(g.state_dict())
    fresh.train()(torch.randn(2, 3))
    assert fresh.mask.tolist() == [0.0, 1.0, 1.0]


def test_hysteresis_gate_forward_is_its_mask_and_its_gradient_the_straight_through_softplus():
    g = HysteresisGate.like(materialize(AlphaGate(granularity="element"), (1, 4)))
    with torch.no_grad():
        g.mask.copy_(torch.tensor([1.0, 0.0, 1.0, 0.0]))
        g.gamma.copy_(torch.tensor([0.5, -0.5, 0.25, -0.25]))
    x = torch.tensor([[-1.0, -2.0, 3.0, 4.0]], requires_grad=True)
    y = g.eval()(x)
    assert y.tolist() == [[0.0, -2.0, 3.0, 4.0]]
    y.sum().backward()
    # dy/dm = f(x) − x = relu(x) − x; dm/da = softplus(a)
    want = (x.detach().clamp_min(0) - x.detach())[0] * F.softplus(g.gamma.detach())
    torch.testing.assert_close(g.gamma.grad, want)


# -- the cut meets the budget ----------------------------------------------------------------------


def _fake_validation(model):
    """A stand-in validation accuracy that depends on which gates were made linear."""
    return 50.0 + sum(float(isinstance(m, nn.Identity)) * i for i, m in enumerate(model.modules()))


@pytest.mark.parametrize("name", ["alpha", "snl", "autorep", "stage", "random"])
@pytest.mark.parametrize("budget", [TOTAL // 2, TOTAL // 10, 777])
def test_each_method_cut_meets_the_budget(name, budget):
    method = make_method(name)
    model = _prepared(method)
    if name == "snl":  # masks spread out, as after a search
        for _, m in alpha_layers(model):
            with torch.no_grad():
                m.gamma.copy_(torch.rand(m.gamma.shape))
    scope = _scope(model, budget)
    keep = method.keep(scope, model, _fake_validation)
    kept = scope.hard_count(keep)
    assert kept <= budget
    if name != "autorep":  # its masks are all 1 here: kept by a; element gates land exactly
        assert kept == budget, (name, kept, budget)
    apply_keep(model, keep)
    assert relu_count(model, X) == kept


def test_snl_cut_keeps_only_masks_above_the_threshold_when_under_budget():
    method = SNL()
    model = _prepared(method)
    for _, m in alpha_layers(model):
        with torch.no_grad():
            m.gamma.copy_((torch.rand(m.gamma.shape) < 0.1).float() * 0.5)  # ~10 % above 1e-2
    scope = _scope(model, TOTAL // 2)
    keep = method.keep(scope, model)
    for s in scope.sites:
        assert torch.equal(keep[s.name], s.module.gamma.detach() > 1e-2)


def test_autorep_cut_never_keeps_a_dropped_element_and_prefers_the_largest_aux():
    method = AutoReP()
    model = _prepared(method)
    sites = gate_sites(model, X)
    with torch.no_grad():
        for s in sites:
            s.module.mask.copy_((torch.rand(s.module.mask.shape) < 0.5).float())
    kept_masks = sum(int(s.module.mask.sum()) * s.positions for s in sites)
    keep = method.keep(_scope(model, TOTAL), model)  # room for all: exactly the mask
    for s in sites:
        assert torch.equal(keep[s.name], s.module.mask.cpu() > 0)
    keep = method.keep(_scope(model, kept_masks // 2), model)
    for s in sites:
        k, a = keep[s.name], s.module.gamma.detach()
        assert not bool((k & (s.module.mask == 0)).any())
        if k.any() and (~k & (s.module.mask > 0)).any():
            assert a[k].min() >= a[~k & (s.module.mask > 0)].max()


def test_random_cut_is_seeded_and_uniform():
    model = _prepared(Random())
    scope = _scope(model, TOTAL // 4)
    a, b, c = Random(0).keep(scope, model), Random(0).keep(scope, model), Random(1).keep(scope, model)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    shares = [float(k.float().mean()) for k in a.values()]
    assert all(abs(s - 0.25) < 0.05 for s in shares), shares  # every gate cut alike


# -- stage: criticality from validation ------------------------------------------------------------


def test_stages_are_runs_of_one_resolution():
    sites = gate_sites(_prepared(Stage()), X)
    assert [[s.name for s in g] for g in stages(sites)] == [[sites[0].name, sites[1].name], [sites[2].name]]


def test_stage_culls_the_least_critical_stage_first_and_thins_the_straddling_one():
    model = _prepared(Stage())
    sites = gate_sites(model, X)
    names = [s.name for s in sites]
    seen = []

    def validation(m):  # losing the 16×16 stage costs little; in the 32×32 stage, the first gate
        linear = {n for n, mod in m.named_modules() if isinstance(mod, nn.Identity)}
        seen.append(linear)
        return 90.0 - 40.0 * (names[0] in linear) - 10.0 * (names[1] in linear) - 1.0 * (names[2] in linear)

    method = Stage()
    keep = method.keep(_scope(model, 16 * 32 * 32 + 100), model, validation)
    assert not keep[names[2]].any()  # the least critical stage: culled whole
    assert keep[names[0]].all()  # the most critical layer of the straddling stage: kept
    assert int(keep[names[1]].sum()) == 100  # the other thinned to the budget
    assert method.culled == [[names[2]], names[:2]]


def test_stage_refuses_a_model_without_stages_and_a_missing_validation():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            return self.b(F.relu(self.a(x))).relu()

    model = materialize(linearize(Flat(), granularity="element"), (1, 8))
    sites = gate_sites(model, torch.zeros(1, 8))
    one_resolution = (
        r"^--method stage culls whole stages, .* one resolution \(8,\): it has no stages to cull$"
    )
    for gates in (sites, sites[:1]):  # two gates at one resolution, and a single gate
        with pytest.raises(ValueError, match=one_resolution):
            Stage().keep(Scope(gates, 16, 8, gates), model, lambda m: 0.0)
    with pytest.raises(ValueError, match=r"one resolution \(\): it has no stages to cull$"):
        Stage().keep(Scope([], 16, 8, []), model, lambda m: 0.0)  # no gates at all
    missing = r"^--method stage measures each stage's criticality on the validation split: give evaluate$"
    with pytest.raises(ValueError, match=missing):
        Stage().keep(_scope(_prepared(Stage()), 100), model)


# -- penalties and schedules -----------------------------------------------------------------------


def test_snl_penalty_is_l1_of_the_masks_and_pulls_them_down():
    method = SNL(weight=1e-3)
    model = _prepared(method, granularity="channel")
    scope = _scope(model, 100)
    p = method.penalty(scope)
    want = 1e-3 * sum(float(s.module.gamma.detach().abs().sum()) * s.positions for s in scope.sites)
    assert float(p) == pytest.approx(want, rel=1e-6)
    p.backward()
    for s in scope.sites:  # a step of gradient descent lowers every positive mask
        assert bool((s.module.gamma.grad > 0).all())


def test_snl_lambda_grows_only_on_a_stall_after_its_warmup_and_the_search_stops_at_the_budget():
    method = SNL()
    model = _prepared(method)
    scope = _scope(model, TOTAL // 4)
    weights, stops = [], []
    for epoch in range(8):
        with torch.no_grad():
            if epoch == 6:  # the count drops: no growth
                next(iter(scope.sites)).module.gamma.zero_()
        stops.append(method.end_epoch(scope))
        weights.append(method.weight)
    lam = 1e-5
    want = [lam] * 5 + [lam * 1.1, lam * 1.1, lam * 1.1**2]
    assert weights == pytest.approx(want)
    assert not any(stops)
    for s in scope.sites:
        with torch.no_grad():
            s.module.gamma.zero_()  # every mask under the threshold
    assert method.end_epoch(scope)  # within the budget: cut now


def test_autorep_hinge_is_zero_within_the_budget_and_pulls_the_aux_down_above_it():
    method = AutoReP()
    model = _prepared(method)
    p = method.penalty(_scope(model, TOTAL))
    assert float(p) == 0.0
    scope = _scope(model, TOTAL // 2)
    p = method.penalty(scope)
    assert float(p) == pytest.approx(10.0 * 0.5, rel=1e-6)  # λ·(density − ½), every mask 1
    p.backward()
    for s in scope.sites:
        assert bool((s.module.gamma.grad > 0).all())  # descent lowers a: toward dropping


@pytest.mark.parametrize("name", ["snl", "autorep"])
def test_a_learned_method_search_lowers_its_count_in_the_trainer(name, data_dir, tmp_path):
    free = run(train_cfg(data_dir, tmp_path / "a", model="cnn", granularity="element", method=name,
                         budget=0.5, penalty=0.0, epochs=2, lr=0.01))  # fmt: skip
    held = run(train_cfg(data_dir, tmp_path / "b", model="cnn", granularity="element", method=name,
                         budget=0.5, penalty=1e-3 if name == "snl" else 1e3, epochs=2, lr=0.01))  # fmt: skip
    soft = [t.metrics["epochs"][0]["soft_relu_count"] for t in (free, held)]
    assert soft[1] < soft[0], soft


# -- the trainer: resume, validation only, refusals ------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_pickles(tmp_path_factory.mktemp("cifar"), n_per_batch=16, n_test=24)


@pytest.fixture(scope="module")
def relu_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("relu") / "run"
    run(train_cfg(data_dir, out, model="cnn", activation="relu", epochs=1))
    return out


def _cfg(data_dir, out, name, **kw):
    return train_cfg(data_dir, out, model="cnn", granularity="element", method=name, budget=0.25,
                     epochs=2, finetune_epochs=1, **kw)  # fmt: skip


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_trains_to_its_budget_and_resumes_bit_for_bit(name, data_dir, relu_run, tmp_path):
    kw = dict(init=str(relu_run), distill=True)
    if name == "autorep":  # a hinge strong enough that masks drop in the first epoch
        kw["penalty"] = 1e4
    straight = run(_cfg(data_dir, tmp_path / "a", name, **kw))
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["relu_count_after"] <= m["relu_budget"] == 86016 // 4
    assert m["relu_count_after"] == relu_count(straight.model, X)
    assert m["config"]["method"] == name
    learned = METHODS[name].learned
    assert m["cut_after_epoch"] == (2 if learned else 0) or name == "snl"
    phases = [e["phase"] for e in m["epochs"]]
    assert len(phases) == 3 and phases[-1] == "fine-tune"
    if not learned:
        assert phases == ["fine-tune"] * 3
    # interrupted in the second epoch, resumed: the same weights, gates and schedule bit for bit
    first = Trainer(_cfg(data_dir, tmp_path / "b", name, **kw), progress=False)
    real, calls = first.train_epoch, []

    def interrupted():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real()

    first.train_epoch = interrupted
    with pytest.raises(KeyboardInterrupt):
        first.run()
    assert load_checkpoint(tmp_path / "b")["epoch"] == 1
    if name == "autorep":  # the hysteresis state the resume must carry
        assert any(bool((m.mask == 0).any()) for _, m in alpha_layers(first.model))
    resumed = run(_cfg(data_dir, tmp_path / "b", name, **kw), resume=True)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert straight.metrics["test_acc"] == resumed.metrics["test_acc"]
    assert straight.budget.method.state_dict() == resumed.budget.method.state_dict()


def _counting(t: Trainer, batches, monkeypatch) -> list[int]:
    """The trainer's epoch counter at each pass over ``batches``."""
    reads, real = [], batches.epoch
    monkeypatch.setattr(batches, "epoch", lambda *a: reads.append(t.epoch) or real(*a))
    return reads


@pytest.mark.parametrize("name", sorted(METHODS))
def test_no_method_reads_the_test_set_before_the_run_ends(name, data_dir, relu_run, tmp_path, monkeypatch):
    t = Trainer(_cfg(data_dir, tmp_path / name, name, init=str(relu_run)), progress=False)
    test_reads = _counting(t, t.test_batches, monkeypatch)
    val_reads = _counting(t, t.val_batches, monkeypatch)
    t.run()
    assert test_reads and set(test_reads) == {t.cfg.total_epochs}, test_reads  # finish() alone
    if name == "stage":  # its criticality: validation passes before the first epoch
        assert val_reads.count(0) >= 3, val_reads


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(method="snl"), "--method snl cuts the network to a ReLU budget: give --budget"),
        (
            dict(method="snl", budget=0.5, granularity="layer"),
            "--granularity must be one of channel, element",
        ),
        (dict(method="autorep", budget=0.5, activation="relu"), "needs learnable gates"),
        (
            dict(method="snl", budget=0.5, granularity="element", fuse_bn=True),
            "--fuse-bn belongs to --method alpha",
        ),
        (
            dict(method="stage", budget=0.5, granularity="element", budget_kind="relu"),
            "--budget-kind belongs",
        ),
        (dict(method="random", budget=0.5, granularity="element", penalty=1.0), "learns no gates"),
        (dict(method="random", budget=0.5, granularity="element", gate_mode="l1"), "--gate-mode belongs"),
        (
            dict(method="snl", budget=0.5, granularity="element", nu_init=20.0, alpha_init=0.9),
            "--nu-init belongs",
        ),
        (dict(method="autorep", budget=0.5, granularity="element", alpha_init=0.5), "--alpha-init belongs"),
        (dict(method="nope"), "--method must be one of alpha, snl, autorep, stage, random"),
    ],
)
def test_method_flags_refused_by_name(kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        TrainConfig(data_dir=".", **kw)


def test_cli_refuses_stage_on_a_model_without_stages(tmp_path, capsys):
    from alphakern.cli import main

    data = write_pickles(tmp_path / "d", n_per_batch=8, n_test=8)
    code = main(["train", "--data-dir", str(data), "--out", str(tmp_path / "r"), "--model", "vit",
                 "--method", "stage", "--budget", "0.5", "--granularity", "feature", "--epochs", "1",
                 "--device", "cpu"])  # fmt: skip
    assert code != 0
    assert "--method stage culls whole stages" in capsys.readouterr().err


def test_methods_work_on_any_linearized_model():
    """SNL's and AutoReP's gates on a torchvision ResNet-18 (through linearize), cut to a budget."""
    import torchvision

    for name in ("snl", "autorep", "random"):
        torch.manual_seed(0)
        model = materialize(linearize(torchvision.models.resnet18(num_classes=10), granularity="channel"))
        method = make_method(name)
        method.prepare(model)
        kinds = {type(m) for _, m in alpha_layers(model)}
        assert kinds == ({METHODS[name].gate} if METHODS[name].gate else {AlphaReLU})
        total = relu_count(copy.deepcopy(model), X)
        scope = _scope(model, total // 3)
        model(torch.randn(2, 3, 32, 32)).sum().backward()  # a training step reaches every gate
        assert all(m.gamma.grad is not None for _, m in alpha_layers(model))
        keep = method.keep(scope, model)
        apply_keep(model, keep)
        assert relu_count(model, X) <= total // 3


# -- what a mutation run of the methods found untested ---------------------------------------------


@pytest.mark.parametrize("granularity", ["element", "channel"])
def test_snl_counts_and_keeps_masks_above_the_threshold_only_and_stops_at_exactly_the_budget(granularity):
    method = SNL()
    model = _prepared(method, granularity=granularity)
    scope = _scope(model, 0)
    first, *rest = scope.sites
    with torch.no_grad():
        first.module.gamma.fill_(1e-2)  # at the threshold: not counted (their ``alpha > threshold``)
        for s in rest:
            s.module.gamma.fill_(0.5)
    count = sum(s.relus for s in rest)
    assert method.count(scope) == count
    assert method.end_epoch(Scope(scope.sites, scope.total, count, scope.sites))  # at the budget: cut
    assert not method.end_epoch(Scope(scope.sites, scope.total, count - 1, scope.sites))
    keep = method.keep(Scope(scope.sites, scope.total, TOTAL, scope.sites), model)
    assert not keep[first.name].any() and all(keep[s.name].all() for s in rest)


def test_autorep_hinge_weighs_a_gate_by_the_positions_it_covers():
    """Channel gates: a mask covers H·W positions, so the density counts it that many times."""
    method = AutoReP()
    model = _prepared(method, granularity="channel")
    scope = _scope(model, TOTAL // 4)
    assert any(s.positions > 1 for s in scope.sites)
    with torch.no_grad():
        scope.sites[0].module.mask.zero_()  # 16·32·32 of the 34816 dropped
    density = (TOTAL - 16 * 32 * 32) / TOTAL
    assert float(method.penalty(scope).detach()) == pytest.approx(10.0 * (density - 0.25), rel=1e-6)


def test_stage_ranks_by_validation_not_forward_order_and_leaves_the_model_alone():
    """The 32² stage least critical here, and within it the second layer more critical than the
    first: the forward order would say the opposite. A budget that ends at a stage's edge thins no
    layer (no layer is measured); the network keyed by ``keep`` is a copy."""
    model = _prepared(Stage())
    names = [s.name for s in gate_sites(model, X)]
    before = copy.deepcopy(model.state_dict())
    seen = []

    def validation(m):
        linear = {n for n, mod in m.named_modules() if isinstance(mod, nn.Identity)}
        seen.append(linear)
        return 90.0 - 40.0 * (names[2] in linear) - 10.0 * (names[1] in linear) - 1.0 * (names[0] in linear)

    method = Stage()
    keep = method.keep(_scope(model, 8 * 16 * 16 + 100), model, validation)
    assert keep[names[2]].all() and not keep[names[0]].any() and int(keep[names[1]].sum()) == 100
    assert method.culled == [names[:2]]
    assert seen == [set(names[:2]), {names[2]}, {names[0]}, {names[1]}]
    assert all(isinstance(m, AlphaGate) for m in (model.get_submodule(n) for n in names))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    seen.clear()
    method = Stage()
    keep = method.keep(_scope(model, 8 * 16 * 16), model, validation)  # the 16² stage exactly
    assert keep[names[2]].all() and not keep[names[0]].any() and not keep[names[1]].any()
    assert method.culled == [names[:2]] and len(seen) == 2


def test_stage_keeps_the_most_critical_of_three_stages_and_leaves_an_eager_model_alone():
    """Gates nested in an eager model (no fx): measuring a stage must not touch the model."""

    def block(cin, stride):
        return nn.Sequential(nn.Conv2d(cin, 4, 3, stride, 1), AlphaReLU(granularity="element"))

    model = materialize(nn.Sequential(block(3, 1), block(4, 2), block(4, 2)), (1, 3, 8, 8))
    x = torch.zeros(1, 3, 8, 8)
    sites = gate_sites(model, x)
    names = [s.name for s in sites]
    assert names == ["0.1", "1.1", "2.1"] and [s.relus for s in sites] == [256, 64, 16]

    def validation(m):  # criticality: the 4² stage most, then 8², then 2²
        linear = {n for n, mod in m.named_modules() if isinstance(mod, nn.Identity)}
        return 90.0 - 30.0 * (names[1] in linear) - 20.0 * (names[0] in linear) - 10.0 * (names[2] in linear)

    keep = Stage().keep(Scope(sites, 336, 64, sites), model, validation)
    assert [int(keep[n].sum()) for n in names] == [0, 64, 0]
    keep = Stage().keep(Scope(sites, 336, 64 + 256, sites), model, validation)
    assert [int(keep[n].sum()) for n in names] == [256, 64, 0]
    assert all(isinstance(model.get_submodule(n), AlphaReLU) for n in names)


def test_alpha_keeps_rounded_without_a_budget_and_whole_units_with_them():
    from alphakern.graph.methods import Alpha

    torch.manual_seed(0)
    model = materialize(linearize(Small(), granularity="layer"))
    sites = gate_sites(model, X)
    names = [s.name for s in sites]
    with torch.no_grad():
        for s, g in zip(sites, (2.0, -2.0, 0.5), strict=True):  # α above, below, above ½ at ν = 1
            s.module.gamma.fill_(g)
            s.module.nu.fill_(50.0)
    keep = Alpha().keep(Scope(sites, TOTAL, None, sites), model)
    assert [bool(keep[n]) for n in names] == [True, False, True]
    units = [(names[0], names[1])]  # one unit: mean α ≈ ½, below the third gate's
    budget = sites[2].relus + sites[0].relus
    keep = Alpha(units=units).keep(Scope(sites, TOTAL, budget, sites), model)
    assert [bool(keep[n]) for n in names] == [False, False, True]  # the unit does not fit whole
    keep = Alpha(units=units).keep(Scope(sites, TOTAL, TOTAL, sites), model)
    assert all(bool(keep[n]) for n in names)


def test_autorep_weight_is_the_hinge_weight_and_its_cut_spends_the_budget_on_kept_elements():
    model = _prepared(AutoReP())
    scope = _scope(model, TOTAL // 2)
    assert float(AutoReP(weight=2.0).penalty(scope).detach()) == pytest.approx(2.0 * 0.5, rel=1e-6)
    sites = scope.sites
    with torch.no_grad():
        for s in sites:  # half the elements dropped, those with the LARGEST aux: the score must
            high = torch.rand(s.module.mask.shape) < 0.5  # still rank every kept element first
            s.module.mask.copy_((~high).float())
            s.module.gamma.copy_(torch.where(high, 5.0, -5.0))
    kept_masks = sum(int(s.module.mask.sum()) * s.positions for s in sites)
    budget = kept_masks // 2
    keep = AutoReP().keep(_scope(model, budget), model)
    assert sum(int(keep[s.name].sum()) for s in sites) == budget  # element gates land exactly


@pytest.mark.parametrize("method", [SNL, AutoReP])
def test_method_gates_keep_the_gates_backend_and_the_inputs_dtype(method):
    gate = method.gate.like(AlphaGate(granularity="layer", backend="cpu"))
    assert gate.backend == "cpu"
    assert set(dict(gate.named_buffers())) >= ({"mask"} if method is AutoReP else set())
    x = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16)
    assert gate(x).dtype == torch.bfloat16


def test_stage_sees_no_stages_in_token_features():
    """Gates on (tokens, features): an MLP's widths differ, but there is one resolution."""

    class TokenMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = nn.Linear(8, 32), nn.Linear(32, 8)

        def forward(self, x):
            return self.down(self.up(x).relu()).relu()

    x = torch.zeros(1, 5, 8)
    model = materialize(linearize(TokenMLP(), granularity="element"), (1, 5, 8))
    sites = gate_sites(model, x)
    assert [s.shape for s in sites] == [(5, 32), (5, 8)]
    assert len(stages(sites)) == 1
    from types import SimpleNamespace

    rows_halved = [SimpleNamespace(shape=(4, 8, 4)), SimpleNamespace(shape=(4, 4, 4))]  # a (2, 1) stride
    assert len(stages(rows_halved)) == 2
