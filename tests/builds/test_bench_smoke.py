"""The benchmark's --quick mode runs end to end and writes a sane JSON and a plot."""

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.subproc import ROOT, run_python
from tests.train_helpers import held_by_another_process

pytestmark = pytest.mark.slow  # benchmark processes


def benchmark_module(name: str):
    """A module of benchmarks/, imported as its siblings import it: by name, from that folder."""
    folder = str(ROOT / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def test_quick_benchmark(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_python(
        "benchmarks/bench_activation.py",
        "--quick",
        "--device",
        "cpu",
        "--budget",
        "0.2",
        "--json",
        str(out),
        "--plot",
        str(tmp_path / "bench.png"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["meta"]["device"] == "cpu" and data["meta"]["copy_gbs"] > 0
    rows = data["rows"]
    provs = {r["provider"] for r in rows}
    assert {"eager", "prelu", "compile", "alphakern-torch"} <= provs
    assert all(r["check"] == "ok" for r in rows), [r for r in rows if r["check"] != "ok"]
    for r in rows:
        assert r["ms"] > 0 and r["gbps"] > 0
        assert r["ms_p20"] <= r["ms"] <= r["ms_p80"]
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert "alphakern activation benchmark on cpu" in proc.stdout


def test_train_benchmark_smoke(tmp_path):
    out = tmp_path / "train.json"
    proc = run_python(
        "benchmarks/bench_train.py",
        "--synthetic",
        "--device",
        "cpu",
        "--steps",
        "2",
        "--rounds",
        "1",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    med = data["median_images_per_s"]
    assert set(med) == {"notebook loop", "alphakern (AlphaReLU)", "alphakern (nn.ReLU)"}
    assert all(v > 0 for v in med.values()) and data["nonlinearity_cost"] > 0


def test_gpu_rotation_and_run_order():
    """The GPU timing cycles through enough input sets to defeat L2; the large sizes run first."""
    import torch

    bench_activation, timing = benchmark_module("bench_activation"), benchmark_module("timing")

    assert timing.input_sets_for(8 * 2**20, l2_bytes=50 * 2**20) == 13  # 2^20 fp32 x and dy, H100 L2
    assert timing.input_sets_for(2**30, l2_bytes=50 * 2**20) == 1
    order = bench_activation.groups(
        "cuda", False, [torch.float32, torch.bfloat16, torch.float16], ("layer", "channel")
    )
    labels = [(g[0], g[4]) for g in order]
    assert (
        labels[:16]
        == [(f"flat-2^{p}", "layer") for p in (24, 26, 28) for _ in range(4)]
        + [("cnn-b256-l1", "channel")] * 4
    )
    assert {g[2] for g in order[: len(order) * 2 // 3]} == {torch.float32, torch.bfloat16}
    assert {g[2] for g in order[len(order) * 2 // 3 :]} == {torch.float16}


def test_gpu_check_script_degrades_gracefully(tmp_path):
    """A dry run of benchmarks/gpu_check.sh on this CPU with a budget too short for anything:
    every step starts in order, is stopped when its slot ends, and leaves valid JSON where it got
    as far as writing any (a 5 s slot on a loaded machine may end while Python still imports torch:
    what a stopped benchmark keeps is tested directly below); the run ends within its budget plus a
    margin that only a step left running past its slot would exceed."""
    env = dict(os.environ, BUDGET_S="50", PY=sys.executable, OUT=str(tmp_path / "out"))
    env["TORCH_EXTENSIONS_DIR"] = str(tmp_path / "ext")
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=200
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 50 + 60, elapsed  # a step not stopped would run for minutes
    out = tmp_path / "out"
    log = (out / "gpu_check.log").read_text()
    steps = ["device", "build-cuda", "gpu tests: triton", "waiting", "gpu tests: cuda", "bench_bn_gate",
             "prelu check", "bench_activation", "bench_train", "bench_activation: other activations",
             "bench_fold", "bench_mlp_fold", "done"]  # fmt: skip
    positions = [log.find(f"=== {s}") for s in steps]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), log
    assert "torch" in (out / "device.txt").read_text()
    assert "exit 124 (stopped: slot of" in log
    for name in ("bench_activation_gpu.json", "bench_train_gpu.json"):
        if (out / name).exists():  # valid JSON although the step was stopped
            assert json.loads((out / name).read_text())["meta"]["complete"] is False


@pytest.mark.parametrize(
    "script, args",
    [
        ("benchmarks/bench_activation.py",
         ["--quick", "--device", "cpu", "--budget", "0.1", "--activation", "gelu,silu,hardswish,relu6"]),
        ("benchmarks/bench_train.py", ["--synthetic", "--device", "cpu", "--rounds", "100", "--steps", "2"]),
    ],
)  # fmt: skip
def test_a_benchmark_stopped_by_sigterm_keeps_what_it_measured(tmp_path, script, args):
    """gpu_check.sh stops a step with SIGTERM when its slot ends: a benchmark stopped once its JSON
    exists (bench_activation: after its first group; bench_train: before its warm-ups) saves what it
    has, valid and marked incomplete, and exits by itself with 130 (not killed by the signal). Waits
    for the file, not for a time."""
    out, err = tmp_path / "r.json", tmp_path / "stderr.txt"
    with err.open("w") as stderr:  # a file, not a pipe: a full pipe would block the benchmark
        proc = subprocess.Popen(
            [sys.executable, script, *args, "--json", str(out)], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
        hang = time.monotonic() + 600  # a guard against a benchmark that never writes, not a timing
        try:
            while not out.exists():
                assert proc.poll() is None and time.monotonic() < hang, err.read_text()
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 130, proc.returncode
    data = json.loads(out.read_text())
    assert data["meta"]["complete"] is False


def test_bench_train_stopped_right_after_its_first_write_exits_130(tmp_path, monkeypatch):
    """The race the test above can lose (CI, 2026-12-07: killed by SIGINT, -2): SIGTERM delivered
    just after the first JSON's rename, before the measuring starts. Delivered here at exactly that
    point, in-process: main saves what it has and returns 130; the KeyboardInterrupt does not escape
    (uncaught, Python re-raises SIGINT on itself and the process dies with -2)."""
    bench_train = benchmark_module("bench_train")
    real, calls = bench_train.atomic_write, []

    def write_then_stopped(path, write):
        real(path, write)
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt  # what signal.default_int_handler raises for the SIGTERM

    monkeypatch.setattr(bench_train, "atomic_write", write_then_stopped)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "r.json"
    try:
        rc = bench_train.main(["--synthetic", "--device", "cpu", "--rounds", "1", "--steps", "1",
                               "--json", str(out)])  # fmt: skip
    except KeyboardInterrupt:  # caught here: escaping, it would end the pytest session
        pytest.fail("a KeyboardInterrupt after the first write escaped bench_train.main")
    finally:
        signal.signal(signal.SIGTERM, before)
    assert rc == 130 and len(calls) == 2
    assert json.loads(out.read_text())["meta"]["complete"] is False


def test_quick_benchmark_with_gates(tmp_path):
    """--gates: per-channel rows compare with F.prelu and a per-channel eager/compile; every
    provider checked against the benchmark's own float64 oracle."""
    out = tmp_path / "gates.json"
    proc = run_python(
        "benchmarks/bench_activation.py", "--quick", "--device", "cpu", "--budget", "0.1",
        "--gates", "channel,element", "--json", str(out), "--plot", str(tmp_path / "g.png"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {r["gates"] for r in rows} == {"channel", "element"}
    assert all(r["check"] == "ok" for r in rows), [r for r in rows if r["check"] != "ok"]
    assert {r["provider"] for r in rows if r["gates"] == "channel"} >= {
        "eager",
        "prelu",
        "compile",
        "alphakern-torch",
    }
    assert "prelu" not in {r["provider"] for r in rows if r["gates"] == "element"}


def test_quick_benchmark_of_other_activations(tmp_path):
    """--activation: each f's rows checked against its float64 oracle, the eager blend x + α·(F.f(x) − x)
    as the baseline, no F.prelu row (it computes ReLU's gate only)."""
    out = tmp_path / "act.json"
    proc = run_python(
        "benchmarks/bench_activation.py", "--quick", "--device", "cpu", "--budget", "0.1",
        "--activation", "gelu,hardswish", "--providers", "eager,alphakern-torch,prelu",
        "--json", str(out), "--plot", str(tmp_path / "act.png"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {(r["activation"], r["provider"]) for r in rows} == {
        (a, p) for a in ("gelu", "hardswish") for p in ("eager", "alphakern-torch")
    }
    assert all(r["check"] == "ok" and r["ms"] > 0 for r in rows), rows
    assert all("speedup_vs_eager" in r for r in rows)
    assert (tmp_path / "act.png").stat().st_size > 0


def test_bn_gate_benchmark_smoke(tmp_path):
    """bench_bn_gate --quick: the op part's providers agree before they are timed, the train part
    times all six variants."""
    out = tmp_path / "bn.json"
    proc = run_python("benchmarks/bench_bn_gate.py", "--quick", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["op"] and all(r["check"] == "ok" for r in data["op"]), data["op"]
    assert {r["mode"] for r in data["op"]} == {"fwd", "fwd+bwd"}
    assert all(v > 0 for r in data["op"] for v in r["ms"].values())
    steps = data["train"]["cnn"]["step_ms"]
    assert len(steps) == 6 and all(v > 0 for v in steps.values())


def test_step_benchmark_smoke(tmp_path):
    """bench_step (plain networks, no trainer): the four variants of both models and the floor timed,
    the fused ones with every BN fused (ResNet-20: 10 BN → gate pairs and 9 BN → add → gate tails),
    each fused op's traffic counted once at its activation's size."""
    out = tmp_path / "step.json"
    proc = run_python("benchmarks/bench_step.py", "--rounds", "1", "--steps", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    for model, fused in (("cnn", 3), ("resnet20", 19)):
        steps = data[model]["median_step_ms"]
        assert len(steps) == 5 and all(v > 0 for v in steps.values()), steps
        assert data[model]["fused_bns"] == {"relu, fused BN": fused, "channel gates, fused BN": fused}
        traffic = data[model]["fused_traffic"]
        assert len(traffic["calls"]) == fused and traffic["ms"] > 0
    calls = data["resnet20"]["fused_traffic"]["calls"]
    mb = 64 * 16 * 32 * 32 * 4  # the first stage's activation, fp32
    assert sorted(c["passes"] for c in calls) == [8] * 10 + [11] * 9
    assert sorted({c["bytes"] for c in calls}) == [mb // 4, mb // 2, mb]


def test_fold_end_to_end_smoke(tmp_path):
    """fold_end_to_end on a tiny dataset: three runs trained and resumed-as-done on a second call,
    both networks folded without changing their test accuracy, four latencies per batch size."""
    from tests.cifar_fixtures import write_pickles

    data = write_pickles(tmp_path / "cifar", n_per_batch=16, n_test=24)
    args = ["benchmarks/fold_end_to_end.py", "--data-dir", str(data), "--work", str(tmp_path / "runs"),
            "--out", str(tmp_path / "res"), "--base-epochs", "1", "--search-epochs", "1",
            "--finetune-epochs", "1", "--budget", "0.2", "--batches", "1", "--seconds", "0.2",
            "--policy", "all"]  # fmt: skip
    proc = run_python(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "res" / "fold_end_to_end_resnet20.json").read_text())
    acc = data["test_acc"]
    assert acc["relu"] == pytest.approx(acc["relu_folded"])
    assert acc["gated"] == pytest.approx(acc["gated_folded"])
    assert data["padding_moved"] and data["relu_count"]["gated"] < data["relu_count"]["relu"]
    assert set(data["latency_ms"]["1"]) == {"relu", "gated", "relu_folded", "gated_folded"}
    assert data["structure"]["gated"]["after"]["depth"] < data["structure"]["gated"]["before"]["depth"]
    again = run_python(*args)  # every run is found finished: nothing trains again
    assert again.returncode == 0 and again.stdout.count("done before") == 3, again.stdout + again.stderr


def test_quick_benchmark_of_feature_gates(tmp_path):
    """--gates feature: the transformer rows (a (B, T, D) x), every provider checked first."""
    out = tmp_path / "features.json"
    proc = run_python("benchmarks/bench_activation.py", "--quick", "--device", "cpu", "--budget", "0.1",
                      "--gates", "feature", "--activation", "gelu", "--json", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert rows and {r["gates"] for r in rows} == {"feature"} and all(len(r["shape"]) == 3 for r in rows)
    assert all(r["check"] == "ok" for r in rows), [r for r in rows if r["check"] != "ok"]
    assert {"eager", "compile", "alphakern-torch"} <= {r["provider"] for r in rows}


def test_mlp_fold_benchmark_smoke(tmp_path):
    out = tmp_path / "mlp.json"
    args = ["--quick", "--batches", "1", "--no-onnx", "--budget", "0.05", "--dtypes", "float32,bfloat16",
            "--json", str(out)]  # fmt: skip
    proc = run_python("benchmarks/bench_mlp_fold.py", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["meta"]["complete"]
    rows = data["rows"]
    assert {r["linear_share"] for r in rows} == {0.25, 0.5, 0.75, 1.0}
    assert {r["form"] for r in rows} == {"gelu-mlp", "split", "concat", "fold(latency)"}
    assert {r["dtype"] for r in rows} == {"torch.float32", "torch.bfloat16"}  # each checked, then timed
    assert all(r["ms"] > 0 for r in rows)


def test_pareto_smoke(tmp_path):
    """pareto.py on a tiny dataset: the ReLU network, the 100 % point and three methods at one budget
    (alpha and SNL with their chosen settings, their second seeds and their own defaults' rows),
    every point at its budget with the same epochs, the plots written, and a second call finds
    every run finished."""
    from tests.cifar_fixtures import write_pickles

    data = write_pickles(tmp_path / "cifar", n_per_batch=16, n_test=24)
    args = ["benchmarks/pareto.py", "--data-dir", str(data), "--work", str(tmp_path / "runs"),
            "--out", str(tmp_path / "res"), "--base-epochs", "1", "--search-epochs", "1",
            "--finetune-epochs", "1", "--budgets", "0.25", "--methods", "random,alpha,snl",
            "--alpha-init", "0.9", "--alpha-nu-init", "12", "--alpha-penalty", "3",
            "--snl-penalty", "0.001"]  # fmt: skip
    proc = run_python(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads((tmp_path / "res" / "pareto.json").read_text())
    assert r["complete"]
    rows = [(p["method"], p["granularity"], p["seed"], p["variant"]) for p in r["points"]]
    assert rows == [(None, None, 0, None), ("random", "element", 0, None), ("alpha", "element", 0, None),
                    ("snl", "element", 0, None), ("alpha", "element", 1, None), ("snl", "element", 1, None),
                    ("alpha", "channel", 0, None), ("alpha", "element", 0, "seed's start"),
                    ("snl", "element", 0, "authors' λ")]  # fmt: skip
    for p in r["points"]:
        assert p["epochs"] == 2
        if p["method"]:
            assert p["relus"] <= p["relu_budget"] == 47104
            assert set(p["kept_per_stage"]) == {"stage 1", "stage 2", "stage 3"}
        copied = tmp_path / "res" / "run_metrics" / f"{Path(p['run']).name}.json"
        record = json.loads(copied.read_text())
        assert "history" not in record and len(record["epochs"]) == 2  # the curves, not the per-step gates
        cfg = record["config"]
        own = {"alpha": (0.9, 12.0, 3.0), "snl": (None, None, 0.001)}.get(p["method"], (None, None, None))
        want = own if p["variant"] is None else (None, None, None)
        assert (cfg["alpha_init"], cfg["nu_init"], cfg["penalty"]) == want, p["run"]
    assert r["points"][1]["cut_after_epoch"] == 0  # random: cut before the first epoch
    v = r["verdict"]["0.25"]
    assert sorted(v["ranking"]) == ["alpha", "random", "snl"] and set(v["minus_random"]) == {"alpha", "snl"}
    assert isinstance(v["learned_ahead_of_random"], bool) and sorted(v["seeds"]) == ["alpha", "snl"]
    for png in ("pareto.png", "pareto_stages.png"):
        assert (tmp_path / "res" / png).stat().st_size > 1000
    again = run_python(*args)
    assert again.returncode == 0 and again.stdout.count("done before") == 10, again.stdout + again.stderr
    (tmp_path / "runs" / "random_element_0.25" / "metrics.json").unlink()  # as if still running
    (tmp_path / "res" / "run_metrics" / "random_element_0.25.json").unlink()
    report = run_python(*args, "--report")
    assert report.returncode == 0, report.stdout + report.stderr
    r = json.loads((tmp_path / "res" / "pareto.json").read_text())
    assert not r["complete"] and r["runs_left"] == [str(tmp_path / "runs" / "random_element_0.25")]
    read_back = [None, "alpha", "snl", "alpha", "snl", "alpha", "alpha", "snl"]  # all but random, in order
    assert [p["method"] for p in r["points"]] == read_back
    assert not (tmp_path / "runs" / "random_element_0.25" / "metrics.json").exists()  # nothing trained
    assert r["verdict"]["0.25"]["learned_ahead_of_random"] is None  # random's point is missing

    # a fresh checkout: the run directories gone, the ReLU network comes back from its committed weights
    # and the committed metrics stand for the points (random's, missing from them, trains)
    # (a second pareto.py holding random's point: this one skips it, and trains it once free)
    shutil.rmtree(tmp_path / "runs")
    base_dir = tmp_path / "runs" / "relu_base"
    with held_by_another_process(base_dir):  # restored by one process at a time, as it is trained
        held = run_python(*args)
    assert held.returncode != 0 and f"{base_dir}: cannot restore it" in held.stderr, held.stderr
    assert sorted(p.name for p in base_dir.iterdir()) == [".lock"]  # nothing written beside the holder
    busy = tmp_path / "runs" / "random_element_0.25"
    with held_by_another_process(busy):
        skipped = run_python(*args)
    assert skipped.returncode == 0 and f"{busy}: skipped: run directory" in skipped.stdout, skipped.stdout
    assert skipped.stdout.count("recorded in") == 8 and "restored from" in skipped.stdout, skipped.stdout
    r = json.loads((tmp_path / "res" / "pareto.json").read_text())
    assert not r["complete"] and r["runs_left"] == [str(busy)]
    fresh = run_python(*args)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["random_element_0.25", "relu_base"]
    r = json.loads((tmp_path / "res" / "pareto.json").read_text())
    assert r["complete"] and [p["method"] for p in r["points"]][:2] == [None, "random"]

    # ... but not beside a ReLU network other than the committed one, which the points started from
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "res" / "relu_base.safetensors")
    weights["fc.bias"] += 1e-3
    save_file(weights, str(tmp_path / "res" / "relu_base.safetensors"))
    refused = run_python(*args)
    assert refused.returncode != 0 and "another ReLU network" in refused.stderr, refused.stderr


def test_pareto_recorded(tmp_path):
    """A committed run's metrics stand for its run only if they record the same configuration (its
    directories aside), every epoch and the test accuracy."""
    from alphakern.train import TrainConfig

    recorded = benchmark_module("pareto").recorded

    run = str(tmp_path / "runs" / "snl_element_0.25")
    cfg = TrainConfig(out=run, data_dir="/data", method="snl", granularity="element", budget=0.25,
                      penalty=1e-4, epochs=2, finetune_epochs=1)  # fmt: skip
    (tmp_path / "run_metrics").mkdir()
    path = tmp_path / "run_metrics" / "snl_element_0.25.json"

    def write(config=None, epochs=3, test=True):
        m = dict(config=dict(asdict(cfg), out="elsewhere", data_dir="/other", world_size=1, **(config or {})),
                 epochs=[{}] * epochs, **(dict(test_acc=70.0) if test else {}))  # fmt: skip
        path.write_text(json.dumps(m))
        return recorded(cfg, tmp_path)

    assert recorded(cfg, tmp_path) is None  # nothing committed
    assert write()["test_acc"] == 70.0
    assert write(config=dict(penalty=1e-5)) is None  # another λ
    assert write(config=dict(seed=1)) is None
    m = json.loads(path.read_text())
    m["config"] = {k: v for k, v in m["config"].items() if k not in ("seed", "alpha_init")} | dict(
        penalty=1e-4
    )
    path.write_text(json.dumps(m))  # recorded before those fields existed: their defaults
    assert recorded(cfg, tmp_path)["test_acc"] == 70.0
    assert write(epochs=2) is None and write(test=False) is None  # not run to its end
    assert write() is not None and recorded(cfg, tmp_path, init="ab12") is None  # a point: of that start
    m = json.loads(path.read_text()) | dict(init_sha256="ab12", test_acc=71.0)
    path.write_text(json.dumps(m))
    assert recorded(cfg, tmp_path, init="ab12")["test_acc"] == 71.0
    assert recorded(cfg, tmp_path, init="cd34") is None


def test_pareto_verdict():
    """The verdict per budget reads seed 0's element points with the chosen settings only: not the
    defaults' rows, the channel row or the second seeds (those go to its seed spread); a goal is
    None while one of its points is missing."""
    verdict = benchmark_module("pareto").verdict

    def pt(method, acc, fraction=0.25, seed=0, variant=None, gran="element"):
        return dict(
            method=method, test_acc=acc, fraction=fraction, seed=seed, variant=variant, granularity=gran
        )

    points = [
        pt(None, 80.0, fraction=1.0, gran=None),
        pt("alpha", 78.0),
        pt("snl", 76.0),
        pt("autorep", 77.0),
        pt("random", 70.0),
        pt("stage", 60.0),
        pt("alpha", 50.0, variant="seed's start"),
        pt("alpha", 90.0, gran="channel"),
        pt("alpha", 77.0, seed=1),
        pt("snl", 79.0, seed=1),
        pt("alpha", 60.0, fraction=0.1),
        pt("snl", 61.0, fraction=0.1),
        pt("random", 62.0, fraction=0.1),
    ]
    methods = ["alpha", "snl", "autorep", "stage", "random"]
    v = verdict(points, methods)
    assert list(v) == ["0.25", "0.1"]
    q = v["0.25"]
    assert q["ranking"] == ["alpha", "autorep", "snl", "random", "stage"]
    assert q["alpha_minus_snl"] == 2.0 and q["alpha_at_least_snl"] is True
    assert (
        q["minus_random"] == {"alpha": 8.0, "snl": 6.0, "autorep": 7.0}
        and q["learned_ahead_of_random"] is True
    )
    assert q["seeds"] == {"alpha": [78.0, 77.0], "snl": [76.0, 79.0]}
    t = v["0.1"]
    assert t["alpha_at_least_snl"] is False and t["learned_ahead_of_random"] is None  # autorep missing
    assert verdict(points, ["alpha", "snl", "random"])["0.1"]["learned_ahead_of_random"] is False


def test_vit_sweep_smoke(tmp_path):
    """vit_sweep.py on a tiny dataset: the GELU ViT, the 100 % point and a feature-gate point at
    the same epochs, folded with its test accuracy kept; --latency times the GELU ViT against the
    folded point, eager and onnxruntime."""
    from tests.cifar_fixtures import write_pickles

    data = write_pickles(tmp_path / "cifar", n_per_batch=16, n_test=24)
    common = ["--data-dir", str(data), "--work", str(tmp_path / "runs"), "--out", str(tmp_path / "res")]
    args = ["benchmarks/vit_sweep.py", *common, "--base-epochs", "1", "--search-epochs", "1",
            "--finetune-epochs", "1", "--budgets", "0.5", "--granularities", "feature"]  # fmt: skip
    proc = run_python(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads((tmp_path / "res" / "vit_sweep.json").read_text())
    assert r["complete"] and [p["granularity"] for p in r["points"]] == [None, "feature"]
    point = r["points"][1]
    assert point["gelus"] <= 0.5 * r["gelu_network"]["gelus"] and point["epochs"] == 2
    assert point["test_acc_folded"] == pytest.approx(point["test_acc"])
    assert len(point["kept_per_layer"]) == 6
    proc = run_python("benchmarks/vit_sweep.py", *common, "--latency", "--seconds", "0.1", "--batches", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lat = json.loads((tmp_path / "res" / "vit_latency.json").read_text())
    assert lat["models"] == ["gelu", "feature_0.5"]
    for b in ("2",):
        assert all(v > 0 for v in lat["eager_ms"][b].values())
        ort = lat["onnxruntime_ms"][b]
        assert ort is None or set(ort) == {"gelu", "feature_0.5"}


@pytest.fixture(scope="module")
def relu_resnet(tmp_path_factory):
    """A tiny dataset and a ResNet-20 ReLU run on it: what the search probe starts from."""
    from tests.cifar_fixtures import write_pickles

    root = tmp_path_factory.mktemp("probe")
    data = write_pickles(root / "cifar", n_per_batch=16, n_test=24)
    proc = run_python("-m", "alphakern", "train", "--data-dir", str(data), "--out", str(root / "relu"),
                      "--model", "resnet20", "--activation", "relu", "--epochs", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return data, root / "relu"


@pytest.mark.parametrize("method", ["alpha", "snl"])
def test_search_probe_smoke(method, relu_resnet, tmp_path):
    """search_probe.py on a tiny dataset: one row per search epoch and weight (SNL may stop at
    the budget), the method's cut scored on validation, alpha's start recorded."""
    data, relu = relu_resnet
    out = tmp_path / "probe.json"
    proc = run_python("benchmarks/search_probe.py", "--data-dir", str(data), "--init", str(relu),
                      "--method", method, "--penalties", "1,1000", "--epochs", "2",
                      "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert [p["penalty"] for p in r["probes"]] == [1.0, 1000.0]
    for p in r["probes"]:
        assert 1 <= len(p["epochs"]) <= 2 and all(0 <= e["val_acc_cut"] <= 100 for e in p["epochs"])
        start = (0.95, 20.0) if method == "alpha" else (None, None)
        assert (p.get("alpha_init"), p.get("nu_init")) == start
