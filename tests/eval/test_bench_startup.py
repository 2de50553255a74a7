"""``eval bench-startup``: the commands timed, the report, and one real hyperfine run."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from entanglecodec import EntangleCodec, EntangleCodecConfig
from entanglecodec.eval.bench import startup as B


def test_commands_and_targets(tmp_path):
    rows = B.commands(tmp_path / "c.wav", tmp_path / "o.wav", "ck")
    assert [r[0] for r in rows][:3] == ["import torch (floor)", "import entanglecodec", "entanglecodec --help"]
    assert [r[2] for r in rows] == [None, 1.0, 0.5, 1.5, None]
    assert all(argv[0] == sys.executable for _, argv, _ in rows)
    assert rows[-2][1][-2:] == ["--checkpoint", "ck"]  # the default backend (the compiled runtime when it exists)
    assert rows[-1][1][-4:] == ["--checkpoint", "ck", "--backend", "torch"]


def test_report_states_load_targets_and_verdicts():
    bench = B.StartupBench(
        [B.StartupRow("import entanglecodec", "…", 0.2, 0.01, 0.19, 0.22, 10, 1.0),
         B.StartupRow("entanglecodec --help", "…", 0.7, 0.02, 0.6, 0.8, 10, 0.5),
         B.StartupRow("import torch (floor)", "…", 1.1, 0.1, 1.0, 1.3, 10, None)],
        load_before=1.5, load_after=2.0, cores=2, hyperfine="hyperfine 1.15.0",
    )
    md = B.startup_markdown(bench, "entanglecodec eval bench-startup")
    assert "load average 1.50 before and 2.00 after" in md and "2 cores" in md
    assert "| `import entanglecodec` | 0.200 |" in md and "| < 1 s | meets |" in md
    assert "| < 0.5 s | misses |" in md and "| — | reference |" in md
    doc = B.startup_json(bench, "cmd")
    assert [r["verdict"] for r in doc["rows"]] == ["meets", "misses", "reference"]  # type: ignore[index]


@pytest.mark.skipif(shutil.which("hyperfine") is None, reason="hyperfine (Debian package) is not installed")
def test_real_run_with_a_tiny_model(tmp_path):
    torch.manual_seed(0)
    ck = EntangleCodec(EntangleCodecConfig.preset("tiny")).save_pretrained(tmp_path / "ck")
    bench = B.run_startup_bench(runs=2, warmup=0, checkpoint=str(ck))
    assert [r.runs for r in bench.rows] == [2, 2, 2, 2, 2]
    assert "neural vocoder" in bench.runtime_note  # the tiny preset decodes with Griffin-Lim: torch it is
    assert all(0 < r.min_s <= r.mean_s <= r.max_s for r in bench.rows)
    md, js = B.write_startup_report(bench, tmp_path / "out", "cmd")
    assert md.read_text().startswith("# Start-up times") and json.loads(js.read_text())["cores"] == bench.cores
