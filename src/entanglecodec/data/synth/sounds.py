"""Sound events: recorded effects from Debian packages (curated labels) and sox-synthesised events.

The taxonomy below maps a package's file name to a plain event label. Only files whose name says
unambiguously what they are were kept. A scene places a few events at known onsets in a background
noise; onsets/offsets are measured on the placed (silence-trimmed) event audio.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .assets import ensure_package
from .signal import SR, SynthError, fade, gain_to, read_audio_any, run_tool, to_sr, trim_silence

_WARMUX = "usr/share/games/warmux/sound/default"
# (package, directory inside the package, file-name glob) -> label
TAXONOMY: list[tuple[str, str, str, str]] = [
    ("frozen-bubble-data", "usr/share/games/frozen-bubble/snd", "applause.ogg", "applause"),
    ("frozen-bubble-data", "usr/share/games/frozen-bubble/snd", "snore.ogg", "snoring"),
    ("frozen-bubble-data", "usr/share/games/frozen-bubble/snd", "typewriter.ogg", "typewriter typing"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "bell.oga", "bell ringing"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "alarm-clock-elapsed.oga", "alarm clock"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "camera-shutter.oga", "camera shutter"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "screen-capture.oga", "camera shutter"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "phone-incoming-call.oga", "telephone ringing"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "phone-outgoing-calling.oga", "telephone ringback tone"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "phone-outgoing-busy.oga", "telephone busy signal"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "complete.oga", "notification chime"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "message*.oga", "notification chime"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "dialog-information.oga", "notification chime"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "window-attention.oga", "notification chime"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "dialog-warning.oga", "warning alert"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "dialog-error.oga", "warning alert"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "suspend-error.oga", "warning alert"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "device-*.oga", "electronic blip"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "power-*.oga", "electronic blip"),
    ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "network-connectivity-*.oga", "electronic blip"),
    ("oxygen-sounds", "usr/share/sounds", "Oxygen-Im-Phone-Ring.ogg", "telephone ringing"),
    ("oxygen-sounds", "usr/share/sounds", "Oxygen-Im-New-Mail.ogg", "notification chime"),
    ("oxygen-sounds", "usr/share/sounds", "Oxygen-Im-Message-*.ogg", "notification chime"),
    ("oxygen-sounds", "usr/share/sounds", "Oxygen-Im-Sms.ogg", "notification chime"),
    ("oxygen-sounds", "usr/share/sounds", "Oxygen-Im-Contact-*.ogg", "notification chime"),
    ("oxygen-sounds", "usr/share/sounds", "Oxygen-Sys-App-Message.ogg", "notification chime"),
    ("oxygen-sounds", "usr/share/sounds", "Oxygen-Sys-Question.ogg", "notification chime"),
    ("oxygen-sounds", "usr/share/sounds", "Oxygen-Sys-Warning.ogg", "warning alert"),
    ("oxygen-sounds", "usr/share/sounds", "Oxygen-Sys-App-Error*.ogg", "warning alert"),
    ("oxygen-sounds", "usr/share/sounds", "Oxygen-Im-Error-On-Connection.ogg", "warning alert"),
    ("oxygen-sounds", "usr/share/sounds", "Oxygen-Sys-Log-In*.ogg", "startup chime"),
    ("oxygen-sounds", "usr/share/sounds", "Oxygen-Sys-Log-Out*.ogg", "startup chime"),
    ("lomiri-sounds", "usr/share/sounds/lomiri/camera", "*click*.ogg", "camera shutter"),
    ("lomiri-sounds", "usr/share/sounds/lomiri/notifications", "*.ogg", "notification chime"),
    ("lomiri-sounds", "usr/share/sounds/lomiri/ringtones", "Alarm*.ogg", "alarm clock"),
    ("tuxpaint-data", "usr/share/tuxpaint/sounds", "click.wav", "mouse click"),
    ("tuxpaint-data", "usr/share/tuxpaint/sounds", "keyclick.wav", "key click"),
    ("tuxpaint-data", "usr/share/tuxpaint/sounds", "typewriterbell.wav", "typewriter bell"),
    ("tuxpaint-data", "usr/share/tuxpaint/sounds", "bubble.wav", "bubble pop"),
    ("tuxpaint-data", "usr/share/tuxpaint/sounds", "giggle.wav", "child giggling"),
    ("tuxpaint-data", "usr/share/tuxpaint/sounds", "harp.wav", "harp glissando"),
    ("tuxpaint-data", "usr/share/tuxpaint/sounds", "paint*.wav", "brush stroke"),
    ("tuxpaint-data", "usr/share/tuxpaint/sounds", "eraser*.wav", "rubbing eraser"),
    ("tuxpaint-data", "usr/share/tuxpaint/sounds", "stamp.wav", "stamp thump"),
    ("warmux-data", _WARMUX, "explosion*.ogg", "explosion"),
    ("warmux-data", _WARMUX, "dynamite_exp.ogg", "explosion"),
    ("warmux-data", _WARMUX, "riot_bomb_exp.ogg", "explosion"),
    ("warmux-data", _WARMUX, "shotgun.ogg", "shotgun shot"),
    ("warmux-data", _WARMUX, "gun.ogg", "gunshot"),
    ("warmux-data", _WARMUX, "m16.ogg", "machine-gun burst"),
    ("warmux-data", _WARMUX, "dynamite_fuze.ogg", "burning fuse hissing"),
    ("warmux-data", _WARMUX, "aircraft_flying.ogg", "aircraft flying past"),
    ("warmux-data", _WARMUX, "jetpack.ogg", "jet engine"),
    ("warmux-data", _WARMUX, "slap.ogg", "slap"),
    ("warmux-data", _WARMUX, "baseball.ogg", "bat hitting a ball"),
    ("warmux-data", _WARMUX, "ricoche*.ogg", "bullet ricochet"),
    ("warmux-data", _WARMUX, "box_hitting_ground.ogg", "heavy box hitting the ground"),
    ("warmux-data", _WARMUX, "blowtorch.ogg", "blowtorch"),
    ("warmux-data", _WARMUX, "step.ogg", "footstep"),
]
SOX_EVENTS = ("beep", "rising chirp", "falling chirp", "noise burst", "buzzer", "plucked string")


@dataclass(frozen=True)
class EventFile:
    """A recorded event file and its label."""

    label: str
    package: str
    path: str  # absolute
    source: str  # path inside the package


@lru_cache(maxsize=4)
def event_files(skip_packages: frozenset[str] = frozenset()) -> tuple[EventFile, ...]:
    """Every labelled recorded event file (each file at most once; first matching rule wins).

    Args:
        skip_packages: packages not to read (not even fetched).
    """
    out: dict[str, EventFile] = {}
    for package, sub, pattern, label in TAXONOMY:
        if package in skip_packages:
            continue
        root = ensure_package(package)
        base = root / sub
        for f in sorted(base.rglob("*")):
            if not f.is_file() or not fnmatch.fnmatch(f.name, pattern):
                continue
            src = str(f.relative_to(root))
            key = f"{package}/{src}"
            if key not in out:
                out[key] = EventFile(label, package, str(f), src)
    if not out:
        raise SynthError("no labelled sound-event files found in the Debian sound packages")
    return tuple(out[k] for k in sorted(out))


def load_event(ev: EventFile, max_s: float = 4.0) -> np.ndarray:
    """Decode a recorded event at 24 kHz, silence-trimmed and cut to ``max_s`` seconds (faded)."""
    wav, sr = read_audio_any(Path(ev.path))
    wav = trim_silence(to_sr(wav, sr), SR, threshold_db=40.0, pad_s=0.01)
    if wav.size == 0:
        raise SynthError(f"{ev.path}: silent recording")
    return fade(wav[: int(max_s * SR)], SR, 0.01)


def sox_event(label: str, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, object]]:
    """Synthesise one event with sox; parameters are drawn from ``rng`` and returned.

    Returns:
        ``(wav [S] at 24 kHz, parameters)``.
    """
    dur = float(round(rng.uniform(0.15, 1.2), 3))
    params: dict[str, object] = {"duration_s": dur}
    if label == "beep":
        f = float(round(rng.uniform(500, 2500)))
        synth = ["synth", f"{dur}", "sine", f"{f}"]
        params["frequency_hz"] = f
    elif label in ("rising chirp", "falling chirp"):
        lo, hi = float(round(rng.uniform(200, 800))), float(round(rng.uniform(1500, 5000)))
        a, b = (lo, hi) if label == "rising chirp" else (hi, lo)
        synth = ["synth", f"{dur}", "sine", f"{a}:{b}"]
        params["sweep_hz"] = [a, b]
    elif label == "noise burst":
        centre, width = float(round(rng.uniform(300, 5000))), float(round(rng.uniform(100, 2000)))
        synth = ["synth", f"{dur}", "whitenoise", "sinc", f"{max(20.0, centre - width / 2)}-{centre + width / 2}"]
        params["band_hz"] = [max(20.0, centre - width / 2), centre + width / 2]
    elif label == "buzzer":
        f = float(round(rng.uniform(80, 400)))
        synth = ["synth", f"{dur}", "square", f"{f}", "lowpass", "3000"]
        params["frequency_hz"] = f
    elif label == "plucked string":
        f = float(round(rng.uniform(110, 880)))
        dur = float(round(max(dur, 0.6), 3))
        synth = ["synth", f"{dur}", "pluck", f"{f}"]
        params.update({"frequency_hz": f, "duration_s": dur})
    else:
        raise ValueError(f"unknown sox event {label!r} (choose from {SOX_EVENTS})")
    raw = run_tool(
        ["sox", "-R", "-V1", "-n", "-r", str(SR), "-b", "16", "-c", "1", "-e", "signed", "-L", "-t", "raw", "-", *synth],
        f"sox event '{label}'",
    )
    wav = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if wav.size == 0 or not np.any(wav):
        raise SynthError(f"sox produced no audio for event '{label}'")
    return fade(wav, SR, 0.005), params


def place_events(
    events: list[tuple[np.ndarray, dict[str, object]]], duration: float, rng: np.random.Generator
) -> tuple[np.ndarray, list[dict[str, object]]]:
    """Place events without overlap in a ``duration``-second track at levels drawn from ``rng``.

    Args:
        events: ``(wav, info)`` per event; ``info`` is copied into the returned event list.

    Returns:
        ``(track [S], events)`` where each event dict gains ``onset_s``, ``offset_s`` and
        ``level_dbfs`` (its active RMS level in the track).
    """
    n = int(round(duration * SR))
    track = np.zeros(n, dtype=np.float32)
    placed: list[dict[str, object]] = []
    cursor = float(rng.uniform(0.1, 0.8))
    for wav, info in events:
        length = wav.size / SR
        slack = duration - cursor - length - 0.1
        if slack < 0:
            break
        onset = cursor + float(rng.uniform(0.0, min(slack, 1.5)))
        level = float(round(rng.uniform(-30.0, -16.0), 1))
        start = int(round(onset * SR))
        seg = gain_to(wav, level)
        track[start : start + seg.size] += seg[: n - start]
        d = dict(info)
        d.update({"onset_s": round(onset, 2), "offset_s": round(onset + length, 2), "level_dbfs": level})
        placed.append(d)
        cursor = onset + length + float(rng.uniform(0.2, 1.0))
    return track, placed
