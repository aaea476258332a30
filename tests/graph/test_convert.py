"""linearize (torch.fx rewrite of every ReLU application) and relu_count."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alphakern
from alphakern import AlphaReLU, alpha_layers, linearize, relu_count
from tests.utils import set_alpha

torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.filterwarnings("ignore:linearize. left as they are")  # Mixed's GELU, tested once


class Mixed(nn.Module):
    """Every way of writing a ReLU: a module called twice, F.relu, torch.relu, Tensor.relu, an
    in-place module and Tensor.relu_ whose results are not used (the code reads the mutated
    tensors), and a GELU that must stay a GELU. 7 ReLU applications of 4 channels each."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.relu_inplace = nn.ReLU(inplace=True)
        self.gelu = nn.GELU()

    def forward(self, x):
        x = self.conv(x)
        a, b = self.relu(x), self.relu(x + 1)
        c, d, e = F.relu(x - 1), torch.relu(x * 2), (x - 2).relu()
        y = x * 3
        self.relu_inplace(y)
        w = x * 4
        w.relu_()
        return a + b + c + d + e + (y + 0) + w + self.gelu(x)


class _NoReLU(torch.overrides.TorchFunctionMode):
    """The same network with every ReLU the identity: an oracle independent of linearize."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (F.relu, torch.relu, torch.Tensor.relu, torch.relu_, torch.Tensor.relu_, F.relu_):
            return args[0]
        return func(*args, **(kwargs or {}))


def test_resnet18_gets_17_gates_none_shared_and_the_original_is_untouched():
    model = torchvision.models.resnet18(num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lin = linearize(model)
    gates = alpha_layers(lin)
    assert len(gates) == 17 and len({id(m) for _, m in gates}) == 17
    assert [n for n, _ in gates][:3] == ["relu", "layer1.0.relu", "layer1.0.relu_1"]  # forward order
    assert not any(isinstance(m, AlphaReLU) for m in model.modules())
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 9
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(isinstance(m, nn.ReLU) for m in lin.modules())


def test_every_relu_application_is_gated_and_other_activations_are_listed():
    with pytest.warns(UserWarning, match=r"left as they are \(not gated\): gelu \(GELU\)"):
        lin = linearize(Mixed(), activations=("relu",))
    assert len(alpha_layers(lin)) == 7
    assert any(isinstance(m, nn.GELU) for m in lin.modules())


@pytest.mark.parametrize("granularity", ["layer", "channel", "element"])
def test_alpha_one_is_the_relu_network_and_alpha_zero_the_relu_free_one(granularity):
    torch.manual_seed(0)
    model, x = Mixed().eval(), torch.randn(2, 3, 8, 8)
    lin = linearize(model, activations=("relu",), granularity=granularity).eval()
    lin(x)  # gates per channel/element come into being at the first forward
    set_alpha(lin, 1)
    torch.testing.assert_close(lin(x), model(x), rtol=0, atol=0)
    set_alpha(lin, 0)
    with _NoReLU():
        expected = model(x)
    torch.testing.assert_close(lin(x), expected, rtol=0, atol=0)


def test_relu_count():
    x = torch.randn(2, 3, 8, 8)
    model = Mixed()
    assert relu_count(model, x) == 7 * 4 * 8 * 8  # per sample: 7 applications × (4, 8, 8)
    lin = linearize(model, activations=("relu",), granularity="channel")
    assert relu_count(lin, x) == 7 * 4 * 8 * 8  # fresh gates: α = ½, all kept
    lin(x)
    set_alpha(lin, 0)
    assert relu_count(lin, x) == 0
    _, first = alpha_layers(lin)[0]
    with torch.no_grad():
        first.gamma[1:].fill_(10.0)  # 3 of the first gate's 4 channels back to ReLUs
    assert relu_count(lin, x) == 3 * 8 * 8
    nu = [m.nu.clone() for _, m in alpha_layers(lin)]
    assert all(torch.equal(a, m.nu) for a, (_, m) in zip(nu, alpha_layers(lin), strict=True))  # ν kept


def test_resnet18_relu_count_matches_forward_hooks():
    model = torchvision.models.resnet18(num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    hooked = []
    handles = [m.register_forward_hook(lambda m, i, o: hooked.append(o[0].numel())) for m in model.modules()
               if isinstance(m, nn.ReLU)]  # fmt: skip
    model.eval()(x)
    for h in handles:
        h.remove()
    assert relu_count(model, x) == sum(hooked) == relu_count(linearize(model), x)


def test_untraceable_model_falls_back_to_module_swap_with_a_warning():
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(x) if x.sum() > 0 else F.relu(-x)

    with pytest.warns(
        UserWarning, match="could not trace.*swapped the activation modules instead \\(relu\\)"
    ):
        lin = linearize(DataDependent())
    assert isinstance(lin.relu, AlphaReLU)


def test_bad_granularity_is_refused():
    with pytest.raises(ValueError, match="granularity must be one of"):
        linearize(Mixed(), granularity="row")


def test_public_api():
    assert alphakern.linearize is linearize and alphakern.relu_count is relu_count


@pytest.mark.parametrize(
    "name,gates",
    [("resnet20", 19), ("resnet18", 17), ("vgg11_bn", 8), ("mobilenet_v2", 35)],
    ids=["resnet20", "resnet18", "vgg11_bn", "mobilenet_v2"],
)
def test_each_model_trains_linearized_and_resumes(name, gates, tmp_path):
    """Built with ReLUs, passed through linearize by the trainer; one epoch, then resumed to two."""
    from alphakern.cli import main
    from tests.cifar_fixtures import write_pickles

    data = write_pickles(tmp_path / "data", n_per_batch=8, n_test=8)
    out = tmp_path / name
    # --gates: the spelling of --granularity
    flags = ["--data-dir", str(data), "--model", name, "--gates", "channel", "--device", "cpu"]
    assert main(["train", *flags, "--out", str(out), "--epochs", "1", "--batch-size", "8"]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    m = __import__("json").loads((out / "metrics.json").read_text())
    assert len(m["epochs"]) == 2 and m["config"]["model"] == name
    assert len(m["history"]["layers"]) == gates == len(m["report"]["layers"])


def test_relu_network_names_are_checked():
    from alphakern.cifar_nets import relu_network
    from alphakern.train import TrainConfig

    with pytest.raises(
        ValueError, match="model must be one of cnn, resnet20, resnet18, vgg11_bn, mobilenet_v2"
    ):
        relu_network("resnet50")
    with pytest.raises(
        ValueError, match="--model must be one of cnn, resnet20, resnet18, vgg11_bn, mobilenet_v2"
    ):
        TrainConfig(model="resnet50")
    with pytest.raises(ValueError, match="--head must be logits for --model resnet20"):
        TrainConfig(model="resnet20", head="softmax")
