"""Configuration of the Vocos-style vocoder: network sizes plus the mel analysis it inverts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import ConfigError, MelConfig, _from_dict

LEGACY_MEL_KEYS = {
    "sample_rate": "sample_rate",
    "hop_length": "hop_length",
    "n_mels": "n_mels",
    "mel_n_fft": "n_fft",
    "mel_win_length": "win_length",
    "mel_f_min": "f_min",
    "mel_f_max": "f_max",
    "mel_log_floor": "log_floor",
}
"""Flat ``config.json`` / recipe keys of checkpoints written before ``mel`` was nested -> ``MelConfig`` field."""


@dataclass
class VocoderConfig:
    """Size and signal parameters of :class:`~entanglecodec.vocoder.model.Vocoder`.

    Attributes:
        dim: width of the ConvNeXt backbone (channels per frame).
        intermediate_dim: hidden width of each block's pointwise MLP.
        depth: number of ConvNeXt blocks.
        kernel_size: temporal kernel (frames) of the embedding and depthwise convolutions (odd).
        n_fft: size of the *synthesis* FFT in samples (``>= 2 * hop_length``, even); 4 x hop by default.
        input_mean: constant subtracted from the log-mel before the backbone (nats).
        input_scale: factor applied after subtracting ``input_mean``.
        layer_scale_init: initial value of the per-channel residual scale (``None``: ``1 / depth``).
        max_log_magnitude: upper clamp of the predicted log-magnitude (keeps ``exp`` finite).
        magnitude_prior: add a fixed estimate of the log-magnitude computed from the input mel (the
            filterbank pseudo-inverse, interpolated to the synthesis FFT, as Griffin-Lim uses) to
            the predicted log-magnitude: the network then learns phase and magnitude corrections,
            which converges much faster. The estimate has no parameters (rebuilt from the config).
        consistency_passes: passes of the parameter-free mel-consistency filter applied to the
            network's output at inference (0: the network alone). Training never uses it.
        consistency_step: over-relaxation of each pass (1: apply the measured band gain once).
        mel: the mel analysis whose natural-log power mel the vocoder inverts (its ``hop_length``,
            ``n_mels`` and ``sample_rate`` are the vocoder's frame hop, input bins and output rate).
    """

    dim: int = 256
    intermediate_dim: int = 768
    depth: int = 8
    kernel_size: int = 7
    n_fft: int = 1920
    input_mean: float = -4.0
    input_scale: float = 0.25
    layer_scale_init: float | None = None
    max_log_magnitude: float = 8.0
    magnitude_prior: bool = True
    consistency_passes: int = 6
    consistency_step: float = 1.5
    mel: MelConfig = field(default_factory=MelConfig)

    # ------------------------------------------------------------------ the mel analysis
    @property
    def hop_length(self) -> int:
        """Output samples per input frame (``mel.hop_length``)."""
        return self.mel.hop_length

    @property
    def n_mels(self) -> int:
        """Input mel bins (``mel.n_mels``)."""
        return self.mel.n_mels

    @property
    def sample_rate(self) -> int:
        """Output rate in Hz (``mel.sample_rate``)."""
        return self.mel.sample_rate

    def mel_config(self) -> MelConfig:
        """The mel analysis (:class:`MelConfig`) whose ``log_mel`` this vocoder inverts (``mel``)."""
        return self.mel

    def check_mel(self, mel_cfg: MelConfig) -> None:
        """Raise :class:`ConfigError` unless ``mel_cfg`` is the analysis this vocoder was built for."""
        mine, theirs = asdict(self.mel), asdict(mel_cfg)
        diff = [f"{k}: vocoder {mine[k]!r} vs mel {theirs.get(k)!r}" for k in mine if mine[k] != theirs.get(k)]
        if diff:
            raise ConfigError("vocoder was built for a different mel analysis (" + "; ".join(diff) + ")")

    def validate(self) -> None:
        """Raise :class:`ConfigError` for impossible values."""
        if min(self.dim, self.intermediate_dim) <= 0:
            raise ConfigError("vocoder: dim and intermediate_dim must be positive")
        self.mel.validate()
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

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of the fields (``mel`` nested)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VocoderConfig:
        """Build from a mapping; unknown keys or wrong types raise :class:`ConfigError`.

        The flat keys of checkpoints and recipes written before ``mel`` was nested
        (``hop_length``, ``n_mels``, ``sample_rate``, ``mel_n_fft``, ``mel_win_length``,
        ``mel_f_min``, ``mel_f_max``, ``mel_log_floor``) are accepted and moved into ``mel``.
        """
        return _from_dict(cls, nest_legacy_mel_keys(data))


def nest_legacy_mel_keys(data: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``data`` with the flat mel keys of :data:`LEGACY_MEL_KEYS` moved into ``data["mel"]``."""
    if not isinstance(data, dict):
        return data
    out = {k: v for k, v in data.items() if k not in LEGACY_MEL_KEYS}
    flat = {LEGACY_MEL_KEYS[k]: v for k, v in data.items() if k in LEGACY_MEL_KEYS}
    if flat:
        mel = out.get("mel", {})
        if not isinstance(mel, dict):
            raise ConfigError("vocoder config key 'mel' must be a mapping")
        both = sorted(set(mel) & set(flat))
        if both:
            raise ConfigError(f"vocoder config gives {', '.join('mel.' + k for k in both)} twice (flat and nested)")
        out["mel"] = {**mel, **flat}
    return out
