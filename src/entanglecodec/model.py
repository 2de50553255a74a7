"""EntangleCodec: the tokenizer (encode), the decoder (decode) and their public API.

Long audio is processed in windows of ``max_frames`` frames (the training crop, 10 s by default)
so that memory stays bounded whatever the input length. Windowing scheme (per item, depends only
on that item's length ``F``):

* ``F <= W`` (``W = max_frames``): one pass over the whole clip, exactly like training.
* ``F > W``: the clip is cut into kept chunks of ``K = W - 2C`` frames (``C = window_context``).
  Chunk ``j`` keeps frames ``[jK, min((j+1)K, F))`` and is computed inside the ``W``-frame window
  starting at ``max(0, min(jK - C, F - W))``, i.e. with at least ``C`` frames of context on each
  side except at the clip edges. All windows have exactly ``W`` frames (no padding), so they are
  batched freely. Decoding uses the same scheme, with each window reading its slice of one noise
  tensor drawn for the whole clip.

Each window's mel is computed from its own slice of the waveform (bit-identical to the same frames
of the whole-clip mel), and long clips are vocoded window by window too, so memory is bounded by
the window. Because windows depend only on the item itself and padding is masked, an item gives
the same codes alone or inside a padded batch.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .audio import (
    AudioError,
    MelFrontend,
    as_batch,
    check_sample_rate,
    lengths_to_mask,
    num_frames,
    resample_tensor,
    warn_if_short,
)
from .checkpoint import WEIGHTS_CHECKSUM_KEY, file_sha256, verify_weights_checksum
from .config import ConfigError, EntangleCodecConfig
from .decoder import FlowDecoder
from .encoder import AudioProjection, UnifiedEncoder
from .fileio import atomic_write, atomic_write_text
from .griffin_lim import GriffinLim
from .losses import contrastive_loss
from .quantizer import Quantizer, QuantizerOutput
from .text import CaptionEncoder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint directory is missing files, or its weights do not match its config."""


class TokenError(ValueError):
    """Token ids out of range, wrong shape/dtype, or tokens from another checkpoint."""


MAX_GUIDANCE = 10.0
"""Largest accepted classifier-free guidance scale; above :data:`WARN_GUIDANCE` a warning is issued."""
WARN_GUIDANCE = 3.0
"""Guidance above this over-sharpens and often overshoots full scale (a warning, not an error)."""


