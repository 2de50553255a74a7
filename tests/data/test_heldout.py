"""The held-out speaker lists, user exclusion files, and the real-speech builder on a fake package tree."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from entanglecodec.data import heldout
from entanglecodec.data.heldout import Exclusions, HeldoutError, read_exclusions, training_exclusions
from entanglecodec.data.manifest import read_manifest
from entanglecodec.data.realspeech import (
    MUSIC_DIR,
    MUSIC_PACKAGE,
    SOUND_ARCHIVE,
    SOUND_EVENTS,
    SOUND_PACKAGE,
    RealSpeechError,
    SpeakerPlan,
    build_real_speech,
    check_plan,
)
from entanglecodec.data.synth import speech as speechmod
from entanglecodec.data.synth.generator import real_speaker_pools
from entanglecodec.data.synth.signal import SynthError


def test_heldout_lists_are_consistent_and_exist_in_the_generator() -> None:
    heldout.check_heldout()
    assert not set(heldout.DEV_SPEAKERS) & set(heldout.TEST_SPEAKERS)
    known = {v.id for v in speechmod.recorded_voices()}
    assert set(heldout.heldout_speakers()) <= known
    with pytest.raises(HeldoutError, match="unknown held-out set"):
        heldout.heldout_speakers("train")


def test_training_exclusions_cover_both_sets_their_kde_twins_and_the_test_packages() -> None:
    ex = training_exclusions()
    assert set(heldout.heldout_speakers()) <= ex.speakers
    assert {"klettres:en", "ktuberling:en", "klettres:nl", "ktuberling:nl", "ktuberling:de"} <= ex.speakers
    assert set(heldout.TEST_PACKAGES) <= ex.packages
    more = training_exclusions(Exclusions(frozenset({"flite:slt"}), frozenset({"warmux-data"})))
    assert "flite:slt" in more.speakers and "warmux-data" in more.packages


def test_generator_speaker_pools_keep_heldout_speakers_out_of_training() -> None:
    pools = real_speaker_pools()
    blocked = training_exclusions().speakers
    assert pools["train"] and not set(pools["train"]) & blocked
    assert set(pools["test"]) == {s for s in heldout.TEST_SPEAKERS if s in {v.id for v in speechmod.recorded_voices()}}
    user = Exclusions(frozenset({"asterisk:allison-es", "ktuberling:en"}), frozenset({"klettres-data"}))
    pools = real_speaker_pools(user)
    assert "asterisk:allison-es" not in pools["train"] and "ktuberling:en" not in pools["test"]
    assert not any(s.startswith("klettres:") for s in pools["train"] + pools["test"])
    with pytest.raises(SynthError, match="test split"):
        real_speaker_pools(Exclusions(frozenset(heldout.TEST_SPEAKERS)))


def test_read_exclusions_text_file_and_manifest(tmp_path: Path) -> None:
    f = tmp_path / "ex.txt"
    f.write_text("# people who asked to be removed\nktuberling:da  # Danish words\n\npackage:warmux-data\nflite:awb\n")
    ex = read_exclusions(f, known_speakers=["ktuberling:da", "flite:awb"])
    assert ex.speakers == {"ktuberling:da", "flite:awb"} and ex.packages == {"warmux-data"}
    f.write_text("ktuberling:da\nktuberling:xx\n")
    with pytest.raises(HeldoutError, match=r"ex.txt:2: unknown speaker 'ktuberling:xx'"):
        read_exclusions(f, known_speakers=["ktuberling:da"])
    f.write_text("just some words\n")
    with pytest.raises(HeldoutError, match="is not a speaker id"):
        read_exclusions(f)
    with pytest.raises(HeldoutError, match="does not exist"):
        read_exclusions(tmp_path / "missing.txt")
    m = tmp_path / "m.jsonl"
    rows = [
        {"audio": "a.flac", "domain": "speech", "caption": "x", "attributes": {"speaker": {"id": "asterisk:menardi"}}},
        {"audio": "b.flac", "domain": "speech", "caption": "x", "speaker": "ktuberling:it"},
        {"audio": "c.flac", "domain": "music", "caption": "x"},
    ]
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_exclusions(m).speakers == {"asterisk:menardi", "ktuberling:it"}
    m.write_text("{broken\n")
    with pytest.raises(HeldoutError, match=r"m.jsonl:1: invalid JSON"):
        read_exclusions(m)


def test_cli_synth_refuses_a_bad_exclusion_list_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from entanglecodec.cli.data import app

    bad = tmp_path / "ex.txt"
    bad.write_text("nobody:here\n")
    res = CliRunner().invoke(app, ["synth", "--hours", "0.001", "--out", str(tmp_path / "o"), "--exclude-speakers", str(bad)])
    assert res.exit_code == 2
    assert "unknown speaker 'nobody:here'" in res.output and "Traceback" not in res.output


def test_real_speech_plan_must_use_heldout_speakers() -> None:
    with pytest.raises(RealSpeechError, match="not held out"):
        check_plan({"test": (SpeakerPlan("asterisk:allison-es", 3),)})
    with pytest.raises(RealSpeechError, match="not held out"):
        check_plan({"test": (SpeakerPlan("asterisk:carlo", 3),)})  # a dev speaker
    with pytest.raises(RealSpeechError, match="unknown evaluation set"):
        check_plan({"train": (SpeakerPlan("asterisk:carlo", 3),)})


# ---------------------------------------------------------------------------------------------
# The builder, on fake unpacked packages (no download)
# ---------------------------------------------------------------------------------------------
_WORDS = ["ball", "bow", "coat", "ear", "eye", "hat", "nose", "shoe", "tie", "skirt"]


def _fake_package(root: Path, name: str) -> Path:
    pkg = root / name
    doc = pkg / "usr" / "share" / "doc" / name
    doc.mkdir(parents=True)
    from entanglecodec.data.synth.assets import PACKAGES

    (doc / "copyright").write_text(f"License: {PACKAGES[name].licence_marker}\n")
    (pkg / ".complete.json").write_text(json.dumps({"package": name, "version": "1.0-test", "licence": PACKAGES[name].licence}))
    return pkg


def _tone(seconds: float, freq: float, sr: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def fake_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "assets"
    monkeypatch.setenv("ENTANGLECODEC_ASSET_DIR", str(root))
    ktub = _fake_package(root, "ktuberling-data") / "usr" / "share" / "ktuberling" / "sounds"
    (ktub / "en").mkdir(parents=True)
    entries = []
    for i, w in enumerate(_WORDS):
        sf.write(str(ktub / "en" / f"{w}.wav"), _tone(0.9, 200 + 30 * i), 22050)
        entries.append(f'<sound name="{w}" file="en/{w}.wav"/>')
    (ktub / "en.soundtheme").write_text("<theme>\n" + "\n".join(entries) + "\n</theme>\n")
    music = _fake_package(root, MUSIC_PACKAGE) / MUSIC_DIR
    music.mkdir(parents=True)
    sf.write(str(music / "track1.wav"), np.tile(_tone(0.5, 440, 48000), 60), 48000)
    archive = _fake_package(root, SOUND_PACKAGE) / SOUND_ARCHIVE
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as z:
        for i, (name, _) in enumerate(SOUND_EVENTS):
            buf = io.BytesIO()
            sf.write(buf, _tone(1.0, 300 + 50 * i), 22050, format="WAV")
            z.writestr(name, buf.getvalue())
    speechmod.ktuberling_utterances.cache_clear()
    yield root
    speechmod.ktuberling_utterances.cache_clear()


def _hashes(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def test_real_speech_builder_writes_a_valid_reproducible_set(fake_assets: Path, tmp_path: Path) -> None:
    plan = {"test": (SpeakerPlan("ktuberling:en", 2),)}
    out = tmp_path / "real"
    summary = build_real_speech(out, plan=plan, music_clips=1)
    rows = read_manifest(out / "manifest.jsonl", split="test")
    speech = [r for r in rows if r["domain"] == "speech"]
    assert len(speech) == 2 and len(rows) == 2 + 1 + len(SOUND_EVENTS)
    used: list[str] = []
    for r in speech:
        assert r["speaker"] == "ktuberling:en" and r["language"] == "en" and r["set"] == "test"  # type: ignore[typeddict-item]
        assert 2.0 <= r["duration"] <= 10.0  # type: ignore[operator]
        words = r["text"].split(", ")
        assert set(words) <= set(_WORDS) and r["asr_caption"] == r["text"]
        assert f"\u201c{r['text']}\u201d" in r["caption"]
        used += words
        info = sf.info(r["audio"])
        assert (info.samplerate, info.channels, info.format) == (24000, 1, "FLAC")
    assert len(used) == len(set(used)), "a word is used twice"
    assert {r["domain"] for r in rows} == {"speech", "music", "sound"}
    assert summary["sets"]["test"]["clips"] == len(rows)
    assert summary["debian_packages"]["ktuberling-data"]["licence"] == "GPL-2+"
    again = tmp_path / "again"
    build_real_speech(again, plan=plan, music_clips=1)
    assert _hashes(out) == _hashes(again)
    with pytest.raises(RealSpeechError, match="not empty"):
        build_real_speech(out, plan=plan, music_clips=1)
    with pytest.raises(RealSpeechError, match="gives only"):
        build_real_speech(tmp_path / "big", plan={"test": (SpeakerPlan("ktuberling:en", 50),)}, music_clips=0)
