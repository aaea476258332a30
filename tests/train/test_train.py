"""The trainer end to end on tiny synthetic data: outputs, resume, interruption, NaN, report, CLI."""

import json
import os

import pytest
import torch

import alphakern.train.loop as train_mod
from alphakern import discretize
from alphakern.cli import main
from alphakern.data import load_cifar10
from alphakern.graph import layer_verdicts
from alphakern.graph.report import verdict
from alphakern.models import AlphaCNN
from alphakern.modules import alpha_layers
from alphakern.train import TrainConfig, Trainer, build_model, load_checkpoint
from tests.cifar_fixtures import write_folder, write_pickles
from tests.train_helpers import run, train_cfg


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_pickles(tmp_path_factory.mktemp("cifar"), n_per_batch=24, n_test=40)


cfg = train_cfg


def _png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_end_to_end_outputs(data_dir, tmp_path):
    """What a run writes agrees with the model it trained, recomputed independently."""
    t = run(cfg(data_dir, tmp_path / "run", head="softmax"))
    out = tmp_path / "run"
    assert _png(out / "training_validation_metrics.png") and _png(out / "alpha_evolution.png")
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["head"] == "softmax" and [e["epoch"] for e in m["epochs"]] == [1, 2]
    # the checkpoint holds the trained model: same weights, same test accuracy when rebuilt
    state = load_checkpoint(out)
    model = build_model(TrainConfig.from_dict(state["config"]), torch.device("cpu"), channels_last=False)
    model.load_state_dict(state["model"])
    model.eval()
    data = load_cifar10(data_dir)
    with torch.no_grad():
        pred = model(data.test_x.float() / 255).argmax(1)
    assert m["test_acc"] == pytest.approx(100.0 * (pred == data.test_y).float().mean().item(), abs=1e-9)
    # per-step history, one series per layer: ν = 0.01·step, α = σ((σ(γ) − ½)ν) in float64
    steps = 2 * len(t.train_batches)
    h = m["history"]
    assert h["layers"] == [n for n, _ in alpha_layers(model)]
    assert [len(s) for s in h["alpha"]] == [len(s) for s in h["gamma"]] == [steps] * 3
    nu = 0.01 * torch.arange(1, steps + 1, dtype=torch.float64)
    g = torch.tensor(h["gamma"], dtype=torch.float64)
    torch.testing.assert_close(
        torch.tensor(h["alpha"], dtype=torch.float64),
        torch.sigmoid((torch.sigmoid(g) - 0.5) * nu),
        rtol=1e-5,
        atol=1e-6,
    )
    # compact: one line per series, not one per number
    assert len((out / "metrics.json").read_text().splitlines()) < 200
    # the last history row's γ is the one before the last optimizer step; the epoch summary's is after
    final = [float(a.gamma.detach()) for _, a in alpha_layers(model)]
    assert m["epochs"][-1]["gamma"] == pytest.approx(final, abs=1e-7)
    assert [v["gamma"] for v in m["report"]["layers"]] == pytest.approx(final, abs=1e-7)
    assert [v["verdict"] for v in m["report"]["layers"]] == [verdict(a) for a in m["epochs"][-1]["alpha"]]
    assert [float(a.nu) for _, a in alpha_layers(model)] == pytest.approx([0.01 * steps] * 3)


