"""The CIFAR-10 training loop: the study's settings, on-device data, no per-step host sync, resumable.

Every epoch ends with an atomic checkpoint (model, optimizer, ν, history, metrics), so an
interrupted run (Ctrl-C, kill) loses at most the epoch in progress; ``resume`` continues
bit-for-bit where the last checkpoint stopped.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alphakern.cifar_nets import relu_network
from alphakern.complexity import (
    LINEAR_BELOW,
    NONLINEAR_ABOVE,
    discretize,
    format_report,
    layer_verdicts,
    summary,
)
from alphakern.convert import linearize
from alphakern.data import Cifar10, DeviceBatches, load_cifar10, split_indices
from alphakern.models import AlphaCNN
from alphakern.modules import alpha_layers, materialize
from alphakern.ops.utils import alpha
from alphakern.train import distributed
from alphakern.train.checkpoint import (
    GATES,
    METRICS,
    atomic_write,
    compact_json,
    load_checkpoint,
    npz_bytes,
    save_checkpoint,
)
from alphakern.train.config import TrainConfig, resolve_device
from alphakern.train.plots import write_plots
from alphakern.train.sync_batchnorm import convert_sync_batchnorm

EVAL_BATCH = 500
# what the per-step history holds per layer
HIST_LAYER = ("gamma", "nu")
HIST_GRANULAR = ("gamma_mean", "nu", "alpha_mean", "alpha_std", "nonlinear_fraction", "linear_fraction")


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_model(cfg: TrainConfig, device: torch.device, channels_last: bool) -> nn.Module:
    """The study's CNN, or a ReLU network passed through ``linearize`` (a gate per ReLU call)."""
    torch.manual_seed(cfg.seed)
    if cfg.model == "cnn":
        model = AlphaCNN(
            cfg.activation, cfg.head, nu_step=cfg.nu_step, granularity=cfg.granularity, backend=cfg.backend
        )
    else:
        model = relu_network(cfg.model)
        if cfg.activation == "alpha":
            model = linearize(model, granularity=cfg.granularity, nu_step=cfg.nu_step, backend=cfg.backend)
    model = materialize(model.to(device))  # per-channel/per-element γ exist before the optimiser
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.float(), y, reduction="sum")


@torch.no_grad()
def evaluate(model: nn.Module, batches: DeviceBatches, amp: bool = False) -> tuple[float, float]:
    """(mean loss, accuracy %) over the batches, in eval mode; one host sync at the end. Under
    torchrun each rank holds a shard: the sums are all-reduced, so the result is the whole split's."""
    was_training = model.training
    model.eval()
    device = batches.labels.device
    loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for x, y in batches.epoch(0):
        with _autocast(device, amp):
            out = model(x)
        loss += _loss(out, y)
        correct += (out.argmax(1) == y).sum()
    model.train(was_training)
    n = torch.tensor(len(batches.labels), device=device)
    distributed.all_reduce_sum(loss, correct, n)
    return loss.item() / n.item(), 100.0 * correct.item() / n.item()


def test_with_discretized(
    model: nn.Module, test_batches: DeviceBatches, amp: bool = False
) -> tuple[float, float, float | None]:
    """(test loss, test accuracy, test accuracy of the discretised copy or None if nothing to do)."""
    test_loss, test_acc = evaluate(model, test_batches, amp)
    acc_after = evaluate(discretize(model), test_batches, amp)[1] if alpha_layers(model) else None
    return test_loss, test_acc, acc_after


