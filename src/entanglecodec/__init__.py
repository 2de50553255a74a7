"""EntangleCodec: a unified single-codebook audio tokenizer aligned with rich captions.

Quick start::

    from entanglecodec import EntangleCodec
    codec = EntangleCodec.from_pretrained()          # bundled default, or a checkpoint directory
    tokens = codec.encode(wav, sample_rate=16000)    # tokens.codes: LongTensor [B, F] at 50 Hz
    audio = codec.decode(tokens)                     # audio.wav: [B, S] at 24 kHz
"""

from .audio import AudioError, load_audio, save_audio
from .codec.model import Audio, CheckpointError, EntangleCodec, TokenError, Tokens, default_checkpoint_dir
from .config import (
    ConfigError,
    DecoderConfig,
    EntangleCodecConfig,
    MelConfig,
    QuantizerConfig,
    TextEncoderConfig,
    TransformerConfig,
)

__version__ = "0.1.0"

__all__ = [
    "Audio",
    "AudioError",
    "CheckpointError",
    "ConfigError",
    "DecoderConfig",
    "EntangleCodec",
    "EntangleCodecConfig",
    "MelConfig",
    "QuantizerConfig",
    "TextEncoderConfig",
    "TokenError",
    "Tokens",
    "TransformerConfig",
    "default_checkpoint_dir",
    "load_audio",
    "save_audio",
    "__version__",
]
