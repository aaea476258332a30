"""A finished run directory as a library: load its model (``load_run``), its test batches
(``load_test_batches``), and fold it (``fold_run``) — what ``alphakern report`` and ``alphakern fold``
call, so Python callers reach the same workflow."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from alphakern.data import DatasetError, DeviceBatches, load_dataset, probe
from alphakern.files import atomic_write
from alphakern.folding import fold, fold_report
from alphakern.gate_rules import verdict_masks
from alphakern.graph import discretize
from alphakern.modules import alpha_layers
from alphakern.train.checkpoint import compact_json, load_checkpoint
from alphakern.train.config import TrainConfig, resolve_device
from alphakern.train.loop import EVAL_BATCH, build_model, evaluate


@dataclass
class Run:
    """A run directory's model with its trained weights (on ``device``), its config and state."""

    model: nn.Module
    cfg: TrainConfig
    state: dict
    device: torch.device


def load_run(run_dir: str | Path, device: str | None = None) -> Run:
    """The run's model rebuilt from its config and checkpoint (``weights_only``: no code from the
    file runs); ``device`` overrides the run's. Raises CheckpointError or ValueError."""
    state = load_checkpoint(run_dir)
    cfg = TrainConfig.from_dict(state["config"])
    dev = resolve_device(device or cfg.device)
    model = build_model(cfg, dev, channels_last=False, keep=state.get("keep"))
    model.load_state_dict(state["model"])
    return Run(model.to(dev), cfg, state, dev)


def load_test_batches(run: Run, data_dir: str | None = None) -> DeviceBatches:
    """The run's test split on its device (``data_dir``: where the data is, if not where the run
    read it). Raises DatasetError."""
    data = load_dataset(run.cfg.dataset, data_dir or run.cfg.data_dir).to(run.device)
    return DeviceBatches(data.test_x, data.test_y, EVAL_BATCH, shuffle=False)


def undecided_gates(model: nn.Module) -> list[str]:
    """The gates that are neither a ReLU nor the identity yet (what cannot be folded exactly)."""
    return [name for name, m in alpha_layers(model) if bool(verdict_masks(m.alpha)["undecided"].any())]


@dataclass
class FoldedRun:
    """``fold_run``'s outcome: the discretised and the folded model, the example input, what was
    written to fold.json (``result``) and the folded program's path."""

    exact_model: nn.Module
    folded: nn.Module
    example_input: torch.Tensor
    result: dict
    program: Path
    notes: list[str] = field(default_factory=list)


def fold_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    exact: bool = True,
    policy: str = "latency",
    device: str | None = None,
    data_dir: str | None = None,
) -> FoldedRun:
    """Discretise a finished run and fold it: ``out`` (default the run directory) gets fold.json
    (merges, the report, test accuracies before and after where the data is found) and
    folded.pt2 (``torch.export``, dynamic batch). Raises ValueError if a gate is still undecided."""
    run = load_run(run_dir, device)
    undecided = undecided_gates(run.model)
    if undecided:
        raise ValueError(
            f"{run_dir}: gates not yet ReLU or identity (alpha in [0.05, 0.95]): "
            f"{', '.join(undecided)}; train longer or to a budget (--budget) first"
        )
    exact_model = discretize(run.model).eval()
    x = probe(run.device)
    folded = fold(exact_model, x, exact=exact, policy=policy)
    info = folded.fold_info
    result: dict = dict(policy=policy, exact=exact, report=fold_report(exact_model, folded, x))
    result.update(
        merged=[list(n) + [w] for n, w in info.merged],
        not_merged=[list(n) + [w] for n, w in info.not_merged],
        max_error=info.max_error,
        mlps=info.mlps,
    )
    notes = []
    try:
        batches = load_test_batches(run, data_dir)
        result["test_acc_before"] = evaluate(exact_model, batches)[1]
        result["test_acc_after"] = evaluate(folded, batches)[1]
    except DatasetError as e:
        notes.append(f"(no test accuracies: {str(e).splitlines()[0]})")
    dest = Path(out or run_dir)
    dest.mkdir(parents=True, exist_ok=True)
    # a batch of 2: a sample of batch 1 would specialise the exported program to it
    batch = ({0: torch.export.Dim.AUTO},)
    program = torch.export.export(folded, (x.expand(2, -1, -1, -1),), dynamic_shapes=batch)
    archive = io.BytesIO()  # torch.export.save names its archive by the file's suffix; write it whole
    torch.export.save(program, archive)
    atomic_write(dest / "folded.pt2", lambda p: p.write_bytes(archive.getvalue()))
    atomic_write(dest / "fold.json", lambda p: p.write_text(compact_json(result)))
    return FoldedRun(exact_model, folded, x, result, dest / "folded.pt2", notes)