class Trainer:
    def __init__(self, cfg: TrainConfig, data: Cifar10 | None = None, *, progress: bool = True) -> None:
        self.cfg = cfg
        # under torchrun: joins the process group; this rank's GPU (cuda:LOCAL_RANK) on CUDA
        self.device = distributed.init_from_env(resolve_device(cfg.device))
        self.dist = distributed.current()
        # None → on: channels_last measured faster on the 2-core CPU (benchmarks/results/README.md),
        # and it is cuDNN's preferred layout for convolutions and batch norm on CUDA.
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else True
        self.run_dir = Path(cfg.out)
        self.progress = progress and self.dist.is_main  # rank 0 alone shows progress
        if cfg.amp and self.device.type != "cuda" and self.dist.is_main:
            print("note: --amp applies bf16 autocast on CUDA only; training in fp32", file=sys.stderr)
        data = data if data is not None else load_cifar10(cfg.data_dir, download=cfg.download)
        train_idx, val_idx = split_indices(len(data.train_y), cfg.val_fraction, cfg.seed)
        if cfg.limit_train is not None:
            train_idx = train_idx[: cfg.limit_train]
        d = self.dist
        # each rank moves only its shards to the device; equal training shards: equal step counts
        train_idx = distributed.shard(train_idx, d, equal=True)
        val_idx = distributed.shard(val_idx, d, equal=False)
        test_idx = distributed.shard(torch.arange(len(data.test_y)), d, equal=False)

        def batches(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, size: int, shuffle: bool):
            x, y = x[idx].to(self.device), y[idx].to(self.device)
            return DeviceBatches(x, y, size, shuffle=shuffle, seed=cfg.seed, channels_last=self.channels_last)

        self.train_batches = batches(data.train_x, data.train_y, train_idx, cfg.batch_size, True)
        self.val_batches = batches(data.train_x, data.train_y, val_idx, EVAL_BATCH, False)
        self.test_batches = batches(data.test_x, data.test_y, test_idx, EVAL_BATCH, False)
        self.model = build_model(cfg, self.device, self.channels_last)
        if cfg.sync_bn:
            self.model = convert_sync_batchnorm(self.model, self.device)
        self.step_model = distributed.wrap(self.model, self.device)  # DDP under torchrun
        if cfg.compile:
            self.step_model = torch.compile(self.step_model)
        self.layers = [m for _, m in alpha_layers(self.model)]
        self.layer_names = [n for n, _ in alpha_layers(self.model)]
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.epoch = 0
        self.metrics: dict = dict(config=self._config_record(), device=self._device_name(), epochs=[])
        # per step and layer: γ, ν (layer gates: α follows from them); gates per channel/element
        # add summaries that do not grow with the number of gates
        self.granular = cfg.granularity != "layer"
        self.hist = torch.zeros(0, len(self.layers), len(HIST_GRANULAR if self.granular else HIST_LAYER))
        self.gates: dict[str, np.ndarray] = {}  # α of every gate at each epoch's end (granular)

    def _config_record(self) -> dict:
        """The config as run: the flags, and how many processes made the global batch."""
        w = self.dist.world_size
        return dict(asdict(self.cfg), world_size=w, global_batch_size=self.cfg.batch_size * w)

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"cpu ({torch.get_num_threads()} threads)"

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self) -> None:
        """The checkpoint (rank 0 writes it; the other ranks hold the same state)."""
        if not self.dist.is_main:
            return
        state = dict(
            config=asdict(self.cfg),
            epoch=self.epoch,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            metrics=self.metrics,
            hist=self.hist,
            rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        )
        save_checkpoint(self.run_dir, state)

    def load(self) -> None:
        state = load_checkpoint(self.run_dir, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = state["epoch"]
        self.metrics = state["metrics"]
        self.metrics["config"] = self._config_record()
        self.hist = state["hist"].cpu()
        if self.granular and (self.run_dir / GATES).is_file():
            with np.load(self.run_dir / GATES, allow_pickle=False) as z:  # arrays only: no code runs
                self.gates = {k: z[k] for k in z.files}
        torch.set_rng_state(state["rng"].cpu())
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])

    def write_metrics(self) -> None:
        if not self.dist.is_main:  # one metrics.json, plots and gates.npz: rank 0's
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        m = dict(self.metrics)
        # one series per layer and quantity: a line each in the JSON, whatever the run's length
        series = {"gamma": self.gamma_hist, "alpha": self.alpha_hist()}
        if self.granular:
            series = {"gamma_mean": self.gamma_hist, "alpha_mean": self.alpha_hist()}
            for i, key in enumerate(HIST_GRANULAR[3:], 3):
                series[key] = self.hist[:, :, i]
        m["history"] = dict(layers=self.layer_names, **{k: v.T.tolist() for k, v in series.items()})
        atomic_write(self.run_dir / METRICS, lambda p: p.write_text(compact_json(m)))
        band = self.hist[:, :, 2:4] if self.granular else None
        write_plots(self.run_dir, self.metrics, self.alpha_hist(), self.layer_names, band)
        if self.granular:  # the full gate vectors, at epoch ends only
            atomic_write(self.run_dir / GATES, lambda p: p.write_bytes(npz_bytes(self.gates)))

    @property
    def gamma_hist(self) -> torch.Tensor:
        """γ (its mean, for gates per channel/element) per step and layer, as each forward saw it."""
        return self.hist[:, :, 0]

    @property
    def nu_hist(self) -> torch.Tensor:
        return self.hist[:, :, 1]

    def alpha_hist(self) -> torch.Tensor:
        """α (mean over the gates) per step and layer as seen by each training forward."""
        return self.hist[:, :, 2] if self.granular else alpha(self.gamma_hist, self.nu_hist)

    def _record(self, out: torch.Tensor) -> None:
        """This step's history row, on the device (no host sync)."""
        with torch.no_grad():
            if not self.granular:
                torch.stack([torch.stack([m.gamma.detach(), m.nu]) for m in self.layers], out=out)
                return
            rows = []
            for m in self.layers:
                a = alpha(m.gamma.detach(), m.nu)
                rows.append(torch.stack([
                    m.gamma.detach().mean(), m.nu, a.mean(), a.std(correction=0),
                    (a > NONLINEAR_ABOVE).float().mean(), (a < LINEAR_BELOW).float().mean(),
                ]))  # fmt: skip
            torch.stack(rows, out=out)

    # -- training ------------------------------------------------------------------------------
    def train_epoch(self) -> dict:
        from tqdm import tqdm

        cfg, dev = self.cfg, self.device
        self.model.train()
        n_steps = len(self.train_batches)
        hist = torch.zeros(n_steps, *self.hist.shape[1:], device=dev)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen = 0
        bar = tqdm(
            self.train_batches.epoch(self.epoch),
            total=n_steps,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            disable=not self.progress,
            leave=False,
        )
        t0 = time.perf_counter()
        for step, (x, y) in enumerate(bar):
            with _autocast(dev, cfg.amp):
                out = self.step_model(x)
            loss = _loss(out, y)
            if self.layers:
                self._record(hist[step])
            self.optimizer.zero_grad(set_to_none=True)
            (loss / len(y)).backward()
            self.optimizer.step()
            with torch.no_grad():
                loss_sum += loss.detach()
                correct += (out.argmax(1) == y).sum()
            seen += len(y)
            if (step + 1) % cfg.log_every == 0 or step + 1 == n_steps:
                running = loss_sum.item() / seen  # the only host syncs: every log_every steps
                if not math.isfinite(running):
                    raise NonFiniteLoss(
                        f"the training loss became {running} in epoch {self.epoch + 1} (by step {step + 1})"
                    )
                bar.set_postfix(loss=f"{running:.4f}", acc=f"{100.0 * correct.item() / seen:.2f}%")
        train_time = time.perf_counter() - t0
        self.hist = torch.cat([self.hist, hist.cpu()])
        n = torch.tensor(seen, device=dev)
        distributed.all_reduce_sum(loss_sum, correct, n)  # over all ranks' shards
        return dict(
            train_loss=loss_sum.item() / n.item(),
            train_acc=100.0 * correct.item() / n.item(),
            train_time_s=train_time,
            images_per_s=n.item() / train_time,
        )

    def run(self) -> dict:
        """Train the remaining epochs, then evaluate on the test set and report."""
        cfg = self.cfg
        while self.epoch < cfg.epochs:
            stats = self.train_epoch()
            distributed.sync_buffers(self.model)  # rank 0's BatchNorm statistics everywhere
            val_loss, val_acc = evaluate(self.model, self.val_batches, cfg.amp)
            self.epoch += 1
            stats.update(epoch=self.epoch, val_loss=val_loss, val_acc=val_acc)
            # per layer: γ and α (means over the gates for per-channel/per-element gates)
            stats["gamma"] = [float(m.gamma.detach().float().mean()) for m in self.layers]
            stats["alpha"] = [float(m.alpha.float().mean()) for m in self.layers]
            if self.granular:
                for name, m in zip(self.layer_names, self.layers, strict=True):
                    self.gates[f"epoch{self.epoch}/{name}"] = m.alpha.float().cpu().numpy()
            self.metrics["epochs"].append(stats)
            self.save()
            self.write_metrics()
            if self.progress:
                print(
                    f"epoch {self.epoch}/{cfg.epochs}: train loss {stats['train_loss']:.4f} "
                    f"acc {stats['train_acc']:.2f}% | val loss {val_loss:.4f} acc {val_acc:.2f}% | "
                    f"{stats['images_per_s']:.0f} img/s | alpha "
                    + " ".join(f"{a:.3f}" for a in stats["alpha"])
                )
        return self.finish()

    def finish(self) -> dict:
        test_loss, test_acc, acc_after = test_with_discretized(self.model, self.test_batches, self.cfg.amp)
        verdicts = layer_verdicts(self.model)
        self.metrics.update(
            test_loss=test_loss,
            test_acc=test_acc,
            report=dict(summary(verdicts), test_acc_discretized=acc_after),
        )
        self.write_metrics()
        self.report_text = format_report(verdicts, test_acc, acc_after)
        return self.metrics
