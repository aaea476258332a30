"""One writer per run directory: a second process is refused, one process may hold it twice (a
resumed Trainer beside the interrupted one), the lock goes with its holder; and no link in a run
directory is written through."""

import gc
import json
import subprocess
import sys

import pytest

from alphakern.cli import main
from alphakern.train import CHECKPOINT, METRICS, CheckpointError, RunDirBusy, Trainer
from alphakern.train.rundir import LOCK, RunDir
from tests.cifar_fixtures import write_pickles
from tests.train_helpers import held_by_another_process, train_cfg

# the lock as the OS sees it, asked without alphakern: exit 1 where someone holds it
PROBE = "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)"

pytest.importorskip("fcntl", reason="run-directory locks are POSIX flock")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_pickles(tmp_path_factory.mktemp("cifar"), n_per_batch=24, n_test=40)


def _held(path) -> bool:
    return (
        subprocess.run([sys.executable, "-c", PROBE, str(path / LOCK)], capture_output=True).returncode != 0
    )


def test_a_run_directory_another_process_writes_is_refused_until_it_ends(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    with held_by_another_process(out) as holder:
        t = Trainer(train_cfg(data_dir, out), progress=False)
        busy = rf"run directory .*run is being written by another process \(pid {holder.pid}"
        with pytest.raises(RunDirBusy, match=busy):
            t.run()
        with pytest.raises(RunDirBusy):
            t.load()
        assert t.epoch == 0 and not (out / CHECKPOINT).exists()  # refused before its first epoch
        RunDir(out, writes=False).claim()  # a torchrun rank that never writes takes no lock
        args = ["--data-dir", str(data_dir), "--out", str(out), "--epochs", "1", "--limit-train", "32"]
        assert main(["train", *args]) == 2
        assert "is being written by another process" in capsys.readouterr().err
    t.run()  # the lock ended with its process: nothing stale is left to remove
    assert (out / CHECKPOINT).is_file()


def test_one_process_holds_a_directory_once_and_lets_go_with_its_last_writer(tmp_path):
    first, second = RunDir(tmp_path, writes=True), RunDir(tmp_path, writes=True)
    first.claim()
    second.claim()  # the same process: shared, not refused
    assert (tmp_path / LOCK).read_text().strip().isdigit() and _held(tmp_path)
    del first
    gc.collect()
    assert _held(tmp_path)  # the second still writes
    del second
    gc.collect()
    assert not _held(tmp_path)


def test_restore_writes_checkpoint_and_metrics_as_the_one_writer(tmp_path):
    """RunDir.restore (a run rebuilt from kept weights and metrics): both files written, the directory
    claimed while it writes; refused with nothing written where another process holds it; nothing
    at all from a process that does not write."""
    import torch

    state = {"config": {"epochs": 2}, "epoch": 2, "model": {"w": torch.arange(3.0)}}
    metrics = {"epochs": [{"epoch": 1}, {"epoch": 2}], "test_acc": 0.5}
    out = tmp_path / "run"
    with held_by_another_process(out):
        with pytest.raises(RunDirBusy):
            RunDir(out, writes=True).restore(state, metrics)
        assert sorted(p.name for p in out.iterdir()) == [LOCK]
    RunDir(tmp_path / "rank1", writes=False).restore(state, metrics)
    assert not (tmp_path / "rank1").exists()
    out = tmp_path / "runs" / "sub" / "run"  # its parents made too, as `--out runs/new/run` needs
    run = RunDir(out, writes=True)
    run.restore(state, metrics)
    assert _held(out)  # claimed, as the trainer's writes
    assert json.loads((out / METRICS).read_text()) == metrics
    got = run.load(torch.device("cpu"))
    assert got["epoch"] == 2 and torch.equal(got["model"]["w"], state["model"]["w"])


def test_links_in_a_run_directory_are_never_written_through(data_dir, tmp_path):
    """A ``.lock`` that is a link is refused by name; links at the temporary names an interrupted
    write of an older alphakern left (``.NAME.tmp``) are not followed: the files they point at stay as
    they were, and every file the run writes is a file of its own (``tests/test_files.py`` plants a
    link at the very name a write draws)."""
    victim = tmp_path / "someone_elses.txt"
    victim.write_text("theirs\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / LOCK).symlink_to(victim)
    with pytest.raises(CheckpointError, match=r"cannot lock run directory .*locked: .*\.lock"):
        RunDir(locked, writes=True).claim()
    out = tmp_path / "run"
    out.mkdir()
    for name in (CHECKPOINT, METRICS):
        (out / f".{name}.tmp").symlink_to(victim)
    t = train_cfg(data_dir, out, epochs=1)
    Trainer(t, progress=False).run()
    assert victim.read_text() == "theirs\n" and json.loads((out / METRICS).read_text())["test_acc"] >= 0
    planted = {out / f".{name}.tmp" for name in (CHECKPOINT, METRICS)}
    assert all(p.is_symlink() for p in planted)  # not the run's: left as they were
    assert not any(p.is_symlink() for p in set(out.iterdir()) - planted)


def test_the_writer_removes_a_killed_writers_temporary_files_of_the_runs_own_files_only(data_dir, tmp_path):
    """A writer killed mid-write leaves ``.checkpoint.pt.XXXXXXXX.tmp``; the next writer of the
    directory (the one writer, under the lock) removes those of the run's files, and leaves another
    file's (``fold_run`` writes ``folded.pt2`` here without the lock) and links alone."""
    out = tmp_path / "run"
    out.mkdir()
    killed = [out / f".{name}.0123abcd.tmp" for name in (CHECKPOINT, METRICS, "alpha_evolution.png")]
    for p in killed:
        p.write_bytes(b"half")
    folding = out / ".folded.pt2.0123abcd.tmp"
    folding.write_bytes(b"in flight")
    (out / ".gates.npz.4567ef01.tmp").symlink_to(data_dir)
    Trainer(train_cfg(data_dir, out, epochs=1), progress=False).run()
    assert not any(p.exists() for p in killed) and folding.exists()
    assert (out / ".gates.npz.4567ef01.tmp").is_symlink()
    assert sorted(p.name for p in out.glob(".*.tmp")) == [
        ".folded.pt2.0123abcd.tmp",
        ".gates.npz.4567ef01.tmp",
    ]
