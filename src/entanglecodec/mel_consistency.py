"""Mel-consistency filter: make a waveform's log-mel match a target log-mel, keeping its phase.

A neural vocoder's output is close to, but not exactly, the mel it was asked to render: its
inverse STFT overlap-adds frames whose spectra are not mutually consistent, which blurs the
magnitudes the codec's mel analysis then sees. This filter corrects that with a few cheap,
parameter-free passes. Each pass:

1. analyses the waveform with the *mel's own* STFT (same FFT size, window and hop as
   :class:`entanglecodec.audio.MelFrontend`, frame ``f`` centred on sample ``f * hop``);
2. computes, per mel band and frame, the log power ratio ``log(target) - log(mel(wav))``
   (both floored at the mel's ``log_floor``; clipped to ``±max_log_gain``);
3. spreads that band gain to the linear-frequency bins (each bin takes the filterbank-weighted
   mean of the gains of the bands it belongs to), scales the complex spectrum by
   ``exp(step * gain / 2)`` and inverts it (least-squares overlap-add).

Unlike Griffin-Lim, which *replaces* the magnitude with a smooth pseudo-inverse of the mel, the
filter only rescales the vocoder's own spectrum band by band, so the harmonic fine structure and
the phase the network produced are kept; ``step > 1`` over-relaxes the fixed-point iteration.

Batch invariance: each item is filtered over its own valid samples, so a padded batch gives the
same samples as filtering each item alone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .audio import mel_filterbank
from .config import MelConfig


class MelConsistencyFilter(nn.Module):
    """Rescale a waveform's STFT band by band until its log-mel matches a target log-mel.

    Args:
        mel_cfg: the analysis that produced the target log-mel (:class:`MelConfig`).
        max_log_gain: largest per-pass correction, in nats of power (100x by default).

    Call: ``(wav [B, S], log_mel [B, n_mels, F], lengths [B] frames or None, passes, step)``
    -> ``wav [B, S]`` float32 (``S`` must be ``F * hop``); samples past ``lengths * hop`` are 0.
    """

    fb: Tensor
    spread: Tensor
    window: Tensor

    def __init__(self, mel_cfg: MelConfig, max_log_gain: float = 4.6) -> None:
        super().__init__()
        self.cfg = mel_cfg
        self.max_log_gain = float(max_log_gain)
        fb = mel_filterbank(mel_cfg.sample_rate, mel_cfg.n_fft, mel_cfg.n_mels, mel_cfg.f_min, mel_cfg.f_max)
        self.register_buffer("fb", fb, persistent=False)  # [n_mels, n_freq]
        # [n_freq, n_mels]: each linear bin averages the gains of its bands (bins in no band keep gain 0)
        weights = fb.t()
        self.register_buffer("spread", weights / weights.sum(1, keepdim=True).clamp_min(1e-8), persistent=False)
        self.register_buffer("window", torch.hann_window(mel_cfg.win_length), persistent=False)

    def _stft(self, wav: Tensor) -> Tensor:
        return torch.stft(
            wav,
            n_fft=self.cfg.n_fft,
            hop_length=self.cfg.hop_length,
            win_length=self.cfg.win_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )

    def _overlap_add(self, frames: Tensor) -> Tensor:
        """``[B, T, n_fft]`` -> ``[B, (T - 1) * hop + n_fft]`` by summing hop-sized chunks.

        The overlap-add is ``ceil(n_fft / hop)`` shifted slice additions (faster than
        ``torch.istft`` / ``fold`` on a CPU).
        """
        b, t, n_fft = frames.shape
        hop = self.cfg.hop_length
        k = -(-n_fft // hop)
        out = frames.new_zeros(b, t + k - 1, hop)
        for j in range(k):
            piece = frames[:, :, j * hop : min((j + 1) * hop, n_fft)]
            out[:, j : j + t, : piece.shape[-1]] += piece
        return out.reshape(b, -1)[:, : (t - 1) * hop + n_fft]

    def _istft(self, spec: Tensor, length: int, envelope: Tensor | None = None) -> Tensor:
        """Least-squares inverse of :meth:`_stft`: ``[B, n_freq, T]`` -> ``[B, length]``.

        ``envelope`` (the overlap-added squared window for ``T`` frames) may be passed in when
        several spectra of the same size are inverted.
        """
        n_fft = self.cfg.n_fft
        window = self._padded_window()
        frames = torch.fft.irfft(spec.transpose(1, 2), n=n_fft, dim=-1) * window  # [B, T, n_fft]
        if envelope is None:
            envelope = self._envelope(spec.shape[-1])
        start = n_fft // 2
        wav = self._overlap_add(frames)[:, start : start + length]
        return wav / envelope[start : start + length]

    def _padded_window(self) -> Tensor:
        """The analysis window centred in ``n_fft`` samples (``torch.stft``'s convention)."""
        n_fft, win = self.cfg.n_fft, self.window.shape[0]
        left = (n_fft - win) // 2
        return torch.nn.functional.pad(self.window, (left, n_fft - win - left))

    def _envelope(self, n_frames: int) -> Tensor:
        """Overlap-added squared window of ``n_frames`` frames, floored away from 0: ``[samples]``."""
        w2 = self._padded_window().square()
        return self._overlap_add(w2.expand(1, n_frames, -1))[0].clamp_min(1e-11)

    def _filter(self, wav: Tensor, log_mel: Tensor, passes: int, step: float) -> Tensor:
        """``wav [B, F*hop]``, ``log_mel [B, n_mels, F]`` (all frames valid) -> ``[B, F*hop]``."""
        n_samples, n_frames = wav.shape[-1], log_mel.shape[-1]
        floor = self.cfg.log_floor
        target = log_mel.float().clamp_min(math.log(floor))
        envelope = self._envelope(n_frames + 1)
        for _ in range(passes):
            spec = self._stft(wav)  # [B, n_freq, F + 1]: frame F, centred on the end, has no target of its own
            head = spec[..., :n_frames]
            power = head.real.square() + head.imag.square()  # |X|^2 without a sqrt
            current = torch.log(torch.matmul(self.fb, power).clamp_min(floor))
            gain = (target - current).clamp(-self.max_log_gain, self.max_log_gain)  # [B, n_mels, F]
            lin = torch.matmul(self.spread, gain) * (0.5 * step)  # log amplitude gain [B, n_freq, F]
            lin = torch.cat([lin, lin[..., -1:]], dim=-1)  # the extra end frame follows the last one
            gain_lin = torch.exp(lin)
            scaled = torch.complex(spec.real * gain_lin, spec.imag * gain_lin)
            wav = self._istft(scaled, n_samples, envelope)
        return wav

    def forward(
        self, wav: Tensor, log_mel: Tensor, lengths: Tensor | None = None, passes: int = 6, step: float = 1.5
    ) -> Tensor:
        """See the class docstring. ``passes = 0`` returns ``wav`` unchanged."""
        if passes < 0:
            raise ValueError(f"mel-consistency passes must be >= 0, got {passes}")
        if step <= 0:
            raise ValueError(f"mel-consistency step must be positive, got {step}")
        hop = self.cfg.hop_length
        if wav.dim() != 2 or log_mel.dim() != 3 or wav.shape[0] != log_mel.shape[0]:
            raise ValueError(f"expected wav [B, S] and log-mel [B, n_mels, F], got {tuple(wav.shape)} and {tuple(log_mel.shape)}")
        if wav.shape[1] != log_mel.shape[2] * hop:
            raise ValueError(f"wav has {wav.shape[1]} samples but {log_mel.shape[2]} mel frames need {log_mel.shape[2] * hop}")
        if passes == 0:
            return wav
        with torch.autocast(device_type=wav.device.type, enabled=False):
            wav = wav.float()
            if lengths is None or bool((lengths == log_mel.shape[2]).all()):
                return self._filter(wav, log_mel, passes, step)
            out = torch.zeros_like(wav)
            for b, n in enumerate(lengths.tolist()):
                out[b, : n * hop] = self._filter(wav[b : b + 1, : n * hop], log_mel[b : b + 1, :, :n], passes, step)[0]
            return out
