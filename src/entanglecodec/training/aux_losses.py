"""Training-only auxiliary signals that reach the encoder directly (not in the paper; off by default).

Two switches of the recipe's ``loss`` section, both weights (0 = off, the paper's recipe):

``primitives``
    Per-frame acoustic-primitive supervision of the pre-quantisation features ``h~`` — the idea of
    UniAudio-Token's Semantic-Acoustic Primitives: a small head reads voicing, log-F0 and frame
    energy from ``h~ [B, F, D_quant]``. Targets: voicing and F0 from WORLD's DIO + StoneMask tracker
    on the training crop (computed in the data workers, :class:`PitchCollate`), energy from the mel.
    It makes pitch linearly present in the features that are quantised.
``mel_regression``
    A direct frame-wise mel regression from ``Z_q``: a small convolutional head predicts the
    normalised mel from the code vectors, L1 loss. Its gradient reaches the encoder through the
    quantizer's straight-through path without going through the flow decoder.

``semantic``
    Semantic distillation: a small convolutional head predicts a speech recogniser's encoder frame
    (Whisper, :mod:`~entanglecodec.data.semantic`) from ``Z_q``; loss ``1 - cosine`` against the
    standardised teacher frame, on speech frames only. Its gradient also reaches the encoder
    through the straight-through path.

The heads live in the Lightning module, never in the exported model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..codec.pitch import F0_CEIL_HZ, F0_FLOOR_HZ, masked_mean, pitch_loss
from ..data.dataset import collate_audio

TRACK_RATE = 16000  # Hz at which F0 is tracked


def frame_f0(wav: np.ndarray, sample_rate: int, hop_length: int, n_frames: int) -> np.ndarray:
    """F0 in Hz of each mel frame (0 = unvoiced) with WORLD's DIO (4x decimated) + StoneMask at 16 kHz.

    Args:
        wav: ``[S]`` float waveform at ``sample_rate``.
        hop_length: samples per frame; frame ``f`` is centred on sample ``f * hop_length``.
        n_frames: frames to return (zero-padded or trimmed).

    Returns: ``[n_frames]`` float32.
    """
    import pyworld
    import soxr

    out = np.zeros(n_frames, dtype=np.float32)
    if wav.size < hop_length * 2 or not np.any(wav):
        return out
    period_ms = 1000.0 * hop_length / sample_rate
    # Tracked at 16 kHz with DIO's 4x decimation: ~17x faster than at 24 kHz (it runs in the data
    # workers on every training crop), accurate enough for supervision.
    rate = min(sample_rate, TRACK_RATE)
    x = np.ascontiguousarray(soxr.resample(wav, sample_rate, rate) if rate != sample_rate else wav, dtype=np.float64)
    f0, times = pyworld.dio(x, rate, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=period_ms, speed=4)
    f0 = pyworld.stonemask(x, f0, times, rate)
    n = min(n_frames, f0.size)
    out[:n] = f0[:n]
    return out


class PitchCollate:
    """``collate_audio`` plus per-frame F0 targets ``f0 [B, F]`` (Hz, 0 = unvoiced), F = ceil(S / hop).

    Picklable, so it runs in the data-loader workers.
    """

    def __init__(self, sample_rate: int, hop_length: int) -> None:
        self.sample_rate = sample_rate
        self.hop_length = hop_length

    def __call__(self, batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out = collate_audio(batch)
        wav, lengths = out["wav"], out["lengths"]
        n_frames = math.ceil(wav.shape[1] / self.hop_length)
        f0 = np.zeros((wav.shape[0], n_frames), dtype=np.float32)
        for i in range(wav.shape[0]):
            n = int(lengths[i])
            f0[i] = frame_f0(wav[i, :n].numpy(), self.sample_rate, self.hop_length, n_frames)
        out["f0"] = torch.from_numpy(f0)
        return out


class PrimitiveHead(nn.Module):
    """``h~ [B, F, D_quant]`` -> voicing logit, log2(F0 / 200 Hz) and frame energy, each ``[B, F]``."""

    def __init__(self, in_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 3))

    def forward(self, feats: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        y = self.net(feats)
        return y[..., 0], y[..., 1], y[..., 2]

    def loss(self, feats: Tensor, f0: Tensor, mel: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Args: ``feats`` h~ ``[B, F, D]``; ``f0 [B, F]`` Hz (0 unvoiced); normalised ``mel [B, n_mels, F]``;
        ``mask [B, F]``. Returns ``prim`` (sum of the three terms), ``prim_vuv_acc`` and
        ``prim_f0_cents`` (mean absolute F0 error on voiced frames, in cents)."""
        m = mask.to(feats.dtype)
        logit, logf0, energy = self(feats)
        p = pitch_loss(logit, logf0, f0, mask)
        energy_loss = masked_mean((energy - mel.mean(dim=1)).abs(), m)
        return {"prim": p["vuv"] + p["f0"] + energy_loss, "prim_vuv_acc": p["vuv_acc"], "prim_f0_cents": p["f0_cents"]}


