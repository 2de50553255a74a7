"""EntangleCodec: a unified single-codebook audio tokenizer aligned with rich captions.

Quick start::

    from entanglecodec import EntangleCodec
    codec = EntangleCodec.from_pretrained()          # bundled default, a directory or a Hub repo id
    tokens = codec.encode(wav, sample_rate=16000)    # tokens.codes: LongTensor [B, F] at 50 Hz
    audio = codec.decode(tokens)                     # audio.wav: [B, S] at 24 kHz

``import entanglecodec`` is cheap: the configuration classes are plain dataclasses, and the names
that need torch (the model, audio I/O) are imported on first access (PEP 562), so the command
line starts without loading torch for ``--help``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import (
    ConfigError,
    DecoderConfig,
    EntangleCodecConfig,
    MelConfig,
    QuantizerConfig,
    TextEncoderConfig,
    TransformerConfig,
)

if TYPE_CHECKING:
    from .audio import AudioError, load_audio, save_audio
    from .checkpoint import CheckpointError, default_checkpoint_dir
    from .codec.model import Audio, EntangleCodec, TokenError, Tokens

__version__ = "0.1.0"

_LAZY = {
    "AudioError": ".audio",
    "load_audio": ".audio",
    "save_audio": ".audio",
    "Audio": ".codec.model",
    "CheckpointError": ".checkpoint",
    "EntangleCodec": ".codec.model",
    "TokenError": ".codec.model",
    "Tokens": ".codec.model",
    "default_checkpoint_dir": ".checkpoint",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