@pytest.mark.parametrize(
    "every, drawn_at", [(0.0, [1, 2, 3, 3]), (60.0, [1, 2, 3, 3]), (100.0, [2, 3]), (float("inf"), [3])]
)
def test_plots_are_redrawn_at_most_every_interval_and_at_the_end(
    every, drawn_at, data_dir, tmp_path, monkeypatch
):
    """metrics.json at every epoch's end (and the run's); the plots there only once PLOT_EVERY_S has
    passed since they were last drawn (or the run began), and always at the run's end. Epochs of 60 s
    on a clock of the test's."""
    import types

    import alphakern.train.rundir as rundir

    clock, drawn, written = [0.0], [], []
    real_plots, real_write = rundir.write_plots, rundir.atomic_write

    def plots(path, metrics, *a):
        drawn.append(len(metrics["epochs"]))
        real_plots(path, metrics, *a)

    def write(path, fn):
        if path.name == "metrics.json":
            written.append(len(t.metrics["epochs"]))
            clock[0] = 60.0 * written[-1]
        real_write(path, fn)

    monkeypatch.setattr(rundir, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(rundir, "PLOT_EVERY_S", every)
    monkeypatch.setattr(rundir, "write_plots", plots)
    monkeypatch.setattr(rundir, "atomic_write", write)
    t = Trainer(cfg(data_dir, tmp_path / "run", epochs=3), progress=False)
    t.run()
    assert written == [1, 2, 3, 3] and drawn == drawn_at
    assert _png(tmp_path / "run" / "alpha_evolution.png")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(m["epochs"]) == 3 and "test_acc" in m


def test_resume_continues_bit_for_bit(data_dir, tmp_path):
    straight = run(cfg(data_dir, tmp_path / "a"))
    run(cfg(data_dir, tmp_path / "b", epochs=1))
    resumed = run(cfg(data_dir, tmp_path / "b", epochs=2), resume=True)
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert torch.equal(straight.gamma_hist, resumed.gamma_hist)
    assert torch.equal(straight.nu_hist, resumed.nu_hist)
    assert torch.equal(straight.alpha_hist(), resumed.alpha_hist())
    ha = json.loads((tmp_path / "a" / "metrics.json").read_text())["history"]
    hb = json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    assert ha == hb
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
    assert load_checkpoint(tmp_path / "b")["epoch"] == 1
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
    assert load_checkpoint(tmp_path / "r")["epoch"] == 1


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
    assert main(["train", "--resume", str(out), "--out", str(out)]) == 0  # the same directory: fine
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--out", str(tmp_path / "elsewhere")]) == 2
    assert "a resumed run stays in its directory" in capsys.readouterr().err
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


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["--limit-train", "-5"], "--limit-train must be a positive number of images, got -5"),
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--lr", "-1"], "--lr must be a positive number, got -1.0"),
        (["--lr", "nan"], "--lr must be a positive number, got nan"),
        (["--nu-step", "inf"], "--nu-step must be a non-negative number, got inf"),
        (["--log-every", "0"], "--log-every must be a positive integer"),
        (["--seed", "-1"], "--seed must be a non-negative integer"),
        (["--device", "cuda:7"] if torch.cuda.device_count() < 8 else ["--device", "gpu"], "--device"),
        (["--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
        (["--batch-size", "two"], "argument --batch-size: invalid int value: 'two'"),
        (["--head", "sigmoid"], "argument --head: invalid choice: 'sigmoid'"),
    ],
)
def test_cli_refuses_bad_values_in_one_line(flags, message, data_dir, tmp_path, capsys, monkeypatch):
    """One line naming what was wrong, exit status 2, and no work started (no data read)."""
    import alphakern.train.loop as loop

    def no_work(*a, **k):
        raise AssertionError("work started")

    monkeypatch.setattr(loop, "load_dataset", no_work)
    args = ["train", "--data-dir", str(data_dir), "--out", str(tmp_path / "o"), *flags]
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own type/choice errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cli_device_cuda_without_gpu(data_dir, tmp_path, capsys):
    assert main(["train", "--data-dir", str(data_dir), "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: this machine has no CUDA GPU" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["train", "report"])
def test_cli_resume_or_report_without_checkpoint(command, tmp_path, capsys):
    args = ["train", "--resume", str(tmp_path)] if command == "train" else ["report", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"no checkpoint at {tmp_path / 'checkpoint.pt'}" in err and len(err.strip().splitlines()) == 1


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > " + os.environ["ALPHAKERN_PWNED"],))


@pytest.mark.parametrize("command", ["train", "report"])
def test_crafted_checkpoint_is_refused_without_running_it(command, data_dir, tmp_path, capsys, monkeypatch):
    """`report DIR` / `--resume DIR` on a directory someone else wrote cannot run their code."""
    run(cfg(data_dir, tmp_path / "r", epochs=1))
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    state["metrics"]["note"] = _RunsCode()
    marker = tmp_path / "pwned"
    monkeypatch.setenv("ALPHAKERN_PWNED", str(marker))
    torch.save(state, tmp_path / "r" / "checkpoint.pt")
    args = (
        ["train", "--resume", str(tmp_path / "r")] if command == "train" else ["report", str(tmp_path / "r")]
    )
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "could run code" in err
    assert not marker.exists()


def test_config_from_an_older_checkpoint_ignores_unknown_keys():
    c = TrainConfig.from_dict({"epochs": 3, "extra": {}})
    assert c.epochs == 3


@pytest.mark.parametrize("granularity", ["channel", "element"])
def test_discretize_granular_gates_exactly(granularity):
    """Gates that disagree become a FixedSlopeReLU: ReLU gates slope 0, identity gates slope 1,
    undecided ones keep 1 − α; all-agreeing layers become nn.ReLU / nn.Identity."""
    from alphakern import AlphaReLU
    from alphakern.graph import format_report
    from alphakern.modules import FixedSlopeReLU

    x = torch.randn(4, 3, 2, 2)
    mixed, relu, ident = (AlphaReLU(granularity=granularity) for _ in range(3))
    net = torch.nn.Sequential(mixed, relu, ident)
    net(x)
    with torch.no_grad():
        for m in net:
            m.nu.fill_(100.0)
        g = (
            torch.tensor([2.0, -2.0, 0.0])
            if granularity == "channel"
            else torch.tensor([2.0, -2.0, 0.0])[:, None, None]
        )
        mixed.gamma.copy_(g.expand_as(mixed.gamma))
        relu.gamma.fill_(2.0)
        ident.gamma.fill_(-2.0)
    v = layer_verdicts(net)
    assert [x.verdict for x in v] == ["mixed", "non-linear", "linear"]
    per = 1 if granularity == "channel" else 4
    assert v[0].gates == 3 * per and v[0].fractions == pytest.approx(
        {"non-linear": 1 / 3, "linear": 1 / 3, "undecided": 1 / 3}
    )
    text = format_report(v)
    assert "mixed (3 gates" in text or f"mixed ({3 * per} gates" in text
    d = discretize(net).eval()
    assert [type(m) for m in d] == [FixedSlopeReLU, torch.nn.ReLU, torch.nn.Identity]
    a = mixed.alpha.flatten()[::per]  # per channel
    assert float(a[0]) > 0.95 and float(a[1]) < 0.05
    xs = torch.randn(5, 3, 2, 2)
    out = d[0](xs)
    torch.testing.assert_close(out[:, 0], torch.relu(xs[:, 0]), rtol=0, atol=0)  # ReLU gate, exactly
    torch.testing.assert_close(out[:, 1], xs[:, 1], rtol=0, atol=0)  # identity gate, exactly
    torch.testing.assert_close(out[:, 2], mixed.eval()(xs)[:, 2])  # undecided: as it was


@pytest.mark.parametrize("granularity", ["channel", "element"])
def test_granular_run_history_stays_small(granularity, data_dir, tmp_path):
    """Per-step summaries (mean α, fractions) whatever the number of gates; the full α vectors
    only at epoch ends (gates.npz); report per gate; resume restores all of it."""
    import numpy as np

    c = cfg(data_dir, tmp_path / "g", granularity=granularity, epochs=1)
    t = run(c)
    m = json.loads((tmp_path / "g" / "metrics.json").read_text())
    h = m["history"]
    steps = len(t.train_batches)
    for key in ("gamma_mean", "alpha_mean", "alpha_std", "nonlinear_fraction", "linear_fraction"):
        assert [len(s) for s in h[key]] == [steps] * 3, key
    gates = [a.gamma.numel() for _, a in alpha_layers(t.model)]
    assert gates == ([64] * 3 if granularity == "channel" else [64 * 32 * 32, 64 * 16 * 16, 64 * 8 * 8])
    # the last step's summary matches the gates it saw: mean α from the γ before the last update
    assert 0 <= min(min(s) for s in h["nonlinear_fraction"]) and max(max(s) for s in h["alpha_mean"]) <= 1
    with np.load(tmp_path / "g" / "gates.npz") as z:
        assert sorted(z.files) == sorted(f"epoch1/{n}" for n in h["layers"])
        for (name, a), n in zip(alpha_layers(t.model), gates, strict=True):
            assert z[f"epoch1/{name}"].shape == tuple(a.gamma.shape) and z[f"epoch1/{name}"].size == n
            np.testing.assert_allclose(z[f"epoch1/{name}"], a.alpha.numpy(), rtol=1e-6)
    assert m["epochs"][0]["alpha"] == pytest.approx([float(a.alpha.mean()) for _, a in alpha_layers(t.model)])
    assert all(v["gates"] > 1 and v["fractions"] is not None for v in m["report"]["layers"])
    assert len((tmp_path / "g" / "metrics.json").read_text().splitlines()) < 300
    resumed = run(cfg(data_dir, tmp_path / "g", granularity=granularity, epochs=2), resume=True)
    assert resumed.hist.shape[0] == 2 * steps and torch.equal(resumed.hist[:steps], t.hist)
    assert set(resumed.gate_alphas) == {f"epoch{e}/{n}" for e in (1, 2) for n in h["layers"]}