class MelRegressionHead(nn.Module):
    """``Z_q [B, F, D_quant]`` -> normalised mel ``[B, n_mels, F]`` (two convolutions of width 3)."""

    def __init__(self, in_dim: int, n_mels: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(in_dim, hidden, 3, padding=1), nn.GELU(), nn.Conv1d(hidden, n_mels, 3, padding=1)
        )

    def loss(self, zq: Tensor, mel: Tensor, mask: Tensor) -> Tensor:
        """Masked L1 between the head's mel and the target ``mel [B, n_mels, F]``."""
        pred = self.net(zq.transpose(1, 2))
        m = mask[:, None, :].to(mel.dtype)
        return ((pred - mel).abs() * m).sum() / (m.sum() * mel.shape[1]).clamp_min(1.0)


class SemanticHead(nn.Module):
    """``Z_q [B, F, D_quant]`` -> teacher frames ``[B, F, D_teacher]`` (convolutions of width 5, 3 and 1).

    Args:
        in_dim: ``D_quant``; out_dim: the teacher's size; mean / std: ``[D_teacher]`` statistics of the
            teacher frames (``semantic.json``) that standardise the targets.
        basis: ``[dims, D_teacher]`` principal axes when the targets are the reduced coefficients
            ``[B, F, dims]`` of standardised frames (``semantic.json``'s ``reduced``): they map back
            through it instead of being standardised.
    """

    mean: Tensor
    std: Tensor
    basis: Tensor | None

    def __init__(self, in_dim: int, out_dim: int, mean: Sequence[float], std: Sequence[float], hidden: int = 256,
                 basis: Sequence[Sequence[float]] | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(in_dim, hidden, 5, padding=2), nn.GELU(),
            nn.Conv1d(hidden, hidden, 3, padding=1), nn.GELU(),
            nn.Conv1d(hidden, out_dim, 1),
        )
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).clamp_min(1e-4), persistent=False)
        b = None if basis is None else torch.tensor([list(r) for r in basis], dtype=torch.float32)
        if b is not None and (b.ndim != 2 or b.shape[1] != out_dim):
            raise ValueError(f"semantic basis must be [dims, {out_dim}], got {list(b.shape)}")
        self.register_buffer("basis", b, persistent=False)

    def loss(self, zq: Tensor, target: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Masked ``1 - cos`` between the head's frames and the standardised ``target [B, F, D_teacher]``
        (or ``[B, F, dims]`` coefficients with a ``basis``).

        Frames whose raw target is all zero (clips without speech, padding) and frames outside ``mask
        [B, F]`` are skipped. Returns ``sem`` (the loss) and ``sem_cos`` (mean cosine, no gradient).
        """
        pred = self.net(zq.transpose(1, 2)).transpose(1, 2)
        n = min(pred.shape[1], target.shape[1])
        pred, target = pred[:, :n], target[:, :n].to(pred.dtype)
        m = (mask[:, :n] & (target.abs().sum(dim=-1) > 0)).to(pred.dtype)
        goal = (target - self.mean) / self.std if self.basis is None else target @ self.basis.to(pred.dtype)
        cos = F.cosine_similarity(pred, goal, dim=-1, eps=1e-6)
        loss = masked_mean(1.0 - cos, m) if bool(m.sum() > 0) else pred.sum() * 0.0
        return {"sem": loss, "sem_cos": (1.0 - loss).detach()}
