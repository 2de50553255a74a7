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
==================  =========================================================================

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


CLIP_MAKERS: tuple[tuple[str, Callable[[], DemoClip], str], ...] = (
    ("speech-recorded", recorded_speech, "the Debian package asterisk-core-sounds-es-g722 (unpacked on first use)"),
    ("speech-tts", tts_speech, "the Debian package flite"),
    ("music", music, "pyfluidsynth + pretty_midi (pip extra 'data') and the Debian package fluid-soundfont-gm"),
    ("sound", sound_event, "the Debian package frozen-bubble-data (unpacked on first use)"),
    ("mixture", mixture, "flite, pyfluidsynth + pretty_midi and fluid-soundfont-gm"),
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
