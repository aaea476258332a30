"""The graph tools, fold and export given something other than a model or an example tensor: a
TypeError naming the argument and what it must be, before any work — not Python's AttributeError
from deep inside (nor, as ``unfuse_bn`` did, the object handed back unchanged)."""

import pytest
import torch
from torch import nn

import alphakern
from alphakern.graph.budget import discretize_to_budget, gate_sites

X = torch.zeros(2, 3, 8, 8)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())


# each entry point, called with ``bad`` in the place of one argument (named in the expected error)
MODEL_IN = {
    "linearize": lambda bad: alphakern.linearize(bad),
    "discretize": lambda bad: alphakern.discretize(bad),
    "apply_keep": lambda bad: alphakern.apply_keep(bad, {}),
    "fuse_bn": lambda bad: alphakern.fuse_bn(bad),
    "unfuse_bn": lambda bad: alphakern.unfuse_bn(bad),
    "relu_count": lambda bad: alphakern.relu_count(bad, X),
    "nonlinearity_count": lambda bad: alphakern.nonlinearity_count(bad, X),
    "layer_verdicts": lambda bad: alphakern.layer_verdicts(bad),
    "alpha_layers": lambda bad: alphakern.alpha_layers(bad),
    "materialize": lambda bad: alphakern.materialize(bad),
    "fold": lambda bad: alphakern.fold(bad, X),
    "fold_units": lambda bad: alphakern.fold_units(bad),
    "fold_padding": lambda bad: alphakern.fold_padding(bad),
    "export_onnx": lambda bad: alphakern.export_onnx(bad, X, "unwritten.onnx"),
    "discretize_to_budget": lambda bad: discretize_to_budget(bad, X, 1),
    "trace": lambda bad: alphakern.graph.trace(bad),
}

INPUT_IN = {
    "linearize": lambda bad: alphakern.linearize(_net(), example_input=bad),
    "relu_count": lambda bad: alphakern.relu_count(_net(), bad),
    "nonlinearity_count": lambda bad: alphakern.nonlinearity_count(_net(), bad),
    "materialize": lambda bad: alphakern.materialize(_net(), example_input=bad),
    "fold": lambda bad: alphakern.fold(_net(), bad),
    "export_onnx": lambda bad: alphakern.export_onnx(_net(), bad, "unwritten.onnx"),
    "gate_sites": lambda bad: gate_sites(alphakern.linearize(_net()), bad),
}


@pytest.mark.parametrize("bad", ["resnet18", None, {"weight": torch.zeros(1)}], ids=["str", "None", "dict"])
@pytest.mark.parametrize("entry", list(MODEL_IN))
def test_model_not_a_module(entry, bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # export_onnx must not write; if it did, here
    with pytest.raises(TypeError, match=rf"^model must be a torch\.nn\.Module, got {type(bad).__name__}$"):
        MODEL_IN[entry](bad)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("bad", [[[0.0] * 8] * 8, X.numpy()], ids=["list", "ndarray"])
@pytest.mark.parametrize("entry", list(INPUT_IN))
def test_example_input_not_a_tensor(entry, bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = rf"^example_input must be a torch\.Tensor, got {type(bad).__name__}$"
    with pytest.raises(TypeError, match=expected):
        INPUT_IN[entry](bad)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("which", ["before", "after", "x"])
def test_fold_report_names_its_argument(which):
    args = {"before": _net(), "after": _net(), "x": X} | {which: "not this"}
    expected = "torch.Tensor" if which == "x" else r"torch\.nn\.Module"
    with pytest.raises(TypeError, match=rf"^{which} must be a {expected}, got str$"):
        alphakern.fold_report(**args)


def test_apply_keep_wants_a_dict():
    with pytest.raises(TypeError, match="keep must be a dict of gate name to tensor, got list"):
        alphakern.apply_keep(alphakern.linearize(_net()), [1.0])
