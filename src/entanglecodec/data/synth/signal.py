"""Small signal utilities shared by the generators: external tools, decoding, levels, timing.

All waveforms here are mono ``float32`` arrays ``[S]``; levels are in dBFS (RMS of a full-scale
sine is -3 dBFS).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 24000
"""Output sample rate of the corpus (Hz)."""

DEBIAN_PACKAGE_OF_TOOL = {
    "flite": "flite",
    "text2wave": "festival",
    "festival": "festival",
    "espeak-ng": "espeak-ng",
    "sox": "sox",
    "ffmpeg": "ffmpeg",
}


class SynthError(RuntimeError):
    """A synthesis step failed (missing tool, tool error, unusable source file)."""


def require_tool(tool: str) -> str:
    """Return the path of an external program or raise a :class:`SynthError` naming its package."""
    path = shutil.which(tool)
    if path is None:
        pkg = DEBIAN_PACKAGE_OF_TOOL.get(tool, tool)
        raise SynthError(f"'{tool}' is not installed: install the Debian package '{pkg}' (apt-get install {pkg})")
    return path


def run_tool(cmd: list[str], what: str, timeout: float = 120.0, stdin: bytes | None = None) -> bytes:
    """Run an external program, returning its stdout; failures become :class:`SynthError`.

    Args:
        cmd: the command, ``cmd[0]`` being a program on ``PATH``.
        what: a short description used in the error message (e.g. ``"flite voice slt"``).
        timeout: seconds before the program is killed.
        stdin: bytes fed to the program's standard input.
    """
    require_tool(cmd[0])
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise SynthError(f"{what}: `{' '.join(cmd[:6])} ...` timed out after {timeout:.0f} s") from e
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()[-400:]
        raise SynthError(f"{what}: `{' '.join(cmd[:6])} ...` failed with exit code {proc.returncode}: {err}")
    return proc.stdout


ALS_SAMPLE_RATE = 11025
"""Drascula's ``.ALS`` speech files: headerless unsigned 8-bit mono PCM at this rate."""


def read_audio_any(path: Path) -> tuple[np.ndarray, int]:
    """Decode a recorded file to mono float32: libsndfile formats, raw G.722 (ffmpeg), GSM (sox), and
    Drascula's ``.ALS`` speech (headerless unsigned 8-bit PCM at 11 025 Hz).

    Returns:
        ``(wav [S], sample_rate)``.

    Raises:
        SynthError: the file cannot be decoded or holds no samples.
    """
    suffix = path.suffix.lower()
    if suffix == ".g722":
        raw = run_tool(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "g722", "-i", str(path),
             "-f", "s16le", "-ac", "1", "-ar", "16000", "-"],
            f"decoding {path}",
        )
        wav, sr = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0, 16000
    elif suffix == ".gsm":
        raw = run_tool(["sox", str(path), "-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-L", "-"],
                       f"decoding {path}")
        wav, sr = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0, 8000
    elif suffix == ".als":
        try:
            raw8 = np.fromfile(path, dtype=np.uint8)
        except OSError as e:
            raise SynthError(f"{path}: cannot be read ({e})") from e
        wav, sr = (raw8.astype(np.float32) - 128.0) / 128.0, ALS_SAMPLE_RATE
    else:
        try:
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as e:
            raise SynthError(f"{path}: cannot be decoded ({e})") from e
        wav = data.mean(axis=1)
    if wav.size == 0:
        raise SynthError(f"{path}: decodes to zero samples")
    return np.ascontiguousarray(wav, dtype=np.float32), int(sr)


def to_sr(wav: np.ndarray, sr: int, target: int = SR) -> np.ndarray:
    """Resample ``[S]`` from ``sr`` to ``target`` Hz with soxr (deterministic)."""
    if sr == target:
        return wav.astype(np.float32, copy=False)
    return np.asarray(soxr.resample(wav.astype(np.float32), sr, target, quality="HQ"), dtype=np.float32)


def rms_dbfs(wav: np.ndarray) -> float:
    """RMS level in dBFS (``-120`` for silence)."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if wav.size else 0.0
    return 20.0 * float(np.log10(max(rms, 1e-6)))


def active_rms_dbfs(wav: np.ndarray, sr: int = SR, frame_s: float = 0.02, floor_db: float = 40.0) -> float:
    """RMS level over active frames only (frames within ``floor_db`` of the loudest frame), in dBFS."""
    hop = max(1, int(frame_s * sr))
    n = wav.size // hop
    if n == 0:
        return rms_dbfs(wav)
    frames = wav[: n * hop].reshape(n, hop).astype(np.float64)
    power = np.mean(frames**2, axis=1)
    peak = float(power.max())
    if peak <= 0:
        return -120.0
    active = power >= peak * 10 ** (-floor_db / 10)
    return 10.0 * float(np.log10(max(float(power[active].mean()), 1e-12)))


def gain_to(wav: np.ndarray, target_dbfs: float, sr: int = SR) -> np.ndarray:
    """Scale so that the active RMS level is ``target_dbfs``."""
    cur = active_rms_dbfs(wav, sr)
    if cur <= -119:
        return wav.astype(np.float32)
    return (wav * 10 ** ((target_dbfs - cur) / 20)).astype(np.float32)


def trim_silence(wav: np.ndarray, sr: int, threshold_db: float = 45.0, pad_s: float = 0.05) -> np.ndarray:
    """Cut leading/trailing parts quieter than ``threshold_db`` below the peak (keeping ``pad_s``)."""
    if wav.size == 0:
        return wav
    peak = float(np.abs(wav).max())
    if peak == 0:
        return wav[:0]
    idx = np.flatnonzero(np.abs(wav) > peak * 10 ** (-threshold_db / 20))
    pad = int(pad_s * sr)
    return wav[max(0, int(idx[0]) - pad) : min(wav.size, int(idx[-1]) + pad + 1)]


def peak_normalise(wav: np.ndarray, peak: float = 0.95) -> np.ndarray:
    """Scale down (never up) so that ``max |wav| <= peak``."""
    m = float(np.abs(wav).max()) if wav.size else 0.0
    if m > peak:
        wav = wav * (peak / m)
    return wav.astype(np.float32)


def fade(wav: np.ndarray, sr: int = SR, fade_s: float = 0.01) -> np.ndarray:
    """Apply short raised-cosine fades at both ends (avoids clicks at cut points)."""
    n = min(int(fade_s * sr), wav.size // 2)
    if n <= 1:
        return wav
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))).astype(np.float32)
    out = wav.astype(np.float32, copy=True)
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def silence(seconds: float, sr: int = SR) -> np.ndarray:
    """A zero waveform of the given length."""
    return np.zeros(max(0, int(round(seconds * sr))), dtype=np.float32)


def spectral_centroid_hz(wav: np.ndarray, sr: int = SR) -> float:
    """Power-weighted mean frequency of the whole clip (Hz)."""
    spec = np.abs(np.fft.rfft(wav.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(wav.size, 1.0 / sr)
    total = float(spec.sum())
    return float((spec * freqs).sum() / total) if total > 0 else 0.0


def level_name(dbfs: float) -> str:
    """Coarse loudness category of an active RMS level: quiet / moderate / loud."""
    if dbfs < -30.0:
        return "quiet"
    if dbfs < -20.0:
        return "moderate"
    return "loud"
