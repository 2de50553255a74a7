"""Speed/scaling benchmark (``entanglecodec.eval.bench``) and ``entanglecodec eval bench --quick``."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from entanglecodec.eval.bench.measure import (
    BenchError,
    Measurement,
    PeakMemory,
    bench_signal,
    linear_fit,
    memory_slope,
    run_series,
)


def test_bench_signal_is_deterministic() -> None:
    a = bench_signal(0.5, batch=2)
    assert a.shape == (2, 12000) and a.dtype == np.float32
    assert np.array_equal(a, bench_signal(0.5, batch=2)) and np.abs(a).max() < 1.0
    with pytest.raises(BenchError):
        bench_signal(0.0)


def test_peak_memory_sees_a_temporary_allocation() -> None:
    with PeakMemory() as idle:
        pass
    with PeakMemory() as pm:
        x = np.ones(40 * 2**20 // 8)  # 40 MiB, touched
        del x
    assert pm.peak_bytes >= 35 * 2**20, (pm.method, pm.peak_bytes)
    assert idle.peak_bytes < 5 * 2**20


def test_run_series_times_linear_work_and_skips_long_calls() -> None:
    def make_call(x: np.ndarray) -> object:
        seconds = x.shape[1] / 24000
        return lambda: time.sleep(0.1 * seconds)  # long enough that scheduler jitter under load stays small

    pts = run_series(
        "sleep", make_call, [0.5, 1.0, 2.0, 40.0], batch=1, reps=1, max_call_s=0.5, track_memory=False
    )
    assert [m.seconds for m in pts] == [0.5, 1.0, 2.0, 40.0]
    assert pts[-1].skipped.startswith("predicted") and math.isnan(pts[-1].wall_s)
    fit = linear_fit(pts)
    assert fit is not None
    assert fit["slope"] == pytest.approx(0.1, rel=0.3) and fit["r2"] > 0.95
    assert all(m.rtf == pytest.approx(0.1, rel=0.5) for m in pts[:3])


def test_linear_fit_and_memory_slope() -> None:
    pts = [
        Measurement("op", 1, s, wall_s=0.1 + 0.05 * s, peak_mb=10 + 2 * s) for s in (1.0, 10.0, 60.0, 600.0)
    ]
    fit = linear_fit(pts)
    assert fit is not None
    assert fit["slope"] == pytest.approx(0.05) and fit["intercept"] == pytest.approx(0.1)
    assert fit["r2"] == pytest.approx(1.0)
    assert memory_slope(pts, window_s=10.0) == pytest.approx(120.0)  # 2 MiB/s = 120 MiB/min
    assert linear_fit(pts[:2]) is None and memory_slope(pts[:1], 10.0) is None


def test_cli_bench_quick(tmp_path: Path) -> None:
    from entanglecodec.cli.eval import app

    out = tmp_path / "reports"
    res = CliRunner().invoke(app, ["bench", "--quick", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    md = (out / "bench.md").read_text()
    for needle in ("Real-time factor, batch 1", "Real-time factor, batch 8", "Linearity", "Peak memory", "tokens/s",
                   "| tiny |", "load average (1/5/15 min", "of its CPU during the run", "Speed targets",
                   "load average after each"):  # fmt: skip
        assert needle in md, needle
    assert (out / "bench-rtf.png").stat().st_size > 1000 and (out / "bench-memory.png").stat().st_size > 1000
    doc = json.loads((out / "bench.json").read_text())
    assert 0.0 <= doc["machine"]["other_cpu_share"] <= 1.0
    ops = {(m["op"], m["batch"]) for m in doc["measurements"]}
    for op in ("encode", "decode-1", "end-to-end"):
        assert (op, 1) in ops and (op, 8) in ops
    enc = [m for m in doc["measurements"] if m["op"] == "encode" and m["batch"] == 1]
    assert [m["seconds"] for m in enc] == [0.5, 1.0, 2.5]  # 2.5 s crosses the tiny preset's 2 s window
    for m in enc:
        assert m["wall_s"] > 0 and m["rtf"] == pytest.approx(m["wall_s"] / m["seconds"]) and m["peak_mb"] >= 0
    assert doc["linear_fits"]["encode · batch 1"]["slope"] is not None
    stages = doc["encode_memory_breakdown_mib"]["2.5 s"]  # the only length past the window
    assert set(stages) == {"seconds", "encoder features", "nearest-code search"}
    assert all(v >= 0 for v in stages.values())
    assert doc["flops"]["tiny"]["encode_per_s"] > 0
    assert doc["flops"]["tiny"]["decoder_step_per_s"] == pytest.approx(
        2 * doc["flops"]["tiny"]["decoder_pass_per_s"]
    )
    assert (
        doc["model"]["weights"] == "random" and doc["model"]["preset"] == "tiny"
    )  # --quick ignores the bundled model
    baselines = {m["op"] for m in doc["measurements"]} - {"encode", "decode-1", "decode-1 · float32", "end-to-end"}
    skipped = " ".join(n for n in doc["notes"] if n.startswith("baseline skipped"))
    for name in ("codec2-700C", "opus-6k", "mel-oracle-gl"):
        assert name in baselines or name.split("-")[0] in skipped.lower(), (name, doc["notes"])


def test_other_cpu_share_leaves_out_the_benchmarks_own_time() -> None:
    from entanglecodec.eval.bench.run import other_cpu_share

    # 40 CPU-s passed on the machine, 20 of them busy, 10 of those ours: others used a quarter
    assert other_cpu_share(((10.0, 100.0), 1.0), ((30.0, 140.0), 11.0)) == pytest.approx(0.25)
    assert other_cpu_share(((10.0, 100.0), 1.0), ((12.0, 140.0), 11.0)) == 0.0  # clock granularity: never < 0
    assert other_cpu_share((None, 1.0), ((12.0, 140.0), 11.0)) is None


def test_cli_bench_rejects_bad_options(tmp_path: Path) -> None:
    from entanglecodec.cli.eval import app

    runner = CliRunner()
    r = runner.invoke(app, ["bench", "--quick", "--max-seconds", "0.1", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "no clip length" in r.output
    r = runner.invoke(app, ["bench", "--quick", "--lengths", "1,x", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--lengths" in r.output
    r = runner.invoke(app, ["bench", "--quick", "--flops-presets", "huge", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown preset" in r.output


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "checkpoints" / "entanglecodec-small").is_dir(),
                    reason="the bundled checkpoint is not in this checkout")
def test_cli_decode_profile_times_every_stage(tmp_path: Path) -> None:
    from entanglecodec.cli.eval import app

    out = tmp_path / "new" / "profile.md"  # a folder that does not exist yet is made
    res = CliRunner().invoke(
        app, ["decode-profile", "--out", str(out), "--lengths", "1", "--batches", "1", "--precision", "float32",
              "--reps", "1"], catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    md = out.read_text()
    for needle in ("flow decoder", "vocoder network", "iSTFT head", "mel-consistency passes", "Load average",
                   "write WAV"):  # fmt: skip
        assert needle in md, needle
    doc = json.loads(out.with_suffix(".json").read_text())
    (p,) = doc["profiles"]
    assert p["precision"] == "float32" and p["total_s"] > 0
    assert sum(p["stages"].values()) == pytest.approx(p["total_s"], rel=1e-6)
    assert all(v >= 0 for k, v in p["stages"].items() if k != "other") and p["stages"]["flow decoder"] > 0
    bad = CliRunner().invoke(app, ["decode-profile", "--out", str(out), "--precision", "half"])
    assert bad.exit_code == 2 and "--precision" in bad.output
    (tmp_path / "file").write_text("x")
    bad = CliRunner().invoke(app, ["decode-profile", "--out", str(tmp_path / "file" / "p.md"), "--lengths", "1"])
    assert bad.exit_code != 0 and "file" in bad.output and "Traceback" not in bad.output


def test_rss_child_command_runs(tmp_path):
    """The child process of ``eval bench-rss`` starts the real CLI (a wrong module path once broke ``make bench``)."""
    import subprocess
    import sys

    from entanglecodec.eval.bench.rss import CLI_MODULE

    for cmd in ("encode", "decode"):
        res = subprocess.run([sys.executable, "-m", CLI_MODULE, cmd, "--help"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and cmd in res.stdout.lower() and "--backend" in res.stdout, res.stderr[-500:]


def test_rss_report_has_encode_and_decode_columns() -> None:
    from entanglecodec.eval.bench.rss import RssPoint, rss_markdown

    md = rss_markdown([RssPoint(60, 380, 1.0, 400, 2.0), RssPoint(3600, 390, 20.0, 405, 30.0)], "cmd")
    assert "| 1 min | 380 | +0 | 1.0 | 400 | +0 | 2.0 |" in md and "| 1 h | 390 | +10 | 20.0 | 405 | +5 | 30.0 |" in md