def check_sampling(steps: Any, guidance: Any) -> tuple[int, float]:
    """Validate decoder sampling settings; return ``(steps, guidance)`` as ``(int, float)``.

    ``steps`` must be a whole number >= 1; ``guidance`` a finite number in ``[0, MAX_GUIDANCE]``
    (0 disables guidance, 1 is the paper's default). Values above :data:`WARN_GUIDANCE` give a
    :class:`UserWarning`.

    Raises:
        ValueError: non-integer or < 1 steps; NaN/Inf, negative or too large guidance.
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {int(steps)}")
    if isinstance(guidance, bool) or not isinstance(guidance, numbers.Real):
        raise ValueError(f"guidance must be a number, got {guidance!r}")
    g = float(guidance)
    if not math.isfinite(g):
        raise ValueError(f"guidance must be a finite number, got {g}")
    if not 0.0 <= g <= MAX_GUIDANCE:
        raise ValueError(f"guidance must lie in [0, {MAX_GUIDANCE:g}] (0 disables it, 1 is the default), got {g:g}")
    if g > WARN_GUIDANCE:
        warnings.warn(
            f"guidance {g:g} is extreme (above {WARN_GUIDANCE:g}): expect over-sharpened, possibly distorted audio",
            UserWarning,
            stacklevel=3,
        )
    return int(steps), g


@dataclass
class Tokens:
    """Discrete tokens of a (padded) batch.

    Attributes:
        codes: ``LongTensor [B, F]`` token ids in ``[0, codebook_size)``; 0 past each length.
        lengths: ``[B]`` valid frames per item.
        num_samples: ``[B]`` original lengths in samples at ``sample_rate`` (for exact trimming).
        sample_rate: the codec's sample rate (24000).
    """

    codes: Tensor
    lengths: Tensor
    num_samples: Tensor
    sample_rate: int


@dataclass
class Audio:
    """Decoded audio: ``wav [B, S]`` float32 in [-1, 1], ``lengths [B]`` in samples, ``sample_rate`` Hz."""

    wav: Tensor
    lengths: Tensor
    sample_rate: int


def window_plan(n_frames: int, window: int, context: int) -> list[tuple[int, int, int]]:
    """Windows for a clip of ``n_frames``: list of ``(window_start, keep_start, keep_end)``.

    Every window spans ``[window_start, window_start + min(window, n_frames))``.
    """
    if n_frames <= window:
        return [(0, 0, n_frames)]
    k = window - 2 * context
    plan = []
    for j in range(math.ceil(n_frames / k)):
        keep_s, keep_e = j * k, min((j + 1) * k, n_frames)
        start = max(0, min(keep_s - context, n_frames - window))
        plan.append((start, keep_s, keep_e))
    return plan


def _find_repo_checkpoints() -> Path:
    return Path(__file__).resolve().parents[2] / "checkpoints"


def default_checkpoint_dir() -> Path:
    """The bundled default model: ``$ENTANGLECODEC_CHECKPOINT`` or ``checkpoints/entanglecodec-small``.

    Raises:
        CheckpointError: no bundled model exists yet (train one, or pass a checkpoint directory).
    """
    env = os.environ.get("ENTANGLECODEC_CHECKPOINT")
    if env:
        c = Path(env)
        if not ((c / CONFIG_NAME).is_file() and (c / WEIGHTS_NAME).is_file()):
            why = "does not exist" if not c.exists() else f"does not hold {CONFIG_NAME} + {WEIGHTS_NAME}"
            raise CheckpointError(f"ENTANGLECODEC_CHECKPOINT={env}: {why} (unset it to use the bundled model)")
        return c
    candidates = [_find_repo_checkpoints() / "entanglecodec-small"]
    for c in candidates:
        if (c / CONFIG_NAME).is_file() and (c / WEIGHTS_NAME).is_file():
            return c
    raise CheckpointError(
        "no default EntangleCodec model found: none of "
        + ", ".join(str(c) for c in candidates)
        + " holds config.json + model.safetensors (a source checkout ships checkpoints/entanglecodec-small). "
        "Train one (`entanglecodec train stage1`, see README) "
        "or pass --checkpoint DIR / set ENTANGLECODEC_CHECKPOINT."
    )


def load_vocoder(spec: str, model_cfg: EntangleCodecConfig) -> nn.Module:
    """Resolve the vocoder slot: ``griffin-lim``, ``default`` (bundled neural vocoder when
    present, else Griffin-Lim) or a directory holding a trained vocoder."""
    try:
        from . import vocoder as vocoder_mod  # neural vocoder (Vocos-style)
    except ImportError:
        vocoder_mod = None  # type: ignore[assignment]
    if spec == "griffin-lim" or (spec == "default" and vocoder_mod is None):
        return GriffinLim(model_cfg.mel, n_iter=model_cfg.griffin_lim_iters)
    if vocoder_mod is None:
        raise CheckpointError(f"vocoder {spec!r} requested but the neural vocoder module is unavailable")
    voc = vocoder_mod.load_vocoder(spec, model_cfg.mel)
    if not isinstance(voc, nn.Module):
        raise CheckpointError(f"vocoder {spec!r} did not load as a torch module")
    return voc


class EntangleCodec(nn.Module):
    """The unified single-codebook tokenizer with its rectified-flow mel decoder.

    Args:
        config: model configuration (see :class:`EntangleCodecConfig` presets).
        build_text_encoder: build the caption tower (needed for training and :meth:`embed_text`).
    """

    def __init__(self, config: EntangleCodecConfig, build_text_encoder: bool = True) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.frontend = MelFrontend(config.mel)
        self.encoder = UnifiedEncoder(config.mel.n_mels, config.encoder)
        self.audio_proj = AudioProjection(config.encoder.dim, config.align_dim)
        self.text_encoder: CaptionEncoder | None = (
            CaptionEncoder(config.text, config.align_dim) if build_text_encoder else None
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.quantizer = Quantizer(config.encoder.dim, config.quantizer)
        self.decoder = FlowDecoder(config.mel.n_mels, config.quantizer.dim, config.decoder)
        self.__dict__["_vocoder"] = None
        self.__dict__["_fingerprint"] = None

    # ------------------------------------------------------------------ properties
    @property
    def sample_rate(self) -> int:
        return self.config.mel.sample_rate

    @property
    def frame_rate(self) -> int:
        return int(round(self.config.frame_rate))

    @property
    def hop_length(self) -> int:
        return self.config.mel.hop_length

    @property
    def codebook_size(self) -> int:
        return self.config.quantizer.codebook_size

    @property
    def bitrate(self) -> float:
        """Bits per second: ``frame_rate * log2(codebook_size)`` (650 for 8192 codes at 50 Hz)."""
        return self.config.bitrate

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def vocoder(self) -> nn.Module:
        """The mel -> waveform vocoder (``config.vocoder``), loaded on first use."""
        voc = self.__dict__["_vocoder"]
        if voc is None:
            voc = load_vocoder(self.config.vocoder, self.config)
            self.__dict__["_vocoder"] = voc
        return voc.to(self.device)  # type: ignore[no-any-return]

    def set_vocoder(self, spec: str | nn.Module) -> None:
        """Use another vocoder: ``"griffin-lim"``, ``"default"``, a directory, or a module."""
        self.__dict__["_vocoder"] = spec if isinstance(spec, nn.Module) else load_vocoder(spec, self.config)

    # ------------------------------------------------------------------ input handling
    def _prepare_audio(
        self, wav: Tensor | np.ndarray, sample_rate: int, lengths: Tensor | Sequence[int] | None
    ) -> tuple[Tensor, Tensor]:
        sr = check_sample_rate(sample_rate)
        x, lens = as_batch(wav, lengths)
        if sr != self.sample_rate:
            x, lens = resample_tensor(x, sr, self.sample_rate, lens)
        return x.to(self.device), lens.to(self.device)

    def _check_codes(self, codes: Tensor | np.ndarray, lengths: Tensor | Sequence[int] | None) -> tuple[Tensor, Tensor]:
        c = torch.as_tensor(codes)
        if c.dim() == 1:
            c = c.unsqueeze(0)
        if c.dim() != 2:
            raise TokenError(f"codes must be [F] or [B, F], got shape {tuple(c.shape)}")
        if c.dtype.is_floating_point or c.dtype == torch.bool or c.dtype.is_complex:
            raise TokenError(f"codes must be integers, got dtype {c.dtype}")
        c = c.long()
        b, f = c.shape
        if b == 0 or f == 0:
            raise TokenError(f"codes are empty (shape {tuple(c.shape)})")
        if lengths is None:
            lens = torch.full((b,), f, dtype=torch.long)
        else:
            lens = torch.as_tensor(lengths, dtype=torch.long).reshape(-1)
            if lens.numel() != b:
                raise TokenError(f"lengths has {lens.numel()} entries but codes have {b} rows")
            if bool((lens > f).any()) or bool((lens < 1).any()):
                raise TokenError(f"token lengths {lens.tolist()} must lie in [1, {f}]")
        valid = lengths_to_mask(lens, f)
        bad = valid & ((c < 0) | (c >= self.codebook_size))
        if bool(bad.any()):
            vals = c[bad]
            raise TokenError(
                f"token ids must lie in [0, {self.codebook_size}) for this checkpoint; got values in "
                f"[{int(vals.min())}, {int(vals.max())}] ({int(bad.sum())} out of range)"
            )
        c = c.masked_fill(~valid, 0)
        return c.to(self.device), lens.to(self.device)

    # ------------------------------------------------------------------ windowed runners
    def _windows(self, frame_lengths: Tensor) -> list[tuple[int, list[tuple[int, int, int]]]]:
        return [
            (i, window_plan(int(n), self.config.max_frames, self.config.window_context))
            for i, n in enumerate(frame_lengths.tolist())
        ]

    def _encode_wav(
        self, wav: Tensor, lens: Tensor, flen: Tensor, batch_windows: int = 8
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Waveform ``[B, S]`` -> ``(H [B,F,D], h~ [B,F,Dq], cls [B, D])``, windowed.

        The mel of each window is computed from its own slice of the waveform (exactly the same
        frames as the whole-clip mel), so memory is bounded by the window, not the clip.
        """
        b = wav.shape[0]
        f = int(flen.max())
        w = self.config.max_frames
        frames = wav.new_zeros(b, f, self.config.encoder.dim)
        cls = wav.new_zeros(b, self.config.encoder.dim)
        short = [i for i in range(b) if int(flen[i]) <= w]
        if short:
            idx = torch.tensor(short, device=wav.device)
            n = int(lens[idx].max())
            mel = self.frontend(wav[idx, :n], lens[idx])
            out = self.encoder(mel, lengths_to_mask(flen[idx], mel.shape[-1]))
            frames[idx, : mel.shape[-1]] = out.frames
            cls[idx] = out.cls
        jobs = [(i, s, ks, ke) for i, plan in self._windows(flen) if int(flen[i]) > w for (s, ks, ke) in plan]
        cls_sum: dict[int, list[Tensor]] = {}
        for j0 in range(0, len(jobs), batch_windows):
            chunk = jobs[j0 : j0 + batch_windows]
            # samples past each length are already zero (as_batch), so no per-window masking pass
            x = torch.cat([self.frontend.window_mel(wav[i : i + 1], None, s, w) for (i, s, _, _) in chunk])
            out = self.encoder(x)
            for k, (i, s, ks, ke) in enumerate(chunk):
                frames[i, ks:ke] = out.frames[k, ks - s : ke - s]
                cls_sum.setdefault(i, []).append(out.cls[k] * (ke - ks))
        for i, parts in cls_sum.items():
            cls[i] = torch.stack(parts).sum(0) / float(flen[i])
        return frames, self.quantizer.project(frames), cls

    def _decode_mel(
        self, zq: Tensor, flen: Tensor, steps: int, guidance: float, noise: Tensor, batch_windows: int = 4
    ) -> Tensor:
        b, f, _ = zq.shape
        w = self.config.max_frames
        mel = zq.new_zeros(b, self.config.mel.n_mels, f)
        short = [i for i in range(b) if int(flen[i]) <= w]
        if short:
            fs = int(flen[short].max())
            idx = torch.tensor(short, device=zq.device)
            m = lengths_to_mask(flen[idx], fs)
            mel[idx, :, :fs] = self.decoder.sample(zq[idx, :fs], m, steps, guidance, noise[idx, :, :fs])
        jobs = [(i, s, ks, ke) for i, plan in self._windows(flen) if int(flen[i]) > w for (s, ks, ke) in plan]
        for j0 in range(0, len(jobs), batch_windows):
            chunk = jobs[j0 : j0 + batch_windows]
            c = torch.stack([zq[i, s : s + w] for (i, s, _, _) in chunk])
            z = torch.stack([noise[i, :, s : s + w] for (i, s, _, _) in chunk])
            out = self.decoder.sample(c, None, steps, guidance, z)
            for k, (i, s, ks, ke) in enumerate(chunk):
                mel[i, :, ks:ke] = out[k, :, ks - s : ke - s]
        return mel

    def _vocode(self, log_mel: Tensor, flen: Tensor) -> Tensor:
        """Log-mel ``[B, n_mels, F]`` -> waveform ``[B, F * hop]``; clips longer than one window are
        vocoded window by window (same plan as encoding, keeping each window's centre samples), so
        memory stays bounded by the window."""
        b, _, f = log_mel.shape
        hop, w = self.hop_length, self.config.max_frames
        voc = self.vocoder
        if int(flen.max()) <= w:
            return torch.as_tensor(voc(log_mel, flen))
        out = log_mel.new_zeros(b, f * hop)
        short = [i for i in range(b) if int(flen[i]) <= w]
        if short:
            idx = torch.tensor(short, device=log_mel.device)
            fs = int(flen[idx].max())
            out[idx, : fs * hop] = voc(log_mel[idx, :, :fs], flen[idx])
        for i, plan in self._windows(flen):
            if int(flen[i]) <= w:
                continue
            for s, ks, ke in plan:
                piece = voc(log_mel[i : i + 1, :, s : s + w], None)[0]
                out[i, ks * hop : ke * hop] = piece[(ks - s) * hop : (ke - s) * hop]
        return out

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def encode(
        self, wav: Tensor | np.ndarray, sample_rate: int, lengths: Tensor | Sequence[int] | None = None
    ) -> Tokens:
        """Tokenise audio.

        Args:
            wav: ``[S]`` or padded ``[B, S]`` float waveform in [-1, 1] at ``sample_rate``.
            sample_rate: input rate in Hz (resampled to 24 kHz with soxr when different).
            lengths: ``[B]`` valid samples per item (default: all of ``S``).

        Returns:
            :class:`Tokens` with ``codes [B, F]``, ``F = ceil(S_24k / 480)`` per item.
        """
        was_training = self.training
        self.eval()
        try:
            x, lens = self._prepare_audio(wav, sample_rate, lengths)
            warn_if_short(lens, self.sample_rate)
            flen = num_frames(lens, self.hop_length)
            assert isinstance(flen, Tensor)
            _, pre, _ = self._encode_wav(x, lens, flen)
            codes = self.quantizer.nearest(pre).masked_fill(~lengths_to_mask(flen, pre.shape[1]), 0)
        finally:
            self.train(was_training)
        return Tokens(codes=codes, lengths=flen, num_samples=lens, sample_rate=self.sample_rate)

    @torch.no_grad()
    def decode(
        self,
        codes: Tensor | np.ndarray | Tokens,
        lengths: Tensor | Sequence[int] | None = None,
        steps: int = 1,
        guidance: float = 1.0,
        num_samples: Tensor | Sequence[int] | None = None,
        seed: int = 0,
        return_mel: bool = False,
    ) -> Audio:
        """Rebuild audio from tokens (one Euler step and guidance 1.0 by default, as the paper).

        Args:
            codes: ``[F]`` / ``[B, F]`` token ids, or a :class:`Tokens` (its lengths are then used).
            lengths: ``[B]`` valid frames per item.
            steps: Euler steps of the flow sampler.
            guidance: classifier-free guidance scale ``gamma`` (Eq. 12); 0 disables it.
            num_samples: ``[B]`` original lengths in samples; output is trimmed to them.
            seed: seed of the initial noise (each item draws its own noise, so batching does not
                change results).
            return_mel: also attach the decoded log-mel as ``audio.mel`` (``[B, n_mels, F]``).

        Returns:
            :class:`Audio` with ``wav [B, S]``: ``F * 480`` samples per item, trimmed to
            ``num_samples`` when known.
        """
        if isinstance(codes, Tokens):
            lengths = codes.lengths if lengths is None else lengths
            num_samples = codes.num_samples if num_samples is None else num_samples
            codes = codes.codes
        steps, guidance = check_sampling(steps, guidance)
        c, flen = self._check_codes(codes, lengths)
        was_training = self.training
        self.eval()
        try:
            b, f = c.shape
            zq = self.quantizer.embed_codes(c)
            noise = torch.zeros(b, self.config.mel.n_mels, f, device=self.device)
            for i in range(b):
                g = torch.Generator().manual_seed(seed)
                noise[i, :, : int(flen[i])] = torch.randn(self.config.mel.n_mels, int(flen[i]), generator=g)
            mel = self._decode_mel(zq, flen, steps, guidance, noise)
            log_mel = self.frontend.denormalize(mel)
            log_mel = log_mel.masked_fill(~lengths_to_mask(flen, f)[:, None, :], math.log(self.config.mel.log_floor))
            wav = self._vocode(log_mel, flen)
            out_len = flen * self.hop_length
            if num_samples is not None:
                ns = torch.as_tensor(num_samples, dtype=torch.long, device=self.device).reshape(-1)
                if ns.numel() != b:
                    raise TokenError(f"num_samples has {ns.numel()} entries for {b} items")
                if bool((ns > out_len).any()) or bool((ns <= out_len - self.hop_length).any()):
                    raise TokenError(
                        f"num_samples {ns.tolist()} inconsistent with token lengths {flen.tolist()} "
                        f"(each must lie in ((F-1)*{self.hop_length}, F*{self.hop_length}])"
                    )
                out_len = ns
            s = int(out_len.max())
            wav = wav[:, :s] * lengths_to_mask(out_len, s).to(wav.dtype)
        finally:
            self.train(was_training)
        audio = Audio(wav=wav, lengths=out_len, sample_rate=self.sample_rate)
        if return_mel:
            audio.mel = log_mel  # type: ignore[attr-defined]
        return audio

    @torch.no_grad()
    def reconstruct(
        self,
        wav: Tensor | np.ndarray,
        sample_rate: int,
        lengths: Tensor | Sequence[int] | None = None,
        steps: int = 1,
        guidance: float = 1.0,
        seed: int = 0,
    ) -> Audio:
        """``decode(encode(wav))`` at 24 kHz, trimmed to the (resampled) input lengths."""
        steps, guidance = check_sampling(steps, guidance)
        return self.decode(self.encode(wav, sample_rate, lengths), steps=steps, guidance=guidance, seed=seed)

    @torch.no_grad()
    def encode_features(
        self, wav: Tensor | np.ndarray, sample_rate: int, lengths: Tensor | Sequence[int] | None = None
    ) -> dict[str, Tensor]:
        """Continuous features: ``frames`` ``H [B,F,D_enc]``, ``pre_quant`` ``h~ [B,F,D_quant]``,
        ``cls`` ``[B, D_enc]``, ``mask [B, F]``."""
        was_training = self.training
        self.eval()
        try:
            x, lens = self._prepare_audio(wav, sample_rate, lengths)
            flen = num_frames(lens, self.hop_length)
            assert isinstance(flen, Tensor)
            frames, pre, cls = self._encode_wav(x, lens, flen)
        finally:
            self.train(was_training)
        return {"frames": frames, "pre_quant": pre, "cls": cls, "mask": lengths_to_mask(flen, pre.shape[1])}

    @torch.no_grad()
    def embed_audio(
        self, wav: Tensor | np.ndarray, sample_rate: int, lengths: Tensor | Sequence[int] | None = None
    ) -> Tensor:
        """L2-normalised audio embeddings ``[B, D_align]`` for retrieval (long clips: window average)."""
        feats = self.encode_features(wav, sample_rate, lengths)
        return torch.as_tensor(self.audio_proj(feats["cls"]))

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> Tensor:
        """L2-normalised caption embeddings ``[B, D_align]``."""
        if self.text_encoder is None:
            raise RuntimeError("this model was loaded without its caption encoder (build_text_encoder=False)")
        was_training = self.training
        self.eval()
        try:
            return self.text_encoder(texts)
        finally:
            self.train(was_training)

    def codes_to_embeddings(self, codes: Tensor | np.ndarray) -> Tensor:
        """Token ids ``[B, F]`` (e.g. generated by an LM) -> codebook embeddings ``Z_q [B, F, D_quant]``."""
        c, _ = self._check_codes(codes, None)
        return self.quantizer.embed_codes(c)

    # ------------------------------------------------------------------ training
    def training_losses(
        self,
        mel: Tensor,
        mask: Tensor,
        captions: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Stage-1 losses on a batch of normalised mels ``[B, n_mels, F]`` with ``mask [B, F]``.

        Returns a dict with ``flow`` (Eq. 9), ``vq`` (Eq. 11), ``contrast`` (Eq. 10, when captions
        are given), ``retrieval_acc``, codebook statistics (``usage`` and ``perplexity`` of this
        batch, ``dead_codes`` re-seeded this step, ``active_codes`` = fraction used in the last 100
        batches), ``mel_est`` (one-step decoder estimate ``[B, n_mels, F]``), ``codes``, and the
        quantizer's ``pre_quant`` (h~) and ``quantized`` (Z_q), both ``[B, F, D_quant]``.
        """
        enc = self.encoder(mel, mask)
        q: QuantizerOutput = self.quantizer(enc.frames, mask)
        flow, est = self.decoder.loss(mel, q.quantized, mask, generator)
        out = {
            "flow": flow,
            "vq": q.loss,
            "usage": q.usage,
            "perplexity": q.perplexity,
            "dead_codes": q.dead_codes.float(),
            "active_codes": q.active,
            "mel_est": est,
            "codes": q.codes,
            "pre_quant": q.pre_quant,
            "quantized": q.quantized,
        }
        if captions is not None:
            if self.text_encoder is None:
                raise RuntimeError("captions given but the model has no caption encoder")
            a = self.audio_proj(enc.cls)
            t = self.text_encoder(captions)
            out["contrast"], out["retrieval_acc"] = contrastive_loss(a, t, self.logit_scale)
        return out

    # ------------------------------------------------------------------ checkpoints
    def fingerprint(self) -> str:
        """16-hex identifier of the token space: hash of the config and of every weight that
        shapes the tokens or their audio (all but the caption tower), so any change of the weights
        changes it.

        Token files store it; decoding tokens with a model of another fingerprint is refused.
        """
        cached = self.__dict__["_fingerprint"]
        if cached is not None and not self.training:
            return str(cached)
        h = hashlib.sha256()
        h.update(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        h.update(self.quantizer.codebook.detach().float().cpu().numpy().tobytes())
        for name, t in sorted(self.state_dict().items()):
            if not name.startswith("text_encoder."):
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        fp = h.hexdigest()[:16]
        self.__dict__["_fingerprint"] = fp
        return fp

    def train(self, mode: bool = True) -> EntangleCodec:
        self.__dict__["_fingerprint"] = None
        return super().train(mode)

    def state_dict_for_saving(self) -> dict[str, Tensor]:
        """State dict minus a frozen pretrained text backbone (reloaded from its own directory)."""
        sd = {k: v for k, v in self.state_dict().items() if not k.startswith("text_encoder.")}
        if self.text_encoder is not None:
            sd.update({f"text_encoder.{k}": v for k, v in self.text_encoder.saved_state_dict().items()})
        return {k: v.detach().contiguous().cpu() for k, v in sd.items()}

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (mel statistics included) to ``directory``."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        was_training = self.training
        self.eval()
        meta = {"format": "entanglecodec", "version": "1", "fingerprint": self.fingerprint()}
        self.train(was_training)
        state = self.state_dict_for_saving()
        atomic_write(d / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata=meta))
        cfg = self.config.to_dict()
        cfg[WEIGHTS_CHECKSUM_KEY] = file_sha256(d / WEIGHTS_NAME)
        atomic_write_text(d / CONFIG_NAME, json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        return d

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path | None = None,
        map_location: str | torch.device = "cpu",
        build_text_encoder: bool = True,
    ) -> EntangleCodec:
        """Load a checkpoint directory (``None``: the bundled default model).

        Raises:
            CheckpointError: missing files, invalid config, or weights that do not match the config.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        d = Path(directory) if directory is not None else default_checkpoint_dir()
        if not d.is_dir():
            raise CheckpointError(f"{d}: checkpoint directory not found")
        cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise CheckpointError(f"{d}: missing {p.name} (a checkpoint holds {CONFIG_NAME} + {WEIGHTS_NAME})")
        try:
            raw = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
            raise CheckpointError(f"{cfg_path}: not a readable JSON file ({e})") from e
        if not isinstance(raw, dict):
            raise CheckpointError(f"{cfg_path}: must hold a JSON object")
        checksum = raw.pop(WEIGHTS_CHECKSUM_KEY, None)
        try:
            config = EntangleCodecConfig.from_dict(raw)
        except ConfigError as e:
            raise CheckpointError(f"{cfg_path}: {e}") from e
        try:
            verify_weights_checksum(w_path, checksum)
        except ValueError as e:
            raise CheckpointError(str(e)) from e
        try:
            state = load_file(str(w_path), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{w_path}: not a readable safetensors file ({e})") from e
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise CheckpointError(
                f"{w_path}: corrupted weights: {len(bad)} tensor(s) hold NaN/Inf (e.g. {', '.join(bad[:3])})"
            )
        model = cls(config, build_text_encoder=build_text_encoder)
        expected = model.state_dict_for_saving()
        if not build_text_encoder:
            state = {k: v for k, v in state.items() if not k.startswith("text_encoder.")}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        shape_bad = [
            f"{k}: file {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
            for k in sorted(set(state) & set(expected))
            if state[k].shape != expected[k].shape
        ]
        if missing or unexpected or shape_bad:
            parts = []
            if missing:
                parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
            if unexpected:
                parts.append(f"unexpected {len(unexpected)} tensors (e.g. {', '.join(unexpected[:3])})")
            if shape_bad:
                parts.append(f"shape mismatch: {'; '.join(shape_bad[:3])}")
            raise CheckpointError(f"{d}: weights do not match config.json: " + "; ".join(parts))
        model.load_state_dict(state, strict=False)
        model.eval()
        return model.to(map_location)

    def num_parameters(self, trainable_only: bool = False) -> dict[str, int]:
        """Parameter counts per component."""
        parts: dict[str, Any] = {
            "encoder": [self.encoder, self.audio_proj],
            "quantizer": [self.quantizer],
            "decoder": [self.decoder],
            "text_encoder": [self.text_encoder] if self.text_encoder is not None else [],
        }
        out = {}
        for name, mods in parts.items():
            out[name] = sum(
                p.numel() for m in mods for p in m.parameters() if p.requires_grad or not trainable_only
            )
        out["total"] = sum(out.values())
        return out


__all__ = ["EntangleCodec", "Tokens", "Audio", "CheckpointError", "TokenError", "AudioError", "window_plan"]
