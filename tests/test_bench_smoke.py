"""The benchmark's --quick mode runs end to end and writes a sane JSON and a plot."""

import json

from tests.subproc import run_python


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
