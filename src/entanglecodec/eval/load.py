"""What every evaluation loads: its clips (:func:`load_clip`) and the codec it measures (:func:`load_codec`).

Manifests are read by :mod:`entanglecodec.data.manifest` (the package's one manifest reader).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..codec.model import EntangleCodec

SAMPLE_RATE = 24000
"""Rate (Hz) at which evaluation clips are loaded (the codec's rate)."""


def load_clip(path: str | Path, max_seconds: float | None = None, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``float32 [S]`` mono waveform of an audio file at ``sample_rate`` Hz, cut to its first ``max_seconds``.

    Raises:
        AudioError (a ``ValueError``): unreadable file, named in the message.
        ValueError: the (cut) clip holds no sample.
    """
    from ..audio import load_audio

    wav, _ = load_audio(path, sample_rate)
    if max_seconds is not None:
        wav = wav[: int(round(max_seconds * sample_rate))]
    if wav.size == 0:
        raise ValueError(f"{path}: empty audio")
    return np.ascontiguousarray(wav, dtype=np.float32)


@dataclass
class LoadedCodec:
    """A codec to evaluate and where it came from (for the report).

    Attributes:
        model: the codec, in eval mode.
        source: ``"checkpoint DIR"``, ``"bundled default model"`` or ``"randomly initialised `P` preset"``.
        trained: ``False`` for a randomly initialised preset (reports must say so).
        note: why a random preset was used instead of trained weights (empty otherwise).
    """

    model: EntangleCodec
    source: str
    trained: bool
    note: str = ""


def load_codec(
    checkpoint: str | Path | None,
    preset: str | None = None,
    seed: int = 0,
    bundled: bool = True,
    text_encoder: bool = True,
) -> LoadedCodec:
    """The codec an evaluation measures: ``checkpoint``; else the bundled default model (when
    ``bundled``); else a ``preset`` initialised randomly with ``seed`` (clearly labelled).

    ``text_encoder=False`` skips the caption encoder (not needed to encode or decode).

    Raises:
        CheckpointError (a ``ValueError``): an unusable checkpoint directory.
        ValueError: neither a checkpoint, the bundled model nor a preset is available.
    """
    import torch

    from ..codec.model import CheckpointError, EntangleCodec
    from ..config import EntangleCodecConfig

    if checkpoint is not None:
        model = EntangleCodec.from_pretrained(checkpoint, build_text_encoder=text_encoder)
        return LoadedCodec(model.eval(), f"checkpoint {checkpoint}", True)
    why = "the bundled model was not requested"
    if bundled:
        try:
            model = EntangleCodec.from_pretrained(None, build_text_encoder=text_encoder)
            return LoadedCodec(model.eval(), "bundled default model", True)
        except CheckpointError as e:
            why = f"no bundled model ({str(e).split(':')[0]})"
    if preset is None:
        raise ValueError(f"no model to evaluate: {why} and no preset given")
    torch.manual_seed(seed)
    model = EntangleCodec(EntangleCodecConfig.preset(preset), build_text_encoder=text_encoder)
    return LoadedCodec(model.eval(), f"randomly initialised `{preset}` preset", False, why)
