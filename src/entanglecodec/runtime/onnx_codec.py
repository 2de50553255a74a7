"""Encode and decode with a compiled runtime folder: ONNX Runtime for the networks, NumPy for the
signal processing, no torch.

:class:`OnnxCodec` follows :class:`~entanglecodec.EntangleCodec`'s encode/decode one item at a
time, with the same window plan (:func:`~entanglecodec.codec.windowing.run_windowed`), the same
initial noise (:func:`~entanglecodec.codec.sampling.decode_noise`) and the same mel analysis, so
both give the same tokens and the same audio up to float32 rounding (``tests/runtime``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..audio_io import AudioError, resample, warn_if_short
from ..codec.sampling import TokenError, decode_noise
from ..codec.windowing import (
    PREDICT_CHUNK_FRAMES,
    PREDICT_CONTEXT_FRAMES,
    VOCODER_WINDOW_FRAMES,
    Window,
    run_windowed,
    window_plan,
)
from . import dsp
from .cache import FORMAT_VERSION, META_NAME, RuntimeFolderError

ENCODE_BATCH = 8
"""Windows of a long clip encoded per encoder call (as the torch model)."""
DECODE_BATCH = 4
"""Windows of a long clip decoded per flow-decoder call (as the torch model)."""


class OnnxCodec:
    """A runtime folder (see :mod:`entanglecodec.runtime.export`) ready to encode and decode.

    Args:
        folder: the compiled folder (:func:`~entanglecodec.runtime.cache.find_runtime`).
        threads: intra-op threads of ONNX Runtime (``None``: its default, one per core).

    Sessions are created on first use, so a process that only encodes never loads the decoder.
    """

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        self.folder = Path(folder)
        try:
            self.meta: dict[str, Any] = json.loads((self.folder / META_NAME).read_text())
            self.mel_fb = np.load(self.folder / "dsp.npz")["mel_fb"].astype(np.float32)
        except (OSError, ValueError, KeyError) as e:
            raise RuntimeFolderError(f"{self.folder}: not a readable runtime folder ({e})") from e
        if self.meta.get("format") != FORMAT_VERSION:
            raise RuntimeFolderError(f"{self.folder}: runtime format {self.meta.get('format')!r}, this library reads {FORMAT_VERSION}")
        self.threads = threads
        self._sessions: dict[str, Any] = {}
        m = self.meta
        win = dsp.hann(m["win_length"])
        left = (m["n_fft"] - m["win_length"]) // 2
        self.mel_window = np.pad(win, (left, m["n_fft"] - m["win_length"] - left))
        self.voc_window = dsp.hann(m["vocoder"]["n_fft"])

    # ------------------------------------------------------------------ properties
    @property
    def sample_rate(self) -> int:
        return int(self.meta["sample_rate"])

    @property
    def hop_length(self) -> int:
        return int(self.meta["hop_length"])

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def codebook_size(self) -> int:
        return int(self.meta["codebook_size"])

    @property
    def bitrate(self) -> float:
        """Bits per second of the token stream (``frame_rate * log2(codebook_size)``)."""
        return self.frame_rate * math.log2(self.codebook_size)

    def fingerprint(self) -> str:
        """The source checkpoint's :meth:`~entanglecodec.EntangleCodec.fingerprint` (token files carry it)."""
        return str(self.meta["fingerprint"])

    def accepted_fingerprints(self) -> list[str]:
        """Every fingerprint a token file of this checkpoint may carry (current and release 0.1.0's)."""
        return [str(x) for x in self.meta.get("accepted_fingerprints", [self.fingerprint()])]

    @property
    def guidance(self) -> float:
        """The classifier-free guidance compiled into the decoder graph."""
        return float(self.meta["guidance"])

    def _session(self, name: str) -> Any:
        sess = self._sessions.get(name)
        if sess is None:
            import onnxruntime as ort

            so = ort.SessionOptions()
            if self.threads:
                so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # NumPy runs between the calls
            try:
                sess = ort.InferenceSession(str(self.folder / f"{name}.onnx"), so, providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
                raise RuntimeFolderError(f"{self.folder / f'{name}.onnx'}: cannot be loaded ({e})") from e
            self._sessions[name] = sess
        return sess

    # ------------------------------------------------------------------ encode
    def _log_mel(self, wav: np.ndarray, start: int, n_frames: int) -> np.ndarray:
        """Un-normalised log-mel ``[n_mels, n_frames]`` of frames ``start ..`` of ``wav [S]``."""
        m = self.meta
        power = dsp.power_frames(wav, start, n_frames, m["n_fft"], m["hop_length"], self.mel_window)
        return np.log(np.maximum(self.mel_fb @ power, np.float32(m["log_floor"])))

    def _prepare(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """A checked mono float32 waveform ``[S]`` at :attr:`sample_rate` (resampled with soxr)."""
        x = np.asarray(wav, dtype=np.float32)
        if x.ndim != 1 or x.size == 0:
            raise AudioError(f"expected a non-empty mono waveform [S], got shape {x.shape}")
        if not np.isfinite(x).all():
            raise AudioError("waveform contains NaN or Inf samples")
        return resample(x, sample_rate, self.sample_rate)

    def encode(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono waveform ``[S]`` in [-1, 1] at ``sample_rate`` -> token ids ``[F]`` int64,
        ``F = ceil(S_24k / hop)``.

        Raises:
            AudioError: not a non-empty 1-D array of finite samples, or a bad sample rate.
        """
        x = self._prepare(wav, sample_rate)
        warn_if_short([x.shape[0]], self.sample_rate)
        n = -(-x.shape[0] // self.hop_length)
        codes = np.zeros(n, dtype=np.int64)
        w, enc = self.meta["max_frames"], self._session("encoder")

        def whole(_: list[int]) -> None:
            codes[:] = enc.run(None, {"log_mel": self._log_mel(x, 0, n)[None]})[0][0]

        def windows(chunk: list[Window]) -> None:
            batch = np.stack([self._log_mel(x, c.start, w) for c in chunk])
            out = enc.run(None, {"log_mel": batch})[0]
            for k, c in enumerate(chunk):
                codes[c.keep_start : c.keep_end] = out[k, c.inner]

        run_windowed([n], w, self.meta["window_context"], ENCODE_BATCH, whole, windows)
        return codes

    # ------------------------------------------------------------------ decode
    def _check_codes(self, codes: Any) -> np.ndarray:
        c = np.asarray(codes)
        if c.ndim != 1 or c.size == 0:
            raise TokenError(f"expected token ids [F] (one item), got shape {c.shape}")
        if not np.issubdtype(c.dtype, np.integer):
            raise TokenError(f"token ids must be integers, got dtype {c.dtype}")
        bad = (c < 0) | (c >= self.codebook_size)
        if bad.any():
            raise TokenError(
                f"token ids must lie in [0, {self.codebook_size}) for this checkpoint; got values in "
                f"[{int(c[bad].min())}, {int(c[bad].max())}] ({int(bad.sum())} out of range)"
            )
        return c.astype(np.int64)

    def decode_mel(self, codes: Any, seed: int = 0) -> np.ndarray:
        """Token ids ``[F]`` -> log-mel ``[n_mels, F]`` (one Euler step at the compiled guidance, from the
        initial noise scaled by the checkpoint's ``decoder.noise_scale``)."""
        c = self._check_codes(codes)
        n, n_mels, w = c.shape[0], self.meta["n_mels"], self.meta["max_frames"]
        noise = decode_noise(seed, n_mels, n) * np.float32(self.meta.get("noise_scale", 1.0))
        mel = np.zeros((n_mels, n), dtype=np.float32)
        dec = self._session("decoder")

        def whole(_: list[int]) -> None:
            mel[:] = dec.run(None, {"codes": c[None], "noise": noise[None]})[0][0]

        def windows(chunk: list[Window]) -> None:
            out = dec.run(None, {"codes": np.stack([c[j.start : j.start + w] for j in chunk]),
                                 "noise": np.stack([noise[:, j.start : j.start + w] for j in chunk])})[0]
            for k, j in enumerate(chunk):
                mel[:, j.keep_start : j.keep_end] = out[k, :, j.inner]

        run_windowed([n], w, self.meta["window_context"], DECODE_BATCH, whole, windows)
        return mel

    def pitch(self, codes: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """``(f0_hz [F], voiced [F])`` the pitch predictor reads from token ids ``[F]`` for
        ``decoder.pulse_phase`` (``None`` when the checkpoint does not use it)."""
        p = self.meta.get("pulse_phase")
        if not p:
            return None
        c = self._check_codes(codes)
        f, sess = c.shape[0], self._session("pitch")
        logit, octaves = np.empty(f, dtype=np.float32), np.empty(f, dtype=np.float32)
        width = PREDICT_CHUNK_FRAMES + 2 * PREDICT_CONTEXT_FRAMES  # long clips in windows, as the torch model
        for start, keep_s, keep_e in window_plan(f, width, PREDICT_CONTEXT_FRAMES):
            lg, oc = sess.run(None, {"codes": c[None, start : start + width]})
            logit[keep_s:keep_e], octaves[keep_s:keep_e] = lg[0, keep_s - start : keep_e - start], oc[0, keep_s - start : keep_e - start]
        prob = float(p.get("voiced_prob", 0.5))
        voiced = logit > np.log(prob / (1 - prob))
        return (p["reference_hz"] * np.exp2(octaves.astype(np.float64))).astype(np.float32), voiced

    def vocode(self, log_mel: np.ndarray, pitch: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Log-mel ``[n_mels, F]`` -> waveform ``[F * hop]`` (network, inverse STFT, consistency
        passes), window by window past :data:`~entanglecodec.codec.windowing.VOCODER_WINDOW_FRAMES`
        as the torch model; ``pitch`` (:meth:`pitch`): voiced frames take the pulse train's phase."""
        n, hop, w = log_mel.shape[1], self.hop_length, max(self.meta["max_frames"], VOCODER_WINDOW_FRAMES)
        out = np.zeros(n * hop, dtype=np.float32)

        def whole(_: list[int]) -> None:
            out[:] = self._vocode_window(log_mel, pitch, 0)

        def windows(chunk: list[Window]) -> None:
            (j,) = chunk
            piece = self._vocode_window(log_mel[:, j.start : j.start + w], pitch, j.start)
            out[j.keep_start * hop : j.keep_end * hop] = piece[j.inner.start * hop : j.inner.stop * hop]

        run_windowed([n], w, self.meta["window_context"], 1, whole, windows)
        return out

    def _vocode_window(self, log_mel: np.ndarray, pitch: tuple[np.ndarray, np.ndarray] | None, start: int) -> np.ndarray:
        v, m = self.meta["vocoder"], self.meta
        n = log_mel.shape[1]
        real, imag = self._session("vocoder").run(None, {"log_mel": np.ascontiguousarray(log_mel[None])})
        wav = dsp.istft(real[0] + 1j * imag[0], v["hop_length"], self.voc_window, n * v["hop_length"])
        if pitch is not None:
            p, hop = m["pulse_phase"], m["hop_length"]
            exc = dsp.pulse_excitation(
                pitch[0], pitch[1], hop, m["sample_rate"], start * hop, n * hop, p["floor_hz"], p["ceil_hz"],
                bool(p.get("interpolate", False)),
            )
            wav = dsp.adopt_phase(wav, exc, m["n_fft"], hop, m["sample_rate"], p["max_hz"])
        if v["consistency_passes"] > 0:
            wav = dsp.consistency_filter(
                wav, log_mel, self.mel_fb, v["consistency_passes"], v["consistency_step"], m["n_fft"],
                m["hop_length"], m["log_floor"], v["max_log_gain"],
            )
        return wav

    def decode(self, codes: Any, seed: int = 0, num_samples: int | None = None) -> np.ndarray:
        """Token ids ``[F]`` -> waveform ``[F * hop]`` at :attr:`sample_rate`, trimmed to ``num_samples``.

        Raises:
            TokenError: ids out of range, not integers, not one item, or ``num_samples`` that
                does not fit ``F`` tokens.
        """
        c = self._check_codes(codes)
        n = c.shape[0] * self.hop_length
        if num_samples is not None and not n - self.hop_length < int(num_samples) <= n:
            raise TokenError(
                f"num_samples {num_samples} inconsistent with {c.shape[0]} tokens "
                f"(must lie in ({n - self.hop_length}, {n}])"
            )
        wav = self.vocode(self.decode_mel(c, seed), self.pitch(c))
        return wav[: n if num_samples is None else int(num_samples)]

    def reconstruct(self, wav: np.ndarray, sample_rate: int, seed: int = 0) -> np.ndarray:
        """Encode then decode: ``[S]`` at ``sample_rate`` -> ``[S_24k]`` at :attr:`sample_rate`."""
        x = self._prepare(wav, sample_rate)
        return self.decode(self.encode(x, self.sample_rate), seed, num_samples=x.shape[0])


__all__ = ["DECODE_BATCH", "ENCODE_BATCH", "OnnxCodec"]
