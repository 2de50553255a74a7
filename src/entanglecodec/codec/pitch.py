"""Pitch conditioning of the flow decoder (not in the paper; off by default: ``decoder.pitch_cond``).

Why: the one-step decoder outputs (close to) the conditional average of the mel given the tokens.
When the tokens pin the pitch down only to a few hundred cents, the harmonics of the possible
pitches average out and the decoded mel has no harmonic lines (``reports/codec-diagnosis.md``).
With ``pitch_cond`` on, a small predictor reads voicing and F0 from the code vectors ``Z_q`` (with a
few frames of context) and the decoder is given the mel-domain *harmonic comb* of that single
pitch contour, so it draws harmonics at one committed pitch instead of averaging over many.

- Training: the decoder sees the comb of the tracked F0 of the training crop (teacher forcing), and
  the predictor learns that F0 from ``Z_q`` (its gradient also reaches the encoder through the
  quantizer's straight-through path, pushing the tokens to carry pitch).
- Decoding: the comb of the predictor's F0 (frames voiced where its voicing probability > 0.5);
  :meth:`PitchConditioner.features` with a tracked F0 gives the *oracle* control of the diagnosis.

The log-F0 parameterisation (octaves relative to :data:`F0_REFERENCE_HZ`) and the voicing/F0 loss
are shared with the training-only acoustic-primitive head (``training/aux_losses.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..audio import mel_filterbank
from ..config import MelConfig
from .windowing import PREDICT_CHUNK_FRAMES, PREDICT_CONTEXT_FRAMES, window_plan

F0_REFERENCE_HZ = 200.0  # log-F0 values are octaves relative to this frequency
F0_FLOOR_HZ = 60.0
F0_CEIL_HZ = 900.0


def hz_to_octaves(f0_hz: Tensor) -> Tensor:
    """``log2(f0 / 200 Hz)``; unvoiced frames (0 Hz) map to ``log2(1 / 200)`` and must be masked."""
    return torch.log2(f0_hz.clamp_min(1.0) / F0_REFERENCE_HZ)


_LN2 = math.log(2.0)


def octaves_to_hz(octaves: Tensor) -> Tensor:
    """Inverse of :func:`hz_to_octaves`, clamped to the tracker's range [60, 900] Hz."""
    # 2**x as exp(x ln 2): the same to float32 rounding, and exportable to ONNX (which has no exp2)
    return (F0_REFERENCE_HZ * torch.exp(octaves * _LN2)).clamp(F0_FLOOR_HZ, F0_CEIL_HZ)


def masked_mean(x: Tensor, m: Tensor) -> Tensor:
    """Mean of ``x`` over the entries where the 0/1 weight ``m`` (same shape) is 1."""
    return (x * m).sum() / m.sum().clamp_min(1.0)


