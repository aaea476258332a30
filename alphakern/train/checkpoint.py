"""Run-directory I/O: checkpoints loaded without running anyone's code.

``torch.load`` of a pickle can run arbitrary code; a run directory may come from someone else
(``alphakern report DIR``, ``--resume DIR``), so checkpoints are loaded with ``weights_only=True``:
tensors and plain Python containers only — all a checkpoint of ours holds.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from alphakern.files import atomic_write
from alphakern.train.config import TrainConfig

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
GATES = "gates.npz"  # per-channel/per-element runs: α of every gate at each epoch's end


class CheckpointError(RuntimeError):
    """A run directory has no checkpoint, or one that is not safe or not ours to load (or a lock file
    that is not a plain file)."""


def compact_json(obj: object) -> str:
    """Indented JSON with every list of numbers on one line: a long per-step history stays a
    handful of lines (one series per layer and quantity) instead of one line per number."""
    text = json.dumps(obj, indent=1)
    number_list = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")
    return number_list.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)


def npz_bytes(arrays: dict) -> bytes:
    """A compressed .npz of named arrays, as bytes (for atomic_write)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def checkpoint_path(run_dir: str | Path) -> Path:
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: is {run_dir} a run directory of 'alphakern train'?")
    return path


def save_checkpoint(run_dir: Path, state: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / CHECKPOINT, lambda p: torch.save(state, p))


def load_checkpoint(run_dir: str | Path, map_location: torch.device | str = "cpu") -> dict:
    """The checkpoint's dict, loaded with weights_only=True (CheckpointError if it holds more)."""
    path = checkpoint_path(run_dir)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers, "
            f"which could run code ({first})"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or not {"config", "epoch", "model"} <= set(state):
        raise CheckpointError(f"{path} is not a checkpoint of 'alphakern train'")
    return state


def load_config(run_dir: str | Path) -> TrainConfig:
    """The config a run was started with (from its checkpoint)."""
    return TrainConfig.from_dict(load_checkpoint(run_dir)["config"])
