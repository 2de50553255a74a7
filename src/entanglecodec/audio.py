"""Audio front end: loading, down-mixing, resampling and the log-mel spectrogram (paper App. B.1).

Conventions: waveforms are ``float32`` in ``[-1, 1]`` shaped ``[B, S]`` with ``lengths`` in samples;
mels are ``[B, n_mels, F]`` with ``F = ceil(S / hop)``; masks are ``True`` where valid.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .audio_io import BLOCK_SECONDS as BLOCK_SECONDS  # the file I/O lives in .audio_io (torch-free)
from .audio_io import MIN_SECONDS as MIN_SECONDS
from .audio_io import PEAK_LIMIT as PEAK_LIMIT
from .audio_io import AudioError as AudioError
from .audio_io import AudioWarning as AudioWarning
from .audio_io import audio_blocks as audio_blocks
from .audio_io import audio_info as audio_info
from .audio_io import check_sample_rate as check_sample_rate
from .audio_io import load_audio as load_audio
from .audio_io import resample as resample
from .audio_io import save_audio as save_audio
from .audio_io import warn_if_short as warn_if_short
from .config import MelConfig


def resample_tensor(wav: Tensor, orig_sr: int, target_sr: int, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Resample a padded batch ``[B, S]`` item by item (each only over its valid samples).

    Returns the resampled padded batch ``[B, S']`` and its lengths ``[B]`` in samples.
    """
    orig_sr, target_sr = check_sample_rate(orig_sr), check_sample_rate(target_sr)
    b = wav.shape[0]
    if lengths is None:
        lengths = torch.full((b,), wav.shape[1], dtype=torch.long)
    if orig_sr == target_sr:
        return wav, lengths
    items = [
        torch.from_numpy(resample(wav[i, : int(lengths[i])].detach().cpu().float().numpy(), orig_sr, target_sr))
        for i in range(b)
    ]
    new_len = torch.tensor([x.numel() for x in items], dtype=torch.long)
    out = torch.zeros(b, int(new_len.max()), dtype=torch.float32)
    for i, x in enumerate(items):
        out[i, : x.numel()] = x
    return out.to(wav.device), new_len.to(wav.device)


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------
MAX_CHANNELS = 8
"""An array ``[N, C]`` with ``C <= MAX_CHANNELS < N`` is taken for channel-last audio and refused."""


def as_batch(
    wav: Tensor | np.ndarray | Sequence[float], lengths: Tensor | Sequence[int] | None = None
) -> tuple[Tensor, Tensor]:
    """Validate a waveform and return ``(wav [B, S] float32, lengths [B] long)``.

    Accepts ``[S]`` (one clip) or a padded ``[B, S]`` batch. Samples past each item's length are
    zeroed so that padding content can never change the result.

    Raises:
        AudioError: empty audio, wrong rank, NaN/Inf samples, or lengths outside ``[1, S]``.
    """
    if not isinstance(wav, Tensor):
        arr = np.asarray(wav)
        if arr.dtype.kind != "f":
            raise AudioError(
                f"waveform must be floating point in [-1, 1], got dtype {arr.dtype} "
                "(integer PCM: divide by 32768 for int16)"
            )
        wav = torch.as_tensor(arr.astype(np.float32, copy=False))
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    if wav.dim() != 2:
        raise AudioError(f"waveform must be [S] or [B, S], got shape {tuple(wav.shape)}")
    if not torch.is_floating_point(wav):
        raise AudioError(
            f"waveform must be floating point in [-1, 1], got dtype {wav.dtype} (integer PCM: divide by 32768 for int16)"
        )
    b, s = wav.shape
    if b == 0 or s == 0:
        raise AudioError(f"empty audio: waveform has shape {tuple(wav.shape)}")
    if s <= MAX_CHANNELS < b:
        raise AudioError(
            f"waveform of shape {tuple(wav.shape)} looks like [samples, channels] (soundfile's layout); "
            "pass mono [S] (e.g. wav.mean(axis=1)) or a [B, S] batch of clips"
        )
    if lengths is None:
        lens = torch.full((b,), s, dtype=torch.long, device=wav.device)
    else:
        lens = torch.as_tensor(lengths, dtype=torch.long, device=wav.device).reshape(-1)
        if lens.numel() != b:
            raise AudioError(f"lengths has {lens.numel()} entries but the batch has {b} items")
        if bool((lens > s).any()):
            raise AudioError(f"lengths {lens.tolist()} exceed the waveform length {s} samples")
        if bool((lens <= 0).any()):
            raise AudioError(f"lengths must be >= 1 sample, got {lens.tolist()} (empty audio)")
    wav = wav.float()
    valid = torch.arange(s, device=wav.device)[None, :] < lens[:, None]
    if not bool(torch.isfinite(wav[valid]).all()):
        bad = [i for i in range(b) if not bool(torch.isfinite(wav[i, : int(lens[i])]).all())]
        raise AudioError(f"waveform contains NaN or Inf samples (batch items {bad})")
    wav = torch.where(valid, wav, torch.zeros((), device=wav.device))
    return wav, lens


