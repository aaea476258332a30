"""Command line: ``alphakern {train,study,report,build,build-cuda}`` (also ``python -m alphakern``).

Every invalid value is refused with one line saying what was wrong and what is accepted (exit
status 2) before any work starts. Choice lists come from the modules that own them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from alphakern.data import DATASETS
from alphakern.graph.methods import METHODS
from alphakern.models import CNN_ACTIVATIONS, HEADS, MODELS
from alphakern.ops.core import BACKEND_CHOICES, GRANULARITIES
from alphakern.ops.core.activations import KINDS
from alphakern.train.config import GATE_MODES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _build(args: argparse.Namespace) -> int:
    """The native backends this machine can build: CPU always, CUDA where the toolkit is."""
    from alphakern.ops.backends.native import cpu as cpu_ext
    from alphakern.ops.backends.native import cuda as cuda_ext

    targets = [args.only] if args.only else ["cpu", "cuda"]
    for target in targets:
        if target == "cuda" and not args.only and cuda_ext._find_cuda_home() is None:
            print("alphakern CUDA backend: skipped (no CUDA toolkit: nvcc not found)")
            continue
        try:
            if target == "cpu":
                path = cpu_ext.build(verbose=args.verbose)
                print(f"alphakern CPU backend built ({cpu_ext.capability()}): {path}")
            else:
                path = cuda_ext.build(verbose=args.verbose)
                print(f"alphakern CUDA backend built: {path}")
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return 1
    return 0


# flag → TrainConfig field; every flag defaults to None so that --resume knows what was given.
# Values are checked by TrainConfig itself, so the API and the command line refuse the same things.
_TRAIN_FLAGS = {
    "data_dir": dict(
        flags=["--data-dir"], help="CIFAR-10: cifar-10-batches-py/ or {train,test}/<class>/ images"
    ),
    "out": dict(flags=["--out"], help="run directory (metrics, plots, checkpoint)"),
    "epochs": dict(flags=["--epochs"], type=int),
    "batch_size": dict(
        flags=["--batch-size"], type=int, help="images per step and process (global: × torchrun's processes)"
    ),
    "lr": dict(flags=["--lr"], type=float),
    "seed": dict(flags=["--seed"], type=int),
    "device": dict(flags=["--device"], help="auto, cpu, cuda, cuda:1, ..."),
    "model": dict(
        flags=["--model"],
        choices=MODELS,
        help="cnn: the study's; others: ReLU networks made learnable by linearize",
    ),
    "dataset": dict(flags=["--dataset"], choices=DATASETS, help="cifar100: cifar-100-python/, fine labels"),
    "augment": dict(
        flags=["--augment"],
        action=argparse.BooleanOptionalAction,
        help="random crop (pad 4) and horizontal flip, on the training device",
    ),
    "activation": dict(flags=["--activation"], choices=CNN_ACTIVATIONS),
    "head": dict(flags=["--head"], choices=HEADS, help="softmax reproduces the study"),
    "nu_step": dict(flags=["--nu-step"], type=float, help="ν increment per training forward"),
    "granularity": dict(
        flags=["--granularity", "--gates"],
        choices=GRANULARITIES,
        help="one gate per layer (the study's), channel, element or hidden feature (an MLP's last dim)",
    ),
    "method": dict(
        flags=["--method"],
        choices=tuple(METHODS),
        help="how the gates are learned and cut: alpha (alphakern's, default), snl, autorep, stage, random",
    ),
    "budget": dict(
        flags=["--budget"],
        type=float,
        help="ReLUs to keep: a fraction <= 1 of the network's or a count; met exactly after the search",
    ),
    "penalty": dict(
        flags=["--penalty"],
        type=float,
        help="weight W of the soft ReLU count: W*soft/total, or W*relu(soft-budget)/total (default 1)",
    ),
    "budget_kind": dict(
        flags=["--budget-kind"],
        choices=KINDS,
        help="apply --budget/--penalty to this kind of non-linearity alone (default: all kinds together)",
    ),
    "finetune_epochs": dict(
        flags=["--finetune-epochs"], type=int, help="epochs after the search with the gates made exact"
    ),
    "fold_padding": dict(
        flags=["--fold-padding"],
        action=argparse.BooleanOptionalAction,
        help="once the gates are exact, move each linear conv chain's padding onto its first conv, "
        "so the fine-tuned network is what 'alphakern fold' merges exactly",
    ),
    "fold_units": dict(
        flags=["--fold-units"],
        action=argparse.BooleanOptionalAction,
        help="meet --budget by fold units: the gates between convs that fold together stay or go together",
    ),
    "distill": dict(
        flags=["--distill"],
        action=argparse.BooleanOptionalAction,
        help="fine-tune with KL (T=4) to the ReLU network of --init",
    ),
    "init": dict(flags=["--init"], metavar="RUN_DIR", help="start from the trained weights of this run"),
    "gate_mode": dict(
        flags=["--gate-mode"],
        choices=GATE_MODES,
        help="schedule: nu grows by --nu-step; l1: nu fixed at --nu-init plus --l1 * mean alpha",
    ),
    "nu_init": dict(flags=["--nu-init"], type=float, help="nu at the start (0; 10 with --gate-mode l1)"),
    "alpha_init": dict(
        flags=["--alpha-init"],
        type=float,
        help="alpha at the start, gamma set for it at --nu-init (default gamma = 0: alpha = 1/2)",
    ),
    "l1": dict(flags=["--l1"], type=float, help="weight of the mean-alpha penalty in --gate-mode l1 (0.01)"),
    "backend": dict(flags=["--backend"], choices=BACKEND_CHOICES),
    "amp": dict(flags=["--amp"], action=argparse.BooleanOptionalAction, help="bf16 autocast (CUDA)"),
    "compile": dict(
        flags=["--compile"], action=argparse.BooleanOptionalAction, help="torch.compile the model"
    ),
    "channels_last": dict(flags=["--channels-last"], action=argparse.BooleanOptionalAction),
    "sync_bn": dict(
        flags=["--sync-bn"],
        action=argparse.BooleanOptionalAction,
        help="under torchrun: BatchNorm over the global batch (SyncBatchNorm)",
    ),
    "fuse_bn": dict(
        flags=["--fuse-bn"],
        action=argparse.BooleanOptionalAction,
        help="run each BatchNorm2d -> gate pair as one fused op (native CPU kernels; else unfused)",
    ),
    "limit_train": dict(flags=["--limit-train"], type=int, help="train on the first N training images"),
    "download": dict(
        flags=["--download"], action=argparse.BooleanOptionalAction, help="fetch with torchvision"
    ),
    "log_every": dict(flags=["--log-every"], type=int, help="steps between progress-bar updates"),
}


def _train(args: argparse.Namespace) -> int:
    from alphakern.train import distributed

    try:
        return _train_run(args)
    finally:
        distributed.shutdown()


def _train_run(args: argparse.Namespace) -> int:
    from alphakern.data import DatasetError
    from alphakern.train import CheckpointError, NonFiniteLoss, RunDirBusy, TrainConfig, Trainer, load_config
    from alphakern.train.config import resolve_device

    given = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    try:
        if args.resume:
            out = given.pop("out", args.resume)
            if Path(out).resolve() != Path(args.resume).resolve():
                msg = f"--out {out} with --resume {args.resume}: a resumed run stays in its directory"
                raise ValueError(msg)
            cfg = dataclasses.replace(load_config(args.resume), **given, out=str(args.resume))
        else:
            cfg = TrainConfig(**given)
        resolve_device(cfg.device)
    except (ValueError, CheckpointError) as e:
        return _fail(str(e))
    try:
        trainer = Trainer(cfg)
        if args.resume:
            trainer.load()
            if trainer.dist.is_main:
                print(f"resuming {cfg.out} after epoch {trainer.epoch}")
        trainer.run()
    except (DatasetError, ValueError, CheckpointError, RunDirBusy) as e:
        return _fail(str(e))
    except NonFiniteLoss as e:
        print(f"error: {e}. Stopped; the last good checkpoint is kept in {cfg.out}.", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: the last finished epoch is saved in {cfg.out}; continue with "
            f"'alphakern train --resume {cfg.out}'",
            file=sys.stderr,
        )
        return 130
    if not trainer.dist.is_main:  # under torchrun rank 0 reports
        return 0
    m = trainer.metrics
    print(f"test loss {m['test_loss']:.4f}, test accuracy {m['test_acc']:.2f}%")
    print(trainer.report_text)
    print(f"outputs in {cfg.out}")
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def _head_list(text: str) -> list[str]:
    heads = [h.strip() for h in text.split(",") if h.strip()]
    bad = [h for h in heads if h not in HEADS]
    if not heads or bad:
        raise argparse.ArgumentTypeError(f"heads must be among {', '.join(HEADS)}, got {text!r}")
    return heads


STUDY_FLAGS = (
    "data_dir", "model", "epochs", "batch_size", "lr", "nu_step", "granularity", "device", "limit_train"
)  # fmt: skip


def _study(args: argparse.Namespace) -> int:
    from alphakern.study import run_study
    from alphakern.train import TrainConfig

    settings = {k: getattr(args, k) for k in STUDY_FLAGS if getattr(args, k) is not None}
    try:
        cfg = TrainConfig(**settings)  # refuses bad values before anything runs
    except ValueError as e:
        return _fail(str(e))
    if args.jobs < 1:
        return _fail(f"--jobs must be a positive integer, got {args.jobs}")
    settings = {k: getattr(cfg, k) for k in STUDY_FLAGS}
    settings.update(activation=cfg.activation, log_every=200)
    out = Path(args.out)
    summary, runs = run_study(out, args.heads, args.seeds, settings, jobs=args.jobs)
    print((out / "study.md").read_text())
    failed = [r.name for r in runs if r.status == "failed"]
    if failed:
        print(f"error: {len(failed)} run(s) failed: {', '.join(failed)} (see study.md)", file=sys.stderr)
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from alphakern.data import DatasetError
    from alphakern.graph import format_report, layer_verdicts
    from alphakern.train import METRICS, CheckpointError, format_relus, test_with_discretized
    from alphakern.train.runs import load_run, load_test_batches

    try:
        run = load_run(args.run_dir, args.device)
    except (CheckpointError, ValueError) as e:
        return _fail(str(e))
    print(f"run {args.run_dir}: {run.state['epoch']}/{run.cfg.epochs} epochs, head={run.cfg.head}")
    acc = after = None
    try:
        _, acc, after = test_with_discretized(run.model, load_test_batches(run, args.data_dir))
    except DatasetError as e:
        print(f"(no test accuracies: {str(e).splitlines()[0]})")
    print(format_report(layer_verdicts(run.model), acc, after))
    metrics_file = Path(args.run_dir) / METRICS
    if metrics_file.is_file():  # a finished run's ReLU counts
        metrics = json.loads(metrics_file.read_text())
        if "relu_count_after" in metrics:
            print(format_relus(metrics))
    return 0


def _fold(args: argparse.Namespace) -> int:
    from alphakern.train import CheckpointError
    from alphakern.train.runs import fold_run

    try:
        done = fold_run(args.run_dir, args.out, exact=args.exact, policy=args.policy, device=args.device,
                        data_dir=args.data_dir)  # fmt: skip
    except (CheckpointError, ValueError) as e:
        return _fail(str(e))
    for note in done.notes:
        print(note)
    result, info = done.result, done.folded.fold_info
    r = result["report"]
    print(
        f"folded {args.run_dir}: {len(info.merged)} merges, {len(info.not_merged)} left "
        f"(fold.json); depth {r['before']['depth']} -> {r['after']['depth']}, "
        f"batch-1 latency {r['before']['latency_ms']:.3f} -> {r['after']['latency_ms']:.3f} ms"
    )
    if "test_acc_after" in result:
        print(f"test accuracy {result['test_acc_before']:.2f}% -> {result['test_acc_after']:.2f}%")
    print(f"wrote {done.program} (torch.export.load)")
    if args.onnx:
        from alphakern.onnx_export import export_onnx

        onnx_dir = Path(args.onnx)
        onnx_dir.mkdir(parents=True, exist_ok=True)
        for name, m in (("unfolded", done.exact_model), ("folded", done.folded)):
            try:
                path = export_onnx(m, done.example_input, onnx_dir / f"{name}.onnx")
            except RuntimeError as e:  # the onnx extra is missing
                return _fail(str(e))
            print(f"wrote {path} (ONNX, dynamic batch)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="alphakern", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the reference CNN on CIFAR-10 (defaults: the study's)")
    for dest, spec in _TRAIN_FLAGS.items():
        spec = dict(spec)
        p.add_argument(*spec.pop("flags"), dest=dest, default=None, **spec)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped")
    p.set_defaults(func=_train)

    p = sub.add_parser("report", help="complexity report of a run: gamma, alpha, verdict per layer")
    p.add_argument("run_dir")
    p.add_argument("--data-dir", help="CIFAR-10 location, if not where the run read it")
    p.add_argument("--device")
    p.set_defaults(func=_report)

    p = sub.add_parser("study", help="train seeds x heads, aggregate how stable each layer's verdict is")
    p.add_argument("--seeds", type=_int_list, default=[0, 1, 2], help="comma-separated (default 0,1,2)")
    p.add_argument("--heads", type=_head_list, default=list(HEADS), help="comma-separated (default: both)")
    p.add_argument("--jobs", type=int, default=1, help="trainings at a time (threads split between them)")
    p.add_argument("--out", required=True, help="study directory: one run directory per head and seed")
    for dest in STUDY_FLAGS:
        spec = dict(_TRAIN_FLAGS[dest])
        p.add_argument(*spec.pop("flags"), dest=dest, default=None, **spec)
    p.set_defaults(func=_study)

    from alphakern.folding import POLICIES

    p = sub.add_parser("fold", help="discretise a finished run and merge what became linear (alphakern.fold)")
    p.add_argument("run_dir")
    p.add_argument(
        "--policy", choices=POLICIES, default="latency", help="which merges to keep (default latency)"
    )
    p.add_argument(
        "--exact",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refuse merges inexact at borders",
    )
    p.add_argument("--out", help="where folded.pt2 and fold.json go (default: the run directory)")
    p.add_argument("--onnx", metavar="DIR", help="also write unfolded.onnx and folded.onnx (onnx extra)")
    p.add_argument("--data-dir", help="CIFAR location, if not where the run read it")
    p.add_argument("--device")
    p.set_defaults(func=_fold)

    p = sub.add_parser("build", help="compile the native backends (CPU; CUDA where nvcc is), print where")
    p.add_argument("--only", choices=("cpu", "cuda"), help="build just this one (cuda: fail without nvcc)")
    p.add_argument("--verbose", action="store_true", help="show the compiler's commands")
    p.set_defaults(func=_build)

    p = sub.add_parser("build-cuda", help="the same as 'build --only cuda'")
    p.add_argument("--verbose", action="store_true", help="show the compiler's commands")
    p.set_defaults(func=_build, only="cuda")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
