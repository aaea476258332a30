"""What a run leaves in its directory: the checkpoint, metrics.json, the plots, gates.npz.

Under torchrun only rank 0 writes (every rank holds the same state); every rank can read. Each
file is replaced atomically, so an interrupted run leaves the previous epoch's files whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from alphakern.train.checkpoint import (
    GATES,
    METRICS,
    atomic_write,
    compact_json,
    load_checkpoint,
    npz_bytes,
    save_checkpoint,
)
from alphakern.train.history import History
from alphakern.train.plots import write_plots, write_relu_budget_plot


class RunDir:
    def __init__(self, path: str | Path, writes: bool) -> None:
        self.path = Path(path)
        self.writes = writes  # rank 0 (or the only process)

    def save(self, state: dict) -> None:
        if self.writes:
            save_checkpoint(self.path, state)

    def load(self, map_location: torch.device) -> dict:
        return load_checkpoint(self.path, map_location=map_location)

    def load_gates(self) -> dict[str, np.ndarray]:
        """The α vectors written so far (none when the file is absent)."""
        if not (self.path / GATES).is_file():
            return {}
        with np.load(self.path / GATES, allow_pickle=False) as z:  # arrays only: no code runs
            return {k: z[k] for k in z.files}

    def write(self, metrics: dict, history: History, gates: dict[str, np.ndarray]) -> None:
        """metrics.json (with the history's series), the plots, and gates.npz for granular gates."""
        if not self.writes:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        m = dict(metrics, history=history.series())
        atomic_write(self.path / METRICS, lambda p: p.write_text(compact_json(m)))
        write_plots(self.path, metrics, history.alpha(), history.layer_names, history.alpha_band())
        if m.get("relu_layers"):  # a finished run with gates
            write_relu_budget_plot(self.path, m)
        if history.granular:  # the full gate vectors, at epoch ends only
            atomic_write(self.path / GATES, lambda p: p.write_bytes(npz_bytes(gates)))
