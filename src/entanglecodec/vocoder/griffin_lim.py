"""Griffin-Lim inversion of the codec's log-mel: the fallback vocoder (batched, torch).

Mel -> linear magnitude by a non-negative least-squares-like pseudo-inverse of the filterbank,
then ``n_iter`` Griffin-Lim iterations with momentum (fast Griffin-Lim). Output length is exactly
``F * hop`` samples for ``F`` frames, consistent with :class:`entanglecodec.audio.MelFrontend`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..audio import CenteredSTFT, lengths_to_mask, mel_filterbank
from ..config import MelConfig


class GriffinLim(nn.Module):
    """Invert a natural-log power mel ``[B, n_mels, F]`` to a waveform ``[B, F * hop]``.

    Args:
        mel_cfg: the mel configuration the log-mel was computed with.
        n_iter: Griffin-Lim iterations (32 is a good speed/quality trade-off).
        momentum: fast Griffin-Lim momentum (0 gives the classic algorithm).
        seed: seed of the initial random phase (results are deterministic).
    """

    fb_pinv: Tensor

    def __init__(self, mel_cfg: MelConfig, n_iter: int = 32, momentum: float = 0.99, seed: int = 0) -> None:
        super().__init__()
        self.cfg = mel_cfg
        self.n_iter = int(n_iter)
        self.momentum = float(momentum)
        self.seed = int(seed)
        fb = mel_filterbank(mel_cfg.sample_rate, mel_cfg.n_fft, mel_cfg.n_mels, mel_cfg.f_min, mel_cfg.f_max)
        self.register_buffer("fb_pinv", torch.linalg.pinv(fb), persistent=False)
        self.stft = CenteredSTFT(mel_cfg)

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    @property
    def mel_config(self) -> MelConfig:
        """The mel analysis this inverter was built for."""
        return self.cfg

    @torch.no_grad()
    def forward(self, log_mel: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Args: ``log_mel [B, n_mels, F]``, ``lengths [B]`` in frames (optional).

        Returns: ``wav [B, F * hop]``; samples past ``lengths * hop`` are zero.
        """
        if log_mel.dim() != 3 or log_mel.shape[1] != self.cfg.n_mels:
            raise ValueError(f"log-mel must be [B, {self.cfg.n_mels}, F], got {tuple(log_mel.shape)}")
        b, _, f = log_mel.shape
        hop = self.cfg.hop_length
        n_samples = f * hop
        mel = log_mel.float().exp()
        if lengths is not None:
            mel = mel * lengths_to_mask(lengths, f)[:, None, :].to(mel.dtype)
        power = torch.matmul(self.fb_pinv.to(mel.device), mel).clamp_min(0.0)
        mag = power.sqrt()  # [B, n_freq, F]
        # An STFT of F*hop samples has F+1 centred frames: the extra last frame gets zero magnitude.
        mag = torch.cat([mag, torch.zeros_like(mag[..., :1])], dim=-1)
        # Initial phase drawn frame-major per item, so an item's phases do not depend on the batch.
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        init = torch.rand(f + 1, mag.shape[1], generator=gen).t()
        phase = (init.expand(b, -1, -1) * 2 * torch.pi).to(mag.device)
        keep = None if lengths is None else lengths_to_mask(lengths * hop, n_samples).to(mag.dtype)
        spec = torch.polar(mag, phase)
        prev = torch.zeros_like(spec)
        envelope = self.stft.envelope(f + 1)
        wav = self.stft.istft(spec, n_samples, envelope)
        if keep is not None:
            wav = wav * keep
        for _ in range(self.n_iter):
            rebuilt = self.stft.stft(wav)
            est = rebuilt - (self.momentum / (1 + self.momentum)) * prev
            prev = rebuilt
            spec = mag * torch.exp(1j * torch.angle(est))
            wav = self.stft.istft(spec, n_samples, envelope)
            if keep is not None:
                wav = wav * keep  # an item never sees samples past its own end, as when decoded alone
        return wav.clamp(-1.0, 1.0)
