"""The demo's clips: one short clip per domain, made from the corpus generator's own sources.

==================  =========================================================================
clip                source
==================  =========================================================================
``speech-recorded``  a recorded person: Asterisk's Mexican-Spanish prompts (``asterisk:allison-es``,
                     a speaker that neither the real-speech dev nor test set holds out)
``speech-tts``       a flite sentence (voice ``slt``)
``music``            a ``pretty_midi`` composition rendered by FluidSynth with FluidR3_GM
``sound``            a recorded sound event (applause from ``frozen-bubble-data``)
``mixture``          a second flite voice (``awb``) over the music at +10 dB SNR
``note``             one sustained French-horn note (A3, 220 Hz), FluidSynth with FluidR3_GM
``drums``            single drum hits with silence between them (kick, snare, tom, crash)
==================  =========================================================================

``note`` and ``drums`` are the two hardest shapes for a mel codec, drawn beside the originals in
the demo's picture: a steady harmonic stack (every harmonic a flat line) and broadband transients
(a vertical stripe and its decay).

Every clip is made at demo time (deterministic: fixed seeds, fixed files), at 24 kHz mono, cut to
at most :data:`MAX_SECONDS`. A clip whose source is missing (a Debian package or tool that is not
installed) is left out with a note saying what to install; nothing is replaced by a stand-in.
Each clip has its true caption; :data:`DISTRACTOR_CAPTIONS` plus every clip's caption form the
candidates that the retrieval towers rank.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 24000
MAX_SECONDS = 5.0
"""Longest clip (seconds): the demo stays well under two minutes on a CPU."""

TTS_SENTENCE = "The quick brown fox jumps over the lazy dog, and the tokenizer writes it down."
MIX_SENTENCE = "Please keep your voice down, the music is still playing in the next room."
RECORDED_SPEAKER = "asterisk:allison-es"
"""Recorded demo voice: not in :mod:`entanglecodec.data.heldout` (checked by the tests)."""
SOUND_EVENT = ("frozen-bubble-data", "applause")
"""``(package, label)`` of the demo's sound event, looked up in the generator's taxonomy."""

DISTRACTOR_CAPTIONS: tuple[str, ...] = (
    "A dog barks several times in a quiet backyard.",
    "Heavy rain falls on a tin roof during a thunderstorm.",
    "A man speaks German slowly in a large reverberant hall.",
    "A fast electronic dance track with a pounding kick drum.",
)
"""Captions of no demo clip, added to the candidates of the caption ranking."""


@dataclass(frozen=True)
class DemoClip:
    """One demo clip.

    Attributes:
        name: short id (``speech-recorded``, ``music``, ...), used in file names.
        domain: ``speech``, ``music``, ``sound`` or ``mixture``.
        wav: ``float32 [S]`` at 24 kHz, peak <= 0.95.
        caption: the true rich caption (one of the ranking's candidates).
        source: where the audio comes from (package, voice, renderer).
        text: the spoken words, when known exactly.
        language: ISO 639-1 code of the speech, when there is speech.
    """

    name: str
    domain: str
    wav: np.ndarray
    caption: str
    source: str
    text: str | None = None
    language: str | None = None

    @property
    def seconds(self) -> float:
        return self.wav.size / SAMPLE_RATE


def _finish(wav: np.ndarray) -> np.ndarray:
    from ..data.synth.signal import fade, peak_normalise

    return fade(peak_normalise(wav[: int(MAX_SECONDS * SAMPLE_RATE)].astype(np.float32), 0.9), SAMPLE_RATE, 0.01)


def _tts(voice_id: str, text: str) -> np.ndarray:
    from ..data.synth.signal import to_sr
    from ..data.synth.speech import FLITE_VOICES, synthesize

    voice = next(v for v in FLITE_VOICES if v.id == voice_id)
    with tempfile.TemporaryDirectory(prefix="entanglecodec-demo-") as d:
        wav, sr = synthesize(voice, text, Path(d))
    return to_sr(wav, sr)


def recorded_speech() -> DemoClip:
    """The first utterance of :data:`RECORDED_SPEAKER` lasting 2.5-5 s (prompts joined otherwise)."""
    from ..data.synth.speech import load_utterance, recorded_utterances

    utts = recorded_utterances(RECORDED_SPEAKER)
    parts: list[np.ndarray] = []
    texts: list[str] = []
    for utt in utts:
        wav, _ = load_utterance(utt)
        if 2.5 * SAMPLE_RATE <= wav.size <= MAX_SECONDS * SAMPLE_RATE:
            parts, texts = [wav], [utt.text]
            break
        if wav.size < 2.5 * SAMPLE_RATE and sum(p.size for p in parts) + wav.size < MAX_SECONDS * SAMPLE_RATE:
            parts.append(wav)
            texts.append(utt.text)
    if not parts:
        raise RuntimeError(f"{RECORDED_SPEAKER}: no utterance shorter than {MAX_SECONDS:g} s")
    gap = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)
    wav = np.concatenate([x for p in parts for x in (p, gap)][:-1])
    voice = utts[0].voice
    return DemoClip(
        "speech-recorded", "speech", _finish(wav),
        f"A woman speaks {voice.accent} clearly in a quiet room, like a telephone prompt.",
        f"{utts[0].package} ({voice.id}, recorded)", " ".join(texts), voice.language,
    )


def tts_speech() -> DemoClip:
    """:data:`TTS_SENTENCE` spoken by flite's ``slt`` voice."""
    return DemoClip(
        "speech-tts", "speech", _finish(_tts("flite:slt", TTS_SENTENCE)),
        "A woman with an American accent reads a sentence at a steady pace in a quiet room.",
        "flite, voice slt", TTS_SENTENCE, "en",
    )


def _music_wav() -> np.ndarray:
    from ..data.synth.music import Composition, render

    comp = Composition(
        programs=[0, 48, 32], roles=["melody", "chords", "bass"], tempo_bpm=104.0, key="C", mode="major",
        note_density="moderate", dynamics="medium", drums=True, duration=MAX_SECONDS,
        progression=[0, 4, 5, 3],
    )
    wav, _ = render(comp, np.random.default_rng(16))
    return wav


def music() -> DemoClip:
    """A C-major piano / strings / bass piece with drums at 104 BPM (pretty_midi + FluidSynth)."""
    return DemoClip(
        "music", "music", _finish(_music_wav()),
        "Cheerful piano melody over string chords, a bass line and a steady drum beat, in a major key.",
        "pretty_midi + FluidSynth (FluidR3_GM): piano, string ensemble, acoustic bass, drums",
    )


def sound_event() -> DemoClip:
    """:data:`SOUND_EVENT`: the generator's taxonomy names the file, the package supplies it."""
    import fnmatch

    from ..data.synth.assets import ensure_package
    from ..data.synth.sounds import TAXONOMY, EventFile, load_event

    package, label = SOUND_EVENT
    root = ensure_package(package)
    for pkg, sub, pattern, lab in TAXONOMY:
        if (pkg, lab) != (package, label):
            continue
        for f in sorted((root / sub).rglob("*")):
            if f.is_file() and fnmatch.fnmatch(f.name, pattern):
                wav = load_event(EventFile(label, package, str(f), str(f.relative_to(root))), MAX_SECONDS)
                return DemoClip(
                    "sound", "sound", _finish(wav),
                    "A crowd claps and applauds enthusiastically.", f"{package}: {f.name} ({label})",
                )
    raise RuntimeError(f"{package}: no file labelled {label!r}")


def mixture() -> DemoClip:
    """flite's ``awb`` voice over the demo music at +10 dB SNR."""
    from ..data.synth.environment import add_noise

    speech = _tts("flite:awb", MIX_SENTENCE)[: int(MAX_SECONDS * SAMPLE_RATE)]
    bed = np.zeros_like(speech)
    m = _music_wav()[: speech.size]
    bed[: m.size] = m
    return DemoClip(
        "mixture", "mixture", _finish(add_noise(speech, bed, 10.0)),
        "A man with a Scottish accent speaks over piano music with drums playing in the background.",
        "flite voice awb over the demo music at +10 dB SNR", MIX_SENTENCE, "en",
    )


def _midi(program: int | None, notes: list[tuple[int, float, float, int]]) -> object:
    """A one-instrument ``pretty_midi.PrettyMIDI``: General-MIDI ``program`` (``None``: the drum
    kit) playing ``(pitch, start s, end s, velocity)`` notes."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program or 0, is_drum=program is None)
    inst.notes.extend(pretty_midi.Note(velocity=v, pitch=p, start=a, end=b) for p, a, b, v in notes)
    pm.instruments.append(inst)
    return pm


def sustained_note() -> DemoClip:
    """A French horn (GM program 60) holding A3 (220 Hz) for 2.5 s, then its release."""
    from ..data.synth.music import render_midi

    wav = render_midi(_midi(60, [(57, 0.2, 2.7, 90)]), 3.5, "the sustained note")
    return DemoClip(
        "note", "music", _finish(wav),
        "A French horn holds a single long note, steady in pitch and loudness.",
        "pretty_midi + FluidSynth (FluidR3_GM): French horn, A3 (220 Hz), 2.5 s",
    )


def drum_hits() -> DemoClip:
    """Single hits of the General-MIDI kit: kick, snare, low tom, crash cymbal, each after the
    previous one has died away."""
    from ..data.synth.music import render_midi

    hits = [(36, 0.2, 0.3, 110), (38, 1.0, 1.1, 110), (45, 1.8, 1.9, 110), (49, 3.0, 3.1, 100)]
    return DemoClip(
        "drums", "sound", _finish(render_midi(_midi(None, hits), 4.8, "the drum hits")),
        "Four separate drum hits: a kick drum, a snare, a tom and a crash cymbal, with silence between them.",
        "pretty_midi + FluidSynth (FluidR3_GM): drum kit, kick / snare / low tom / crash",
    )


CLIP_MAKERS: tuple[tuple[str, Callable[[], DemoClip], str], ...] = (
    ("speech-recorded", recorded_speech, "the Debian package asterisk-core-sounds-es-g722 (unpacked on first use)"),
    ("speech-tts", tts_speech, "the Debian package flite"),
    ("music", music, "pyfluidsynth + pretty_midi (pip extra 'data') and the Debian package fluid-soundfont-gm"),
    ("sound", sound_event, "the Debian package frozen-bubble-data (unpacked on first use)"),
    ("mixture", mixture, "flite, pyfluidsynth + pretty_midi and fluid-soundfont-gm"),
    ("note", sustained_note, "pyfluidsynth + pretty_midi (pip extra 'data') and fluid-soundfont-gm"),
    ("drums", drum_hits, "pyfluidsynth + pretty_midi (pip extra 'data') and fluid-soundfont-gm"),
)
"""Every demo clip: name, maker, and what it needs."""


def demo_clips(notes: list[str], only: list[str] | None = None) -> list[DemoClip]:
    """Make every clip that can be made here (or those named in ``only``); ``notes`` receives one
    line per clip left out."""
    clips = []
    for name, make, needs in CLIP_MAKERS:
        if only and name not in only:
            continue
        try:
            clips.append(make())
        except Exception as e:  # a missing tool, package or library: say so, go on with the others
            notes.append(f"clip '{name}' left out: {' '.join(str(e).split())[:200]} (needs {needs})")
    return clips


def candidate_captions(clips: list[DemoClip]) -> list[str]:
    """The captions the retrieval towers rank for every clip: each clip's true caption + distractors."""
    return [c.caption for c in clips] + list(DISTRACTOR_CAPTIONS)
