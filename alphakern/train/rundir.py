"""What a run leaves in its directory: the checkpoint, metrics.json, the plots, gates.npz.

Under torchrun only rank 0 writes (every rank holds the same state); every rank can read. Each
file is replaced atomically, so an interrupted run leaves the previous epoch's files whole. One
process writes a directory at a time: the writer holds an exclusive lock on its ``.lock`` file
(``RunDir.claim``), and a second process that would write it is refused (``RunDirBusy``).
"""

from __future__ import annotations

import os
import time
import weakref
from pathlib import Path

import numpy as np
import torch

from alphakern.files import atomic_write, leftover_temps
from alphakern.train.checkpoint import (
    CHECKPOINT,
    GATES,
    METRICS,
    CheckpointError,
    compact_json,
    load_checkpoint,
    npz_bytes,
    save_checkpoint,
)
from alphakern.train.history import History
from alphakern.train.plots import PLOTS, write_plots, write_relu_budget_plot

try:
    import fcntl
except ImportError:  # not POSIX: no lock (the writes stay atomic)
    fcntl = None

LOCK = ".lock"
OWN_FILES = (CHECKPOINT, METRICS, GATES, *PLOTS)  # the files the run directory's writer writes
# The plots are redrawn at an epoch's end only once this long has passed since they last were (or the
# run began), and always at the run's end: a ResNet-20 run's take ~1.5 s of matplotlib each time (19
# layers' α over 3,750 steps, the 2-core EPYC), which epochs of a few seconds would pay every time.
# metrics.json, which they are drawn from, is written at every epoch's end. (tf.summary's file writers
# bound their writes the same way: flush_millis, 120 s by default.)
PLOT_EVERY_S = 60.0


class RunDirBusy(RuntimeError):
    """Another process is writing the run directory."""


class _Claim:
    """An exclusive ``flock`` on ``DIR/.lock`` while this object lives. The OS drops it when the
    process ends, so a killed run leaves no stale lock; the file (holding the writer's pid) stays."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        try:  # never through a link: the pid written below would replace whatever it points at
            fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:  # ELOOP for a link
            raise CheckpointError(f"cannot lock run directory {path}: {path / LOCK}: {e.strerror}") from None
        self.file = os.fdopen(fd, "r+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            pid = (path / LOCK).read_text().strip() or "?"
            raise RunDirBusy(
                f"run directory {path} is being written by another process (pid {pid}, holding "
                f"{path / LOCK}); wait for it to end or stop it"
            ) from None
        self.file.truncate(0)
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()
        # the one writer now: what a killed writer's temporary files of the run's own files are left
        # can go (not other files' — fold_run writes here without the lock)
        for name in OWN_FILES:
            for tmp in leftover_temps(path / name):
                tmp.unlink(missing_ok=True)


# a process's claims by directory: its RunDirs on one directory share one (a resumed Trainer beside
# the interrupted one); the lock goes when the last of them does
_CLAIMS: weakref.WeakValueDictionary[Path, _Claim] = weakref.WeakValueDictionary()


class RunDir:
    def __init__(self, path: str | Path, writes: bool) -> None:
        self.path = Path(path)
        self.writes = writes  # rank 0 (or the only process)
        self._claim: _Claim | None = None
        self._plotted = time.monotonic()  # of the last plots (the first: PLOT_EVERY_S into the run)

    def claim(self) -> None:
        """Become the directory's one writer (creating it), or raise ``RunDirBusy`` naming the
        process that is; a no-op where this process already is, or does not write."""
        if not self.writes or self._claim is not None or fcntl is None:
            return
        key = self.path.resolve()
        claim = _CLAIMS.get(key)
        if claim is None:
            claim = _CLAIMS[key] = _Claim(key)
        self._claim = claim

    def save(self, state: dict) -> None:
        if self.writes:
            self.claim()
            save_checkpoint(self.path, state)

    def load(self, map_location: torch.device) -> dict:
        return load_checkpoint(self.path, map_location=map_location)

    def load_gates(self) -> dict[str, np.ndarray]:
        """The α vectors written so far (none when the file is absent)."""
        if not (self.path / GATES).is_file():
            return {}
        with np.load(self.path / GATES, allow_pickle=False) as z:  # arrays only: no code runs
            return {k: z[k] for k in z.files}

    def restore(self, state: dict, metrics: dict) -> None:
        """A run rebuilt from what was kept of it elsewhere (committed weights and metrics): the
        checkpoint and metrics.json, written as the directory's one writer (``RunDirBusy`` if another
        process is); a no-op where this process does not write, as ``save``."""
        if self.writes:
            self.save(state)
            self._write_metrics(metrics)

    def _write_metrics(self, m: dict) -> None:
        atomic_write(self.path / METRICS, lambda p: p.write_text(compact_json(m)))

    def write(
        self, metrics: dict, history: History, gates: dict[str, np.ndarray], final: bool = False
    ) -> None:
        """metrics.json (with the history's series), the plots (at the run's end, ``final``, and
        otherwise at most every ``PLOT_EVERY_S``), and gates.npz for granular gates."""
        if not self.writes:
            return
        self.claim()
        self.path.mkdir(parents=True, exist_ok=True)
        m = dict(metrics, history=history.series())
        self._write_metrics(m)
        if final or time.monotonic() - self._plotted >= PLOT_EVERY_S:
            write_plots(self.path, metrics, history.alpha(), history.layer_names, history.alpha_band())
            self._plotted = time.monotonic()
        if final and m.get("relu_layers"):  # a finished run with gates
            write_relu_budget_plot(self.path, m)
        if history.granular:  # the full gate vectors, at epoch ends only
            atomic_write(self.path / GATES, lambda p: p.write_bytes(npz_bytes(gates)))
