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
    with pytest.raises(TypeError, match="example_input must be a torch.Tensor, got list"):
        export_onnx(discretize(m), [1], tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def _mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).eval()


def _data_files(path) -> list:
    return sorted(p.name for p in path.parent.iterdir() if p.name.endswith(".data"))


def _runs_as(path, model) -> bool:
    x = torch.randn(3, 64)
    with torch.no_grad():
        return bool((_run(path, x) - model(x)).abs().max() <= 1e-5)


def test_external_data_each_export_a_new_file_and_the_replaced_one_removed(tmp_path):
    """The weights in a data file beside the ONNX file: a new one for each export (the ONNX file
    renamed into place is the commit), the one the replaced ONNX file named removed after it;
    inline again, none left. A data file that export_onnx did not name so is never removed, though
    the file it replaces names it."""
    path = tmp_path / "m.onnx"
    first, second = _mlp(0), _mlp(1)
    program = torch.onnx.export(first, (torch.randn(2, 64),), dynamo=True, verbose=False)
    program.save(path, external_data=True)  # torch's own: m.onnx.data, not ours to remove
    theirs = (tmp_path / "m.onnx.data").read_bytes()
    export_onnx(first, torch.randn(1, 64), path, external_data=True)
    (one,) = [n for n in _data_files(path) if n != "m.onnx.data"]
    assert _runs_as(path, first) and path.stat().st_size < 10_000  # the weights are not inline
    export_onnx(second, torch.randn(1, 64), path, external_data=True)
    (two,) = [n for n in _data_files(path) if n != "m.onnx.data"]
    assert two != one and _runs_as(path, second)
    export_onnx(first, torch.randn(1, 64), path)  # small: inline by default
    assert _data_files(path) == ["m.onnx.data"] and _runs_as(path, first)
    assert (tmp_path / "m.onnx.data").read_bytes() == theirs


def test_external_data_by_default_above_the_size(tmp_path, monkeypatch):
    from alphakern import onnx_export

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 1000)
    path = export_onnx(_mlp(0), torch.randn(1, 64), tmp_path / "m.onnx")
    assert len(_data_files(path)) == 1 and _runs_as(path, _mlp(0))


def test_an_export_that_fails_leaves_the_old_files_as_they_were(tmp_path, monkeypatch):
    import onnx_ir

    path = export_onnx(_mlp(0), torch.randn(1, 64), tmp_path / "m.onnx", external_data=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    save = onnx_ir.save

    def full_disk(model, dest, **kw):  # the data written, then the ONNX file fails
        save(model, dest, **kw)
        raise OSError("No space left on device")

    monkeypatch.setattr(onnx_ir, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        export_onnx(_mlp(1), torch.randn(1, 64), path, external_data=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert _runs_as(path, _mlp(0))


def test_a_data_file_the_replaced_file_names_is_kept_unless_ours(tmp_path):
    """The replaced ONNX file (torch's own save) names m.onnx.data while a data file of ours lies
    beside it (an export before that one): neither is removed — only a data file both of our naming
    and named by the replaced file is."""
    path = export_onnx(_mlp(0), torch.randn(1, 64), tmp_path / "m.onnx", external_data=True)
    (ours,) = _data_files(path)
    torch.onnx.export(_mlp(1), (torch.randn(2, 64),), dynamo=True, verbose=False).save(
        path, external_data=True
    )
    theirs = (tmp_path / "m.onnx.data").read_bytes()
    export_onnx(_mlp(0), torch.randn(1, 64), path)
    assert _data_files(path) == sorted(["m.onnx.data", ours])
    assert (tmp_path / "m.onnx.data").read_bytes() == theirs and _runs_as(path, _mlp(0))


def test_a_save_that_fails_before_writing_anything_raises_its_own_error(tmp_path, monkeypatch):
    import onnx_ir

    def no_space(model, dest, **kw):
        raise OSError("No space left on device")

    monkeypatch.setattr(onnx_ir, "save", no_space)
    with pytest.raises(OSError, match="No space left"):  # not the clean-up's FileNotFoundError
        export_onnx(_mlp(0), torch.randn(1, 64), tmp_path / "m.onnx", external_data=True)
    assert list(tmp_path.iterdir()) == []
