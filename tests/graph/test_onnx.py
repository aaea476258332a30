"""ONNX export of discretised and folded networks, run in onnxruntime against PyTorch."""

from __future__ import annotations

import pytest
import torch

import alphakern
from alphakern.cifar_nets import relu_network
from alphakern.data import probe
from alphakern.graph import discretize
from alphakern.onnx_export import export_onnx

ort = pytest.importorskip("onnxruntime", reason="the onnx extra (pip install onnx onnxscript onnxruntime)")
pytest.importorskip("onnxscript", reason="the onnx extra (pip install onnx onnxscript onnxruntime)")


def _run(path, x: torch.Tensor) -> torch.Tensor:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0])


def _discretised(granularity: str, seed: int = 0):
    """ResNet-20 with random exact gates: every second block's gates linear, the rest ReLUs
    (channel gates: a mixed pattern per channel, so FixedSlopeReLU modules)."""
    torch.manual_seed(seed)
    m = alphakern.linearize(relu_network("resnet20"), granularity=granularity)
    from alphakern.modules import materialize

    materialize(m)
    for i, (_, g) in enumerate(alphakern.alpha_layers(m)):
        with torch.no_grad():
            g.nu.fill_(1e4)
            g.gamma.copy_(torch.where(torch.rand_like(g.gamma) < 0.5, -1.0, 1.0) if i % 2 else 1.0)
    for mod in m.modules():  # BN statistics that are not the identity
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5), mod.running_var.uniform_(0.5, 2)
    return discretize(m).eval()


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_folded_and_unfolded_models_run_in_onnxruntime_as_in_pytorch(tmp_path, granularity):
    exact = _discretised(granularity)
    x = torch.randn(1, 3, 32, 32)
    folded = alphakern.fold(exact, x, policy="all")
    for name, model in (("unfolded", exact), ("folded", folded)):
        path = export_onnx(model, x, tmp_path / f"{name}.onnx")
        assert path.exists() and not list(path.parent.glob(f".{path.name}.*.tmp"))
        for batch in (1, 5):  # the batch dimension is dynamic
            xb = torch.randn(batch, 3, 32, 32)
            with torch.no_grad():
                want = model(xb)
            got = _run(path, xb)
            scale = want.abs().max()
            assert got.shape == want.shape
            assert (got - want).abs().max() <= 1e-5 * scale, (name, batch)


def test_learnable_gates_are_refused_by_name(tmp_path):
    m = alphakern.linearize(relu_network("resnet20"))
    with pytest.raises(ValueError, match=r"learnable gates have no ONNX form: relu, layers\.0\.relu"):
        export_onnx(m, probe(), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="example_input must be a tensor, got list"):
        export_onnx(discretize(m), [1], tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
