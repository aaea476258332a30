"""linearize, nonlinearity_count and discretize for the activations beyond ReLU, on torchvision's
own MobileNetV2 (ReLU6) and EfficientNet-B0 (SiLU; its squeeze-excitation's sigmoid is no gate),
and every module / functional / in-place form of each kind."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn

from alphakern import (
    AlphaReLU,
    alpha_layers,
    discretize,
    linearize,
    nonlinearity_count,
    relu_count,
)
from alphakern.modules import FixedGate
from tests.utils import set_alpha


def _applications(model, x, kinds) -> int:
    """Output positions per sample of every call of an activation module of ``kinds``."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o[0].numel()))
             for m in model.modules() if isinstance(m, kinds)]  # fmt: skip
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return len(seen), sum(seen)


@pytest.mark.parametrize(
    ("name", "module", "kind"),
    [("mobilenet_v2", nn.ReLU6, "relu6"), ("efficientnet_b0", nn.SiLU, "silu")],
)
def test_torchvision_models_get_one_gate_per_application_and_alpha_one_is_the_model(name, module, kind):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    calls, positions = _applications(model, x, module)
    with pytest.warns(UserWarning, match="left as they are") if kind == "silu" else _no_warning():
        lin = linearize(model, granularity="channel").eval()
    gates = alpha_layers(lin)
    assert len(gates) == calls and all(g.act.kind == kind for _, g in gates)
    assert nonlinearity_count(model, x) == {kind: positions}
    lin(x)
    set_alpha(lin, 1)
    with torch.no_grad():
        assert torch.equal(lin(x), model(x))
    assert nonlinearity_count(lin, x) == {kind: positions} and relu_count(lin, x) == 0
    exact = discretize(lin)
    assert sum(isinstance(m, module) for m in exact.modules()) == calls
    set_alpha(lin, 0)
    assert nonlinearity_count(lin, x) == {}
    assert not any(isinstance(m, module) for m in discretize(lin).modules())


class _no_warning:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


