"""The synthetic captioned multi-domain corpus: planning, per-clip generation and writing.

Reproducibility: clip ``i`` is generated only from ``numpy.random.default_rng([seed, i, attempt])``
and from fixed assets, so the corpus is byte-identical for a seed whatever the number of workers.
The plan is made in blocks of ten clips (two synthetic and two recorded speech, three music, two
sound scenes, one mixture; eight train, one valid, one test), so even a tiny corpus covers every
domain and split.

Profiles: ``mixed`` (the default) is the corpus described above. ``clean-english`` is a test set on
which English ASR (pocketsphinx) is meaningful: every clip is text-to-speech in English by a
held-out (test-side) voice of an engine in :data:`CLEAN_ENGLISH_ENGINES`, dry and noise-free, at
the voice's normal rate and pitch, split ``test``. Its clips take the engines in turn and each
engine's voices in turn, and their ids read ``synth<seed>-en-<index>`` so they never collide with
the clips of a ``mixed`` corpus of the same seed.

Held-out splits: TTS voices, sentences, instruments and recorded files are divided into a
training pool and a test pool by a stable hash of their names (independent of the seed);
``train``/``valid`` clips only use the training pool and ``test`` clips only the test pool. Recorded
speakers follow :mod:`entanglecodec.data.heldout` instead, the list the real-speech evaluation set
is built from: its dev and test speakers and its test-only packages never occur in ``train``/``valid``
clips, and the corpus's own ``test`` clips take their recorded speakers from its test speakers.
A user's exclusion list (``exclude``, ``--exclude-speakers FILE``) removes more speakers or whole
packages from every split.

Real recordings: half of the pure speech clips (two of the four in a block) are recorded people
(:data:`REAL_FAMILY_WEIGHTS`: Asterisk prompt voices, the game dialogue of Fish Fillets NG, Drascula,
Flight of the Amazon Queen and Beneath a Steel Sky, KTuberling words, KLettres letters and syllables),
and 40 % of the mixtures use one too; recorded music comes from several game packages, and scenes
use recorded effects 70 % of the time. ``corpus.json`` records the composition (clips and
hours per domain, kind and source package).

Output layout (``DIR``)::

    manifest.jsonl   one JSON row per clip (see entanglecodec.data.captions for the attributes)
    corpus.json      profile, seed, hours, counts, generator version, Debian package versions,
                     held-out sets
    audio/<split>/<id>.flac   24 kHz mono 16-bit FLAC
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ...fileio import prepare_output_dir
from .. import heldout
from ..captions import TemplateCaptioner, asr_caption
from . import environment as envmod
from . import music as musicmod
from . import sounds as soundmod
from . import speech as speechmod
from .assets import PACKAGES, package_info, soundfont_version
from .signal import (
    SR,
    SynthError,
    active_rms_dbfs,
    fade,
    gain_to,
    level_name,
    peak_normalise,
    silence,
    spectral_centroid_hz,
    to_sr,
)
from .textsource import english_sentences, language_sentences, split_pool

GENERATOR_VERSION = "1.6.0"
BLOCK_KINDS = ("tts", "tts", "real-speech", "real-speech", "music", "music", "recorded-music", "scene", "scene", "mixture")
BLOCK_SPLITS = ("train",) * 8 + ("valid", "test")
DOMAIN_OF_KIND = {
    "tts": "speech", "real-speech": "speech", "music": "music", "recorded-music": "music",
    "scene": "sound", "mixture": "mixture",
}
MAX_ATTEMPTS = 4
# how often each TTS engine speaks (espeak-ng has far more voices, but they all sound alike)
ENGINE_WEIGHTS = {"flite": 0.3, "festival": 0.25, "espeak-ng": 0.35, "mbrola": 0.1}
REAL_FAMILY_WEIGHTS = {
    "asterisk": 0.3, "fillets": 0.25, "drascula": 0.1, "fotaq": 0.1, "bass": 0.1, "ktuberling": 0.14, "klettres": 0.11,
}
"""How often each family of recorded speakers is drawn for a real-speech clip (relative weights of the families
present; then a speaker of the family uniformly): Asterisk prompts and the game dialogue of Fish Fillets NG,
Drascula, Flight of the Amazon Queen and Beneath a Steel Sky are whole sentences, the KDE packages isolated
words/letters. Since 1.6.0 ``drascula`` has six speakers (the hero, Drascula and Von Braun in English and
Spanish), still drawn uniformly: the hero (17-21 min a language) now gets a third of the family's clips and
the other two (4-6 min each) a sixth each."""
DIALOGUE_FAMILIES = ("fillets", "drascula", "fotaq", "bass")
"""Recorded families whose lines are game dialogue (style ``dialogue``, up to four lines a clip)."""
PROFILES = ("mixed", "real-speech", "clean-english")
"""Corpus profiles: the multi-domain corpus; only recorded human speech (the ``real-speech`` clips of
``mixed``, in the same splits: a supplement that raises the share of real voices in training); or clean
English TTS speech for ASR (test split only)."""
_ID_TAGS = {"mixed": "", "real-speech": "rs-", "clean-english": "en-"}
CLEAN_ENGLISH_ENGINES = ("flite", "festival")
"""TTS engines of the ``clean-english`` profile: those pocketsphinx recognises. Its WER on 6 clean
clips per voice (71 words): flite 3-31 %, festival 13-20 %, espeak-ng 77-100 % for every English
variant (formant speech is not recognised: left out); mbrola (not in requirements/debian.txt) was
not measured and is left out. The held-out voices are flite:kal (8 kHz) and festival's
cmu_us_slt_arctic_hts: on ``--hours 0.1 --seed 5`` (55 clips, 1097 words) WER 31.0 % (kal 44.0 %,
slt 17.4 %), against ~93 % on the test speech of a ``mixed`` corpus."""
CLEAN: dict[str, Any] = {"environment": {"setting": "clean"}, "rate": "normal", "pitch": "normal"}
"""The overrides of every ``clean-english`` clip."""


class CorpusError(RuntimeError):
    """The corpus cannot be generated as asked (bad arguments, output directory in use)."""


@dataclass(frozen=True)
class ClipSpec:
    """What to generate for one clip.

    Attributes:
        index: position in the corpus (fixes the random stream together with ``seed``).
        seed: corpus seed.
        kind: one of :data:`BLOCK_KINDS`.
        split: ``train`` / ``valid`` / ``test``.
        duration: target length in seconds (speech clips end with their last utterance).
        overrides: fixed choices instead of random ones (``voice_id``, ``environment``, ``rate``,
            ``pitch``, ``mixture_kind``, ``drums``); used by tests and examples.
        profile: the corpus profile (one of :data:`PROFILES`); ``clean-english`` TTS clips take
            the English test-side voice their index points to (see :func:`english_test_voice`).
    """

    index: int
    seed: int
    kind: str
    split: str
    duration: float
    overrides: dict[str, Any] = field(default_factory=dict)
    profile: str = "mixed"

    @property
    def id(self) -> str:
        return f"synth{self.seed}-{_ID_TAGS[self.profile]}{self.index:06d}"


# ---------------------------------------------------------------------------------------------
# Held-out pools
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pools:
    """Training and test pools of everything that is held out."""

    tts_voices: dict[str, tuple[speechmod.Voice, ...]]
    real_speakers: dict[str, tuple[str, ...]]  # split side -> recorded speaker ids
    sentences: dict[str, dict[str, tuple[str, ...]]]  # language -> split -> sentences
    instruments: dict[str, tuple[int, ...]]
    music_files: dict[str, tuple[tuple[str, str, str], ...]]
    event_files: dict[str, tuple[soundmod.EventFile, ...]]

    def side(self, split: str) -> str:
        return "test" if split == "test" else "train"


def _split_objs(objs: list[Any], key: Callable[[Any], str], what: str) -> dict[str, tuple[Any, ...]]:
    train_keys, test_keys = split_pool([key(o) for o in objs])
    if not test_keys:
        raise SynthError(f"cannot hold out {what} for the test split: only {len(objs)} available")
    by = {key(o): o for o in objs}
    return {"train": tuple(by[k] for k in train_keys), "test": tuple(by[k] for k in test_keys)}


def real_speaker_pools(exclude: heldout.Exclusions | None = None) -> dict[str, tuple[str, ...]]:
    """Recorded speakers of the ``train`` side (``train``/``valid`` clips) and of the ``test`` side.

    ``train``: every recorded speaker except the held-out dev/test speakers (and their KDE twins) and
    ``exclude``; ``test``: the held-out test speakers the generator knows, minus ``exclude``.

    Raises:
        SynthError: a side is left without any speaker.
    """
    user = exclude or heldout.Exclusions()
    train_block = heldout.training_exclusions(user)
    known = [v.id for v in speechmod.recorded_voices()]
    train = [i for i in known if not train_block.blocks(i, speechmod.recorded_package_of(i))]
    test = [
        i for i in known
        if i in heldout.TEST_SPEAKERS and not user.blocks(i, speechmod.recorded_package_of(i))
    ]
    for side, ids in (("train", train), ("test", test)):
        if not ids:
            raise SynthError(f"no recorded speaker is left for the {side} split after the exclusions")
    return {"train": tuple(train), "test": tuple(test)}


def _drop_packages(objs: list[Any], package: Callable[[Any], str], exclude: heldout.Exclusions, what: str) -> list[Any]:
    kept = [o for o in objs if not exclude.blocks(package=package(o))]
    if not kept:
        raise SynthError(f"no {what} left after excluding the packages {', '.join(sorted(exclude.packages))}")
    return kept


@lru_cache(maxsize=4)
def build_pools(exclude: heldout.Exclusions | None = None) -> Pools:
    """Compute the held-out pools (fetching Debian assets on first use).

    Args:
        exclude: a user's extra exclusions (speaker ids, TTS voice ids, packages), applied to every split.
    """
    user = exclude or heldout.Exclusions()
    voices = [v for v in speechmod.tts_voices() if not user.blocks(v.id)]
    if not voices:
        raise SynthError("no text-to-speech engine found: install the Debian packages flite, festival and espeak-ng")
    tts: dict[str, list[speechmod.Voice]] = {"train": [], "test": []}
    for engine in sorted({v.engine for v in voices}):
        group = _split_objs([v for v in voices if v.engine == engine], lambda v: v.id, f"{engine} voices")
        for s in ("train", "test"):
            tts[s] += list(group[s])
    real = real_speaker_pools(user)
    sentences: dict[str, dict[str, tuple[str, ...]]] = {}
    for lang in ("en", "es", "fr", "it", "ru"):
        pool = english_sentences() if lang == "en" else language_sentences(lang)
        tr, te = split_pool(list(pool), test_fraction=0.1)
        if not te:
            raise SynthError(f"cannot hold out {lang} sentences: only {len(pool)} available")
        sentences[lang] = {"train": tuple(tr), "test": tuple(te)}
    instruments = _split_objs(sorted(musicmod.INSTRUMENTS), lambda p: f"gm{p:03d}", "instruments")
    music = _drop_packages(list(musicmod.recorded_music_files(user.packages)), lambda f: f[0], user, "recorded music")
    music_files = _split_objs(music, lambda f: f"{f[0]}/{f[2]}", "music files")
    events = _drop_packages(list(soundmod.event_files(user.packages)), lambda e: e.package, user, "sound-event files")
    event_files = _split_objs(events, lambda e: f"{e.package}/{e.source}", "event files")
    return Pools(
        tts_voices={k: tuple(sorted(v, key=lambda x: x.id)) for k, v in tts.items()},
        real_speakers=real,
        sentences=sentences,
        instruments=instruments,
        music_files=music_files,
        event_files=event_files,
    )


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------
def _target_duration(rng: np.random.Generator, kind: str) -> float:
    lo, hi = {"music": (5.0, 12.0), "recorded-music": (5.0, 12.0), "scene": (4.0, 10.0)}.get(kind, (3.0, 10.0))
    return float(round(rng.uniform(lo, hi), 2))


def check_profile(profile: str) -> None:
    """Raise :class:`CorpusError` naming the allowed values unless ``profile`` is one of :data:`PROFILES`."""
    if profile not in PROFILES:
        raise CorpusError(f"unknown --profile {profile!r}; choose one of: {', '.join(PROFILES)}")


def plan_corpus(hours: float, seed: int, profile: str = "mixed") -> list[ClipSpec]:
    """Plan clips until the estimated total reaches ``hours``.

    ``mixed``: blocks of ten clips (every kind and split). ``real-speech``: the same blocks with
    every clip recorded speech. ``clean-english``: clean English TTS clips, all in the test split.
    The plan is a function of ``(hours, seed, profile)`` only, and a longer plan starts with a
    shorter one.
    """
    check_profile(profile)
    if not hours > 0:
        raise CorpusError(f"--hours must be positive, got {hours}")
    if profile == "clean-english":
        return _plan_clean_english(hours, seed)
    budget = hours * 3600.0
    specs: list[ClipSpec] = []
    total, block = 0.0, 0
    while total < budget:
        rng = np.random.default_rng([seed, 1_000_003, block])
        kinds = [BLOCK_KINDS[i] for i in rng.permutation(len(BLOCK_KINDS))]
        if profile == "real-speech":  # after the draw, so that the splits and durations use the same stream
            kinds = ["real-speech"] * len(kinds)
        splits = [BLOCK_SPLITS[i] for i in rng.permutation(len(BLOCK_SPLITS))]
        for kind, split in zip(kinds, splits, strict=True):
            if total >= budget:
                break
            dur = _target_duration(rng, kind)
            overrides = {"mixture_kind": "speech over music" if block % 2 == 0 else "speech in a sound scene"} if kind == "mixture" else {}
            specs.append(ClipSpec(len(specs), seed, kind, split, dur, overrides, profile=profile))
            total += dur
        block += 1
    return specs


def _plan_clean_english(hours: float, seed: int) -> list[ClipSpec]:
    budget = hours * 3600.0
    rng = np.random.default_rng([seed, 2_000_003])
    specs: list[ClipSpec] = []
    total = 0.0
    while total < budget:
        dur = _target_duration(rng, "tts")
        overrides = {**CLEAN, "environment": dict(CLEAN["environment"])}
        specs.append(ClipSpec(len(specs), seed, "tts", "test", dur, overrides, profile="clean-english"))
        total += dur
    return specs


def english_test_voices(pools: Pools) -> list[list[speechmod.Voice]]:
    """The held-out English voices of :data:`CLEAN_ENGLISH_ENGINES`, one list per installed engine."""
    pool = [v for v in pools.tts_voices["test"] if v.language == "en"]
    return [g for g in ([v for v in pool if v.engine == e] for e in CLEAN_ENGLISH_ENGINES) if g]


def english_test_voice(pools: Pools, index: int) -> speechmod.Voice:
    """Voice of ``clean-english`` clip ``index``: engines in turn, and each engine's voices in turn."""
    groups = english_test_voices(pools)
    if not groups:
        raise SynthError(
            "no English text-to-speech voice of flite or festival is held out for the test split: "
            "install the Debian packages flite, festival and festvox-us-slt-hts"
        )
    group = groups[index % len(groups)]
    return group[(index // len(groups)) % len(group)]


# ---------------------------------------------------------------------------------------------
# Clip generators
# ---------------------------------------------------------------------------------------------
RATES = {"slow": 0.8, "normal": 1.0, "fast": 1.25}
PITCHES = {"low": -3.0, "normal": 0.0, "high": 3.0}
LEVELS = {"quiet": -33.0, "moderate": -25.0, "loud": -18.0}


def _join_sentences(texts: list[str]) -> str:
    """Join utterances as sentences: one without final punctuation gets a full stop (not the last)."""
    ends = (".", "!", "?", "\u2026", ";", ":")
    return " ".join(t if t.endswith(ends) or i == len(texts) - 1 else t + "." for i, t in enumerate(texts))


def _rate_name(wps: float) -> str:
    return "slow" if wps < 2.0 else "fast" if wps > 3.4 else "normal"


def _speech_tts(spec: ClipSpec, rng: np.random.Generator, pools: Pools, workdir: Path) -> tuple[np.ndarray, dict[str, Any], str]:
    side = pools.side(spec.split)
    voice_id = spec.overrides.get("voice_id")
    if voice_id:
        matches = [v for v in speechmod.tts_voices() if v.id == voice_id]
        if not matches:
            raise SynthError(f"unknown or unavailable voice {voice_id!r}")
        voice = matches[0]
    elif spec.profile == "clean-english":
        voice = english_test_voice(pools, spec.index)
    else:
        pool = pools.tts_voices[side]
        engines = [e for e in ENGINE_WEIGHTS if any(v.engine == e for v in pool)]
        weights = np.array([ENGINE_WEIGHTS[e] for e in engines])
        engine = engines[int(rng.choice(len(engines), p=weights / weights.sum()))]
        candidates = [v for v in pool if v.engine == engine]
        voice = candidates[int(rng.integers(0, len(candidates)))]
    sentences = pools.sentences[voice.language][side]
    rate = str(spec.overrides.get("rate") or rng.choice(list(RATES), p=[0.25, 0.5, 0.25]))
    pitch = str(spec.overrides.get("pitch") or rng.choice(list(PITCHES), p=[0.25, 0.5, 0.25]))
    rate_factor = float(round(RATES[rate] * rng.uniform(0.96, 1.04), 3)) if rate != "normal" else 1.0
    semitones = float(round(PITCHES[pitch] + rng.uniform(-0.5, 0.5), 2)) if pitch != "normal" else 0.0
    texts: list[str] = []
    parts: list[np.ndarray] = []
    spoken = 0.0
    while not texts or (spoken < spec.duration - 2.0 and len(texts) < 3):
        text = sentences[int(rng.integers(0, len(sentences)))]
        wav, sr = speechmod.synthesize(voice, text, workdir)
        wav = speechmod.change_rate_pitch(wav, sr, rate_factor, semitones, workdir)
        parts.append(fade(to_sr(wav, sr), SR, 0.005))
        texts.append(text)
        spoken += parts[-1].size / SR
    pauses = [float(rng.uniform(0.3, 0.7)) for _ in parts]
    wav = speechmod.join_with_pauses(parts, pauses)
    n_words = sum(len(t.split()) for t in texts)
    speech_s = sum(p.size for p in parts) / SR
    speaker = {
        **speechmod.voice_dict(voice), "kind": "synthetic", "style": "read", "rate": rate,
        "rate_factor": rate_factor, "pitch": pitch, "pitch_semitones": semitones,
        "words_per_second": round(n_words / speech_s, 2), "transcript_exact": True,
        "native_sample_rate": int(sr),
    }
    return wav, {"speaker": speaker, "environment_extra": {}}, _join_sentences(texts)


def _speech_real(spec: ClipSpec, rng: np.random.Generator, pools: Pools) -> tuple[np.ndarray, dict[str, Any], str | None]:
    speaker_id = str(spec.overrides.get("voice_id") or _real_speaker(rng, pools.real_speakers[pools.side(spec.split)]))
    utts = speechmod.recorded_utterances(speaker_id)
    family = speaker_id.partition(":")[0]
    if family == "asterisk":
        style, max_parts = "prompt", 4
    elif family in DIALOGUE_FAMILIES:
        style, max_parts = "dialogue", 4
    else:
        style, max_parts = "words", 8
    if not utts:
        raise SynthError(f"recorded speaker {speaker_id} has no usable utterances")
    parts: list[np.ndarray] = []
    texts: list[str] = []
    sources: list[str] = []
    native_sr = SR
    total = 0.0
    order = rng.permutation(len(utts))
    for j in order[: max_parts * 3]:
        u = utts[int(j)]
        try:
            w, sr = speechmod.load_utterance(u)
        except SynthError:
            continue
        native_sr = min(native_sr, sr)
        if total + w.size / SR > spec.duration + 3.0 and parts:
            continue
        parts.append(w)
        texts.append(u.text)
        sources.append(u.source)
        total += w.size / SR
        if total >= spec.duration or len(parts) >= max_parts:
            break
    if not parts:
        raise SynthError(f"recorded speaker {speaker_id}: no decodable utterance")
    utt0 = utts[int(order[0])]
    pauses = [float(rng.uniform(0.3, 0.8)) for _ in parts]
    wav = speechmod.join_with_pauses(parts, pauses)
    known = all(texts)  # a recording without a transcript leaves the clip's words (and its rate) unknown
    if not known:
        text = ""
    elif style == "words":
        text = ", ".join(texts)
    else:
        text = _join_sentences(texts)
    info = package_info(utt0.package)
    speaker: dict[str, Any] = {
        **speechmod.voice_dict(utt0.voice), "kind": "recorded", "style": style,
        "transcript_exact": bool(utt0.transcript_exact and known),
    }
    if known:
        speaker["words_per_second"] = round(len(text.split()) / (sum(p.size for p in parts) / SR), 2)
        if style != "words":
            speaker["rate"] = _rate_name(float(speaker["words_per_second"]))
    else:
        speaker["transcript_known"] = False
    if known and not utt0.transcript_exact:
        speaker["transcript"] = text
    extra: dict[str, Any] = {"bandwidth_hz": native_sr // 2} if native_sr < 32000 else {}
    attrs = {
        "speaker": speaker,
        "source": {"package": utt0.package, "files": sources, "licence": info["licence"], "version": info["version"]},
        "environment_extra": extra,
    }
    return wav, attrs, text if utt0.transcript_exact and known else None


def _real_speaker(rng: np.random.Generator, pool: tuple[str, ...]) -> str:
    """A recorded speaker: a family by :data:`REAL_FAMILY_WEIGHTS`, then one of its speakers uniformly."""
    families = [f for f in REAL_FAMILY_WEIGHTS if any(s.startswith(f + ":") for s in pool)]
    if not families:
        raise SynthError("no recorded speaker available for this split")
    weights = np.array([REAL_FAMILY_WEIGHTS[f] for f in families])
    family = families[int(rng.choice(len(families), p=weights / weights.sum()))]
    members = [s for s in pool if s.startswith(family + ":")]
    return members[int(rng.integers(0, len(members)))]


def _music_synth(spec: ClipSpec, rng: np.random.Generator, pools: Pools, duration: float | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    side = pools.side(spec.split)
    comp = musicmod.choose_composition(rng, list(pools.instruments[side]), duration or spec.duration)
    if "drums" in spec.overrides:
        comp.drums = bool(spec.overrides["drums"])
    wav, attrs = musicmod.render(comp, rng)
    return wav, attrs


def _music_recorded(spec: ClipSpec, rng: np.random.Generator, pools: Pools) -> tuple[np.ndarray, dict[str, Any]]:
    side = pools.side(spec.split)
    files = pools.music_files[side]
    package, path, source = files[int(rng.integers(0, len(files)))]
    track, native_sr = musicmod.load_track(path)
    n = int(round(spec.duration * SR))
    if track.size > n:
        start = int(rng.integers(0, track.size - n))
        wav = track[start : start + n]
    else:
        start, wav = 0, track
    wav = fade(wav, SR, 0.05)
    bpm, conf = musicmod.estimate_tempo(wav)
    centroid = spectral_centroid_hz(wav)
    info = package_info(package)
    desc = musicmod.RECORDED_MUSIC[package][1][0]
    mu = {
        "description": desc, "tempo_bpm": round(bpm, 1), "tempo_estimated": True, "tempo_confidence": round(conf, 3),
        "spectral_centroid_hz": round(centroid, 1), "brightness": musicmod.brightness(centroid),
        "source": "recording",
    }
    attrs = {
        "music": mu,
        "source": {"package": package, "files": [source], "start_s": round(start / SR, 3),
                   "licence": info["licence"], "version": info["version"]},
        "environment_extra": {"bandwidth_hz": native_sr // 2} if native_sr < 32000 else {},
    }
    return wav.astype(np.float32), attrs


def _scene_events(rng: np.random.Generator, pools: Pools, split: str, duration: float, n_max: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    side = pools.side(split)
    files = pools.event_files[side]
    events: list[tuple[np.ndarray, dict[str, Any]]] = []
    for _ in range(int(rng.integers(1, n_max + 1))):
        if rng.random() < 0.7:
            ev = files[int(rng.integers(0, len(files)))]
            try:
                w = soundmod.load_event(ev, max_s=min(4.0, duration / 2))
            except SynthError:
                continue
            events.append((w, {"label": ev.label, "source": f"{ev.package}/{ev.source}"}))
        else:
            label = str(rng.choice(soundmod.SOX_EVENTS))
            w, params = soundmod.sox_event(label, rng)
            events.append((w, {"label": label, "source": "sox", "params": params}))
    if not events:
        raise SynthError("no sound event could be loaded for this scene")
    return soundmod.place_events(events, duration, rng)


# ---------------------------------------------------------------------------------------------
# One clip
# ---------------------------------------------------------------------------------------------
def _environment(spec: ClipSpec, rng: np.random.Generator, kind: str) -> dict[str, Any]:
    if "environment" in spec.overrides:
        return dict(spec.overrides["environment"])
    if kind in ("scene",) or spec.overrides.get("mixture_kind") == "speech in a sound scene":
        env = envmod.choose_environment(rng, p_clean=0.0)
        if "noise_type" not in env:
            env["noise_type"] = str(rng.choice(envmod.INDOOR_NOISES))
            env["snr_db"] = float(round(rng.uniform(8.0, 30.0), 1))
        return env
    return envmod.choose_environment(rng, p_clean=0.35 if kind in ("music", "recorded-music") else 0.25)


def generate_clip(spec: ClipSpec, pools: Pools | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Generate one clip (retrying with a fresh random stream if a source file is unusable).

    Returns:
        ``(wav [S] float32 at 24 kHz, row)`` where ``row`` has every manifest key except
        ``audio`` (and ``caption``/``asr_caption``, added by :func:`caption_row`).
    """
    pools = pools or build_pools()
    last: Exception | None = None
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([spec.seed, spec.index, attempt])
        try:
            with tempfile.TemporaryDirectory(prefix="entanglecodec-synth-") as tmp:
                return _generate(spec, rng, pools, Path(tmp))
        except SynthError as e:
            last = e
    raise SynthError(f"clip {spec.id} ({spec.kind}) failed after {MAX_ATTEMPTS} attempts: {last}")


def _generate(spec: ClipSpec, rng: np.random.Generator, pools: Pools, workdir: Path) -> tuple[np.ndarray, dict[str, Any]]:
    kind = spec.kind
    attrs: dict[str, Any] = {"kind": kind}
    text: str | None = None
    target_level: float
    if kind == "tts":
        wav, extra, text = _speech_tts(spec, rng, pools, workdir)
        attrs.update(extra)
        target_level = _level_choice(rng)
    elif kind == "real-speech":
        wav, extra, text = _speech_real(spec, rng, pools)
        attrs.update(extra)
        target_level = _level_choice(rng)
    elif kind == "music":
        wav, mu = _music_synth(spec, rng, pools)
        attrs["music"] = mu
        target_level = musicmod.DYNAMICS[mu["dynamics"]][1] + float(rng.uniform(-1.5, 1.5))
    elif kind == "recorded-music":
        wav, extra = _music_recorded(spec, rng, pools)
        attrs.update(extra)
        target_level = _level_choice(rng)
    elif kind == "scene":
        wav, events = _scene_events(rng, pools, spec.split, spec.duration, n_max=4)
        attrs["events"] = events
        target_level = _level_choice(rng)
    elif kind == "mixture":
        wav, text, target_level = _mixture(spec, rng, pools, workdir, attrs)
    else:
        raise CorpusError(f"unknown clip kind {kind!r}")
    env = _environment(spec, rng, kind)
    extra_env = attrs.pop("environment_extra", {}) or {}
    if env.get("setting") == "indoor" or "noise_type" in env:
        wav = np.concatenate([wav, silence(0.3)]) if env.get("setting") == "indoor" else wav
    wav, env_attrs = envmod.render_environment(wav, env, rng)
    env_attrs.update(extra_env)
    attrs["environment"] = env_attrs
    wav = peak_normalise(gain_to(wav, target_level), 0.98)
    measured = active_rms_dbfs(wav)
    attrs["loudness"] = {"dbfs": round(measured, 2), "level": level_name(measured), "peak": round(float(np.abs(wav).max()), 4)}
    row = {
        "id": spec.id,
        "duration": round(wav.size / SR, 4),
        "sample_rate": SR,
        "domain": DOMAIN_OF_KIND[kind],
        "split": spec.split,
        "text": text,
        "attributes": attrs,
    }
    return wav.astype(np.float32), row


def _level_choice(rng: np.random.Generator) -> float:
    name = str(rng.choice(list(LEVELS), p=[0.25, 0.5, 0.25]))
    return LEVELS[name] + float(rng.uniform(-1.5, 1.5))


def _mixture(spec: ClipSpec, rng: np.random.Generator, pools: Pools, workdir: Path, attrs: dict[str, Any]) -> tuple[np.ndarray, str | None, float]:
    mkind = str(spec.overrides.get("mixture_kind") or rng.choice(["speech over music", "speech in a sound scene"]))
    text: str | None
    if rng.random() < 0.6:
        speech, extra, text = _speech_tts(spec, rng, pools, workdir)
    else:
        speech, extra, text = _speech_real(spec, rng, pools)
    attrs.update(extra)
    lead, tail = float(rng.uniform(0.5, 1.5)), float(rng.uniform(0.5, 1.5))
    speech = np.concatenate([silence(lead), gain_to(speech, -25.0), silence(tail)])
    duration = speech.size / SR
    if mkind == "speech over music":
        bed, mu = _music_synth(spec, rng, pools, duration=duration)
        ratio = float(round(rng.uniform(-20.0, -8.0), 1))
        bed = gain_to(bed[: speech.size], -25.0 + ratio)
        wav = speech + np.pad(bed, (0, speech.size - bed.size))
        attrs["music"] = mu
        attrs["mixture"] = {"kind": mkind, "music_to_speech_db": ratio, "speech_onset_s": round(lead, 2)}
    else:
        track, events = _scene_events(rng, pools, spec.split, duration, n_max=3)
        ratio = float(round(rng.uniform(-12.0, 0.0), 1))
        track = gain_to(track, -25.0 + ratio) if np.any(track) else track
        wav = speech + track[: speech.size]
        attrs["events"] = events
        attrs["mixture"] = {"kind": mkind, "events_to_speech_db": ratio, "speech_onset_s": round(lead, 2)}
    return wav.astype(np.float32), text, _level_choice(rng)


def caption_row(row: dict[str, Any], captioner: TemplateCaptioner) -> dict[str, Any]:
    """Add ``caption`` and ``asr_caption`` to a generated row."""
    row = dict(row)
    row["caption"] = captioner.caption(row)
    row["asr_caption"] = asr_caption(row)
    return row


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------
def _write_clip(args: tuple[ClipSpec, str, heldout.Exclusions | None]) -> dict[str, Any]:
    spec, out_dir, exclude = args
    wav, row = generate_clip(spec, build_pools(exclude))
    rel = Path("audio") / spec.split / f"{spec.id}.flac"
    path = Path(out_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(wav, -1.0, 1.0), SR, format="FLAC", subtype="PCM_16")
    row = {"id": row["id"], "audio": rel.as_posix(), **{k: v for k, v in row.items() if k != "id"}}
    return caption_row(row, TemplateCaptioner(seed=spec.seed))


def _prepare_output(out: Path, overwrite: bool) -> None:
    problem = prepare_output_dir(out, overwrite, ("audio", "manifest.jsonl", "corpus.json", "manifest.jsonl.partial"), "corpus")
    if problem:
        raise CorpusError(problem)


def _resumable_rows(out: Path, specs: list[ClipSpec]) -> list[tuple[str, dict[str, Any]]]:
    """``(manifest line, parsed row)`` of an interrupted run that can be kept (a prefix of ``specs``).

    A line is kept while it parses, names the clip planned at its position (same seed, index and
    split) and its audio file exists and is readable; everything after the first bad line
    (e.g. a line torn by a kill) is generated again.

    Raises:
        CorpusError: ``out`` holds a finished corpus, or no interrupted run of this plan.
    """
    if (out / "manifest.jsonl").exists():
        raise CorpusError(f"{out} already holds a finished corpus (manifest.jsonl); nothing to resume")
    partial = out / "manifest.jsonl.partial"
    if not partial.is_file():
        raise CorpusError(f"nothing to resume in {out}: no manifest.jsonl.partial (start without --resume)")
    kept: list[tuple[str, dict[str, Any]]] = []
    for line, spec in zip(partial.read_text(encoding="utf-8").splitlines(), specs, strict=False):
        try:
            row = json.loads(line)
            ok = row["id"] == spec.id and row["split"] == spec.split
            ok = ok and sf.info(str(out / row["audio"])).frames > 0
        except (ValueError, KeyError, TypeError, RuntimeError):
            ok = False
        if not ok:
            break
        kept.append((line, row))
    if not kept and partial.stat().st_size > 0:
        raise CorpusError(
            f"{partial} does not start with the clips planned for this --hours/--seed/--profile; "
            "resume with the values of the interrupted run, or start again with --overwrite"
        )
    return kept


def _iter_rows(
    specs: list[ClipSpec], out: Path, workers: int, exclude: heldout.Exclusions | None
) -> Iterator[dict[str, Any]]:
    jobs = [(s, str(out), exclude) for s in specs]
    # Clips are always made in fresh worker processes, even with one worker: the caller's process
    # may hold state that changes the audio (a test suite's earlier tests changed reverberant clips'
    # peaks in the 4th decimal when clips were made in-process), and the corpus must be
    # byte-identical for a seed whatever ran before. "spawn", not "fork": forking a process that
    # already runs library threads (BLAS, torch, FluidSynth) can deadlock the children. Workers
    # rebuild the pools from the on-disk cache.
    ctx = mp.get_context("spawn")
    with ctx.Pool(max(1, workers)) as pool:
        yield from pool.imap(_write_clip, jobs, chunksize=1)


def generate_corpus(
    out: str | Path,
    hours: float,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
    profile: str = "mixed",
    exclude: heldout.Exclusions | None = None,
) -> dict[str, Any]:
    """Generate a corpus into ``out``; returns the ``corpus.json`` summary.

    Args:
        out: output directory (must be empty or absent unless ``overwrite``).
        hours: target amount of audio (the plan's estimate; the summary reports what was made).
        seed: corpus seed; the same seed gives byte-identical audio and manifest.
        workers: worker processes (the output does not depend on this).
        overwrite: replace the corpus files in a non-empty ``out``.
        progress: show a rich progress bar.
        resume: continue an interrupted run of the same ``hours``/``seed``/``profile`` in ``out``:
            the rows of ``manifest.jsonl.partial`` whose audio is on disk are kept and generation
            goes on from the first missing clip. Clips depend only on (seed, index, profile), so
            the result is byte-identical to an uninterrupted run.
        profile: ``mixed`` (every domain and split), ``real-speech`` (recorded speech only, every
            split) or ``clean-english`` (clean English TTS speech in the test split, for ASR word
            error rates); see :data:`PROFILES`.
        exclude: more speakers / TTS voices / packages to keep out of every split (see
            :func:`entanglecodec.data.heldout.read_exclusions`), on top of the held-out sets.

    Raises:
        CorpusError: bad arguments or a non-empty output directory without ``overwrite``.
        SynthError / AssetError: a tool or Debian asset is missing (the message names it).
    """
    check_profile(profile)
    if workers < 1:
        raise CorpusError(f"--workers must be >= 1, got {workers}")
    if resume and overwrite:
        raise CorpusError("--resume and --overwrite exclude each other")
    out = Path(out)
    specs = plan_corpus(hours, seed, profile)
    partial = out / "manifest.jsonl.partial"
    kept: list[tuple[str, dict[str, Any]]] = []
    if resume:
        kept = _resumable_rows(out, specs)
    else:
        _prepare_output(out, overwrite)
    exclude = exclude if exclude is not None and (exclude.speakers or exclude.packages) else None
    pools = build_pools(exclude)  # fetch every asset once, before starting workers
    english_sentences()
    if profile == "clean-english":
        english_test_voice(pools, 0)  # fails now, not after retries, when no English voice is installed
    done = [row for _, row in kept]
    with open(partial, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line, _ in kept)
        f.flush()
        rows = _iter_rows(specs[len(kept) :], out, workers, exclude)
        bar: Any = None
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            bar = Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with bar if bar is not None else contextlib.nullcontext():
            task = bar.add_task("clips", total=len(specs), completed=len(kept)) if bar is not None else None
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                done.append(row)
                if bar is not None:
                    bar.advance(task)
    partial.rename(out / "manifest.jsonl")
    counts: dict[str, Counter[str]] = {}
    for row in done:
        counts.setdefault(row["domain"], Counter())[row["split"]] += 1
    total_s = sum(row["duration"] for row in done)
    summary = corpus_summary(seed, hours, specs, counts, total_s, pools, profile, exclude, done)
    (out / "corpus.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def _source_of(row: dict[str, Any]) -> str:
    """Where a clip's main audio comes from: a Debian package, a TTS engine or a synthesiser."""
    attrs = row.get("attributes") or {}
    src = attrs.get("source") or {}
    if src.get("package"):
        return str(src["package"])
    speaker = attrs.get("speaker") or {}
    if speaker.get("kind") == "synthetic":
        return f"tts:{speaker.get('engine')}"
    if row.get("domain") == "music" or (attrs.get("music") or {}).get("instruments"):
        return "fluidsynth"
    return "scene"


def composition(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Clips and hours per domain, per kind and per source (package or engine) of generated rows.

    ``speech_real_share`` is the fraction of pure speech clips that are recorded people.
    """
    tables: dict[str, dict[str, dict[str, float]]] = {"per_domain": {}, "per_kind": {}, "per_source": {}}
    for row in rows:
        keys = {"per_domain": str(row["domain"]), "per_kind": str(row["attributes"].get("kind")), "per_source": _source_of(row)}
        for table, key in keys.items():
            e = tables[table].setdefault(key, {"clips": 0, "hours": 0.0})
            e["clips"] += 1
            e["hours"] += float(row["duration"]) / 3600.0
    out: dict[str, Any] = {
        name: {k: {"clips": int(v["clips"]), "hours": round(v["hours"], 4)} for k, v in sorted(t.items())}
        for name, t in tables.items()
    }
    speech = [r for r in rows if r["domain"] == "speech"]
    real = sum(1 for r in speech if (r["attributes"].get("speaker") or {}).get("kind") == "recorded")
    out["speech_real_share"] = round(real / len(speech), 3) if speech else 0.0
    return out


def corpus_summary(
    seed: int, hours: float, specs: list[ClipSpec], counts: dict[str, Counter[str]], total_s: float, pools: Pools,
    profile: str = "mixed", exclude: heldout.Exclusions | None = None, rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``corpus.json`` content (no timestamps, so it is reproducible too)."""
    skipped = set(heldout.TEST_PACKAGES) | (set(exclude.packages) if exclude else set())
    used = sorted(set(PACKAGES) - {"fluid-soundfont-gm"} - skipped)
    packages = {p: {"version": package_info(p)["version"], "licence": package_info(p)["licence"]} for p in used}
    packages["fluid-soundfont-gm"] = {"version": soundfont_version(), "licence": PACKAGES["fluid-soundfont-gm"].licence}
    return {
        "generator": "entanglecodec.data.synth",
        "generator_version": GENERATOR_VERSION,
        "profile": profile,
        "seed": seed,
        "hours_requested": hours,
        "hours_generated": round(total_s / 3600.0, 4),
        "clips": len(specs),
        "sample_rate": SR,
        "counts": {d: dict(sorted(c.items())) for d, c in sorted(counts.items())},
        "kinds": dict(sorted(Counter(s.kind for s in specs).items())),
        "composition": composition(rows or []),
        "debian_packages": packages,
        "tools": speechmod.engine_versions(),
        "held_out_test": {
            "tts_voices": [v.id for v in pools.tts_voices["test"]],
            "recorded_speakers": list(pools.real_speakers["test"]),
            "instruments": [musicmod.INSTRUMENTS[p][0] for p in pools.instruments["test"]],
            "music_files": [f"{f[0]}/{f[2]}" for f in pools.music_files["test"]],
            "event_files": [f"{e.package}/{e.source}" for e in pools.event_files["test"]],
        },
        "held_out_evaluation": {
            "dev_speakers": list(heldout.DEV_SPEAKERS),
            "test_speakers": list(heldout.TEST_SPEAKERS),
            "test_packages": list(heldout.TEST_PACKAGES),
        },
        "excluded": (exclude or heldout.Exclusions()).as_dict(),
    }
