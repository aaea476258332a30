"""Small trainings for the tests: a config on tiny data, a run (optionally resumed) to its end, and
another process writing a run directory."""

import contextlib
import subprocess
import sys
from collections.abc import Iterator

from alphakern.train import TrainConfig, Trainer

_HOLD = (
    "import sys; from alphakern.train.rundir import RunDir; r = RunDir(sys.argv[1], writes=True); "
    "r.claim(); print('held', flush=True); sys.stdin.read()"
)


def train_cfg(data_dir, out, **kw) -> TrainConfig:
    base = dict(data_dir=str(data_dir), out=str(out), epochs=2, batch_size=16, device="cpu", log_every=3)
    return TrainConfig(**{**base, **kw})


def run(c: TrainConfig, resume: bool = False) -> Trainer:
    t = Trainer(c, progress=False)
    if resume:
        t.load()
    t.run()
    return t


@contextlib.contextmanager
def held_by_another_process(run_dir) -> Iterator[subprocess.Popen]:
    """A second process holds ``run_dir`` as its writer (RunDir.claim) until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
