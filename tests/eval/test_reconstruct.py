"""The reconstruction evaluation: manifests, per-domain metrics, reports and the CLI end to end."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from entanglecodec.eval import reconstruct as R
from entanglecodec.eval.systems import System

SR = 24000


class Identity(System):
    """A perfect codec."""

    name = "identity"
    bitrate = None

    def process(self, wav: np.ndarray) -> np.ndarray:
        return wav.copy()


class Delayed(System):
    """A perfect codec with 30 ms of delay and 10 ms of extra tail."""

    name = "delayed"
    bitrate = 64000.0

    def process(self, wav: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros(720, np.float32), wav, np.zeros(240, np.float32)])


class Silence(System):
    """A broken codec."""

    name = "silence"
    bitrate = 100.0

    def process(self, wav: np.ndarray) -> np.ndarray:
        return np.zeros_like(wav)


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------
def test_load_clips(corpus: Path) -> None:
    clips = R.load_clips(corpus, "test")
    assert [c.id for c in clips] == ["sp1", "mu1", "so1", "mx1"]
    assert all(c.audio.is_absolute() and c.audio.exists() for c in clips)
    assert [c.has_speech for c in clips] == [True, False, False, True]
    assert clips[1].text is None  # empty transcript -> no text
    assert [c.id for c in R.load_clips(corpus, "train")] == ["tr1"]
    assert [c.id for c in R.load_clips(corpus, "test", domains=["music", "sound"])] == ["mu1", "so1"]
    assert {c.domain for c in R.load_clips(corpus, "test", max_clips=3)} == {"speech", "music", "sound"}
    with pytest.raises(ValueError, match="unknown domain"):
        R.load_clips(corpus, "test", domains=["speach"])
    fr, en = R.load_clips(corpus, "valid")
    assert (fr.language, fr.language_code, fr.has_speech, fr.has_transcript) == ("fr", "fr", True, True)
    assert (en.language, en.language_code, en.has_transcript) == ("en-US", "en", True)
    assert clips[0].language is None and clips[0].language_code == "unstated" and clips[0].has_transcript
    with pytest.raises(ValueError, match="no clips of split 'valid' in domains"):
        R.load_clips(corpus, "valid", domains=["music"])
    with pytest.raises(FileNotFoundError):
        R.load_clips(corpus.parent / "missing.jsonl")


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def results(corpus: Path) -> R.ReconstructionResults:
    return R.evaluate_reconstruction(corpus, [Identity(), Delayed(), Silence()], split="test")


def _row(res: R.ReconstructionResults, system: str, clip: str) -> dict:
    return next(r for r in res.rows if r["system"] == system and r["clip_id"] == clip)


def test_identity_and_delayed_copy_are_perfect(results: R.ReconstructionResults) -> None:
    for system in ("identity", "delayed"):
        for clip in ("sp1", "mx1"):
            r = _row(results, system, clip)
            assert r["stoi"] == pytest.approx(1.0, abs=1e-6)
            assert r["pesq"] > 4.0
            assert r["vuv_f1"] == 1.0
            assert r["spk_sim"] == pytest.approx(1.0, abs=1e-6)
            assert r["wer"] == r["wer_original"]  # the floor
            assert r["mel_l1"] == 0.0
        assert _row(results, system, "mu1")["si_sdr"] == pytest.approx(100.0)
    assert _row(results, "delayed", "sp1")["lag_ms"] == pytest.approx(30.0)
    assert _row(results, "identity", "sp1")["lag_ms"] == 0.0


def test_speech_metrics_only_where_speech_is(results: R.ReconstructionResults) -> None:
    for clip in ("mu1", "so1"):
        r = _row(results, "identity", clip)
        for key in ("stoi", "pesq", "vuv_f1", "spk_sim", "wer", "cer", "wer_original"):
            assert math.isnan(r[key]), (clip, key)
        assert r["mel_l1"] == 0.0 and r["mr_stft"] == pytest.approx(0.0, abs=1e-6)
    assert len(results.rows) == 4 * 3
    assert set(results.original_asr) == {"sp1", "mx1"}


def test_aggregates_and_floor(results: R.ReconstructionResults) -> None:
    ident = results.aggregates["identity"]
    assert set(ident) == {"all", "speech-metrics", "speech", "music", "sound", "mixture", "language unstated"}
    assert ident["all"]["clips"] == 4 and ident["speech-metrics"]["clips"] == 2
    assert ident["speech-metrics"]["wer"] == pytest.approx(results.floor["speech-metrics"]["wer"])
    assert ident["music"]["mel_l1"] == 0.0 and math.isnan(ident["music"]["stoi"])
    broken = results.aggregates["silence"]
    assert broken["speech-metrics"]["wer"] == 100.0  # everything deleted
    assert broken["speech-metrics"]["spk_sim"] == 0.0
    assert broken["speech-metrics"]["stoi"] < 0.1
    assert broken["all"]["si_sdr"] == -100.0  # nothing of the target left
    assert broken["all"]["mel_l1"] > 3.0  # identity: 0


def test_report_files(results: R.ReconstructionResults, tmp_path: Path) -> None:
    paths = R.write_report(
        results, tmp_path / "reports" / "unit", command="entanglecodec eval reconstruct ..."
    )
    md = paths["markdown"].read_text()
    for name in ("identity", "delayed", "silence", R.ORIGINAL_ROW, "## Domain: music", "64,000", "not UTMOS"):
        assert name in md
    assert "entanglecodec eval reconstruct ..." in md
    with paths["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["domain"] for r in rows} == {"speech", "music", "sound", "mixture"}
    assert rows[0]["stoi"] != "" and next(r for r in rows if r["domain"] == "music")["stoi"] == ""
    doc = json.loads(paths["json"].read_text())
    assert doc["aggregates"]["identity"]["speech"]["vuv_f1"] == 1.0
    assert doc["systems"][1] == {"name": "delayed", "bitrate": 64000.0}
    for key in ("bitrate_plot", "mel_plot"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failing_system_names_the_clip(corpus: Path) -> None:
    from entanglecodec.eval.systems import CodecSystemError, CommandSystem

    with pytest.raises(CodecSystemError, match=r"(?s)broken failed on clip mu1.*nope"):
        R.evaluate_reconstruction(
            corpus, [CommandSystem("broken", "echo nope >&2; false {in} {out}")], domains=["music"]
        )
    with pytest.raises(ValueError, match="unique"):
        R.evaluate_reconstruction(corpus, [Identity(), Identity()])
    with pytest.raises(ValueError, match="no systems"):
        R.evaluate_reconstruction(corpus, [])


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def test_cli_end_to_end(tmp_path: Path, corpus: Path) -> None:
    """3 clips (speech/music/sound), a tiny random EntangleCodec and every baseline in one table."""
    import torch
    from typer.testing import CliRunner

    from entanglecodec import EntangleCodec, EntangleCodecConfig
    from entanglecodec.cli.eval import app

    for tool in ("c2enc", "opusenc", "flite"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing: install the Debian packages in requirements/debian.txt")
    torch.manual_seed(0)
    EntangleCodec(EntangleCodecConfig.preset("tiny")).save_pretrained(tmp_path / "tiny-codec")
    out = tmp_path / "reports" / "e2e"
    args = ["reconstruct", "--manifest", str(corpus), "--checkpoint", str(tmp_path / "tiny-codec")]
    args += ["--max-clips", "3", "--domains", "speech,music,sound", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    for name in ("tiny-codec", "codec2-700C", "codec2-1200", "codec2-3200", "opus-6k", "mel-oracle-gl"):
        assert name in res.output
    assert res.output.count("Reconstruction ·") == 1  # one table
    doc = json.loads(out.with_suffix(".json").read_text())
    bitrates = {s["name"]: s["bitrate"] for s in doc["systems"]}
    assert bitrates["tiny-codec"] == EntangleCodec(EntangleCodecConfig.preset("tiny")).bitrate
    assert (
        bitrates["codec2-3200"] == 3200 and bitrates["opus-6k"] == 6000 and bitrates["mel-oracle-gl"] is None
    )
    assert doc["clips_per_domain"] == {"speech": 1, "music": 1, "sound": 1}
    agg = doc["aggregates"]
    assert agg["codec2-3200"]["speech"]["stoi"] > 0.5
    assert agg["opus-6k"]["speech"]["stoi"] > agg["codec2-700C"]["speech"]["stoi"]
    assert agg["mel-oracle-gl"]["all"]["mel_l1"] < agg["codec2-3200"]["all"]["mel_l1"]
    for suffix in (".md", ".csv", "-bitrate.png", "-mels.png"):
        assert Path(str(out) + suffix).is_file()


def test_cli_bad_input_is_a_clear_error(tmp_path: Path, corpus: Path) -> None:
    from typer.testing import CliRunner

    from entanglecodec.cli.eval import app

    runner = CliRunner()
    res = runner.invoke(app, ["reconstruct", "--manifest", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 2 and "manifest not found" in res.output
    res = runner.invoke(app, ["reconstruct", "--manifest", str(corpus), "--system", "broken"])
    assert res.exit_code == 2 and "NAME=CMD" in res.output
    res = runner.invoke(app, ["reconstruct", "--manifest", str(corpus), "--asr", "vosk"])
    assert res.exit_code == 2 and "--asr must be one of whisper, whisper-tiny.en" in res.output
    res = runner.invoke(app, ["reconstruct", "--manifest", str(corpus), "--pitch-method", "crepe"])
    assert res.exit_code == 2 and "--pitch-method must be one of dio, harvest, pyin" in res.output
    res = runner.invoke(app, ["reconstruct", "--manifest", str(corpus), "--no-baselines", "--no-bundled"])
    assert res.exit_code == 2 and "nothing to evaluate" in res.output
    assert "Traceback" not in res.output


def test_cli_labels_checkpoints_with_the_same_name_apart(tmp_path: Path, corpus: Path) -> None:
    import torch
    from typer.testing import CliRunner

    from entanglecodec import EntangleCodec, EntangleCodecConfig
    from entanglecodec.cli.eval import app

    torch.manual_seed(0)
    model = EntangleCodec(EntangleCodecConfig.preset("tiny"))
    for run in ("run-a", "run-b"):
        model.save_pretrained(tmp_path / run / "final")
    out = tmp_path / "two"
    args = ["reconstruct", "-m", str(corpus), "--no-baselines", "--domains", "music", "--out", str(out)]
    args += ["-c", str(tmp_path / "run-a" / "final"), "-c", str(tmp_path / "run-b" / "final")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    names = [s["name"] for s in json.loads(out.with_suffix(".json").read_text())["systems"]]
    assert names == ["run-a/final", "run-b/final"]


def test_wer_spread_shows_a_recogniser_loop() -> None:
    """Nine clips at 100 % and one looping clip at 2 000 %: the median stays at 100 %, and the bootstrap
    interval is wide (resamples without the loop give 100 %); equal clips give a zero-width interval."""

    def row(errors: int, words: int = 10) -> dict[str, int]:
        return {"_word_errors": errors, "_ref_words": words}

    loop = R.wer_spread([row(10)] * 9 + [row(200)])
    assert loop["wer_median_clip"] == 100.0
    assert loop["wer_lo"] == pytest.approx(100.0) and loop["wer_hi"] > 300.0
    flat = R.wer_spread([row(5)] * 6)
    assert flat["wer_lo"] == flat["wer_hi"] == flat["wer_median_clip"] == 50.0
    assert math.isnan(R.wer_spread([{"_ref_words": 0}])["wer_lo"])
    assert R.wer_spread([row(10)] * 9 + [row(200)]) == loop  # deterministic


def test_report_states_the_wer_interval(results: R.ReconstructionResults, tmp_path: Path) -> None:
    md = R.write_report(results, tmp_path / "rep" / "u")["markdown"].read_text()
    assert "95 % bootstrap interval over clips" in md and "silence 100.0 [100.0, 100.0], median clip 100" in md
    assert results.aggregates["silence"]["speech-metrics"]["wer_median_clip"] == 100.0
