"""Critics used only in training, grouped by what they judge.

* Mels (codec stage 2, paper App. B.3): :class:`MelDiscriminator`, a multi-resolution 2-D
  convolutional critic over mel "images": each sub-discriminator sees the normalised mel
  ``[B, 1, n_mels, F]`` at one time resolution (average-pooled by 1, 2, 4 frames) and outputs a
  map of patch logits. It is pre-trained to tell real mels from the stage-1 decoder's one-step
  samples, then frozen while the decoder is refined.
* Waveforms (vocoder): :class:`MultiPeriodDiscriminator` (HiFi-GAN idea: the waveform folded into
  ``[T / p, p]`` grids for prime periods ``p``) and :class:`MultiResolutionDiscriminator`
  (UnivNet / Vocos idea: 2-D convolutions over linear-magnitude spectrograms).

Every critic returns ``(logits, features)``: a list of logit maps (one per sub-discriminator) and
a list of feature-map lists (for feature matching); the losses live in :mod:`.losses`.
Checkpoints (``config.json`` + ``model.safetensors``) go through :mod:`entanglecodec.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from ..checkpoint import CheckpointError, check_state, read_checkpoint, save_checkpoint
from ..config import ConfigError, _from_dict

MODEL_TYPE = "entanglecodec-mel-discriminator"

@dataclass
class MelDiscriminatorConfig:
    """Sizes of the mel discriminator."""

    n_mels: int = 128
    channels: int = 32
    layers: int = 4
    time_scales: list[int] = field(default_factory=lambda: [1, 2, 4])


class _SubDiscriminator(nn.Module):
    def __init__(self, cfg: MelDiscriminatorConfig) -> None:
        super().__init__()
        convs = []
        ch_in = 1
        for i in range(cfg.layers):
            ch_out = cfg.channels * (2 ** min(i, 3))
            stride = (2, 1) if i < cfg.layers - 1 else (1, 1)
            convs.append(weight_norm(nn.Conv2d(ch_in, ch_out, kernel_size=(5, 5), stride=stride, padding=(2, 2))))
            ch_in = ch_out
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(ch_in, 1, kernel_size=(3, 3), padding=(1, 1)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.post(x), feats


class MelDiscriminator(nn.Module):
    """``mel [B, n_mels, F]`` -> list of patch-logit maps (one per time scale) and features."""

    def __init__(self, cfg: MelDiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MelDiscriminatorConfig()
        self.subs = nn.ModuleList([_SubDiscriminator(self.cfg) for _ in self.cfg.time_scales])

    def forward(self, mel: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        if mel.dim() != 3 or mel.shape[1] != self.cfg.n_mels:
            raise ValueError(f"mel must be [B, {self.cfg.n_mels}, F], got {tuple(mel.shape)}")
        x = mel.unsqueeze(1)
        logits, feats = [], []
        for scale, sub in zip(self.cfg.time_scales, self.subs, strict=True):
            xi = x if scale == 1 else F.avg_pool2d(x, kernel_size=(1, scale), stride=(1, scale), ceil_mode=True)
            lg, ft = sub(xi)
            logits.append(lg)
            feats.append(ft)
        return logits, feats

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (see :mod:`entanglecodec.checkpoint`)."""
        return save_checkpoint(directory, asdict(self.cfg), self.state_dict(), model_type=MODEL_TYPE)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> MelDiscriminator:
        """Load a directory written by :meth:`save_pretrained` (strict names and shapes).

        Raises:
            CheckpointError: missing/unreadable files, or weights that do not match the config.
        """
        raw, state = read_checkpoint(directory, model_type=MODEL_TYPE)
        try:
            disc = cls(_from_dict(MelDiscriminatorConfig, raw))
        except ConfigError as e:
            raise CheckpointError(f"{directory}: {e}") from e
        check_state(disc.state_dict(), state, directory)
        disc.load_state_dict(state)
        return disc


def masked_mel(mel: Tensor, mask: Tensor) -> Tensor:
    """Zero the frames past each item's length so the critic never judges padding."""
    return mel * mask[:, None, :].to(mel.dtype)


def freeze(module: nn.Module) -> nn.Module:
    """Turn off gradients and put ``module`` in eval mode."""
    module.requires_grad_(False)
    module.eval()
    return module


# ---------------------------------------------------------------------------------------------
# Waveform critics (vocoder)
# ---------------------------------------------------------------------------------------------
DiscriminatorOutput = tuple[list[Tensor], list[list[Tensor]]]

