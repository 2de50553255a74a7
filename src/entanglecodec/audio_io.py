"""Audio files without torch: reading (validated, down-mixed, resampled with soxr, block by block),
writing (atomic, peak-limited) and the checks on sample rates and lengths.

:mod:`entanglecodec.audio` re-exports every name here; the ONNX runtime and the command line's
fast path import this module directly so that they never load torch.
"""

from __future__ import annotations

import math
import numbers
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from .fileio import atomic_write


class AudioError(ValueError):
    """Bad audio input: unreadable file, empty signal, NaN/Inf samples, bad sample rate or lengths."""


# ---------------------------------------------------------------------------------------------
# Loading and resampling
# ---------------------------------------------------------------------------------------------
class AudioWarning(UserWarning):
    """A suspicious but usable input or output (truncated file, very short clip, output peak-limited)."""


MIN_SECONDS = 0.1
"""Shortest clip the codec represents faithfully (5 frames at 50 Hz): shorter inputs are encoded,
with an :class:`AudioWarning`, but their reconstructions are unreliable (often much louder)."""

BLOCK_SECONDS = 10.0
"""Block length for streamed reading (:func:`audio_blocks`)."""


def _open_checked(p: Path, check_truncation: bool = True) -> sf.SoundFile:
    """Open ``p`` with soundfile, with one-line :class:`AudioError` messages for the usual faults."""
    if not p.exists():
        raise AudioError(f"{p}: file not found")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    try:
        f = sf.SoundFile(str(p))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(f"{p}: cannot be read as audio ({e})") from e
    if f.frames == 0:
        f.close()
        raise AudioError(f"{p}: contains no samples (empty audio)")
    if check_truncation:
        _warn_if_truncated_wav(p, f)
    return f


def _warn_if_truncated_wav(p: Path, f: sf.SoundFile) -> None:
    """Warn when a WAV header declares more audio than the file holds (a cut-short download/copy)."""
    if f.format != "WAV":
        return
    try:
        with open(p, "rb") as fh:
            head = fh.read(1 << 16)
        size = p.stat().st_size
    except OSError:
        return
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    pos, block_align = 12, 0
    while pos + 8 <= len(head):
        cid, n = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if cid == b"fmt " and pos + 22 <= len(head):
            block_align = int.from_bytes(head[pos + 20 : pos + 22], "little")
        if cid == b"data":
            present = size - (pos + 8)
            if block_align > 0 and 0 < n < 0xFFFFFFFF and n > present:
                warnings.warn(
                    f"{p}: truncated WAV: the header declares {n // block_align} samples "
                    f"({n // block_align / f.samplerate:.2f} s) but only {present // block_align} "
                    f"({present // block_align / f.samplerate:.2f} s) are present; using what is there",
                    AudioWarning,
                    stacklevel=4,
                )
            return
        pos += 8 + n + (n & 1)


def audio_info(path: str | Path) -> tuple[int, int]:
    """``(frames, sample_rate)`` of an audio file at its own rate (validated like :func:`load_audio`)."""
    with _open_checked(Path(path), check_truncation=False) as f:
        return int(f.frames), int(f.samplerate)


def audio_blocks(
    path: str | Path, sample_rate: int | None = 24000, block_seconds: float = BLOCK_SECONDS
) -> Iterator[np.ndarray]:
    """Read a file block by block: mono ``float32`` blocks, resampled on the fly (soxr stream).

    Memory is bounded by the block, whatever the file's duration; the concatenated blocks equal
    :func:`load_audio`'s result exactly.

    Raises:
        AudioError: as :func:`load_audio` (checked before the first block and on every block).
    """
    p = Path(path)
    target = None if sample_rate is None else check_sample_rate(sample_rate)
    with _open_checked(p) as f:
        sr = int(f.samplerate)
        stream = None
        if target is not None and target != sr:
            stream = soxr.ResampleStream(sr, target, 1, dtype="float32", quality="VHQ")
        block = max(1, int(block_seconds * sr))
        read = 0
        while True:
            try:
                data = f.read(block, dtype="float32", always_2d=True)
            except Exception as e:
                raise AudioError(f"{p}: cannot be read as audio ({e})") from e
            last = data.shape[0] < block
            wav = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
            if not np.isfinite(wav).all():
                raise AudioError(f"{p}: contains NaN or Inf samples")
            read += wav.shape[0]
            if stream is not None:
                wav = np.asarray(stream.resample_chunk(np.ascontiguousarray(wav), last=last), dtype=np.float32)
            if wav.size:
                yield wav
            if last:
                break
        if read == 0:
            raise AudioError(f"{p}: contains no samples (empty audio)")


