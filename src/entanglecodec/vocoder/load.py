"""The one place a vocoder spec resolves, and copy-synthesis (audio -> log-mel -> vocoder -> audio).

A *vocoder spec* is ``"griffin-lim"`` (aliases ``"griffinlim"``, ``"gl"``), ``"default"``
(``$ENTANGLECODEC_VOCODER``, else the shipped ``checkpoints/vocoder-small``, else Griffin-Lim with
a logged warning), a directory written by :meth:`Vocoder.save_pretrained`, or a Hugging Face Hub
id ``owner/name[@revision]`` (cache-aware, see :func:`~entanglecodec.checkpoint.resolve_checkpoint`). The codec
(``EntangleCodecConfig.vocoder``, ``--vocoder``), the ``vocode`` command, the evaluation's mel
oracle and the vocoder report all resolve specs through :func:`load_vocoder`.

Every result satisfies :class:`MelVocoder`, which carries the :class:`MelConfig` it inverts, so a
caller never has to guess where a vocoder keeps its mel analysis.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..audio import MelFrontend, num_frames
from ..checkpoint import DEFAULT_VOCODER_DIR, resolve_checkpoint, split_repo_id
from ..checkpoint import default_vocoder_dir as find_default_vocoder
from ..config import MelConfig
from .griffin_lim import GriffinLim
from .model import Vocoder, VocoderLoadError

logger = logging.getLogger(__name__)

GRIFFIN_LIM_NAMES = ("griffin-lim", "griffinlim", "gl")


@runtime_checkable
class MelVocoder(Protocol):
    """Anything that turns the codec's log-mel back into audio.

    ``__call__(log_mel [B, n_mels, F], lengths [B] frames or None) -> wav [B, F * hop_length]``,
    with samples past ``lengths[b] * hop_length`` set to zero; ``mel_config`` is the analysis whose
    natural-log power mel it inverts.
    """

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz."""
        ...

    @property
    def hop_length(self) -> int:
        """Output samples per input frame."""
        ...

    @property
    def mel_config(self) -> MelConfig:
        """The mel analysis of the input log-mel."""
        ...

    def __call__(self, log_mel: Tensor, lengths: Tensor | None = None) -> Tensor: ...


def default_vocoder_dir() -> Path | None:
    """:func:`entanglecodec.checkpoint.default_vocoder_dir`, raising :class:`VocoderLoadError`."""
    return find_default_vocoder(error=VocoderLoadError)


def load_vocoder(
    spec: str | Path,
    mel_cfg: MelConfig | None = None,
    device: str | torch.device = "cpu",
    consistency_passes: int | None = None,
    griffin_lim_iters: int = 32,
    fallback: bool = True,
) -> MelVocoder:
    """Resolve a vocoder spec (see the module docstring) to a mel inverter.

    Args:
        spec: ``"griffin-lim"``, ``"default"``, a vocoder checkpoint directory or a Hub id.
        mel_cfg: the mel analysis the caller's log-mels come from (default :class:`MelConfig()`);
            a neural vocoder built for another analysis raises :class:`ConfigError`.
        device: where to put a neural vocoder.
        consistency_passes: override the checkpoint's ``consistency_passes`` (0: the network's
            raw output; ignored for Griffin-Lim).
        griffin_lim_iters: iterations when the spec resolves to Griffin-Lim.
        fallback: with ``"default"`` and no shipped weights, fall back to Griffin-Lim (logged);
            ``False`` raises :class:`VocoderLoadError` instead (for reports that must not mislabel
            a row).

    Returns:
        A :class:`MelVocoder`: a :class:`Vocoder` in eval mode with gradients off, or Griffin-Lim.

    Raises:
        VocoderLoadError: an unknown spec, or an unreadable / mismatched checkpoint.
        ConfigError: the vocoder was built for another mel analysis, or a negative pass count.
    """
    mel_cfg = mel_cfg or MelConfig()
    name = str(spec)
    if name in GRIFFIN_LIM_NAMES:
        return GriffinLim(mel_cfg, n_iter=griffin_lim_iters)
    if name == "default":
        d = default_vocoder_dir()
        if d is None:
            if not fallback:
                raise VocoderLoadError(f"no default vocoder weights are installed ({DEFAULT_VOCODER_DIR})")
            logger.warning(
                "default vocoder weights (%s) not found; falling back to Griffin-Lim (lower quality)",
                DEFAULT_VOCODER_DIR,
            )
            return GriffinLim(mel_cfg, n_iter=griffin_lim_iters)
        path = d
    elif Path(name).exists() or split_repo_id(name) is None:
        path = Path(name)
        if not path.exists():
            raise VocoderLoadError(
                f"vocoder {name!r} is neither 'griffin-lim', 'default', an existing checkpoint directory "
                "nor a Hugging Face repo id 'owner/name'"
            )
    else:
        path = resolve_checkpoint(name, error=VocoderLoadError)
    voc = Vocoder.from_pretrained(path, map_location=device)
    voc.config.check_mel(mel_cfg)
    if consistency_passes is not None:
        voc.config.consistency_passes = int(consistency_passes)
        voc.config.validate()  # a negative count is a ConfigError naming the field
    voc.requires_grad_(False)
    return voc


@torch.inference_mode()
def copy_synthesis(vocoder: MelVocoder, wav: Tensor, frontend: MelFrontend | None = None) -> Tensor:
    """Re-synthesise audio through the log-mel: ``wav [S]`` or ``[B, S]`` -> same shape and length.

    Args:
        vocoder: a :class:`MelVocoder`.
        wav: waveform(s) at ``vocoder.sample_rate`` (a batch is taken as equal-length clips).
        frontend: the log-mel analysis (default: a :class:`MelFrontend` of ``vocoder.mel_config``).

    Returns:
        float32 waveform of the input's shape: ``vocoder(log_mel)`` trimmed to the input length
        (``F = ceil(S / hop)`` frames give ``F * hop >= S`` samples).
    """
    fe = frontend if frontend is not None else MelFrontend(vocoder.mel_config)
    x = wav.float().reshape(-1, wav.shape[-1])
    log_mel = fe.log_mel(x)
    frames = torch.full((x.shape[0],), int(num_frames(x.shape[1], fe.cfg.hop_length)), dtype=torch.long)
    y = vocoder(log_mel, frames.to(log_mel.device))[:, : x.shape[1]].float()
    return y.reshape(wav.shape)


def real_time_factor(seconds_of_audio: float, seconds_of_compute: float) -> float:
    """How many times faster than real time (``audio / compute``); ``inf`` for zero compute."""
    return math.inf if seconds_of_compute <= 0 else seconds_of_audio / seconds_of_compute