_SLOPE = 0.1


def _check_wav(wav: Tensor) -> Tensor:
    if wav.dim() == 3 and wav.shape[1] == 1:
        wav = wav[:, 0]
    if wav.dim() != 2:
        raise ValueError(f"discriminator input must be a waveform batch [B, S], got shape {tuple(wav.shape)}")
    return wav


def _conv_stack(convs: nn.ModuleList, out: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The waveform critics' trunk: leaky-ReLU convolutions, then the output convolution.

    Returns ``(logits [B, N], feature maps)`` (every activation, the output's included, for the
    feature-matching loss).
    """
    feats = []
    for conv in convs:
        x = F.leaky_relu(conv(x), _SLOPE)
        feats.append(x)
    x = out(x)
    feats.append(x)
    return x.flatten(1), feats


def _run_all(critics: nn.ModuleList, wav: Tensor) -> DiscriminatorOutput:
    """Every critic of a set on ``wav [B, S]``: (list of logits, list of feature-map lists)."""
    logits, feats = [], []
    for d in critics:
        lg, ft = d(wav)
        logits.append(lg)
        feats.append(ft)
    return logits, feats


class PeriodDiscriminator(nn.Module):
    """One period of the multi-period discriminator.

    Args:
        period: fold period ``p`` in samples.
        channels: output channels of the strided ``(5, 1)`` convolutions.
    """

    def __init__(self, period: int, channels: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        self.period = period
        layers = []
        c_in = 1
        for c in channels:
            layers.append(weight_norm(nn.Conv2d(c_in, c, (5, 1), stride=(3, 1), padding=(2, 0))))
            c_in = c
        layers.append(weight_norm(nn.Conv2d(c_in, c_in, (5, 1), padding=(2, 0))))
        self.convs = nn.ModuleList(layers)
        self.out = weight_norm(nn.Conv2d(c_in, 1, (3, 1), padding=(1, 0)))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``wav [B, S]`` -> ``(logits [B, N], feature maps)``."""
        b, s = wav.shape
        pad = (-s) % self.period
        x = F.pad(wav, (0, pad), mode="reflect" if pad < s else "constant")
        x = x.reshape(b, 1, -1, self.period)
        return _conv_stack(self.convs, self.out, x)


class MultiPeriodDiscriminator(nn.Module):
    """A set of :class:`PeriodDiscriminator` s (periods 2, 3, 5, 7, 11 by default)."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), channels: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([PeriodDiscriminator(p, channels) for p in periods])

    def forward(self, wav: Tensor) -> DiscriminatorOutput:
        """``wav [B, S]`` -> (list of logits ``[B, N_k]``, list of feature-map lists)."""
        return _run_all(self.discriminators, _check_wav(wav))


class ResolutionDiscriminator(nn.Module):
    """2-D convolutional discriminator on one STFT magnitude resolution.

    Args:
        n_fft: FFT size (window length) in samples.
        hop_length: STFT hop in samples.
        channels: width of the convolution stack.
    """

    window: Tensor

    def __init__(self, n_fft: int, hop_length: int, channels: int = 32) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        c = channels
        self.convs = nn.ModuleList(
            [
                weight_norm(nn.Conv2d(1, c, (3, 9), padding=(1, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 3), padding=(1, 1))),
            ]
        )
        self.out = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``wav [B, S]`` -> ``(logits [B, N], feature maps)``."""
        with torch.autocast(device_type=wav.device.type, enabled=False):
            spec = torch.stft(
                wav.float(), self.n_fft, self.hop_length, window=self.window, center=True, return_complex=True
            ).abs()
        x = spec.transpose(1, 2).unsqueeze(1)  # [B, 1, frames, freq]
        return _conv_stack(self.convs, self.out, x)


class MultiResolutionDiscriminator(nn.Module):
    """A set of :class:`ResolutionDiscriminator` s, one per ``(n_fft, hop)`` pair."""

    def __init__(
        self, resolutions: Sequence[tuple[int, int]] = ((2048, 512), (1024, 256), (512, 128)), channels: int = 32
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([ResolutionDiscriminator(n, h, channels) for n, h in resolutions])

    def forward(self, wav: Tensor) -> DiscriminatorOutput:
        """``wav [B, S]`` -> (list of logits ``[B, N_k]``, list of feature-map lists)."""
        return _run_all(self.discriminators, _check_wav(wav))
