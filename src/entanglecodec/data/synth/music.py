"""Music: seeded compositions rendered with FluidSynth + FluidR3_GM, recorded music, tempo estimation.

A composition is fully described by :class:`Composition` (instruments, tempo, key, mode, note
density, dynamics, drums); it is written as MIDI with ``pretty_midi`` and rendered at 24 kHz with a
fresh FluidSynth instance per clip (so a clip never depends on what was rendered before it).

:func:`estimate_tempo` is a small onset-autocorrelation beat-period estimator used both to caption
recorded music and to check that rendered clips have their declared tempo.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .assets import ensure_package, find_soundfont
from .signal import SR, SynthError, read_audio_any, to_sr

# General MIDI programs we use, with plain names and the role they can play.
INSTRUMENTS: dict[int, tuple[str, str]] = {
    0: ("acoustic grand piano", "keys"), 2: ("electric grand piano", "keys"), 4: ("electric piano", "keys"),
    6: ("harpsichord", "keys"), 8: ("celesta", "keys"), 9: ("glockenspiel", "mallet"), 11: ("vibraphone", "mallet"),
    12: ("marimba", "mallet"), 13: ("xylophone", "mallet"), 16: ("drawbar organ", "keys"),
    19: ("church organ", "keys"), 21: ("accordion", "keys"), 22: ("harmonica", "lead"),
    24: ("nylon-string acoustic guitar", "keys"), 25: ("steel-string acoustic guitar", "keys"),
    26: ("jazz electric guitar", "keys"), 27: ("clean electric guitar", "keys"), 32: ("acoustic bass", "bass"),
    33: ("fingered electric bass", "bass"), 35: ("fretless bass", "bass"), 40: ("violin", "lead"),
    41: ("viola", "lead"), 42: ("cello", "bass"), 43: ("contrabass", "bass"), 45: ("pizzicato strings", "keys"),
    46: ("orchestral harp", "keys"), 48: ("string ensemble", "keys"), 52: ("choir aahs", "keys"),
    56: ("trumpet", "lead"), 57: ("trombone", "bass"), 58: ("tuba", "bass"), 60: ("french horn", "lead"),
    61: ("brass section", "keys"), 64: ("soprano saxophone", "lead"), 65: ("alto saxophone", "lead"),
    66: ("tenor saxophone", "lead"), 68: ("oboe", "lead"), 70: ("bassoon", "bass"), 71: ("clarinet", "lead"),
    73: ("flute", "lead"), 74: ("recorder", "lead"), 75: ("pan flute", "lead"), 80: ("square-wave synth lead", "lead"),
    81: ("sawtooth synth lead", "lead"), 88: ("new-age synth pad", "keys"), 89: ("warm synth pad", "keys"),
    104: ("sitar", "lead"), 105: ("banjo", "keys"), 107: ("koto", "keys"), 108: ("kalimba", "mallet"),
    114: ("steel drums", "mallet"),
}
NOTE_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
MAJOR = [0, 2, 4, 5, 7, 9, 11]
MINOR = [0, 2, 3, 5, 7, 8, 10]
PROGRESSIONS = {
    "major": [[0, 4, 5, 3], [0, 3, 4, 0], [1, 4, 0, 5], [0, 5, 3, 4]],
    "minor": [[0, 5, 2, 6], [0, 3, 4, 0], [0, 3, 6, 2], [0, 6, 5, 4]],
}
DENSITY_NOTES_PER_BEAT = {"sparse": 0.5, "moderate": 1.0, "dense": 2.0, "very dense": 4.0}
DYNAMICS = {  # velocity range and target active level (dBFS)
    "soft": ((38, 55), -31.0),
    "medium": ((62, 84), -23.0),
    "loud": ((96, 118), -16.0),
    "crescendo": ((40, 112), -22.0),
    "decrescendo": ((112, 40), -22.0),
}


@dataclass
class Composition:
    """Everything that defines a rendered piece (all fields land in the manifest attributes).

    Attributes:
        programs: General MIDI programs, melody first (then chords, then bass if present).
        roles: the part each program plays (``melody`` / ``chords`` / ``bass``).
        tempo_bpm: beats (quarter notes) per minute.
        key: tonic name (``"A"``, ``"Eb"``, ...); mode: ``"major"`` or ``"minor"``.
        note_density: category of the melody's note rate (see :data:`DENSITY_NOTES_PER_BEAT`).
        dynamics: ``soft`` / ``medium`` / ``loud`` / ``crescendo`` / ``decrescendo``.
        drums: whether a GM drum kit plays a backbeat (kick 1 and 3, snare 2 and 4, hi-hats on
            every beat, or on eighths from 100 BPM).
        duration: seconds of music.
    """

    programs: list[int]
    roles: list[str]
    tempo_bpm: float
    key: str
    mode: str
    note_density: str
    dynamics: str
    drums: bool
    duration: float
    progression: list[int] = field(default_factory=list)

    @property
    def instrument_names(self) -> list[str]:
        return [INSTRUMENTS[p][0] for p in self.programs]


def choose_composition(rng: np.random.Generator, programs_pool: list[int], duration: float) -> Composition:
    """Draw a composition from the instruments in ``programs_pool`` (held-out aware)."""
    if not programs_pool:
        raise SynthError("no instruments available for this split")
    pool = sorted(programs_pool)
    n_parts = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    melodic = [p for p in pool if INSTRUMENTS[p][1] != "bass"] or pool
    melody = int(rng.choice(melodic))
    programs, roles = [melody], ["melody"]
    if n_parts >= 2:
        others = [p for p in pool if p != melody and INSTRUMENTS[p][1] != "bass"] or [melody]
        programs.append(int(rng.choice(others)))
        roles.append("chords")
    if n_parts >= 3:
        basses = [p for p in pool if INSTRUMENTS[p][1] == "bass" and p not in programs]
        if basses:
            programs.append(int(rng.choice(basses)))
            roles.append("bass")
    mode = str(rng.choice(["major", "minor"]))
    return Composition(
        programs=programs,
        roles=roles,
        tempo_bpm=float(rng.integers(72, 161)),
        key=NOTE_NAMES[int(rng.integers(0, 12))],
        mode=mode,
        note_density=str(rng.choice(list(DENSITY_NOTES_PER_BEAT))),
        dynamics=str(rng.choice(list(DYNAMICS), p=[0.25, 0.3, 0.25, 0.1, 0.1])),
        drums=bool(rng.random() < 0.55),
        duration=float(duration),
        progression=[int(x) for x in PROGRESSIONS[mode][int(rng.integers(0, 4))]],
    )


def _velocity(comp: Composition, t: float, rng: np.random.Generator) -> int:
    (lo, hi), _ = DYNAMICS[comp.dynamics]
    if comp.dynamics in ("crescendo", "decrescendo"):
        v = lo + (hi - lo) * min(1.0, t / max(comp.duration, 1e-3))
        return int(np.clip(round(v + rng.integers(-4, 5)), 1, 127))
    return int(rng.integers(min(lo, hi), max(lo, hi) + 1))


def to_midi(comp: Composition, rng: np.random.Generator) -> tuple[Any, int]:
    """Write the composition as MIDI. Returns ``(pretty_midi.PrettyMIDI, melody note count)``."""
    import pretty_midi

    beat = 60.0 / comp.tempo_bpm
    bar = 4 * beat
    n_bars = int(np.ceil(comp.duration / bar))
    scale = MAJOR if comp.mode == "major" else MINOR
    tonic = NOTE_NAMES.index(comp.key)
    pm = pretty_midi.PrettyMIDI(initial_tempo=comp.tempo_bpm)
    parts = {role: pretty_midi.Instrument(program=p, name=role) for p, role in zip(comp.programs, comp.roles, strict=True)}

    def pitch(degree: int, octave: int) -> int:
        return 12 * (octave + 1) + tonic + scale[degree % 7] + 12 * (degree // 7)

    step = 1.0 / DENSITY_NOTES_PER_BEAT[comp.note_density]  # beats per melody note
    deg = int(rng.integers(0, 5))
    n_melody = 0
    for b in range(n_bars):
        chord_root = comp.progression[b % len(comp.progression)]
        t0 = b * bar
        # melody: a random walk over the scale, landing on chord tones on strong beats
        pos = 0.0
        while pos < 4.0 - 1e-9:
            t = t0 + pos * beat
            if t >= comp.duration:
                break
            if abs(pos - round(pos)) < 1e-9 and int(round(pos)) % 2 == 0:
                deg = chord_root + int(rng.choice([0, 2, 4])) + (7 if deg >= chord_root + 5 else 0)
            else:
                deg += int(rng.choice([-2, -1, 1, 2]))
            deg = int(np.clip(deg, -3, 12))
            dur = step * beat * 0.92
            parts["melody"].notes.append(
                pretty_midi.Note(velocity=_velocity(comp, t, rng), pitch=pitch(deg, 5), start=t, end=t + dur)
            )
            n_melody += 1
            pos += step
        if "chords" in parts:  # block chords on every beat
            for k in range(4):
                t = t0 + k * beat
                if t >= comp.duration:
                    break
                v = max(1, _velocity(comp, t, rng) - 12)
                for d in (0, 2, 4):
                    parts["chords"].notes.append(
                        pretty_midi.Note(velocity=v, pitch=pitch(chord_root + d, 4), start=t, end=t + beat * 0.9)
                    )
        if "bass" in parts:  # root on beats 1 and 3
            for k in (0, 2):
                t = t0 + k * beat
                if t >= comp.duration:
                    break
                parts["bass"].notes.append(
                    pretty_midi.Note(velocity=_velocity(comp, t, rng), pitch=pitch(chord_root, 2), start=t,
                                     end=t + 2 * beat * 0.9)
                )
    pm.instruments.extend(parts[r] for r in comp.roles)
    if comp.drums:
        kit = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
        n_eighths = int(np.ceil(comp.duration / (beat / 2)))
        for e in range(n_eighths):
            t = e * beat / 2
            v = _velocity(comp, t, rng)
            if e % 2 == 0 or comp.tempo_bpm >= 100:  # eighth-note hi-hats only at faster tempi
                kit.notes.append(pretty_midi.Note(velocity=max(1, v - 30), pitch=42, start=t, end=t + 0.05))
            if e % 2 == 0:
                drum = 36 if (e // 2) % 2 == 0 else 38
                kit.notes.append(pretty_midi.Note(velocity=v, pitch=drum, start=t, end=t + 0.1))
        pm.instruments.append(kit)
    return pm, n_melody


def render_midi(pm: Any, duration: float, what: str = "the MIDI") -> np.ndarray:
    """Render a ``pretty_midi.PrettyMIDI`` with FluidSynth and FluidR3_GM: ``float32 [duration * 24000]``
    at 24 kHz (cut or zero-padded).

    Raises:
        SynthError: the sound font does not load, or the rendering is silent (``what`` names the MIDI).
    """
    import fluidsynth

    synth = fluidsynth.Synth(samplerate=float(SR))
    try:
        sfid = synth.sfload(str(find_soundfont()))
        if sfid < 0:
            raise SynthError(f"FluidSynth could not load the sound font {find_soundfont()}")
        audio = pm.fluidsynth(fs=SR, synthesizer=synth, sfid=sfid)
    finally:
        synth.delete()
    n = int(round(duration * SR))
    wav = np.zeros(n, dtype=np.float32)
    m = min(n, audio.size)
    wav[:m] = audio[:m]
    if not np.any(wav):
        raise SynthError(f"FluidSynth rendered silence for {what}")
    return wav


def render(comp: Composition, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, object]]:
    """Render a composition at 24 kHz.

    Returns:
        ``(wav [S], attributes)`` where ``S = duration * 24000`` and ``attributes`` holds the
        composition plus the measured melody note rate (notes per second).
    """
    pm, n_melody = to_midi(comp, rng)
    wav = render_midi(pm, comp.duration, f"programs {comp.programs}")
    attrs = asdict(comp)
    attrs["instruments"] = comp.instrument_names
    attrs["melody_notes_per_second"] = round(n_melody / comp.duration, 3)
    attrs["source"] = "pretty_midi + FluidSynth (FluidR3_GM)"
    return wav, attrs


# ---------------------------------------------------------------------------------------------
# Tempo estimation
# ---------------------------------------------------------------------------------------------
def onset_envelope(wav: np.ndarray, sr: int = SR, hop: int = 240, n_fft: int = 1024) -> np.ndarray:
    """Half-wave-rectified log-spectral flux, one value per ``hop`` samples ``[T]``."""
    if wav.size < n_fft:
        return np.zeros(1)
    n_frames = 1 + (wav.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    frames = wav[idx].astype(np.float64) * np.hanning(n_fft)[None, :]
    mag = np.log1p(100.0 * np.abs(np.fft.rfft(frames, axis=1)))
    flux = np.maximum(0.0, np.diff(mag, axis=0)).sum(axis=1)
    # remove the slowly varying part so the autocorrelation sees onsets, not loudness changes
    k = max(1, int(round(1.0 * sr / hop)))
    local = np.convolve(flux, np.ones(k) / k, mode="same")
    return np.maximum(0.0, flux - local)


def estimate_tempo(
    wav: np.ndarray,
    sr: int = SR,
    min_bpm: float = 50.0,
    max_bpm: float = 200.0,
    prior_bpm: float = 110.0,
) -> tuple[float, float]:
    """Estimate the beat tempo from the autocorrelation of the onset envelope.

    Each candidate beat period is scored by the autocorrelation at 1, 2 and 4 periods (a beat
    grid repeats), weighted by a broad log-normal prior around ``prior_bpm`` (one octave s.d.).
    Like every beat tracker it can pick another metrical level (half or double tempo) when the
    beat is not marked by percussion.

    Args:
        wav: mono audio ``[S]``; sr: its sample rate in Hz.

    Returns:
        ``(bpm, confidence)``; confidence is the normalised autocorrelation at the chosen period
        (near 0 for arrhythmic audio, up to 1 for a strict pulse).
    """
    hop = max(1, sr // 100)
    env = onset_envelope(wav, sr, hop=hop)
    fps = sr / hop
    if env.size < 4 * fps or not np.any(env):
        return 0.0, 0.0
    # smooth a little so that beat periods that fall between frames keep their full peak height
    k = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    env = np.convolve(env, k / k.sum(), mode="same")
    env = env - env.mean()
    n = env.size
    spec = np.fft.rfft(env, 2 * n)
    ac = np.fft.irfft(spec * np.conj(spec))[:n]
    ac = ac / (ac[0] + 1e-12)
    lags = np.arange(fps * 60 / max_bpm, min(fps * 60 / min_bpm, n / 4), 0.25)
    if lags.size < 3:
        return 0.0, 0.0

    def at(x: np.ndarray) -> np.ndarray:
        return np.interp(x, np.arange(n), ac)

    score = at(lags) + 0.5 * at(2 * lags) + 0.25 * at(4 * lags)
    bpm_grid = 60.0 * fps / lags
    weight = np.exp(-0.5 * (np.log2(bpm_grid / prior_bpm)) ** 2)
    lag = float(lags[int(np.argmax(score * weight))])
    return float(60.0 * fps / lag), float(max(0.0, at(np.array([lag]))[0]))


# ---------------------------------------------------------------------------------------------
# Recorded music
# ---------------------------------------------------------------------------------------------
RECORDED_MUSIC: dict[str, tuple[str, tuple[str, ...]]] = {
    # package -> (directory inside the package, description)
    "colobot-common-sounds": ("usr/share/games/colobot/music", ("video-game music",)),
    "asterisk-moh-opsound-wav": ("usr/share/asterisk/moh", ("telephone hold music",)),
    "frozen-bubble-data": ("usr/share/games/frozen-bubble/snd", ("video-game music",)),
    "warmux-data": ("usr/share/games/warmux/music", ("video-game music",)),
}
_FROZEN_MUSIC = {"frozen-mainzik-1p.ogg", "frozen-mainzik-2p.ogg", "introzik.ogg"}


@lru_cache(maxsize=4)
def recorded_music_files(skip_packages: frozenset[str] = frozenset()) -> tuple[tuple[str, str, str], ...]:
    """``(package, absolute path, path inside the package)`` of every recorded music track.

    Args:
        skip_packages: packages not to read (not even fetched).
    """
    out = []
    for package, (sub, _) in RECORDED_MUSIC.items():
        if package in skip_packages:
            continue
        root = ensure_package(package)
        base = root / sub
        for f in sorted(base.rglob("*")):
            if f.suffix.lower() not in (".ogg", ".wav"):
                continue
            if package == "frozen-bubble-data" and f.name not in _FROZEN_MUSIC:
                continue
            out.append((package, str(f), str(f.relative_to(root))))
    return tuple(out)


@lru_cache(maxsize=3)
def load_track(path: str) -> tuple[np.ndarray, int]:
    """Decode a whole track to 24 kHz mono; returns ``(wav, original sample rate)``."""
    wav, sr = read_audio_any(Path(path))
    return to_sr(wav, sr), sr


def brightness(centroid_hz: float) -> str:
    """Describe a spectral centroid: dark / warm / bright."""
    if centroid_hz < 900.0:
        return "dark"
    if centroid_hz < 2200.0:
        return "warm"
    return "bright"