def pitch_loss(logit: Tensor, octaves: Tensor, f0_hz: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Voicing BCE + L1 on log-F0 (voiced frames only), and two monitoring values.

    Args:
        logit: voicing logits ``[B, F]``; octaves: predicted ``log2(F0 / 200 Hz)`` ``[B, F]``.
        f0_hz: tracked F0 ``[B, F']`` in Hz (0 = unvoiced), ``F' >= F`` (extra frames ignored).
        mask: ``[B, F]`` True on valid frames.

    Returns: ``vuv`` and ``f0`` (the two loss terms), ``vuv_acc`` (frame accuracy) and ``f0_cents``
    (mean absolute F0 error on voiced frames, cents); the last two carry no gradient.
    """
    f = logit.shape[1]
    f0 = f0_hz[:, :f].to(logit.dtype)
    m = mask.to(logit.dtype)
    voiced = (f0 > 0).to(logit.dtype) * m
    vuv = masked_mean(F.binary_cross_entropy_with_logits(logit, voiced, reduction="none"), m)
    err = (octaves - hz_to_octaves(f0)).abs()
    out = {"vuv": vuv, "f0": masked_mean(err, voiced)}
    with torch.no_grad():
        out["vuv_acc"] = masked_mean(((logit > 0).to(logit.dtype) == voiced).to(logit.dtype), m)
        out["f0_cents"] = 1200.0 * masked_mean(err, voiced)
    return out


class PitchConditioner(nn.Module):
    """Voicing/F0 predictor on ``Z_q`` and the harmonic-comb features the decoder reads.

    Args:
        mel: the codec's mel configuration (the comb is built on the same STFT bins and mel bands).
        cond_dim: ``D_quant``.
        hidden: channels of the predictor's convolutions.
        width_hz: standard deviation of each harmonic's Gaussian peak on the linear frequency axis
            (about one STFT bin: the Hann window's main lobe).
    """

    fb: Tensor  # [n_mels, n_freq] mel filterbank, each band's weights summing to 1
    freqs: Tensor  # [n_freq] STFT bin frequencies in Hz

    def __init__(self, mel: MelConfig, cond_dim: int, hidden: int = 256, width_hz: float | None = None) -> None:
        super().__init__()
        self.n_mels = mel.n_mels
        self.predictor = nn.Sequential(
            nn.Conv1d(cond_dim, hidden, 5, padding=2), nn.GELU(),
            nn.Conv1d(hidden, hidden, 5, padding=2), nn.GELU(),
            nn.Conv1d(hidden, 2, 1),
        )
        fb = mel_filterbank(mel.sample_rate, mel.n_fft, mel.n_mels, mel.f_min, mel.f_max)  # [n_mels, n_freq]
        freqs = torch.linspace(0.0, mel.sample_rate / 2, fb.shape[1])
        self.width_hz = float(width_hz if width_hz is not None else mel.sample_rate / mel.n_fft)
        # Derived from the config, not trained: kept out of the state dict (and the fingerprint's weights).
        self.register_buffer("fb", fb / fb.sum(dim=1, keepdim=True).clamp_min(1e-8), persistent=False)
        self.register_buffer("freqs", freqs, persistent=False)

    @property
    def feature_dim(self) -> int:
        """Size of :meth:`features`' last axis: the comb's ``n_mels`` + voicing + log-F0."""
        return self.n_mels + 2

    def predict(self, zq: Tensor, chunk: int = PREDICT_CHUNK_FRAMES) -> tuple[Tensor, Tensor]:
        """``Z_q [B, F, D_quant]`` -> (voicing logits ``[B, F]``, ``log2(F0 / 200 Hz)`` ``[B, F]``).

        Clips longer than ``chunk + 2 * PREDICT_CONTEXT_FRAMES`` frames are predicted in the windows of
        :func:`~.windowing.window_plan`, keeping ``chunk`` frames of each with
        :data:`PREDICT_CONTEXT_FRAMES` of context on both sides (more than the two 5-tap convolutions
        see), so the hidden activations stay bounded (``hidden`` x the window) and the result is the
        whole-clip one up to float rounding.
        """
        width = chunk + 2 * PREDICT_CONTEXT_FRAMES
        parts = []
        for start, keep_s, keep_e in window_plan(zq.shape[1], width, PREDICT_CONTEXT_FRAMES):
            y = self.predictor(zq[:, start : start + width].transpose(1, 2))
            parts.append(y[:, :, keep_s - start : keep_e - start])
        y = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        return y[:, 0], y[:, 1]

    def comb(self, f0_hz: Tensor) -> Tensor:
        """Mel-domain harmonic comb ``[B, F, n_mels]`` in [0, 1] of F0 contours ``[B, F]`` (Hz, > 0).

        On the linear axis each STFT bin takes ``exp(-d^2 / 2 w^2)`` with ``d`` its distance to the
        nearest harmonic ``k F0`` (k >= 1); each mel band then averages its bins with the filterbank's
        weights. Low bands show the resolved harmonics, high bands tend to their mean.
        """
        f0 = f0_hz.clamp(F0_FLOOR_HZ, F0_CEIL_HZ)[..., None]  # [B, F, 1]
        k = torch.round(self.freqs / f0).clamp_min(1.0)  # [B, F, n_freq]
        d = self.freqs - k * f0
        lin = torch.exp(-0.5 * (d / self.width_hz) ** 2)
        return lin @ self.fb.T.to(lin.dtype)

    def features(self, f0_hz: Tensor, voiced: Tensor) -> Tensor:
        """Decoder conditioning ``[B, F, n_mels + 2]``: comb x voicing, voicing, log-F0 x voicing.

        Args:
            f0_hz: ``[B, F]`` Hz (ignored where unvoiced); voiced: ``[B, F]`` bool or 0/1.
        """
        v = voiced.to(self.fb.dtype)
        f0 = torch.where(v > 0, f0_hz.to(v.dtype), torch.full_like(v, F0_REFERENCE_HZ))
        return torch.cat([self.comb(f0) * v[..., None], v[..., None], (hz_to_octaves(f0) * v)[..., None]], dim=-1)

    def from_codes(self, zq: Tensor) -> Tensor:
        """The decode-time conditioning: :meth:`features` of the predicted contour of ``Z_q [B, F, D_quant]``."""
        logit, octaves = self.predict(zq)
        return self.features(octaves_to_hz(octaves), logit > 0)

    def loss(self, zq: Tensor, f0_hz: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """:func:`pitch_loss` of the predictor on ``Z_q [B, F, D_quant]`` against tracked ``f0_hz [B, F']``."""
        logit, octaves = self.predict(zq)
        return pitch_loss(logit, octaves, f0_hz, mask)


def pulse_excitation(f0_hz: Tensor, voiced: Tensor, hop: int, sample_rate: int, start: int = 0,
                     length: int | None = None, interpolate: bool = False) -> Tensor:  # fmt: skip
    """Unit pulses one F0 period apart where the contour is voiced, zeros elsewhere (float32).

    ``f0_hz [B, F]`` (Hz, clamped to [``F0_FLOOR_HZ``, ``F0_CEIL_HZ``]) and ``voiced [B, F]`` (bool)
    are frame values at the frame centres ``f * hop``; a sample is voiced when its nearest frame is.
    The F0 of a sample is its nearest frame's (``interpolate=False``, piecewise constant) or the
    straight line between the two frame centres around it (``interpolate=True``; only between two
    voiced frames — next to an unvoiced frame the voiced one's F0 is held). The pulse phase runs
    continuously from sample 0 (float64 cycles), so any segment ``[start, start + length)``
    (``length`` default: to ``F * hop``) equals that slice of the whole train: a windowed vocoder
    gets the same excitation as one pass over the file, in memory bounded by the window.

    Returns:
        ``[B, length]`` float32.
    """
    n_frames = f0_hz.shape[-1]
    total = n_frames * hop
    length = total - start if length is None else length
    if start < 0 or length < 0 or start + length > total:
        raise ValueError(f"segment [{start}, {start + length}) outside the {total} samples of {n_frames} frames")
    f0 = f0_hz.double().clamp(F0_FLOOR_HZ, F0_CEIL_HZ)
    v = voiced.bool()
    n = torch.arange(start, start + length, device=f0.device)
    near = torch.div(n + hop // 2, hop, rounding_mode="floor").clamp_max(n_frames - 1)  # nearest frame
    if interpolate:
        # segment s = [s*hop, (s+1)*hop) between centres s and s+1: F0 = base_s + slope_s * k / hop
        nxt_f0, nxt_v = torch.cat([f0[:, 1:], f0[:, -1:]], -1), torch.cat([v[:, 1:], torch.zeros_like(v[:, -1:])], -1)
        base = torch.where(~v & nxt_v, nxt_f0, f0)
        slope = torch.where(v & nxt_v, nxt_f0 - f0, torch.zeros_like(f0))
        s0 = min(start // hop, n_frames - 1)
        m = start - s0 * hop  # samples of segment s0 before `start`
        full = (hop * base[:, :s0] + slope[:, :s0] * ((hop - 1) / 2)).sum(-1, keepdim=True)
        part = m * base[:, s0 : s0 + 1] + slope[:, s0 : s0 + 1] * (m * (m - 1) / (2 * hop))
        offset = (full + part) / sample_rate  # cycles at `start`, [B, 1]
        seg = torch.div(n, hop, rounding_mode="floor").clamp_max(n_frames - 1)
        per_sample = base[:, seg] + slope[:, seg] * ((n - seg * hop).double() / hop)
    else:
        # samples before `start` in each frame's span [f*hop - hop/2, f*hop + hop/2) (frame 0 from sample 0)
        edges = (torch.arange(n_frames + 1, dtype=torch.float64, device=f0.device) - 0.5) * hop
        edges = edges.ceil().clamp(0, total)
        edges[-1] = total
        before = (edges[1:].clamp(max=start) - edges[:-1].clamp(max=start)).clamp_min(0)  # [F]
        offset = (f0 * before).sum(-1, keepdim=True) / sample_rate  # cycles at `start`, [B, 1]
        per_sample = f0[:, near]
    cycles = offset + torch.cumsum(per_sample, dim=-1) / sample_rate  # after each sample, [B, length]
    prev = torch.cat([offset, cycles[:, :-1]], dim=-1)
    pulses = (torch.floor(cycles) > torch.floor(prev)) & v[:, near]
    return pulses.float()


__all__ = [
    "F0_CEIL_HZ", "F0_FLOOR_HZ", "F0_REFERENCE_HZ", "PitchConditioner", "hz_to_octaves", "masked_mean",
    "octaves_to_hz", "pitch_loss", "pulse_excitation",
]
