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
filter only rescales the vocoder's own spectrum band by band: the network's phase is kept and only
band levels move (``step > 1`` over-relaxes the fixed-point iteration). In the narrow low bands
that still reshapes harmonics, and it can lower voicing measures; see the vocoder model card.

Batch invariance: each item is filtered over its own valid samples, so a padded batch gives the
same samples as filtering each item alone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..audio import CenteredSTFT, mel_filterbank
from ..config import MelConfig


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

    def __init__(self, mel_cfg: MelConfig, max_log_gain: float = 4.6) -> None:
        super().__init__()
        self.cfg = mel_cfg
        self.max_log_gain = float(max_log_gain)
        fb = mel_filterbank(mel_cfg.sample_rate, mel_cfg.n_fft, mel_cfg.n_mels, mel_cfg.f_min, mel_cfg.f_max)
        self.register_buffer("fb", fb, persistent=False)  # [n_mels, n_freq]
        # [n_freq, n_mels]: each linear bin averages the gains of its bands (bins in no band keep gain 0)
        weights = fb.t()
        self.register_buffer("spread", weights / weights.sum(1, keepdim=True).clamp_min(1e-8), persistent=False)
        self.stft = CenteredSTFT(mel_cfg)

    def _filter(self, wav: Tensor, log_mel: Tensor, passes: int, step: float) -> Tensor:
        """``wav [B, F*hop]``, ``log_mel [B, n_mels, F]`` (all frames valid) -> ``[B, F*hop]``."""
        n_samples, n_frames = wav.shape[-1], log_mel.shape[-1]
        floor = self.cfg.log_floor
        target = log_mel.float().clamp_min(math.log(floor))
        envelope = self.stft.envelope(n_frames + 1)
        for _ in range(passes):
            spec = self.stft.stft(wav)  # [B, n_freq, F + 1]: frame F, centred on the end, has no target of its own
            head = spec[..., :n_frames]
            power = head.real.square() + head.imag.square()  # |X|^2 without a sqrt
            current = torch.log(torch.matmul(self.fb, power).clamp_min(floor))
            gain = (target - current).clamp(-self.max_log_gain, self.max_log_gain)  # [B, n_mels, F]
            # log amplitude gain [B, F, n_freq]: frames-major, the memory order of torch.stft's output,
            # so that the complex x real product below runs contiguously (6x faster than across it)
            lin = torch.matmul(gain.transpose(1, 2), self.spread.t()) * (0.5 * step)
            lin = torch.cat([lin, lin[:, -1:]], dim=1)  # the extra end frame follows the last one
            wav = self.stft.istft(spec * torch.exp(lin).transpose(1, 2), n_samples, envelope)
        return wav

    def adopt_phase(self, wav: Tensor, excitation: Tensor, max_hz: float = 0.0) -> Tensor:
        """Give ``wav [B, S]`` the STFT phase of ``excitation [B, S]`` wherever the excitation is not silent.

        Frames in which ``excitation`` has no energy (e.g. the zeros of
        :func:`~entanglecodec.codec.pitch.pulse_excitation` in unvoiced frames) keep ``wav``'s own
        phase, as do bins above ``max_hz`` (0: none). Magnitudes are ``wav``'s. Same STFT as the passes.

        Returns:
            ``[B, S]`` float32.
        """
        if wav.shape != excitation.shape:
            raise ValueError(f"wav {tuple(wav.shape)} and excitation {tuple(excitation.shape)} differ in shape")
        with torch.autocast(device_type=wav.device.type, enabled=False):
            spec = self.stft.stft(wav.float())
            exc = self.stft.stft(excitation.float())
            use = exc.real.square().add(exc.imag.square()).sum(1, keepdim=True) > 0  # [B, 1, T]
            if max_hz > 0:
                n_freq = spec.shape[1]
                hz = torch.arange(n_freq, device=wav.device) * (self.cfg.sample_rate / self.cfg.n_fft)
                use = use & (hz <= max_hz)[None, :, None]
            mag = exc.abs()
            # exp(i angle(exc)) without atan2 / sin / cos; angle(0) = 0
            unit = torch.where(mag > 0, exc / torch.where(mag > 0, mag, 1.0), torch.ones_like(exc))
            mixed = torch.where(use, spec.abs() * unit, spec)
            return self.stft.istft(mixed, wav.shape[-1], self.stft.envelope(spec.shape[-1]))

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
