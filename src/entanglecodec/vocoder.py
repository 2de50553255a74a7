"""Vocos-style neural vocoder: log-mel ``[B, n_mels, F]`` -> waveform ``[B, F * hop]``.

A ConvNeXt backbone runs at the mel frame rate (50 Hz for the codec's mel) and a linear head
predicts, for every frame, the log-magnitude and the phase of an ``n_fft``-point spectrum; an
inverse STFT (overlap-add with least-squares window normalisation) turns them into audio. The
design follows the Vocos paper (Siuzdenko et al., 2023); the code is our own.

Frame arithmetic matches :class:`entanglecodec.audio.MelFrontend` exactly: frame ``f`` is centred on
sample ``f * hop`` and ``F`` frames give ``F * hop`` samples. The input is the *un-normalised*
natural-log power mel of :meth:`MelFrontend.log_mel` (not the codec's per-bin normalised mel).

At inference the network's output goes through a few passes of the parameter-free
:class:`~entanglecodec.mel_consistency.MelConsistencyFilter`, which rescales it band by band until
its mel matches the input mel (``consistency_passes`` in the config; 0 gives the network alone,
which is also what training optimises).

Padding invariance: every temporal operation (the embedding convolution and the depthwise
convolutions of the ConvNeXt blocks) sees exact zeros past an item's last valid frame, and the
inverse STFT drops the invalid frames (also from the window normalisation), so a padded batch gives
the same samples as decoding each item alone.

Also here: :class:`MelVocoder` (the protocol the codec uses for any mel inverter) and
:func:`load_vocoder` (``"griffin-lim"``, ``"default"`` or a checkpoint directory).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .audio import lengths_to_mask
from .config import ConfigError, MelConfig, _from_dict
from .mel_consistency import MelConsistencyFilter

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "entanglecodec-vocoder"
DEFAULT_VOCODER_DIR = "checkpoints/vocoder-small"


class VocoderLoadError(ValueError):
    """A vocoder checkpoint is missing, unreadable, or its weights do not match its config."""


@dataclass
class VocoderConfig:
    """Size and signal parameters of :class:`Vocoder`.

    Attributes:
        dim: width of the ConvNeXt backbone (channels per frame).
        intermediate_dim: hidden width of each block's pointwise MLP.
        depth: number of ConvNeXt blocks.
        kernel_size: temporal kernel (frames) of the embedding and depthwise convolutions (odd).
        n_fft: size of the synthesis FFT in samples (``>= 2 * hop_length``, even); 4 x hop by default.
        hop_length: samples per mel frame (480 at 24 kHz -> 50 Hz).
        n_mels: mel bins of the input.
        sample_rate: output sample rate in Hz.
        input_mean: constant subtracted from the log-mel before the backbone (nats).
        input_scale: factor applied after subtracting ``input_mean``.
        layer_scale_init: initial value of the per-channel residual scale (``None``: ``1 / depth``).
        max_log_magnitude: upper clamp of the predicted log-magnitude (keeps ``exp`` finite).
        magnitude_prior: add a fixed estimate of the log-magnitude computed from the input mel (the
            filterbank pseudo-inverse, interpolated to the synthesis FFT, as Griffin-Lim uses) to
            the predicted log-magnitude: the network then learns phase and magnitude corrections,
            which converges much faster. The estimate has no parameters (rebuilt from the config).
        mel_n_fft: FFT size of the mel analysis the vocoder expects as input.
        mel_win_length: window length of that analysis.
        mel_f_min: lowest mel filter edge in Hz.
        mel_f_max: highest mel filter edge in Hz (``None``: Nyquist).
        mel_log_floor: power floor of the input log-mel.
        consistency_passes: passes of the parameter-free :class:`MelConsistencyFilter` applied to
            the network's output at inference (0: the network alone). Training never uses it.
        consistency_step: over-relaxation of each pass (1: apply the measured band gain once).
    """

    dim: int = 256
    intermediate_dim: int = 768
    depth: int = 8
    kernel_size: int = 7
    n_fft: int = 1920
    hop_length: int = 480
    n_mels: int = 128
    sample_rate: int = 24000
    input_mean: float = -4.0
    input_scale: float = 0.25
    layer_scale_init: float | None = None
    max_log_magnitude: float = 8.0
    magnitude_prior: bool = True
    mel_n_fft: int = 1024
    mel_win_length: int = 1024
    mel_f_min: float = 0.0
    mel_f_max: float | None = None
    mel_log_floor: float = 1e-5
    consistency_passes: int = 6
    consistency_step: float = 1.5

    def validate(self) -> None:
        """Raise :class:`ConfigError` for impossible values."""
        if min(self.dim, self.intermediate_dim, self.hop_length, self.n_mels, self.sample_rate) <= 0:
            raise ConfigError("vocoder: dim, intermediate_dim, hop_length, n_mels and sample_rate must be positive")
        if self.depth < 0:
            raise ConfigError(f"vocoder: depth must be >= 0, got {self.depth}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"vocoder: kernel_size must be odd and positive, got {self.kernel_size}")
        if self.n_fft % 2 != 0 or self.n_fft < 2 * self.hop_length:
            raise ConfigError(
                f"vocoder: n_fft must be even and >= 2 * hop_length ({2 * self.hop_length}), got {self.n_fft}"
            )
        if self.input_scale <= 0:
            raise ConfigError("vocoder: input_scale must be positive")
        if self.consistency_passes < 0 or self.consistency_step <= 0:
            raise ConfigError(
                "vocoder: consistency_passes must be >= 0 and consistency_step > 0, got "
                f"{self.consistency_passes} and {self.consistency_step}"
            )

    # ------------------------------------------------------------------ presets
    @staticmethod
    def presets() -> list[str]:
        """Names accepted by :meth:`preset`."""
        return ["tiny", "small", "base"]

    @classmethod
    def preset(cls, name: str) -> VocoderConfig:
        """``tiny`` (tests), ``small`` (CPU: the shipped default) or ``base`` (Vocos-sized, 512 x 8)."""
        if name == "tiny":
            return cls(dim=32, intermediate_dim=64, depth=1)
        if name == "small":
            return cls(dim=256, intermediate_dim=768, depth=8)
        if name == "base":
            return cls(dim=512, intermediate_dim=1536, depth=8)
        raise ConfigError(f"unknown vocoder preset {name!r}; choose one of {cls.presets()}")

    # ------------------------------------------------------------------ mel helpers
    def mel_config(self) -> MelConfig:
        """The mel analysis (:class:`MelConfig`) whose ``log_mel`` this vocoder inverts."""
        return MelConfig(
            sample_rate=self.sample_rate,
            n_fft=self.mel_n_fft,
            win_length=self.mel_win_length,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            f_min=self.mel_f_min,
            f_max=self.mel_f_max,
            log_floor=self.mel_log_floor,
        )

    def check_mel(self, mel_cfg: MelConfig) -> None:
        """Raise :class:`ConfigError` unless ``mel_cfg`` is the analysis this vocoder was built for."""
        mine = asdict(self.mel_config())
        theirs = asdict(mel_cfg)
        diff = [f"{k}: vocoder {mine[k]!r} vs mel {theirs.get(k)!r}" for k in mine if mine[k] != theirs.get(k)]
        if diff:
            raise ConfigError("vocoder was built for a different mel analysis (" + "; ".join(diff) + ")")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VocoderConfig:
        """Build from a mapping; unknown keys or wrong types raise :class:`ConfigError`."""
        return _from_dict(cls, data)


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
        spec = torch.polar(mag, phase)  # complex [B, T, n_fft/2+1]
        frames = torch.fft.irfft(spec, n=n_fft, dim=-1) * self.window  # [B, T, n_fft]
        m = torch.ones(b, t, 1, dtype=frames.dtype, device=frames.device) if mask is None else mask.to(frames.dtype)[:, :, None]
        if mask is not None:
            frames = frames * m
        wsq = self.window.square()
        if n_fft % hop == 0:
            # overlap-add as k shifted sums of hop-sized chunks (much faster than fold on CPU)
            k = n_fft // hop
            chunks = frames.reshape(b, t, k, hop)
            y = frames.new_zeros(b, t + k - 1, hop)
            env = frames.new_zeros(b, t + k - 1, hop)
            wchunks = wsq.reshape(k, hop)
            for j in range(k):
                y[:, j : j + t] += chunks[:, :, j]
                env[:, j : j + t] += m * wchunks[j]
            y, env = y.reshape(b, -1), env.reshape(b, -1)
        else:
            total = (t - 1) * hop + n_fft
            wsq_frames = wsq.expand(b, t, n_fft) * m
            kw: dict[str, Any] = {"output_size": (1, total), "kernel_size": (1, n_fft), "stride": (1, hop)}
            y = F.fold(frames.transpose(1, 2), **kw).reshape(b, total)
            env = F.fold(wsq_frames.transpose(1, 2), **kw).reshape(b, total)
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
    from .audio import mel_filterbank

    mc = config.mel_config()
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
@runtime_checkable
class MelVocoder(Protocol):
    """Anything that turns the codec's log-mel back into audio.

    ``__call__(log_mel [B, n_mels, F], lengths [B] frames or None) -> wav [B, F * hop_length]``,
    with samples past ``lengths[b] * hop_length`` set to zero.
    """

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz."""
        ...

    @property
    def hop_length(self) -> int:
        """Output samples per input frame."""
        ...

    def __call__(self, log_mel: Tensor, lengths: Tensor | None = None) -> Tensor: ...


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
        self.consistency = MelConsistencyFilter(config.mel_config())
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
        self, log_mel: Tensor, lengths: Tensor | None = None, consistency_passes: int | None = None
    ) -> Tensor:
        """Synthesise audio.

        Args:
            log_mel: natural-log power mel ``[B, n_mels, F]`` (as :meth:`MelFrontend.log_mel`).
            lengths: valid frames per item ``[B]`` (``None``: all ``F``). Frames past an item's
                length never influence its samples.
            consistency_passes: passes of the mel-consistency filter (``None``:
                ``config.consistency_passes``; 0: the network's raw output, as in training).

        Returns:
            Waveform ``[B, F * hop_length]`` float32; samples past ``lengths * hop_length`` are 0.
        """
        lens = self._check_input(log_mel, lengths)
        b, _, t = log_mel.shape
        fmask = None if lens is None else lengths_to_mask(lens, t)  # [B, T] bool
        cmask = None if fmask is None else fmask[:, None, :].to(log_mel.dtype)
        x = (log_mel - self.config.input_mean) * self.config.input_scale
        if cmask is not None:
            x = x * cmask
        x = self.norm_in(self.embed(x))
        for block in self.blocks:
            x = block(x, cmask)
        h = self.norm_out(x.transpose(1, 2))  # [B, T, dim]
        wav = self.head(h, fmask, self.magnitude_prior(log_mel))
        if lens is not None:
            wav = wav * lengths_to_mask(lens * self.hop_length, wav.shape[1]).to(wav.dtype)
        passes = self.config.consistency_passes if consistency_passes is None else int(consistency_passes)
        if passes > 0:
            wav = self.consistency(wav, log_mel, lens, passes, self.config.consistency_step)
        return wav

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
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed)."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = {"model_type": MODEL_TYPE, **self.config.to_dict()}
        (d / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(d / WEIGHTS_NAME), metadata={"format": "pt", "model_type": MODEL_TYPE})
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> Vocoder:
        """Load a vocoder saved by :meth:`save_pretrained`.

        Raises:
            VocoderLoadError: missing files, a config that is not a vocoder's, or weights whose
                names/shapes do not match the config.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        d = Path(directory)
        cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
        if not d.is_dir():
            raise VocoderLoadError(f"{d}: vocoder checkpoint directory not found")
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise VocoderLoadError(f"{p}: missing (a vocoder checkpoint needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            raw = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise VocoderLoadError(f"{cfg_path}: not valid JSON ({e})") from e
        if not isinstance(raw, dict):
            raise VocoderLoadError(f"{cfg_path}: expected a JSON object")
        mtype = raw.pop("model_type", MODEL_TYPE)
        if mtype != MODEL_TYPE:
            raise VocoderLoadError(f"{cfg_path}: model_type is {mtype!r}, not {MODEL_TYPE!r}")
        try:
            config = VocoderConfig.from_dict(raw)
        except ConfigError as e:
            raise VocoderLoadError(f"{cfg_path}: {e}") from e
        model = cls(config)
        try:
            state = load_file(str(w_path), device=str(map_location))
        except (SafetensorError, OSError, RuntimeError) as e:
            raise VocoderLoadError(f"{w_path}: cannot read safetensors weights ({e})") from e
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        bad_shape = [
            f"{k} {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
            for k in expected
            if k in state and state[k].shape != expected[k].shape
        ]
        if missing or unexpected or bad_shape:
            parts = []
            if missing:
                parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
            if unexpected:
                parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
            if bad_shape:
                parts.append(f"shape mismatch {bad_shape[:5]}{' ...' if len(bad_shape) > 5 else ''}")
            raise VocoderLoadError(f"{w_path} does not match {cfg_path}: " + "; ".join(parts))
        model.load_state_dict(state)
        return model.to(map_location).eval()


# ---------------------------------------------------------------------------------------------
# Loading by name
# ---------------------------------------------------------------------------------------------
def default_vocoder_dir() -> Path | None:
    """Directory of the shipped default vocoder, or ``None`` if it is not installed.

    Looked up in ``$ENTANGLECODEC_VOCODER`` first, then ``checkpoints/vocoder-small`` under the
    repository root (three levels above this file in a source checkout) and under the current
    working directory.
    """
    import os

    env = os.environ.get("ENTANGLECODEC_VOCODER")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [here.parents[2] / DEFAULT_VOCODER_DIR, here.parent / DEFAULT_VOCODER_DIR, Path.cwd() / DEFAULT_VOCODER_DIR]
    for c in candidates:
        if (c / CONFIG_NAME).is_file() and (c / WEIGHTS_NAME).is_file():
            return c
    return None


def _griffin_lim(mel_cfg: MelConfig) -> MelVocoder:
    from .griffin_lim import GriffinLim

    return GriffinLim(mel_cfg)


def load_vocoder(
    spec: str | Path,
    mel_cfg: MelConfig | None = None,
    device: str | torch.device = "cpu",
    consistency_passes: int | None = None,
) -> MelVocoder:
    """Return a mel inverter for the codec.

    Args:
        spec: ``"griffin-lim"``; ``"default"`` (the shipped ``checkpoints/vocoder-small``, or
            Griffin-Lim with a logged warning when those weights are not installed); or a
            directory written by :meth:`Vocoder.save_pretrained`.
        mel_cfg: the mel analysis the caller's log-mels come from (default :class:`MelConfig()`);
            a neural vocoder built for another analysis raises :class:`ConfigError`.
        device: where to put a neural vocoder.
        consistency_passes: override the checkpoint's ``consistency_passes`` (0: the network's
            raw output; ignored for Griffin-Lim).

    Returns:
        A :class:`MelVocoder` (a :class:`Vocoder` in eval mode with gradients off, or Griffin-Lim).
    """
    mel_cfg = mel_cfg or MelConfig()
    name = str(spec)
    if name in ("griffin-lim", "griffinlim", "gl"):
        return _griffin_lim(mel_cfg)
    if name == "default":
        d = default_vocoder_dir()
        if d is None:
            logger.warning(
                "default vocoder weights (%s) not found; falling back to Griffin-Lim (lower quality)",
                DEFAULT_VOCODER_DIR,
            )
            return _griffin_lim(mel_cfg)
        path = d
    else:
        path = Path(name)
        if not path.exists():
            raise VocoderLoadError(
                f"vocoder {name!r} is neither 'griffin-lim', 'default' nor an existing checkpoint directory"
            )
    voc = Vocoder.from_pretrained(path, map_location=device)
    voc.config.check_mel(mel_cfg)
    if consistency_passes is not None:
        voc.config.consistency_passes = int(consistency_passes)
        voc.config.validate()  # a negative count is a ConfigError naming the field
    voc.requires_grad_(False)
    return voc


def real_time_factor(seconds_of_audio: float, seconds_of_compute: float) -> float:
    """How many times faster than real time (``audio / compute``); ``inf`` for zero compute."""
    return math.inf if seconds_of_compute <= 0 else seconds_of_audio / seconds_of_compute
