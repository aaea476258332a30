"""The CIFAR training loop: the study's settings, on-device data, no per-step host sync, resumable.

Every epoch ends with an atomic checkpoint (model, optimizer, ν, history, metrics), so an
interrupted run (Ctrl-C, kill) loses at most the epoch in progress; ``resume`` continues
bit-for-bit where the last checkpoint stopped.

Training to a ReLU budget has two phases: ``epochs`` of search (the gates learn, a penalty on the
soft ReLU count pulls them towards the budget), then the gates are made exact — ReLU or identity,
meeting the budget (``alphakern.graph.budget``) — and ``finetune_epochs`` train the weights alone,
optionally distilling from the ReLU network the run started from (``init``).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alphakern.data import Cifar10, DeviceBatches, load_dataset, probe, split_indices
from alphakern.folding import fold_padding
from alphakern.graph import apply_keep, discretize, format_report, layer_verdicts, nonlinearity_count
from alphakern.graph.budget import soft_count
from alphakern.graph.report import summary
from alphakern.modules import alpha_layers
from alphakern.train import distributed
from alphakern.train.build import Budget, build_model, load_init
from alphakern.train.config import TrainConfig, resolve_device
from alphakern.train.history import History
from alphakern.train.report import format_relus, relu_layers
from alphakern.train.rundir import RunDir
from alphakern.train.sync_batchnorm import convert_sync_batchnorm

__all__ = [
    "EVAL_BATCH",
    "NonFiniteLoss",
    "Trainer",
    "build_model",
    "evaluate",
    "format_relus",
    "test_with_discretized",
]

EVAL_BATCH = 500
DISTILL_T = 4.0  # SNL's temperature


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.float(), y, reduction="sum")


def _distill(out: torch.Tensor, teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """T²·KL(teacher ‖ student) at temperature T, per sample (Hinton et al.; SNL's fine-tuning)."""
    with torch.no_grad():
        target = F.log_softmax(teacher(x).float() / DISTILL_T, dim=1)
    student = F.log_softmax(out.float() / DISTILL_T, dim=1)
    return F.kl_div(student, target, reduction="batchmean", log_target=True) * DISTILL_T**2


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
    """One run: builds it from the config (``build``), trains the search epochs, makes the gates
    exact, fine-tunes, and writes the run directory (``rundir``) after every epoch."""

    def __init__(self, cfg: TrainConfig, data: Cifar10 | None = None, *, progress: bool = True) -> None:
        self.cfg = cfg
        # under torchrun: joins the process group; this rank's GPU (cuda:LOCAL_RANK) on CUDA
        self.device = distributed.init_from_env(resolve_device(cfg.device))
        self.dist = distributed.current()
        # None → on: channels_last measured faster on the 2-core CPU (benchmarks/results/README.md),
        # and it is cuDNN's preferred layout for convolutions and batch norm on CUDA.
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else True
        self.run_dir = RunDir(cfg.out, writes=self.dist.is_main)
        self.progress = progress and self.dist.is_main  # rank 0 alone shows progress
        if cfg.amp and self.device.type != "cuda" and self.dist.is_main:
            print("note: --amp applies bf16 autocast on CUDA only; training in fp32", file=sys.stderr)
        # the model first: a budget it cannot meet or an --init that does not fit is refused
        # before any data is read
        self.model = build_model(cfg, self.device, self.channels_last)
        self.teacher = load_init(cfg, self.model, self.device) if cfg.init else None
        if cfg.sync_bn:
            self.model = convert_sync_batchnorm(self.model, self.device)
        self.layers = [m for _, m in alpha_layers(self.model)]
        self.budget = Budget.of(cfg, self.model, self._example())  # with the method (--method)
        self.sites = list(self.budget.sites)  # the gates still learning (none once made exact)
        if data is None:
            data = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download)
        self._load_data(data)
        self.keep: dict[str, torch.Tensor] | None = None  # set when the gates are made exact
        self.padding_moved: list[tuple[str, str]] = []  # --fold-padding's (first, second) convs
        self._wrap()
        self.epoch = 0
        self.metrics: dict = dict(config=self._config_record(), device=self._device_name(), epochs=[])
        self.history = History([n for n, _ in alpha_layers(self.model)], cfg.granularity != "layer")
        self.gate_alphas: dict[str, np.ndarray] = {}  # α of every gate at each epoch's end (granular)

    def _load_data(self, data: Cifar10) -> None:
        """This rank's shards of the splits, on the device; equal training shards: equal step counts."""
        cfg, d = self.cfg, self.dist
        train_idx, val_idx = split_indices(len(data.train_y), cfg.val_fraction, cfg.seed)
        if cfg.limit_train is not None:
            train_idx = train_idx[: cfg.limit_train]
        train_idx = distributed.shard(train_idx, d, equal=True)
        val_idx = distributed.shard(val_idx, d, equal=False)
        test_idx = distributed.shard(torch.arange(len(data.test_y)), d, equal=False)

        def batches(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, size: int, shuffle: bool):
            x, y = x[idx].to(self.device), y[idx].to(self.device)
            aug = shuffle and cfg.augment  # training batches only
            return DeviceBatches(
                x, y, size, shuffle=shuffle, seed=cfg.seed, channels_last=self.channels_last, augment=aug
            )

        self.train_batches = batches(data.train_x, data.train_y, train_idx, cfg.batch_size, True)
        self.val_batches = batches(data.train_x, data.train_y, val_idx, EVAL_BATCH, False)
        self.test_batches = batches(data.test_x, data.test_y, test_idx, EVAL_BATCH, False)

    def _wrap(self) -> None:
        """The stepped module (DDP under torchrun, compiled with --compile) and a fresh optimiser:
        again after the gates are made exact, since their γ are gone."""
        self.step_model = distributed.wrap(self.model, self.device)
        if self.cfg.compile:
            self.step_model = torch.compile(self.step_model)
        groups = self.budget.method.parameter_groups(self.model, self.cfg.lr) if self.layers else None
        self.optimizer = torch.optim.Adam(groups or self.model.parameters(), lr=self.cfg.lr)

    def _example(self) -> torch.Tensor:
        """One CIFAR-sized sample: what the ReLUs are counted on."""
        return probe(self.device)

    def penalty(self) -> torch.Tensor | None:
        """The search epochs' penalty on the gates (None: none asked for)."""
        return self.budget.penalty()

    def make_exact(self) -> None:
        """End of the search: every gate becomes exactly a ReLU or the identity — by the method's
        cut (alpha: to the budget, highest α first, or without one by rounding α at ½) — and stays
        so (nothing left to learn). What the cut measures, it measures on the validation split."""
        self._freeze(self.budget.exact_keep(self.model, self.validation_accuracy))
        self.metrics["cut_after_epoch"] = self.epoch

    def validation_accuracy(self, model: nn.Module) -> float:
        """``model``'s accuracy (%) on the validation split: what a method's choices may read."""
        return evaluate(model, self.val_batches, self.cfg.amp)[1]

    @property
    def search_epochs(self) -> int:
        """Epochs before the cut: the config's, or none for a method that learns no gates."""
        return self.cfg.epochs if self.budget.method.learned else 0

    def _freeze(self, keep: dict[str, torch.Tensor]) -> None:
        """Make the gates exact per ``keep``: no gates left to follow, a fresh optimiser."""
        self.keep = keep
        apply_keep(self.model, keep)
        if self.cfg.fold_padding:  # the network fine-tuned is the one fold merges exactly
            self.padding_moved = fold_padding(self.model)
        self.layers, self.sites = [], []
        self._wrap()

    def _config_record(self) -> dict:
        """The config as run: the flags, and how many processes made the global batch."""
        w = self.dist.world_size
        return dict(asdict(self.cfg), world_size=w, global_batch_size=self.cfg.batch_size * w)

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"cpu ({torch.get_num_threads()} threads)"

    # -- the run directory ---------------------------------------------------------------------
    def save(self) -> None:
        """The checkpoint (rank 0 writes it; the other ranks hold the same state)."""
        self.run_dir.save(dict(
            config=asdict(self.cfg),
            epoch=self.epoch,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            metrics=self.metrics,
            hist=self.history.data,
            keep=self.keep,
            method=self.budget.method.state_dict(),
            rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        ))  # fmt: skip

    def load(self) -> None:
        self.run_dir.claim()  # resuming: refused at once where another process writes the directory
        state = self.run_dir.load(self.device)
        if state.get("keep") is not None and self.keep is None:  # stopped in the fine-tuning epochs
            self._freeze({k: v.cpu() for k, v in state["keep"].items()})
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = state["epoch"]
        if state.get("method"):  # a method with a schedule (SNL's λ)
            self.budget.method.load_state_dict(state["method"])
        self.metrics = state["metrics"]
        self.metrics["config"] = self._config_record()
        self.history.data = state["hist"].cpu()
        if self.history.granular:
            self.gate_alphas = self.run_dir.load_gates()
        torch.set_rng_state(state["rng"].cpu())
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])

    def write_metrics(self, final: bool = False) -> None:
        self.run_dir.write(self.metrics, self.history, self.gate_alphas, final)

    # the history as the tests and benchmarks read it
    @property
    def hist(self) -> torch.Tensor:
        return self.history.data

    @property
    def gamma_hist(self) -> torch.Tensor:
        return self.history.gamma

    @property
    def nu_hist(self) -> torch.Tensor:
        return self.history.nu

    def alpha_hist(self) -> torch.Tensor:
        return self.history.alpha()

    # -- training ------------------------------------------------------------------------------
    def train_epoch(self) -> dict:
        from tqdm import tqdm

        cfg, dev = self.cfg, self.device
        self.model.train()
        n_steps = len(self.train_batches)
        hist = self.history.epoch_buffer(n_steps, dev)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen = 0
        bar = tqdm(
            self.train_batches.epoch(self.epoch),
            total=n_steps,
            desc=f"epoch {self.epoch + 1}/{cfg.total_epochs}" + (" (fine-tune)" if self.keep else ""),
            disable=not self.progress,
            leave=False,
        )
        t0 = time.perf_counter()
        for step, (x, y) in enumerate(bar):
            with _autocast(dev, cfg.amp):
                out = self.step_model(x)
            loss = _loss(out, y)
            objective = loss / len(y)
            if self.layers:
                self.history.record(self.layers, hist[step])
                extra = self.penalty()
                if extra is not None:
                    objective = objective + extra
            elif self.teacher is not None:
                objective = objective + _distill(out, self.teacher, x)
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
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
        if self.layers:  # the fine-tuning epochs have no gates to follow
            self.history.extend(hist)
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
        self.run_dir.claim()  # before the first epoch, not at its save: RunDirBusy
        cfg = self.cfg
        while self.epoch < cfg.total_epochs:
            if self.epoch >= self.search_epochs and cfg.discretizes and self.keep is None:
                self.make_exact()
            phase = "fine-tune" if self.keep is not None else "search"
            stats = self.train_epoch()
            distributed.sync_buffers(self.model)  # rank 0's BatchNorm statistics everywhere
            val_loss, val_acc = evaluate(self.model, self.val_batches, cfg.amp)
            self.epoch += 1
            stats.update(epoch=self.epoch, phase=phase, val_loss=val_loss, val_acc=val_acc)
            cut_now = False
            if self.sites:
                with torch.no_grad():
                    stats["soft_relu_count"] = float(soft_count(self.sites))
                cut_now = self.budget.method.end_epoch(self.budget.scope)  # SNL: at the budget
            # per layer: γ and α (means over the gates for per-channel/per-element gates)
            stats["gamma"] = [float(m.gamma.detach().float().mean()) for m in self.layers]
            stats["alpha"] = [float(m.alpha.float().mean()) for m in self.layers]
            if self.history.granular and self.layers:
                for name, m in zip(self.history.layer_names, self.layers, strict=True):
                    self.gate_alphas[f"epoch{self.epoch}/{name}"] = m.alpha.float().cpu().numpy()
            self.metrics["epochs"].append(stats)
            if cut_now and cfg.discretizes and self.keep is None:
                self.make_exact()  # the epochs left fine-tune
            self.save()
            self.write_metrics()
            if self.progress:
                print(
                    f"epoch {self.epoch}/{cfg.total_epochs}: train loss {stats['train_loss']:.4f} "
                    f"acc {stats['train_acc']:.2f}% | val loss {val_loss:.4f} acc {val_acc:.2f}% | "
                    f"{stats['images_per_s']:.0f} img/s | alpha "
                    + " ".join(f"{a:.3f}" for a in stats["alpha"])
                )
        if cfg.discretizes and self.keep is None:  # a budget run without fine-tuning epochs
            self.make_exact()
            self.save()
        return self.finish()

    def finish(self) -> dict:
        test_loss, test_acc, acc_after = test_with_discretized(self.model, self.test_batches, self.cfg.amp)
        verdicts = layer_verdicts(self.model)
        final = self.model if self.keep is not None else discretize(self.model)
        kinds_after = nonlinearity_count(final, self._example())
        self.metrics.update(
            test_loss=test_loss,
            test_acc=test_acc,
            report=dict(summary(verdicts), test_acc_discretized=acc_after),
            relu_count_before=self.budget.relus_before,
            relu_count_after=sum(kinds_after.values()),
            nonlinearities_before=self.budget.kinds_before,
            nonlinearities_after=kinds_after,
            relu_budget=self.budget.budget,
            relu_layers=relu_layers(self.budget.sites, self.keep),
            **({"padding_moved": [list(p) for p in self.padding_moved]} if self.cfg.fold_padding else {}),
        )
        self.write_metrics(final=True)
        self.report_text = format_report(verdicts, test_acc, acc_after) + "\n" + format_relus(self.metrics)
        return self.metrics
