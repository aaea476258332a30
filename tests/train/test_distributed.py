"""Training under torchrun: 2 CPU processes (gloo) on a tiny synthetic CIFAR-10, spawned here."""

import json
import os
import sys
import textwrap
import time

import pytest
import torch

from alphakern.data import DeviceBatches, load_cifar10
from alphakern.train import EVAL_BATCH, TrainConfig, Trainer, evaluate
from tests.cifar_fixtures import write_pickles
from tests.subproc import ROOT

pytestmark = [
    pytest.mark.slow,  # torchrun jobs
    pytest.mark.skipif(
        not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
        reason="needs torch.distributed with gloo",
    ),
]

# alphakern's CLI, plus what a test needs to see from inside the ranks: each rank's final state
# (rank{r}.pt), the gradients its optimiser gets in the first step (grads{r}.pt) and, with FAIL_RANK,
# a failure planted in that rank's second epoch.
WRAPPER = textwrap.dedent("""
    import os, sys, torch
    from alphakern.train import loop
    from alphakern.cli import main

    finish, train_epoch = loop.Trainer.finish, loop.Trainer.train_epoch

    def save_state(self):
        out = finish(self)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        torch.save(state, os.path.join(os.environ["STATE_DIR"], f"rank{self.dist.rank}.pt"))
        return out

    def failing_epoch(self):
        if self.dist.rank == int(os.environ.get("FAIL_RANK", -1)) and self.epoch == 1:
            raise RuntimeError(f"planted failure on rank {self.dist.rank}")
        return train_epoch(self)

    adam_step = torch.optim.Adam.step

    def first_step_saves_grads(self, *args, **kwargs):
        if not getattr(self, "saved", False):
            self.saved = True
            grads = [p.grad.detach().clone() for g in self.param_groups for p in g["params"]]
            torch.save(grads, os.path.join(os.environ["STATE_DIR"], f"grads{os.environ.get('RANK', 0)}.pt"))
        return adam_step(self, *args, **kwargs)

    loop.Trainer.finish, loop.Trainer.train_epoch = save_state, failing_epoch
    torch.optim.Adam.step = first_step_saves_grads
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_pickles(tmp_path_factory.mktemp("cifar"))


def _train(tmp_path, data_dir, out, nproc, *flags, fail_rank=None, module=False):
    """`torchrun --nproc_per_node=N` of alphakern train (or one plain process for nproc=0)."""
    state_dir = tmp_path / f"state-{out}"
    state_dir.mkdir(exist_ok=True)
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    env = dict(os.environ, STATE_DIR=str(state_dir), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if fail_rank is not None:
        env["FAIL_RANK"] = str(fail_rank)
    target = ["-m", "alphakern"] if module else [str(script)]
    launcher = [sys.executable]
    if nproc:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    args = ["train", "--data-dir", str(data_dir), "--device", "cpu"]
    if "--resume" not in flags:
        args += ["--out", str(tmp_path / out)]
    import subprocess

    proc = subprocess.run(
        [*launcher, *target, *args, *flags], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    return proc, state_dir


def _states(state_dir):
    return {p.stem: torch.load(p, weights_only=True) for p in sorted(state_dir.glob("rank*.pt"))}


SMALL = ["--epochs", "2", "--limit-train", "64", "--batch-size", "16", "--log-every", "1"]


def test_ranks_stay_identical_and_rank_0_alone_writes(tmp_path, data_dir):
    proc, state_dir = _train(tmp_path, data_dir, "run", 2, *SMALL, "--granularity", "channel")
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = _states(state_dir)
    assert sorted(states) == ["rank0", "rank1"]
    for key, value in states["rank0"].items():  # parameters, γ, ν, BatchNorm statistics
        assert torch.equal(value, states["rank1"][key]), key
    assert any(k.endswith("nu") and v.item() > 0 for k, v in states["rank0"].items())
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["config"]["world_size"] == 2 and m["config"]["global_batch_size"] == 32
    assert len(m["epochs"]) == 2
    assert proc.stdout.count("outputs in") == 1  # rank 0 reports, once
    # accuracies are over the whole split, not rank 0's half: evaluate the final model in one process
    cfg = TrainConfig(data_dir=str(data_dir), device="cpu", limit_train=64, granularity="channel")
    one = Trainer(cfg, progress=False)
    one.model.load_state_dict(states["rank0"])
    data = load_cifar10(str(data_dir))
    test = DeviceBatches(data.test_x, data.test_y, EVAL_BATCH, shuffle=False, channels_last=True)
    assert evaluate(one.model, test)[1] == pytest.approx(m["test_acc"])
    assert evaluate(one.model, one.val_batches)[1] == pytest.approx(m["epochs"][-1]["val_acc"])


@pytest.mark.parametrize("sync_bn", [True, False], ids=["sync-bn", "local-bn"])
def test_sync_bn_two_ranks_of_32_equal_one_process_of_64(tmp_path, data_dir, sync_bn):
    """One full-batch step (64 images), so both runs see the same images: the gradients the
    optimiser gets (after DDP's average) and the BatchNorm statistics must agree. Parameters after
    more steps are no test: Adam turns the float noise in the zero gradient of a conv bias before a
    BatchNorm into steps of ±lr. Gradients agree to 1 % of each tensor's largest (max-pool routes
    them by argmax, and 1e-7 differences in the forward flip near-ties: measured ≤ 0.6 %); without
    --sync-bn each rank normalises by its own half, the gap is ~25 %, and the comparison must fail."""
    common = ["--epochs", "1", "--limit-train", "64", "--log-every", "1"]
    flag = ["--sync-bn"] if sync_bn else []
    proc2, dir2 = _train(tmp_path, data_dir, "two", 2, *common, "--batch-size", "32", *flag)
    proc1, dir1 = _train(tmp_path, data_dir, "one", 0, *common, "--batch-size", "64", *flag)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert proc1.returncode == 0, proc1.stderr[-3000:]
    g2, g1 = (torch.load(d / "grads0.pt", weights_only=True) for d in (dir2, dir1))
    scale = max(g.abs().max().item() for g in g1)
    grads_close = all(
        (a - b).abs().max() <= 1e-2 * b.abs().max() + 1e-4 * scale for a, b in zip(g2, g1, strict=True)
    )
    two, one = _states(dir2)["rank0"], _states(dir1)["rank0"]
    stats = [k for k in one if "running" in k]
    stats_close = all(torch.allclose(two[k], one[k], rtol=1e-4, atol=1e-6) for k in stats)
    assert grads_close == sync_bn and stats_close == sync_bn


def test_resume_under_torchrun_matches_an_uninterrupted_run(tmp_path, data_dir):
    whole, whole_dir = _train(tmp_path, data_dir, "whole", 2, *SMALL)
    first, _ = _train(tmp_path, data_dir, "parts", 2, *[f if f != "2" else "1" for f in SMALL])
    assert whole.returncode == 0 and first.returncode == 0, first.stderr[-3000:]
    rest, rest_dir = _train(
        tmp_path, data_dir, "parts", 2, "--resume", str(tmp_path / "parts"), "--epochs", "2"
    )
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert "resuming" in rest.stdout
    a, b = _states(whole_dir), _states(rest_dir)
    for rank in ("rank0", "rank1"):
        for key in a[rank]:
            assert torch.equal(a[rank][key], b[rank][key]), (rank, key)


def test_a_failing_rank_ends_the_job_with_its_error(tmp_path, data_dir):
    t0 = time.monotonic()
    proc, _ = _train(tmp_path, data_dir, "fail", 2, *SMALL, fail_rank=1)
    assert proc.returncode != 0
    assert "planted failure on rank 1" in proc.stderr
    assert time.monotonic() - t0 < 120  # torchrun stopped rank 0 instead of letting it wait


def test_the_alphakern_command_under_torchrun(tmp_path, data_dir):
    proc, _ = _train(tmp_path, data_dir, "cli", 2, *SMALL, module=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "cli").iterdir() if p.suffix == ".json") == ["metrics.json"]