def load_audio(path: str | Path, sample_rate: int | None = 24000) -> tuple[np.ndarray, int]:
    """Read any file libsndfile understands, down-mix to mono and (optionally) resample.

    Args:
        path: audio file (wav, flac, ogg, mp3 where libsndfile supports it, ...).
        sample_rate: target rate in Hz (a positive whole number), or ``None`` to keep the file's rate.

    Returns:
        ``(wav, sr)``: ``float32`` array ``[S]`` in ``[-1, 1]`` and its sample rate in Hz.

    Raises:
        AudioError: the file is missing, not audio, empty, or holds NaN/Inf samples, or the
            target rate is not a positive whole number. A WAV file shorter than its header
            declares is read with an :class:`AudioWarning` giving both lengths.
    """
    target = None if sample_rate is None else check_sample_rate(sample_rate)
    p = Path(path)
    parts = list(audio_blocks(p, target))
    if target is None:
        target = audio_info(p)[1]
    wav = np.concatenate(parts) if len(parts) != 1 else parts[0]
    return np.ascontiguousarray(wav, dtype=np.float32), int(target)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono ``[S]`` (or ``[S, C]``) float array with soxr (VHQ)."""
    orig_sr, target_sr = check_sample_rate(orig_sr), check_sample_rate(target_sr)
    if orig_sr == target_sr:
        return wav.astype(np.float32, copy=False)
    out = soxr.resample(np.ascontiguousarray(wav, dtype=np.float32), orig_sr, target_sr, quality="VHQ")
    return np.asarray(out, dtype=np.float32)


PEAK_LIMIT = 0.999
"""Largest absolute sample value :func:`save_audio` writes (just under PCM full scale)."""


_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".aiff": "AIFF", ".aif": "AIFF"}


def _output_format(p: Path) -> tuple[str, str | None]:
    """``(soundfile format, subtype)`` of an output path from its extension (WAV/FLAC: 16-bit PCM)."""
    ext = p.suffix.lower()
    fmt = _FORMATS.get(ext)
    if fmt is None:
        raise AudioError(f"{p}: unsupported output format {ext or '(no extension)'!r} (use .wav, .flac or .ogg)")
    return fmt, "PCM_16" if ext in (".wav", ".flac") else None


def save_audio(path: str | Path, wav: Any, sample_rate: int) -> None:
    """Write a mono waveform ``[S]`` to ``path`` atomically (format from the extension; WAV/FLAC: 16-bit PCM).

    Audio louder than full scale is never clipped silently: it is scaled down as a whole to peak at
    :data:`PEAK_LIMIT`, with an :class:`AudioWarning` giving the peak and the share of samples that
    would have clipped. The file is written to a temporary file and renamed, so a failure leaves
    no partial output.

    Raises:
        AudioError: the waveform is empty or holds NaN/Inf samples (nothing is written).
        OutputError: the file cannot be written (the message names the path and the reason).
    """
    if hasattr(wav, "detach"):  # a torch tensor, without importing torch
        wav = wav.detach().cpu().float().numpy()
    save_audio_stream(path, [np.asarray(wav, dtype=np.float32).reshape(-1)], sample_rate)


def save_audio_stream(path: str | Path, pieces: Iterable[np.ndarray], sample_rate: int) -> None:
    """:func:`save_audio` for a waveform given as consecutive float32 pieces (e.g. a streamed decode).

    A list or tuple of pieces is written directly; any other iterable is first spooled to an
    anonymous temporary file beside the output (4 bytes per sample on disk, one piece in memory),
    because the peak that decides the scaling is known only at the end. Same checks, warning and
    atomic write as :func:`save_audio`.
    """
    p = Path(path)
    fmt, subtype = _output_format(p)
    spool = None if isinstance(pieces, (list, tuple)) else tempfile.TemporaryFile(dir=p.parent if p.parent.is_dir() else None)
    try:
        n = over = bad = 0
        peak = 0.0
        for piece in pieces:
            x = np.asarray(piece, dtype=np.float32).reshape(-1)
            finite = np.isfinite(x)
            bad += int(x.size - finite.sum())
            if x.size and finite.any():
                peak = max(peak, float(np.abs(x[finite]).max()))
                over += int((np.abs(x) > 1.0).sum())
            n += x.size
            if spool is not None:
                spool.write(x.tobytes())
        if n == 0:
            raise AudioError(f"{p}: refusing to write empty audio")
        if bad:
            raise AudioError(f"{p}: refusing to write audio with {bad} NaN/Inf samples of {n}")
        scale = np.float32(1.0)
        if peak > 1.0:
            scale = np.float32(PEAK_LIMIT / peak)
            warnings.warn(
                f"{p}: output peaks at {peak:.2f}x full scale ({100 * over / n:.1f} % of samples would clip); "
                f"scaled down by {20 * math.log10(peak / PEAK_LIMIT):.1f} dB",
                AudioWarning,
                stacklevel=2,
            )

        def blocks() -> Iterator[np.ndarray]:
            if spool is None:
                yield from (np.asarray(x, dtype=np.float32).reshape(-1) for x in pieces)
                return
            spool.seek(0)
            while chunk := spool.read(4 * 1_048_576):
                yield np.frombuffer(chunk, dtype=np.float32)

        def write(tmp: Path) -> None:
            try:
                with sf.SoundFile(str(tmp), "w", int(sample_rate), 1, subtype=subtype, format=fmt) as f:
                    for x in blocks():
                        f.write(np.clip(x * scale, -PEAK_LIMIT, PEAK_LIMIT))
            except (RuntimeError, sf.SoundFileError, ValueError) as e:
                raise AudioError(f"{p}: cannot encode audio as {fmt} ({e})") from e

        atomic_write(p, write)
    finally:
        if spool is not None:
            spool.close()


def warn_if_short(lengths: Any, sample_rate: int, what: str = "input") -> None:
    """Issue an :class:`AudioWarning` for items shorter than :data:`MIN_SECONDS` (``lengths``: a
    sequence, array or tensor of sample counts)."""
    lens = [int(n) for n in (lengths.tolist() if hasattr(lengths, "tolist") else lengths)]
    short = [n for n in lens if n < MIN_SECONDS * sample_rate]
    if short:
        warnings.warn(
            f"{what} of {min(short)} samples ({min(short) / sample_rate * 1000:.1f} ms) is shorter than the "
            f"codec's minimum of {MIN_SECONDS:g} s ({len(short)} item(s)): its reconstruction is unreliable",
            AudioWarning,
            stacklevel=2,
        )


def check_sample_rate(sample_rate: int | float) -> int:
    """Return ``sample_rate`` as an int (Python or NumPy number), or raise :class:`AudioError`
    if it is not a positive whole number of Hz."""
    if isinstance(sample_rate, bool | np.bool_) or not isinstance(sample_rate, numbers.Real):
        raise AudioError(f"sample rate must be a positive number of Hz, got {sample_rate!r}")
    if not math.isfinite(float(sample_rate)) or not sample_rate > 0:
        raise AudioError(f"sample rate must be a positive number of Hz, got {sample_rate!r}")
    if float(sample_rate) != int(sample_rate):
        raise AudioError(f"sample rate must be a whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)
