"""The trainer end to end on tiny synthetic data: outputs, resume, interruption, NaN, report, CLI."""

import json

import pytest
import torch

import alphakern.train as train_mod
from alphakern import discretize
from alphakern.cli import main
from alphakern.complexity import layer_verdicts, verdict
from alphakern.models import AlphaCNN
from alphakern.modules import alpha_layers
from alphakern.train import TrainConfig, Trainer
from tests.cifar_fixtures import write_folder, write_pickles


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_pickles(tmp_path_factory.mktemp("cifar"), n_per_batch=24, n_test=40)


def cfg(data_dir, out, **kw):
    base = dict(data_dir=str(data_dir), out=str(out), epochs=2, batch_size=16, device="cpu", log_every=3)
    return TrainConfig(**{**base, **kw})


def run(c, resume=False):
    t = Trainer(c, progress=False)
    if resume:
        t.load()
    t.run()
    return t


def test_end_to_end_outputs(data_dir, tmp_path):
    t = run(cfg(data_dir, tmp_path / "run", head="softmax"))
    out = tmp_path / "run"
    for name in ("metrics.json", "training_validation_metrics.png", "alpha_evolution.png", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["head"] == "softmax" and len(m["epochs"]) == 2
    for e in m["epochs"]:
        assert {"train_loss", "train_acc", "val_loss", "val_acc", "images_per_s"} <= set(e)
    steps = 2 * len(t.train_batches)  # 96 training images (80% of 120) at batch 16
    assert len(m["history"]["alpha"]) == steps and len(m["history"]["alpha"][0]) == 3
    assert (
        0 <= m["test_acc"] <= 100
        and m["report"]["counts"]["undecided"]
        + m["report"]["counts"]["non-linear"]
        + m["report"]["counts"]["linear"]
        == 3
    )
    # ν advanced once per training step and matches the history's last row
    nus = [float(m_.nu) for _, m_ in alpha_layers(t.model)]
    assert nus == pytest.approx([0.01 * steps] * 3)
    assert t.nu_hist[-1].tolist() == pytest.approx(nus)


def test_resume_continues_bit_for_bit(data_dir, tmp_path):
    straight = run(cfg(data_dir, tmp_path / "a"))
    run(cfg(data_dir, tmp_path / "b", epochs=1))
    resumed = run(cfg(data_dir, tmp_path / "b", epochs=2), resume=True)
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert torch.equal(straight.gamma_hist, resumed.gamma_hist)
    ea, eb = straight.metrics["epochs"], resumed.metrics["epochs"]
    assert [e["train_loss"] for e in ea] == [e["train_loss"] for e in eb]
    assert straight.metrics["test_acc"] == resumed.metrics["test_acc"]


def test_interrupted_run_keeps_last_epoch_and_resumes(data_dir, tmp_path, monkeypatch):
    straight = run(cfg(data_dir, tmp_path / "a"))
    c = cfg(data_dir, tmp_path / "b")
    t = Trainer(c, progress=False)
    calls = {"n": 0}
    real_step = t.optimizer.step

    def step_then_interrupt(*a, **k):
        calls["n"] += 1
        if calls["n"] == len(t.train_batches) + 2:  # two steps into epoch 2
            raise KeyboardInterrupt
        return real_step(*a, **k)

    monkeypatch.setattr(t.optimizer, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        t.run()
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 1
    resumed = run(c, resume=True)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_non_finite_loss_stops_and_keeps_checkpoint(data_dir, tmp_path, monkeypatch):
    real_loss = train_mod._loss
    state = {"epoch": None}

    def loss(out, y):
        value = real_loss(out, y)
        return value * float("nan") if state["epoch"] == 1 else value

    monkeypatch.setattr(train_mod, "_loss", loss)
    t = Trainer(cfg(data_dir, tmp_path / "r"), progress=False)
    real_train_epoch = t.train_epoch

    def train_epoch():
        state["epoch"] = t.epoch
        return real_train_epoch()

    t.train_epoch = train_epoch
    with pytest.raises(train_mod.NonFiniteLoss, match="became nan in epoch 2"):
        t.run()
    assert torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)["epoch"] == 1


def test_cli_train_report_and_resume(data_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        "train",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--limit-train",
        "48",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Complexity report" in text and "test accuracy" in text
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["epochs"]) == 2 and m["config"]["limit_train"] == 48
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "effective non-linearities" in text and "after discretising" in text


def test_cli_missing_data(tmp_path, capsys):
    assert (
        main(["train", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--device", "cpu"])
        == 2
    )
    assert "No CIFAR-10 found" in capsys.readouterr().err


def test_folder_layout_trains(tmp_path):
    d = write_folder(tmp_path / "imgs", n_train=40, n_test=20)
    t = run(cfg(d, tmp_path / "r", epochs=1))
    assert len(t.metrics["epochs"]) == 1


def test_eager_and_fused_activations_train_alike(data_dir, tmp_path):
    fused = run(cfg(data_dir, tmp_path / "f", epochs=1, activation="alpha"))
    eager = run(cfg(data_dir, tmp_path / "e", epochs=1, activation="alpha-eager"))
    torch.testing.assert_close(fused.gamma_hist, eager.gamma_hist, rtol=1e-3, atol=1e-5)


def test_discretize_follows_verdicts():
    model = AlphaCNN()
    acts = [m for _, m in alpha_layers(model)]
    with torch.no_grad():
        for m, (g, nu) in zip(acts, [(2.0, 100.0), (-2.0, 100.0), (0.0, 100.0)], strict=True):
            m.gamma.fill_(g)
            m.nu.fill_(nu)
    assert [v.verdict for v in layer_verdicts(model)] == ["non-linear", "linear", "undecided"]
    d = discretize(model)
    kinds = [type(d.features[i]).__name__ for i in (2, 6, 10)]
    assert kinds == ["ReLU", "Identity", "AlphaReLU"]
    assert type(model.features[2]).__name__ == "AlphaReLU"  # the original is untouched
    model.eval()
    d.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), d(x), rtol=1e-5, atol=1e-5)  # α is 1/0 to fp32 here
    assert verdict(0.96) == "non-linear" and verdict(0.04) == "linear" and verdict(0.5) == "undecided"


def test_model_heads_and_bad_activation():
    x = torch.randn(3, 3, 32, 32)
    assert AlphaCNN(head="logits")(x).shape == (3, 10)
    torch.testing.assert_close(AlphaCNN(head="softmax")(x).sum(1), torch.ones(3))
    with pytest.raises(ValueError, match="activation must be one of"):
        AlphaCNN(activation="gelu")
    assert alpha_layers(AlphaCNN(activation="relu")) == []


def test_cli_rejects_eager_activation_with_compile(data_dir, tmp_path, capsys):
    args = ["train", "--data-dir", str(data_dir), "--out", str(tmp_path / "o"), "--device", "cpu",
            "--activation", "alpha-eager", "--compile"]  # fmt: skip
    assert main(args) == 2
    assert "cannot be combined with --compile" in capsys.readouterr().err
