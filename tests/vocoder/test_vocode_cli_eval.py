"""``entanglecodec vocode`` round trip with a tiny saved vocoder, and the evaluation helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import typer
from typer.testing import CliRunner

from entanglecodec.cli import codec as codec_cli
from entanglecodec.cli.codec import vocode_command
from entanglecodec.vocoder.config import VocoderConfig
from entanglecodec.vocoder.model import Vocoder


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return Vocoder(VocoderConfig.preset("tiny")).save_pretrained(tmp_path / "voc")


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(codec_cli.app)

    @app.callback()
    def _root() -> None:
        pass

    return app


def test_vocode_roundtrip(tmp_path: Path, tiny_dir: Path) -> None:
    src = tmp_path / "in.wav"
    n = 24000 + 123  # not a multiple of the hop: the output is trimmed to the input length
    sf.write(src, (0.1 * np.sin(np.arange(n) * 0.05)).astype(np.float32), 24000)
    out = tmp_path / "out.wav"
    res = CliRunner().invoke(_app(), ["vocode", str(src), "-o", str(out), "--vocoder", str(tiny_dir)])
    assert res.exit_code == 0, res.output
    data, sr = sf.read(out)
    assert sr == 24000 and data.shape == (n,)
    res = CliRunner().invoke(_app(), ["vocode", str(src), "-o", str(out), "--vocoder", str(tiny_dir)])
    assert res.exit_code == 1 and "overwrite" in res.output
    res = CliRunner().invoke(_app(), ["vocode", str(src), "-o", str(out), "--vocoder", str(tiny_dir), "--overwrite"])
    assert res.exit_code == 0
    # --consistency-passes 0 is the network alone: the same as calling it with 0 passes
    raw_out = tmp_path / "raw.wav"
    res = CliRunner().invoke(
        _app(), ["vocode", str(src), "-o", str(raw_out), "--vocoder", str(tiny_dir), "--consistency-passes", "0"]
    )
    assert res.exit_code == 0, res.output
    from entanglecodec.audio import MelFrontend
    from entanglecodec.config import MelConfig

    voc = Vocoder.from_pretrained(tiny_dir)
    x = torch.from_numpy(sf.read(src, dtype="float32")[0])[None]
    with torch.inference_mode():
        expect = voc(MelFrontend(MelConfig()).log_mel(x), consistency_passes=0)[0, :n]
    np.testing.assert_allclose(sf.read(raw_out, dtype="float32")[0], expect.numpy(), atol=1e-4)
    assert not np.allclose(sf.read(raw_out)[0], data, atol=1e-4)
    res = CliRunner().invoke(_app(), ["vocode", str(src), "-o", str(raw_out), "--consistency-passes", "-1"])
    assert res.exit_code != 0
    # 8 kHz input is resampled to the vocoder's 24 kHz; a directory of inputs goes to a directory
    sf.write(tmp_path / "b.wav", np.zeros(8000, np.float32), 8000)
    written = vocode_command([src, tmp_path / "b.wav"], tmp_path / "outdir", str(tiny_dir), False)
    assert [p.name for p in written] == ["in.wav", "b.wav"]
    assert sf.info(str(written[1])).frames == 24000
    res = CliRunner().invoke(_app(), ["vocode", str(tmp_path / "nope.wav"), "-o", str(out)])
    assert res.exit_code == 1 and "nope.wav" in res.output
    res = CliRunner().invoke(_app(), ["vocode", str(src), "-o", str(tmp_path / "x.wav"), "--vocoder", str(tmp_path)])
    assert res.exit_code == 1 and "config.json" in res.output


def test_eval_helpers(tmp_path: Path, tiny_dir: Path, tiny_corpus: Path) -> None:
    from entanglecodec.config import MelConfig
    from entanglecodec.eval.vocoder_eval import evaluate, measure_rtf, render_report, summarize
    from entanglecodec.vocoder.griffin_lim import GriffinLim

    voc = Vocoder.from_pretrained(tiny_dir)
    systems = {"tiny": voc, "gl": GriffinLim(MelConfig(), n_iter=4)}
    results = evaluate(tiny_corpus, systems, split="test", max_clips_per_domain=1)
    assert [len(v) for v in results.values()] == [2, 2]
    summary = summarize(results)
    gl_mel = summary["gl"]["all"]["log_mel_l1"]
    assert gl_mel[1] == 2 and gl_mel[0] > 0
    assert "stoi" in summary["gl"]["speech"] and "stoi" not in summary["gl"]["music"]
    rtf = {"tiny": measure_rtf(voc, (1, 2), seconds=0.5, repeats=1)}
    assert set(rtf["tiny"]) == {1, 2} and all(v > 0 for v in rtf["tiny"].values())
    text = render_report(summary, rtf, "cmd", str(tiny_corpus), "test", None)
    assert "| tiny |" in text and "| gl |" in text and "batch 2" in text


def test_vocoder_speed_report(tmp_path: Path, tiny_dir: Path) -> None:
    from entanglecodec.cli import eval_vocoder

    app = typer.Typer()
    app.add_typer(eval_vocoder.app)

    @app.callback()
    def _root() -> None:
        pass

    out = tmp_path / "speed.md"
    args = ["vocoder-speed", "--vocoder", str(tiny_dir), "-o", str(out), "--threads", "1", "--batch", "1", "--batch", "2"]
    res = CliRunner().invoke(app, [*args, "--seconds", "0.5"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "load average" in text and "| 1 |" in text and "batch 2" in text
    rows = [line for line in text.splitlines() if line.startswith("| neural") or line.startswith("| Griffin")]
    assert len(rows) == 3  # the network alone, the network + mel-consistency passes, Griffin-Lim
    assert "network only" in rows[0] and "6 mel-consistency passes" in rows[1]
    assert all(float(cell.strip().rstrip("x")) > 0 for r in rows for cell in r.strip("|").split("|")[2:])
    res = CliRunner().invoke(app, ["vocoder-speed", "--vocoder", str(tmp_path / "missing"), "-o", str(out)])
    assert res.exit_code != 0


def test_eval_vocoder_compares_pass_counts(tiny_dir: Path) -> None:
    from entanglecodec.config import MelConfig
    from entanglecodec.eval.vocoder_eval import neural_and_griffin_lim

    default = list(neural_and_griffin_lim(str(tiny_dir), MelConfig(), griffin_lim_iters=2))
    assert len(default) == 3 and default[0].endswith("network only")
    assert default[1].endswith("+ 6 mel-consistency passes") and default[2] == "Griffin-Lim (2 it.)"
    names = list(neural_and_griffin_lim(str(tiny_dir), MelConfig(), 2, passes=[0, 2, 2, 8]))
    assert len(names) == 4 and names[0].endswith("network only")
    assert names[1].endswith("+ 2 mel-consistency passes") and names[2].endswith("+ 8 mel-consistency passes")
    systems = neural_and_griffin_lim(str(tiny_dir), MelConfig(), 2, passes=[2])
    voc = next(iter(systems.values()))
    assert isinstance(voc, Vocoder) and voc.config.consistency_passes == 2
    with pytest.raises(ValueError, match=">= 0"):
        neural_and_griffin_lim(str(tiny_dir), MelConfig(), 2, passes=[-1])