def pad_batch(items: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack 1-D tensors of different lengths into ``[B, max_len]`` with zero padding + lengths."""
    if not items:
        raise AudioError("no audio items given")
    lens = torch.tensor([int(x.shape[-1]) for x in items], dtype=torch.long)
    out = torch.zeros(len(items), int(lens.max()), dtype=items[0].dtype)
    for i, x in enumerate(items):
        out[i, : x.shape[-1]] = x
    return out, lens


def num_frames(num_samples: int | Tensor, hop_length: int = 480) -> int | Tensor:
    """``F = ceil(S / hop)``: number of mel frames (and tokens) for ``S`` samples."""
    if isinstance(num_samples, Tensor):
        return torch.div(num_samples + hop_length - 1, hop_length, rounding_mode="floor")
    return int(math.ceil(int(num_samples) / hop_length))


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``[B]`` lengths -> ``[B, max_len]`` bool mask, ``True`` where valid."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


# ---------------------------------------------------------------------------------------------
# Mel spectrogram
# ---------------------------------------------------------------------------------------------
def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3.0
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    log_region = f >= min_log_hz
    mels = np.where(log_region, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)
    return mels


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3.0
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    log_region = m >= min_log_mel
    return np.where(log_region, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """Slaney-style triangular mel filterbank with area normalisation, ``[n_mels, n_fft // 2 + 1]``."""
    f_max = float(f_max if f_max is not None else sample_rate / 2)
    n_freqs = n_fft // 2 + 1
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_freqs)
    mel_pts = np.linspace(_hz_to_mel_slaney(np.array(f_min)), _hz_to_mel_slaney(np.array(f_max)), n_mels + 2)
    hz_pts = _mel_to_hz_slaney(mel_pts)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (hz_pts[2 : n_mels + 2] - hz_pts[:n_mels])
    weights *= enorm[:, None]
    return torch.from_numpy(weights.astype(np.float32))


def overlap_add(frames: Tensor, hop: int, window: Tensor | None = None, frame_gain: Tensor | None = None) -> Tensor:
    """Overlap-add ``frames [B, T, n]`` placed ``hop`` samples apart -> ``[B, (T - 1) * hop + n]``.

    Each frame is multiplied by ``window [n]`` and by its ``frame_gain [B, T, 1]`` (e.g. a 0/1 frame
    mask) when given. The work is ``ceil(n / hop)`` shifted slice additions with the products fused
    into them, several times faster on a CPU than ``F.fold`` or ``torch.istft``'s overlap-add.
    """
    b, t, n = frames.shape
    k = -(-n // hop)
    out = frames.new_zeros(b, t + k - 1, hop)
    for j in range(k):
        cols = slice(j * hop, min((j + 1) * hop, n))
        piece = frames[:, :, cols]
        dest = out[:, j : j + t, : piece.shape[-1]]
        scale = None if window is None else window[cols]
        if frame_gain is not None:
            scale = frame_gain if scale is None else frame_gain * scale
        if scale is None:
            dest += piece
        else:
            dest.addcmul_(piece, scale)
    return out.reshape(b, -1)[:, : (t - 1) * hop + n]


class CenteredSTFT(nn.Module):
    """STFT / least-squares inverse STFT with the mel analysis' framing, for mel inverters.

    ``stft(wav [B, S]) -> [B, n_fft//2 + 1, S//hop + 1]`` complex: frame ``f`` is centred on sample
    ``f * hop`` with zero padding (the frames of :class:`MelFrontend` plus one centred on the end).
    ``istft(spec, length) -> [B, length]`` float32 inverts it by windowed overlap-add divided by the
    overlap-added squared window; it equals ``torch.istft`` but runs the overlap-add as
    ``ceil(n_fft / hop)`` shifted slice additions, several times faster on a CPU.
    """

    window: Tensor

    def __init__(self, cfg: MelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)

    def stft(self, wav: Tensor) -> Tensor:
        """``[B, S]`` -> complex ``[B, n_fft//2 + 1, S//hop + 1]``."""
        return torch.stft(
            wav,
            n_fft=self.cfg.n_fft,
            hop_length=self.cfg.hop_length,
            win_length=self.cfg.win_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )

    def _padded_window(self) -> Tensor:
        n_fft, win = self.cfg.n_fft, self.window.shape[0]
        left = (n_fft - win) // 2
        return torch.nn.functional.pad(self.window, (left, n_fft - win - left))

    def envelope(self, n_frames: int) -> Tensor:
        """Overlap-added squared window of ``n_frames`` frames, floored away from 0: ``[samples]``.

        Pass it to :meth:`istft` when many spectra with the same number of frames are inverted.
        """
        w2 = self._padded_window().square()
        return overlap_add(w2.expand(1, n_frames, -1), self.cfg.hop_length)[0].clamp_min(1e-11)

    def istft(self, spec: Tensor, length: int, envelope: Tensor | None = None) -> Tensor:
        """Complex ``[B, n_fft//2 + 1, T]`` -> ``[B, length]`` (least-squares inverse of :meth:`stft`)."""
        n_fft = self.cfg.n_fft
        frames = torch.fft.irfft(spec.transpose(1, 2), n=n_fft, dim=-1)
        env = self.envelope(spec.shape[-1]) if envelope is None else envelope
        start = n_fft // 2
        wav = overlap_add(frames, self.cfg.hop_length, self._padded_window())[:, start : start + length]
        return wav / env[start : start + length]


class MelFrontend(nn.Module):
    """Waveform ``[B, S]`` at 24 kHz -> normalised log-mel ``[B, n_mels, F]``, ``F = ceil(S/hop)``.

    Log-mel is ``log(max(mel_fb @ |STFT|^2, floor))`` (power spectrogram), then normalised per bin
    with ``(x - mel_mean) / mel_std``. The statistics are buffers, saved with the checkpoint; they
    start at mean 0 / std 1 until :func:`compute_mel_stats` values are loaded with :meth:`set_stats`.

    Frame ``f`` is centred on sample ``f * hop`` with zero padding, and samples past each item's
    length are zeroed, so an item gives the same frames alone or inside a padded batch.
    """

    mel_mean: Tensor
    mel_std: Tensor
    window: Tensor
    fb: Tensor

    def __init__(self, cfg: MelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        self.register_buffer(
            "fb", mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max), persistent=False
        )
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))

    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        """Load per-bin normalisation statistics (``[n_mels]`` each; std is floored at 1e-5)."""
        if mean.shape != (self.cfg.n_mels,) or std.shape != (self.cfg.n_mels,):
            raise ValueError(f"mel statistics must have shape [{self.cfg.n_mels}], got {tuple(mean.shape)}/{tuple(std.shape)}")
        self.mel_mean.copy_(mean.float())
        self.mel_std.copy_(std.float().clamp_min(1e-5))

    def power_spectrogram(self, wav: Tensor, start: int = 0, n_frames: int | None = None) -> Tensor:
        """Power spectrogram ``[B, n_fft//2+1, n_frames]`` of frames ``start .. start+n_frames-1``.

        Frame ``f`` covers samples ``[f*hop - n_fft/2, f*hop + n_fft/2)`` with zeros outside the
        signal, so any range of frames can be computed from its own slice of the waveform and
        equals the same frames of the whole-signal spectrogram (used for windowed encoding).
        """
        hop, n_fft = self.cfg.hop_length, self.cfg.n_fft
        total = wav.shape[-1]
        if n_frames is None:
            n_frames = int(num_frames(total, hop)) - start
        s0 = start * hop - n_fft // 2
        s1 = (start + n_frames - 1) * hop - n_fft // 2 + n_fft
        seg = wav[..., max(s0, 0) : min(s1, total)].float()
        seg = torch.nn.functional.pad(seg, (max(0, -s0), max(0, s1 - total)))
        spec = torch.stft(
            seg,
            n_fft=n_fft,
            hop_length=hop,
            win_length=self.cfg.win_length,
            window=self.window,
            center=False,
            return_complex=True,
        )
        return spec.abs().pow(2)

    def log_mel(
        self, wav: Tensor, lengths: Tensor | None = None, start: int = 0, n_frames: int | None = None
    ) -> Tensor:
        """Un-normalised log-mel ``[B, n_mels, F]`` (natural log of the power mel).

        ``start``/``n_frames`` select a range of frames (default: all ``ceil(S/hop)``).
        """
        if lengths is not None:
            wav = wav * lengths_to_mask(lengths, wav.shape[-1]).to(wav.dtype)
        power = self.power_spectrogram(wav, start, n_frames)
        mel = torch.matmul(self.fb, power)
        return torch.log(mel.clamp_min(self.cfg.log_floor))

    def window_mel(self, wav: Tensor, lengths: Tensor | None, start: int, n_frames: int) -> Tensor:
        """Normalised log-mel ``[B, n_mels, n_frames]`` of frames ``start ..`` (all inside the clip)."""
        return self.normalize(self.log_mel(wav, lengths, start, n_frames))

    def normalize(self, log_mel: Tensor) -> Tensor:
        return (log_mel - self.mel_mean[:, None]) / self.mel_std[:, None]

    def denormalize(self, mel: Tensor) -> Tensor:
        return mel * self.mel_std[:, None] + self.mel_mean[:, None]

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Normalised log-mel ``[B, n_mels, F]``; frames past ``ceil(len/hop)`` are set to 0."""
        mel = self.normalize(self.log_mel(wav, lengths))
        if lengths is not None:
            fmask = lengths_to_mask(num_frames(lengths, self.cfg.hop_length), mel.shape[-1])  # type: ignore[arg-type]
            mel = mel * fmask[:, None, :].to(mel.dtype)
        return mel


# ---------------------------------------------------------------------------------------------
# Normalisation statistics
# ---------------------------------------------------------------------------------------------
def compute_mel_stats(
    files: Iterable[str | Path], cfg: MelConfig | None = None, max_seconds_per_file: float = 30.0
) -> tuple[Tensor, Tensor, int]:
    """Per-bin mean/std of the un-normalised log-mel over audio files (Welford-free two-sum).

    Returns ``(mean [n_mels], std [n_mels], n_frames)``. Unreadable files raise :class:`AudioError`.
    """
    cfg = cfg or MelConfig()
    fe = MelFrontend(cfg)
    s1 = torch.zeros(cfg.n_mels, dtype=torch.float64)
    s2 = torch.zeros(cfg.n_mels, dtype=torch.float64)
    n = 0
    max_samples = int(max_seconds_per_file * cfg.sample_rate)
    with torch.no_grad():
        for f in files:
            wav, _ = load_audio(f, cfg.sample_rate)
            x = torch.from_numpy(wav[:max_samples])[None]
            lm = fe.log_mel(x)[0].double()  # [n_mels, F]
            s1 += lm.sum(dim=1)
            s2 += (lm * lm).sum(dim=1)
            n += lm.shape[1]
    if n == 0:
        raise AudioError("no audio frames to compute mel statistics from")
    mean = s1 / n
    std = (s2 / n - mean * mean).clamp_min(1e-10).sqrt()
    return mean.float(), std.float(), n


def save_mel_stats(path: str | Path, mean: Tensor, std: Tensor, n_frames: int, cfg: MelConfig) -> None:
    """Write statistics as JSON (``mean``, ``std``, ``n_frames`` and the mel config they belong to)."""
    Path(path).write_text(
        json.dumps({"mean": mean.tolist(), "std": std.tolist(), "n_frames": n_frames, "mel": cfg.__dict__}, indent=1)
    )


def load_mel_stats(path: str | Path) -> tuple[Tensor, Tensor]:
    """Read statistics written by :func:`save_mel_stats`."""
    d = json.loads(Path(path).read_text())
    return torch.tensor(d["mean"], dtype=torch.float32), torch.tensor(d["std"], dtype=torch.float32)
