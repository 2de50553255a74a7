"""NumPy signal processing of the ONNX runtime: the codec's mel analysis, the vocoder's inverse
STFT and the mel-consistency filter, without torch.

Each function computes what its torch counterpart computes, to float32 rounding (the runtime's
tests compare them on random signals):

* :func:`power_frames` -- :meth:`entanglecodec.audio.MelFrontend.power_spectrogram` (frame ``f``
  centred on sample ``f * hop``, zeros outside the signal, any range of frames);
* :func:`istft` -- the least-squares inverse STFT of the vocoder's head
  (:meth:`entanglecodec.vocoder.model.ISTFTHead.istft`) and of
  :class:`entanglecodec.audio.CenteredSTFT`;
* :func:`consistency_filter` -- :class:`entanglecodec.vocoder.mel_consistency.MelConsistencyFilter`.

Shapes here are per item (no batch axis): waveforms ``[S]``, spectra ``[T, n_freq]`` (frames
first, as the FFT runs over the last axis), mels ``[n_mels, T]``.
"""

from __future__ import annotations

import math

import numpy as np


def hann(n: int) -> np.ndarray:
    """Periodic Hann window of ``n`` samples (``torch.hann_window(n)``), float32."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def _frames(wav: np.ndarray, start: int, n_frames: int, n_fft: int, hop: int) -> np.ndarray:
    """``[n_frames, n_fft]`` view of frames ``start ..`` of ``wav [S]``, frame ``f`` covering samples
    ``[f*hop - n_fft/2, f*hop + n_fft/2)`` with zeros outside the signal."""
    s0 = start * hop - n_fft // 2
    s1 = (start + n_frames - 1) * hop - n_fft // 2 + n_fft
    seg = wav[max(s0, 0) : min(s1, wav.shape[0])].astype(np.float32, copy=False)
    seg = np.pad(seg, (max(0, -s0), max(0, s1 - wav.shape[0])))
    return np.lib.stride_tricks.sliding_window_view(seg, n_fft)[::hop]


_FFT_ROWS = 32
"""Frames per FFT call: NumPy's float32 FFT of a whole spectrogram at once spends most of its time
faulting in fresh pages for its large temporaries; blocks of 32 frames stay in cache (about 3x faster
on the 2-core machine, bit-identical: every frame is transformed alone either way)."""


def _rfft_rows(frames: np.ndarray) -> np.ndarray:
    """``np.fft.rfft`` over the last axis of ``frames [T, n]`` (float32), in blocks of ``_FFT_ROWS`` frames."""
    out = np.empty((frames.shape[0], frames.shape[1] // 2 + 1), dtype=np.complex64)
    for i in range(0, frames.shape[0], _FFT_ROWS):
        out[i : i + _FFT_ROWS] = np.fft.rfft(frames[i : i + _FFT_ROWS], axis=-1)
    return out


def power_frames(wav: np.ndarray, start: int, n_frames: int, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    """Power spectrogram ``[n_fft/2 + 1, n_frames]`` (float32) of frames ``start ..`` of ``wav [S]``."""
    spec = _rfft_rows(_frames(wav, start, n_frames, n_fft, hop) * window)
    return (spec.real**2 + spec.imag**2).T


def stft(wav: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    """Complex STFT ``[S // hop + 1, n_fft/2 + 1]`` of ``wav [S]``, frame ``f`` centred on ``f * hop``."""
    return _rfft_rows(_frames(wav, 0, wav.shape[0] // hop + 1, n_fft, hop) * window)


def overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    """``[T, n]`` frames placed every ``hop`` samples and summed -> ``[(T - 1) * hop + n]``."""
    t, n = frames.shape
    k = -(-n // hop)
    out = np.zeros((t + k - 1) * hop, dtype=np.float32)
    for j in range(k):  # piece j of every frame lands in row f + j of the output seen as [T + k - 1, hop]
        w = min(hop, n - j * hop)
        out[j * hop : (j + t) * hop].reshape(t, hop)[:, :w] += frames[:, j * hop : j * hop + w]
    return out[: (t - 1) * hop + n]


def window_envelope(n_frames: int, hop: int, window: np.ndarray) -> np.ndarray:
    """Overlap-added squared window of ``n_frames`` frames ``[(n_frames - 1) * hop + n]``."""
    return overlap_add(np.broadcast_to(window.astype(np.float32) ** 2, (n_frames, window.shape[0])), hop)


def istft(spec: np.ndarray, hop: int, window: np.ndarray, length: int, envelope: np.ndarray | None = None) -> np.ndarray:
    """Least-squares inverse of :func:`stft`: complex ``[T, n_fft/2 + 1]`` -> ``[length]`` float32.

    Windowed overlap-add divided by the overlap-added squared window (``envelope``, from
    :func:`window_envelope`, may be passed when many spectra of ``T`` frames are inverted);
    sample 0 is the centre of frame 0. Samples where the envelope vanishes are 0.
    """
    n_fft = window.shape[0]
    frames = np.fft.irfft(spec, n=n_fft, axis=-1).astype(np.float32, copy=False) * window
    env = window_envelope(spec.shape[0], hop, window) if envelope is None else envelope
    start = n_fft // 2
    y = overlap_add(frames, hop)[start : start + length]
    e = env[start : start + length]
    return np.where(e > 1e-8, y / np.maximum(e, 1e-8), np.float32(0.0)).astype(np.float32, copy=False)


def consistency_filter(
    wav: np.ndarray,
    log_mel: np.ndarray,
    fb: np.ndarray,
    passes: int,
    step: float,
    n_fft: int,
    hop: int,
    log_floor: float,
    max_log_gain: float = 4.6,
) -> np.ndarray:
    """Rescale ``wav [T * hop]``'s STFT band by band until its log-mel approaches ``log_mel [n_mels, T]``.

    ``fb [n_mels, n_fft/2 + 1]`` is the mel filterbank of the analysis (Hann window of ``n_fft``).
    Each pass: the STFT of the waveform; per band and frame the log-power gain
    ``clip(target - log(fb @ |X|^2), ±max_log_gain)``; each linear bin takes the filterbank-weighted
    mean of its bands' gains; the spectrum is scaled by ``exp(step * gain / 2)`` and inverted.
    """
    n_frames = log_mel.shape[-1]
    window = hann(n_fft)
    spread = fb.T / np.maximum(fb.T.sum(1, keepdims=True), 1e-8)  # [n_freq, n_mels]
    target = np.maximum(log_mel.astype(np.float32), np.float32(math.log(log_floor)))
    envelope = window_envelope(n_frames + 1, hop, window)
    out = wav.astype(np.float32)
    for _ in range(passes):
        spec = stft(out, n_fft, hop, window)  # [T + 1, n_freq]; the end frame has no target of its own
        head = spec[:n_frames]
        power = head.real**2 + head.imag**2  # float32: the STFT is complex64
        current = np.log(np.maximum(fb @ power.T, np.float32(log_floor)))  # [n_mels, T]
        gain = np.clip(target - current, -max_log_gain, max_log_gain)
        lin = (spread @ gain).T * np.float32(0.5 * step)  # [T, n_freq]
        lin = np.concatenate([lin, lin[-1:]], axis=0)
        spec = spec * np.exp(lin)
        out = istft(spec, hop, window, wav.shape[0], envelope)
    return out


def pulse_excitation(f0_hz: np.ndarray, voiced: np.ndarray, hop: int, sample_rate: int, start: int, length: int,
                     floor_hz: float, ceil_hz: float, interpolate: bool = False) -> np.ndarray:  # fmt: skip
    """Samples ``[start, start + length)`` of the pulse train of ``f0_hz [F]`` / ``voiced [F]``: NumPy
    twin of :func:`entanglecodec.codec.pitch.pulse_excitation` (one item; float32 ``[length]``)."""
    n_frames = f0_hz.shape[0]
    total = n_frames * hop
    f0 = np.clip(f0_hz.astype(np.float64), floor_hz, ceil_hz)
    v = voiced.astype(bool)
    n = np.arange(start, start + length)
    near = np.minimum((n + hop // 2) // hop, n_frames - 1)
    if interpolate:
        nxt_f0, nxt_v = np.append(f0[1:], f0[-1]), np.append(v[1:], False)
        base = np.where(~v & nxt_v, nxt_f0, f0)
        slope = np.where(v & nxt_v, nxt_f0 - f0, 0.0)
        s0 = min(start // hop, n_frames - 1)
        m = start - s0 * hop
        full = float((hop * base[:s0] + slope[:s0] * ((hop - 1) / 2)).sum())
        offset = (full + m * base[s0] + slope[s0] * (m * (m - 1) / (2 * hop))) / sample_rate
        seg = np.minimum(n // hop, n_frames - 1)
        per_sample = base[seg] + slope[seg] * ((n - seg * hop) / hop)
    else:
        edges = np.clip(np.ceil((np.arange(n_frames + 1, dtype=np.float64) - 0.5) * hop), 0, total)
        edges[-1] = total
        before = np.maximum(np.minimum(edges[1:], start) - np.minimum(edges[:-1], start), 0)
        offset = float((f0 * before).sum()) / sample_rate
        per_sample = f0[near]
    cycles = offset + np.cumsum(per_sample) / sample_rate
    prev = np.concatenate([[offset], cycles[:-1]])
    return ((np.floor(cycles) > np.floor(prev)) & v[near]).astype(np.float32)


def adopt_phase(wav: np.ndarray, excitation: np.ndarray, n_fft: int, hop: int, sample_rate: int, max_hz: float) -> np.ndarray:
    """NumPy twin of :meth:`entanglecodec.vocoder.mel_consistency.MelConsistencyFilter.adopt_phase` (one item)."""
    window = hann(n_fft)
    spec = stft(wav.astype(np.float32), n_fft, hop, window)  # [T, n_freq]
    exc = stft(excitation.astype(np.float32), n_fft, hop, window)
    use = (exc.real**2 + exc.imag**2).sum(1, keepdims=True) > 0  # [T, 1]
    if max_hz > 0:
        use = use & (np.arange(spec.shape[1]) * (sample_rate / n_fft) <= max_hz)[None, :]
    mag = np.abs(exc)
    unit = exc / np.where(mag > 0, mag, np.float32(1.0))  # exp(i angle(exc)); angle(0) = 0
    unit[mag == 0] = 1.0
    mixed = np.where(use, np.abs(spec) * unit, spec)
    return istft(mixed, hop, window, wav.shape[0], window_envelope(spec.shape[0], hop, window))


__all__ = [
    "adopt_phase", "consistency_filter", "hann", "istft", "overlap_add", "power_frames", "pulse_excitation", "stft",
    "window_envelope",
]
