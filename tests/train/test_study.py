"""alphakern study: trainings per (head, seed) in child processes, reuse, resume, failures, tables."""

import contextlib
import json
import statistics

import pytest

from alphakern.cli import main
from alphakern.train import Trainer
from tests.cifar_fixtures import write_pickles

TINY = ["--epochs", "1", "--limit-train", "32", "--batch-size", "16", "--device", "cpu"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_pickles(tmp_path_factory.mktemp("cifar"))


def _study(out, data_dir, *flags):
    return main(["study", "--out", str(out), "--data-dir", str(data_dir), *TINY, *flags])


def test_study_trains_aggregates_and_reuses(tmp_path, data_dir, capsys):
    out = tmp_path / "study"
    assert _study(out, data_dir, "--seeds", "0,1", "--heads", "softmax,logits", "--jobs", "2") == 0
    runs = {d.name: json.loads((d / "metrics.json").read_text()) for d in out.iterdir() if d.is_dir()}
    assert sorted(runs) == ["logits-seed0", "logits-seed1", "softmax-seed0", "softmax-seed1"]
    study = json.loads((out / "study.json").read_text())
    for head in ("softmax", "logits"):
        h = study["heads"][head]
        mine = [runs[f"{head}-seed{s}"] for s in (0, 1)]
        accs = [m["test_acc"] for m in mine]
        assert h["runs"] == 2 and h["failed"] == []
        assert h["test_acc"]["mean"] == pytest.approx(statistics.mean(accs))
        assert h["test_acc"]["std"] == pytest.approx(statistics.stdev(accs))
        for i, layer in enumerate(h["layers"]):
            alphas = [m["report"]["layers"][i]["alpha"] for m in mine]
            assert layer["alpha"]["mean"] == pytest.approx(statistics.mean(alphas))
            assert sum(layer["verdicts"].values()) == 2
    assert {r["status"] for r in study["runs"]} == {"done"}
    table = (out / "study.md").read_text()
    assert "| softmax | features.10 |" in table and "| logits | 2 |" in table
    assert (out / "study.png").stat().st_size > 10_000
    capsys.readouterr()
    # a run made before TrainConfig had `model` (its config lacks the key): the default, reused
    older = out / "logits-seed1" / "metrics.json"
    m = json.loads(older.read_text())
    del m["config"]["model"]
    older.write_text(json.dumps(m))
    # again: nothing is trained, every run is reused
    assert _study(out, data_dir, "--seeds", "0,1", "--heads", "softmax,logits") == 0
    assert capsys.readouterr().out.count(": reused") == 4


def test_interrupted_run_resumes_and_foreign_run_is_reported(tmp_path, data_dir, capsys, monkeypatch):
    out = tmp_path / "study"
    flags = ["--seeds", "0", "--heads", "softmax,logits", "--epochs", "2"]
    # an interrupted study: Ctrl-C in softmax-seed0's second epoch
    epoch = Trainer.train_epoch

    def interrupted(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    partial = ["train", "--data-dir", str(data_dir), "--out", str(out / "softmax-seed0"), "--head", "softmax"]
    assert main([*partial, *TINY, "--epochs", "2"]) == 130
    monkeypatch.undo()
    # a directory holding a run made with other settings (5 epochs): reported, left as it is
    foreign = out / "logits-seed0"
    foreign.mkdir(parents=True)
    (foreign / "metrics.json").write_text(json.dumps({"config": {"epochs": 5, "head": "logits", "seed": 0}}))
    before = (foreign / "metrics.json").read_bytes()
    capsys.readouterr()
    assert main(["study", "--out", str(out), "--data-dir", str(data_dir), *TINY, *flags]) == 1
    captured = capsys.readouterr()
    assert "softmax-seed0: done" in captured.out
    assert "resuming" in (out / "softmax-seed0" / "train.log").read_text()
    assert len(json.loads((out / "softmax-seed0" / "metrics.json").read_text())["epochs"]) == 2
    assert "logits-seed0: failed" in captured.out and "epochs 5 ≠ 2" in captured.out
    assert "1 run(s) failed: logits-seed0" in captured.err
    assert (foreign / "metrics.json").read_bytes() == before
    study = json.loads((out / "study.json").read_text())
    assert study["heads"]["logits"]["failed"] == ["logits-seed0"] and study["heads"]["logits"]["runs"] == 0
    assert "**Failed runs**" in (out / "study.md").read_text()


@pytest.mark.parametrize(
    "flags,message",
    [(["--seeds", "a,b"], "comma-separated integers"), (["--heads", "sigmoid"], "heads must be among"),
     (["--epochs", "0"], "--epochs must be a positive integer"), (["--jobs", "0"], "--jobs must be")],
)  # fmt: skip
def test_study_refuses_bad_values(flags, message, tmp_path, capsys):
    parse_error = "--seeds" in flags or "--heads" in flags  # argparse exits 2 itself
    with pytest.raises(SystemExit) if parse_error else contextlib.nullcontext():
        assert main(["study", "--out", str(tmp_path / "s"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
