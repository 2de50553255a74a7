"""Vocos-style neural vocoder: log-mel ``[B, n_mels, F]`` -> waveform ``[B, F * hop]``.

A ConvNeXt backbone runs at the mel frame rate (50 Hz for the codec's mel) and a linear head
predicts, for every frame, the log-magnitude and the phase of an ``n_fft``-point spectrum; an
inverse STFT (overlap-add with least-squares window normalisation) turns them into audio. The
design follows the Vocos paper (Siuzdenko et al., 2023); the code is our own.

Frame arithmetic matches :class:`entanglecodec.audio.MelFrontend` exactly: frame ``f`` is centred on
sample ``f * hop`` and ``F`` frames give ``F * hop`` samples. The input is the *un-normalised*
natural-log power mel of :meth:`MelFrontend.log_mel` (not the codec's per-bin normalised mel).

At inference the network's output goes through a few passes of the parameter-free
:class:`~entanglecodec.vocoder.mel_consistency.MelConsistencyFilter`, which rescales it band by band until
its mel matches the input mel (``consistency_passes`` in the config; 0 gives the network alone,
which is also what training optimises).

Padding invariance: every temporal operation (the embedding convolution and the depthwise
convolutions of the ConvNeXt blocks) sees exact zeros past an item's last valid frame, and the
inverse STFT drops the invalid frames (also from the window normalisation), so a padded batch gives
the same samples as decoding each item alone.

The configuration lives in :mod:`.config`; resolving a vocoder spec (``"default"``,
``"griffin-lim"``, a directory) happens only in :mod:`.load`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..audio import lengths_to_mask, overlap_add
from ..checkpoint import (
    CheckpointError,
    check_state,
    model_card,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from ..config import ConfigError, MelConfig
from .config import VocoderConfig
from .mel_consistency import MelConsistencyFilter

MODEL_TYPE = "entanglecodec-vocoder"


class VocoderLoadError(CheckpointError):
    """A vocoder checkpoint is missing, unreadable, or its weights do not match its config."""


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------
class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a ``[B, C, T]`` tensor."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ConvNeXtBlock(nn.Module):
    """1-D ConvNeXt block: depthwise conv -> LayerNorm -> MLP (GELU) -> layer scale -> residual.

    Args:
        dim: channels.
        intermediate_dim: MLP hidden width.
        kernel_size: depthwise kernel (frames), odd.
        layer_scale_init: initial residual scale per channel.
    """

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, layer_scale_init: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init)))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x [B, C, T]`` -> ``[B, C, T]``; ``mask [B, 1, T]`` (1 = valid) zeroes the conv input."""
        h = x if mask is None else x * mask
        h = self.dwconv(h).transpose(1, 2)  # [B, T, C]
        h = self.pwconv2(self.act(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class ISTFTHead(nn.Module):
    """Per-frame linear projection to log-magnitude + phase, then a "same"-aligned inverse STFT.

    Frame ``f`` is synthesised over samples ``[f*hop - n_fft/2, f*hop + n_fft/2)`` with a periodic
    Hann window; the overlap-added signal is divided by the overlap-added squared window of the
    *valid* frames (least-squares inverse of a Hann-windowed STFT), and ``F`` frames give exactly
    ``F * hop`` samples starting at sample 0.
    """

    window: Tensor

    def __init__(self, dim: int, n_fft: int, hop_length: int, max_log_magnitude: float) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.max_log_magnitude = max_log_magnitude
        self.proj = nn.Linear(dim, n_fft + 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def spectrum(self, h: Tensor, prior: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``h [B, T, dim]`` -> ``(magnitude, phase)``, each ``[B, T, n_fft/2 + 1]`` float32.

        ``prior [B, T, n_fft/2 + 1]`` (optional) is added to the predicted log-magnitude.
        """
        out = self.proj(h).float()
        log_mag, phase = out.chunk(2, dim=-1)
        if prior is not None:
            log_mag = log_mag + prior
        return torch.exp(log_mag.clamp(max=self.max_log_magnitude)), phase

    def istft(self, mag: Tensor, phase: Tensor, mask: Tensor | None = None) -> Tensor:
        """Inverse STFT of ``[B, T, n_fft/2+1]`` magnitude/phase -> ``[B, T * hop]`` float32.

        ``mask [B, T]`` (bool, True = valid) removes invalid frames from both the overlap-add and
        the window normalisation; samples with no valid frame are 0.
        """
        b, t, _ = mag.shape
        n_fft, hop = self.n_fft, self.hop_length
        # mag * e^(i phase), built from cos/sin: torch.polar is ~4x slower on CPU
        spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))  # complex [B, T, n_fft/2+1]
        frames = torch.fft.irfft(spec, n=n_fft, dim=-1)  # [B, T, n_fft], not yet windowed
        # the synthesis window and the frame mask fused into the overlap-add's additions
        m = None if mask is None else mask.to(frames.dtype)[:, :, None]
        y = overlap_add(frames, hop, self.window, m)
        env = overlap_add(self.window.square().expand(b if m is not None else 1, t, n_fft), hop, frame_gain=m)
        start = n_fft // 2
        y = y[:, start : start + t * hop]
        env = env[:, start : start + t * hop]
        return torch.where(env > 1e-8, y / env.clamp_min(1e-8), torch.zeros((), dtype=y.dtype, device=y.device))

    def forward(self, h: Tensor, mask: Tensor | None = None, prior: Tensor | None = None) -> Tensor:
        """``h [B, T, dim]`` -> waveform ``[B, T * hop]`` (float32, computed outside autocast)."""
        with torch.autocast(device_type=h.device.type, enabled=False):
            mag, phase = self.spectrum(h.float(), prior)
            return self.istft(mag, phase, mask)


def magnitude_prior_matrix(config: VocoderConfig) -> Tensor:
    """``[n_fft/2 + 1, n_mels]`` map from a power mel to the synthesis FFT's power spectrum.

    The mel filterbank's pseudo-inverse gives the power spectrum at the analysis FFT size
    (``mel_n_fft``); it is linearly interpolated to the synthesis bins and scaled by
    ``(n_fft / mel_n_fft)^2`` (a sinusoid's Hann-windowed magnitude grows with the window length).
    Negative values of the pseudo-inverse are left to the caller's floor.
    """
    from ..audio import mel_filterbank

    mc = config.mel
    fb = mel_filterbank(mc.sample_rate, mc.n_fft, mc.n_mels, mc.f_min, mc.f_max).double()
    pinv = torch.linalg.pinv(fb)  # [mel_n_fft/2 + 1, n_mels]
    n_bins, n_in = config.n_fft // 2 + 1, mc.n_fft // 2 + 1
    pos = torch.arange(n_bins, dtype=torch.float64) * mc.n_fft / config.n_fft
    lo = pos.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = pos - lo.double()
    interp = torch.zeros(n_bins, n_in, dtype=torch.float64)
    interp[torch.arange(n_bins), lo] += 1.0 - frac
    interp[torch.arange(n_bins), hi] += frac
    scale = (config.n_fft / mc.n_fft) ** 2
    return (scale * interp @ pinv).float()


# ---------------------------------------------------------------------------------------------
# The vocoder
# ---------------------------------------------------------------------------------------------
class Vocoder(nn.Module):
    """Vocos-style vocoder (ConvNeXt backbone + inverse-STFT head).

    Args:
        config: sizes and signal parameters (see :class:`VocoderConfig`).

    Example:
        >>> voc = Vocoder(VocoderConfig.preset("tiny"))
        >>> voc(torch.zeros(2, 128, 10)).shape
        torch.Size([2, 4800])
    """

    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        k = config.kernel_size
        self.embed = nn.Conv1d(config.n_mels, config.dim, k, padding=k // 2)
        self.norm_in = ChannelLayerNorm(config.dim, eps=1e-6)
        ls = config.layer_scale_init if config.layer_scale_init is not None else 1.0 / max(config.depth, 1)
        self.blocks = nn.ModuleList(
            [ConvNeXtBlock(config.dim, config.intermediate_dim, k, ls) for _ in range(config.depth)]
        )
        self.norm_out = nn.LayerNorm(config.dim, eps=1e-6)
        self.head = ISTFTHead(config.dim, config.n_fft, config.hop_length, config.max_log_magnitude)
        self.prior_matrix: Tensor | None
        if config.magnitude_prior:
            self.register_buffer("prior_matrix", magnitude_prior_matrix(config), persistent=False)
        else:
            self.prior_matrix = None
        self.consistency = MelConsistencyFilter(config.mel)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Conv1d | nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ properties
    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz."""
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        """Samples per input frame."""
        return self.config.hop_length

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ inference
    def _check_input(self, log_mel: Tensor, lengths: Tensor | None) -> Tensor | None:
        if not isinstance(log_mel, Tensor) or log_mel.dim() != 3:
            shape = tuple(log_mel.shape) if isinstance(log_mel, Tensor) else type(log_mel).__name__
            raise ValueError(f"vocoder input must be a log-mel tensor [B, {self.config.n_mels}, F], got {shape}")
        if log_mel.shape[1] != self.config.n_mels:
            raise ValueError(
                f"vocoder expects {self.config.n_mels} mel bins, got {log_mel.shape[1]} "
                f"(input shape {tuple(log_mel.shape)}; expected [B, n_mels, F])"
            )
        if log_mel.shape[0] == 0 or log_mel.shape[2] == 0:
            raise ValueError(f"empty log-mel input of shape {tuple(log_mel.shape)}")
        if lengths is None:
            return None
        lens = torch.as_tensor(lengths, dtype=torch.long, device=log_mel.device).reshape(-1)
        if lens.numel() != log_mel.shape[0]:
            raise ValueError(f"lengths has {lens.numel()} entries but the batch has {log_mel.shape[0]} items")
        if bool((lens < 1).any()) or bool((lens > log_mel.shape[2]).any()):
            raise ValueError(f"frame lengths {lens.tolist()} must be in [1, {log_mel.shape[2]}]")
        return lens

    def forward(
        self, log_mel: Tensor, lengths: Tensor | None = None, consistency_passes: int | None = None,
        excitation: Tensor | None = None, excitation_max_hz: float = 0.0,
    ) -> Tensor:  # fmt: skip
        """Synthesise audio.

        Args:
            log_mel: natural-log power mel ``[B, n_mels, F]`` (as :meth:`MelFrontend.log_mel`).
            lengths: valid frames per item ``[B]`` (``None``: all ``F``). Frames past an item's
                length never influence its samples.
            consistency_passes: passes of the mel-consistency filter (``None``:
                ``config.consistency_passes``; 0: the network's raw output, as in training).
            excitation: ``[B, F * hop_length]``: where it is not silent, the network's output takes
                its STFT phase before the passes (:meth:`MelConsistencyFilter.adopt_phase`; the
                codec's pulse train at its predicted F0, ``decoder.pulse_phase``), in bins up to
                ``excitation_max_hz`` (0: all).

        Returns:
            Waveform ``[B, F * hop_length]`` float32; samples past ``lengths * hop_length`` are 0.
        """
        lens = self._check_input(log_mel, lengths)
        fmask = None if lens is None else lengths_to_mask(lens, log_mel.shape[2])  # [B, T] bool
        wav = self.head(self.hidden(log_mel, fmask), fmask, self.magnitude_prior(log_mel))
        if excitation is not None:
            wav = self.consistency.adopt_phase(wav, excitation.to(wav.device), excitation_max_hz)
        if lens is not None:
            wav = wav * lengths_to_mask(lens * self.hop_length, wav.shape[1]).to(wav.dtype)
        passes = self.config.consistency_passes if consistency_passes is None else int(consistency_passes)
        if passes > 0:
            wav = self.consistency(wav, log_mel, lens, passes, self.config.consistency_step)
        return wav

    def hidden(self, log_mel: Tensor, fmask: Tensor | None = None) -> Tensor:
        """The backbone: ``log_mel [B, n_mels, T]`` -> features ``[B, T, dim]`` for the head
        (``fmask [B, T]``, True on valid frames, keeps padding out of the convolutions)."""
        cmask = None if fmask is None else fmask[:, None, :].to(log_mel.dtype)
        x = (log_mel - self.config.input_mean) * self.config.input_scale
        if cmask is not None:
            x = x * cmask
        x = self.norm_in(self.embed(x))
        for block in self.blocks:
            x = block(x, cmask)
        return self.norm_out(x.transpose(1, 2))  # type: ignore[no-any-return]

    def spectrum(self, log_mel: Tensor) -> tuple[Tensor, Tensor]:
        """The network's STFT of an unpadded ``log_mel [B, n_mels, T]``: ``(magnitude, phase)``, each
        ``[B, T, n_fft/2 + 1]`` float32 (what the head inverts; the ONNX runtime's vocoder graph)."""
        with torch.autocast(device_type=log_mel.device.type, enabled=False):
            return self.head.spectrum(self.hidden(log_mel).float(), self.magnitude_prior(log_mel))

    def magnitude_prior(self, log_mel: Tensor) -> Tensor | None:
        """Fixed log-magnitude estimate ``[B, F, n_fft/2 + 1]`` from ``log_mel [B, n_mels, F]``
        (``None`` when ``config.magnitude_prior`` is off)."""
        if self.prior_matrix is None:
            return None
        with torch.autocast(device_type=log_mel.device.type, enabled=False):
            power = torch.matmul(self.prior_matrix, log_mel.float().clamp(max=30.0).exp())
            return 0.5 * torch.log(power.clamp_min(1e-10)).transpose(1, 2)

    @torch.no_grad()
    def vocode(self, log_mel: Tensor, lengths_frames: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Inference helper: ``(wav [B, F * hop], lengths [B] in samples)``, no gradients."""
        lens = self._check_input(log_mel, lengths_frames)
        if lens is None:
            lens = torch.full((log_mel.shape[0],), log_mel.shape[2], dtype=torch.long, device=log_mel.device)
        wav = self.forward(log_mel, lens)
        return wav, lens * self.hop_length

    # ------------------------------------------------------------------ (de)serialisation
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` and the model card ``README.md`` (Hub
        metadata) into ``directory`` (see :mod:`entanglecodec.checkpoint`)."""
        mel = self.mel_config
        facts = {
            "input": f"natural-log power mel, {mel.n_mels} bins, hop {mel.hop_length} at {mel.sample_rate} Hz",
            "parameters": f"{sum(p.numel() for p in self.parameters()) / 1e6:.2f} M",
            "mel-consistency passes": self.config.consistency_passes,
        }
        usage = (
            "from entanglecodec.vocoder.load import load_vocoder\n\n"
            'vocoder = load_vocoder("DIRECTORY or OWNER/REPO")\n'
            "wav = vocoder(log_mel)   # [B, n_mels, F] -> [B, F * hop]"
        )
        card = model_card(
            "EntangleCodec vocoder",
            "Vocos-style ConvNeXt + iSTFT vocoder turning the EntangleCodec log-mel back into audio.",
            facts,
            usage,
            tags=["audio", "vocoder"],
        )
        return save_checkpoint(
            directory, self.config.to_dict(), self.state_dict(), model_type=MODEL_TYPE, metadata={"format": "pt"},
            card=card,
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> Vocoder:
        """Load a vocoder saved by :meth:`save_pretrained` (flat pre-nesting configs included):
        a directory, or a Hugging Face Hub id ``owner/name[@revision]`` (cache-aware).

        Raises:
            VocoderLoadError: missing files, a config that is not a vocoder's, or weights whose
                names/shapes do not match the config.
        """
        directory = resolve_checkpoint(directory, error=VocoderLoadError)
        raw, state = read_checkpoint(directory, model_type=MODEL_TYPE, map_location=map_location, error=VocoderLoadError)
        try:
            config = VocoderConfig.from_dict(raw)
        except ConfigError as e:
            raise VocoderLoadError(f"{Path(directory) / 'config.json'}: {e}") from e
        model = cls(config)
        check_state(model.state_dict(), state, directory, error=VocoderLoadError)
        model.load_state_dict(state)
        return model.to(map_location).eval()

    @property
    def mel_config(self) -> MelConfig:
        """The mel analysis this vocoder inverts (``config.mel``)."""
        return self.config.mel