class EveryForm(nn.Module):
    """Each kind as a module, a functional call and an in-place call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.mods = nn.ModuleList(
            [nn.ReLU6(inplace=True), nn.Hardtanh(0.0, 6.0), nn.LeakyReLU(0.1), nn.GELU(approximate="tanh"),
             nn.SiLU(), nn.Hardswish(), nn.ReLU()]
        )  # fmt: skip

    def forward(self, x):
        x = self.conv(x)
        for m in self.mods:
            x = m(x)
        x = F.relu6(x)
        x = F.hardtanh(x, 0.0, 6.0)
        x = F.hardtanh(x, -1.0, 1.0)  # a clamp, not ReLU6: no gate
        x = F.leaky_relu(x, negative_slope=0.3)
        x = F.gelu(x)
        x = F.silu(x, inplace=True)
        x = F.hardswish(x)
        return x * 2


def test_every_form_of_every_kind_is_gated_with_its_parameters():
    torch.manual_seed(0)
    model = EveryForm().eval()
    x = torch.randn(2, 3, 5, 5)
    lin = linearize(model).eval()
    acts = [str(m.act) for _, m in alpha_layers(lin)]
    assert acts == ["relu6", "relu6", "leaky_relu(0.1)", "gelu_tanh", "silu", "hardswish", "relu",
                    "relu6", "relu6", "leaky_relu(0.3)", "gelu", "silu", "hardswish"]  # fmt: skip
    assert isinstance(alpha_layers(lin)[6][1], AlphaReLU)
    per = 4 * 5 * 5
    want = {"relu": per, "relu6": 4 * per, "leaky_relu": 2 * per, "gelu": 2 * per, "silu": 2 * per}
    assert nonlinearity_count(model, x) == {**want, "hardswish": 2 * per}
    set_alpha(lin, 1)
    with torch.no_grad():
        # the default backend (the native CPU kernels where built): f within fp32 rounding
        torch.testing.assert_close(lin(x), model(x), rtol=1e-5, atol=1e-6)
        # the torch backend blends PyTorch's own f: exactly the model
        exact = linearize(model, backend="torch").eval()
        set_alpha(exact, 1)
        torch.testing.assert_close(exact(x), model(x), rtol=0, atol=0)
    only = linearize(model, activations=("gelu",))
    assert [str(m.act) for _, m in alpha_layers(only)] == ["gelu_tanh", "gelu"]


def _mixed_channel_gates(act: nn.Module, x: torch.Tensor, **kw):
    """conv → act linearised with channel gates whose channels 0 and 2 are kept (α = 1) and 1
    and 3 linear (α = 0): (the gated model, its discretised copy)."""
    torch.manual_seed(0)
    lin = linearize(nn.Sequential(nn.Conv2d(3, 4, 1), act), granularity="channel", **kw).eval()
    lin(x)
    _, g = alpha_layers(lin)[0]
    with torch.no_grad():
        g.gamma.copy_(torch.tensor([10.0, -10.0, 10.0, -10.0]))
        g.nu.fill_(1e4)
    return lin, discretize(lin)


def test_mixed_channel_decisions_become_a_fixed_gate_exact_per_channel():
    x = torch.randn(2, 3, 5, 5)
    lin, exact = _mixed_channel_gates(nn.SiLU(), x)
    fixed = [m for m in exact.modules() if isinstance(m, FixedGate)]
    assert len(fixed) == 1 and fixed[0].weight.tolist() == [1.0, 0.0, 1.0, 0.0]
    with torch.no_grad():
        torch.testing.assert_close(exact(x), lin(x), rtol=0, atol=0)
    assert nonlinearity_count(exact, x) == {"silu": 2 * 25} == nonlinearity_count(lin, x)


def test_bad_kind_is_named():
    with pytest.raises(ValueError, match=r"activations must name kinds from \[.*\], got 'tanh'"):
        linearize(nn.Sequential(nn.ReLU()), activations=("tanh",))


def test_mobilenet_v2_cifar_port_and_a_budget_over_relu6(tmp_path):
    """The trainer's --model mobilenet_v2: torchvision's with stride 1 in the stem and the first
    stride-2 block (4×4 at the last stage); a budget run counts its ReLU6s (the sum over kinds),
    meets the budget and reports the counts per kind."""
    import json

    from alphakern.cifar_nets import relu_network
    from alphakern.train.report import format_relus
    from tests.cifar_fixtures import write_pickles
    from tests.train_helpers import run, train_cfg

    net = relu_network("mobilenet_v2").eval()
    x = torch.randn(2, 3, 32, 32)
    shapes = []
    net.features[-1].register_forward_hook(lambda m, i, o: shapes.append(o.shape[-2:]))
    net(x)
    assert shapes == [torch.Size([4, 4])]
    total = nonlinearity_count(net, x)
    assert list(total) == ["relu6"] and relu_count(net, x) == 0

    data = write_pickles(tmp_path / "data", n_per_batch=8, n_test=8)
    c = train_cfg(data, tmp_path / "o", model="mobilenet_v2", granularity="channel", budget=0.5,
                  epochs=1, finetune_epochs=1, batch_size=8)  # fmt: skip
    t = run(c)
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["nonlinearities_before"] == total and m["relu_count_before"] == total["relu6"]
    assert m["relu_budget"] == total["relu6"] // 2
    assert 0 < m["relu_count_after"] <= m["relu_budget"]
    assert m["nonlinearities_after"] == nonlinearity_count(t.model, x) == {"relu6": m["relu_count_after"]}
    assert len(m["relu_layers"]) == 35  # stem, two per inverted-residual block but the first, last conv
    assert "relu6 " + str(total["relu6"]) + " before" in format_relus(m)


def test_efficientnet_b0_cifar_port_trains_to_a_silu_budget(tmp_path):
    """The trainer's --model efficientnet_b0: torchvision's with stride 1 in the stem and the first
    stride-2 block (4×4 at the last stage), its 49 SiLUs gated; a --budget-kind silu run cuts the
    SiLUs to the budget and reports them."""
    import json

    from alphakern.cifar_nets import relu_network
    from tests.cifar_fixtures import write_pickles
    from tests.train_helpers import run, train_cfg

    net = relu_network("efficientnet_b0").eval()
    x = torch.randn(2, 3, 32, 32)
    shapes = []
    net.features[-1].register_forward_hook(lambda m, i, o: shapes.append(o.shape[-2:]))
    net(x)
    assert shapes == [torch.Size([4, 4])]
    total = nonlinearity_count(net, x)
    assert list(total) == ["silu"]

    data = write_pickles(tmp_path / "data", n_per_batch=4, n_test=4)
    c = train_cfg(data, tmp_path / "o", model="efficientnet_b0", granularity="channel", budget=0.25,
                  budget_kind="silu", epochs=1, finetune_epochs=1, batch_size=8)  # fmt: skip
    t = run(c)
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["nonlinearities_before"] == total and m["relu_budget"] == total["silu"] // 4
    assert 0 < m["relu_count_after"] <= m["relu_budget"]
    assert m["nonlinearities_after"] == nonlinearity_count(t.model, x) == {"silu": m["relu_count_after"]}
    assert len(m["relu_layers"]) == 49


# One row per activation module linearize gates: (module, its kind in the counts, what α = 1 must
# give back after discretize: that module's class with the same parameters)
ROWS = [
    (nn.ReLU(), "relu"),
    (nn.ReLU6(), "relu6"),
    (nn.Hardtanh(0.0, 6.0), "relu6"),
    (nn.LeakyReLU(0.1), "leaky_relu"),
    (nn.LeakyReLU(0.3), "leaky_relu"),
    (nn.GELU(), "gelu"),
    (nn.GELU(approximate="tanh"), "gelu"),
    (nn.SiLU(), "silu"),
    (nn.Hardswish(), "hardswish"),
]


def _params(m: nn.Module) -> dict:
    """What an activation module computes besides its class (Hardtanh(0, 6) is ReLU6's)."""
    keys = ("negative_slope", "approximate", "min_val", "max_val")
    return {k: getattr(m, k) for k in keys if hasattr(m, k)}


@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("act,kind", ROWS, ids=[f"{type(m).__name__}{_params(m)}" for m, _ in ROWS])
def test_every_row_counts_and_discretizes_to_its_own_module(act, kind, granularity):
    """Per row: the count of the model, of its gated form at α = 1 and of the discretised form are
    the same number under the row's kind; α = 1 discretises to the row's class with its parameters
    (a LeakyReLU keeps its slope) and computes the model exactly; α = 0 counts nothing and is
    the identity."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), act).eval()
    x = torch.randn(2, 3, 5, 5) * 4
    per = 4 * 5 * 5
    assert nonlinearity_count(model, x) == {kind: per}
    lin = linearize(model, granularity=granularity, backend="torch").eval()
    lin(x)
    set_alpha(lin, 1)
    assert nonlinearity_count(lin, x) == {kind: per}
    exact = discretize(lin)
    (got,) = [m for m in exact.modules() if not isinstance(m, (nn.Sequential, nn.Conv2d, fx.GraphModule))]
    want = nn.ReLU6() if isinstance(act, nn.Hardtanh) else act
    assert type(got) is type(want) and _params(got) == _params(want), (got, want)
    assert nonlinearity_count(exact, x) == {kind: per}
    with torch.no_grad():
        assert torch.equal(exact(x), model(x)) and torch.equal(lin(x), model(x))
    set_alpha(lin, 0)
    assert nonlinearity_count(lin, x) == {} == nonlinearity_count(discretize(lin), x)
    with torch.no_grad():
        assert torch.equal(discretize(lin)(x), model[0](x))


@pytest.mark.parametrize("act", [m for m, _ in ROWS if not isinstance(m, nn.Hardtanh)], ids=str)
def test_mixed_channel_gates_of_every_row_are_exact_per_channel(act):
    """Channels 0 and 2 kept, 1 and 3 linear: a fixed gate computing f (with its parameters) on
    the kept channels and the identity on the others, counted under the row's kind."""
    x = torch.randn(2, 3, 5, 5) * 4
    lin, exact = _mixed_channel_gates(act, x, backend="torch")
    with torch.no_grad():
        h = lin.get_submodule("0")(x)
        want = torch.where(torch.tensor([True, False, True, False]).view(1, 4, 1, 1), act(h.clone()), h)
        assert torch.equal(exact(x), want)
    kind = ROWS[[type(m) for m, _ in ROWS].index(type(act))][1]
    assert nonlinearity_count(exact, x) == {kind: 2 * 25}


class _InPlaceUnused(nn.Module):
    """An in-place activation whose result is dropped: only the mutation of h carries it on."""

    def __init__(self, call) -> None:
        super().__init__()
        self.conv, self.call = nn.Conv2d(3, 4, 1), call

    def forward(self, x):
        h = self.conv(x)
        self.call(h)
        return h * 2


IN_PLACE = [
    ("F.relu(inplace=True)", lambda h: F.relu(h, inplace=True), "relu"),
    ("F.relu6(inplace=True)", lambda h: F.relu6(h, inplace=True), "relu6"),
    ("F.hardtanh(0, 6, inplace=True)", lambda h: F.hardtanh(h, 0.0, 6.0, inplace=True), "relu6"),
    ("F.leaky_relu(0.2, inplace=True)", lambda h: F.leaky_relu(h, 0.2, inplace=True), "leaky_relu(0.2)"),
    ("F.silu(inplace=True)", lambda h: F.silu(h, inplace=True), "silu"),
    ("F.hardswish(inplace=True)", lambda h: F.hardswish(h, inplace=True), "hardswish"),
    ("F.relu(h, True)", lambda h: F.relu(h, True), "relu"),  # by position (F.relu passes it on as a keyword)
    ("F.silu(h, True)", lambda h: F.silu(h, True), "silu"),
    ("F.hardswish(h, True)", lambda h: F.hardswish(h, True), "hardswish"),
    ("F.leaky_relu(h, 0.2, True)", lambda h: F.leaky_relu(h, 0.2, True), "leaky_relu(0.2)"),
    ("torch.relu_", torch.relu_, "relu"),
    ("F.relu_", F.relu_, "relu"),
    ("F.leaky_relu_", lambda h: F.leaky_relu_(h, 0.2), "leaky_relu(0.2)"),
    ("Tensor.relu_", lambda h: h.relu_(), "relu"),
    ("nn.ReLU(inplace=True)", nn.ReLU(inplace=True), "relu"),
    ("nn.ReLU6(inplace=True)", nn.ReLU6(inplace=True), "relu6"),
    ("nn.LeakyReLU(0.2, inplace=True)", nn.LeakyReLU(0.2, inplace=True), "leaky_relu(0.2)"),
    ("nn.SiLU(inplace=True)", nn.SiLU(inplace=True), "silu"),
    ("nn.Hardswish(inplace=True)", nn.Hardswish(inplace=True), "hardswish"),
]


@pytest.mark.parametrize("call,act", [(c, a) for _, c, a in IN_PLACE], ids=[i for i, _, _ in IN_PLACE])
def test_every_in_place_form_is_gated_even_when_its_result_is_unused(call, act):
    """Every in-place form, keyword or positional, module or function, gets its gate, and the later
    reads of the mutated tensor read the gate: α = 1 is the model exactly, α = 0 the identity."""
    torch.manual_seed(0)
    model = _InPlaceUnused(call).eval()
    x = torch.randn(2, 3, 5, 5) * 4
    lin = linearize(model, backend="torch").eval()
    assert [str(m.act) for _, m in alpha_layers(lin)] == [act]
    set_alpha(lin, 1)
    with torch.no_grad():
        assert torch.equal(lin(x), model(x))
        set_alpha(lin, 0)
        assert torch.equal(lin(x), model.conv(x) * 2)
