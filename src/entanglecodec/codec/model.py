"""EntangleCodec: the tokenizer (encode), the decoder (decode) and their public API.

Inference only: the training losses (flow/VQ/contrastive terms, the CLIP temperature) live in
:mod:`entanglecodec.training`. Long audio runs through the one windowing runner
(:mod:`.windowing`): each window's mel is computed from its own slice of the waveform
(bit-identical to the same frames of the whole-clip mel), and long clips are vocoded window by
window too, so memory is bounded by the window; an item gives the same codes alone or inside a
padded batch. Checkpoint directories are read and written by :mod:`entanglecodec.checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..audio import (
    AudioError,
    MelFrontend,
    as_batch,
    check_sample_rate,
    lengths_to_mask,
    num_frames,
    resample_tensor,
    warn_if_short,
)
from ..checkpoint import (
    CONFIG_NAME,
    MODEL_TYPE_KEY,
    WEIGHTS_CHECKSUM_KEY,
    CheckpointError,
    check_state,
    default_checkpoint_dir,
    model_card,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from ..config import ConfigError, EntangleCodecConfig
from ..fileio import atomic_write_text
from .decoder import FlowDecoder
from .encoder import AudioProjection, UnifiedEncoder
from .pitch import PitchConditioner, octaves_to_hz, pulse_excitation
from .precision import compute_dtype, resolve_precision
from .quantizer import Quantizer
from .sampling import MAX_GUIDANCE as MAX_GUIDANCE  # re-exported: the names callers import from here
from .sampling import WARN_GUIDANCE as WARN_GUIDANCE
from .sampling import TokenError, check_sampling, decode_noise
from .text import CaptionEncoder
from .windowing import VOCODER_WINDOW_FRAMES, Window, run_windowed, window_plan

LEGACY_CONFIG_DEFAULTS: dict[tuple[str, str], Any] = {
    ("decoder", "t_zero_fraction"): 0.0,
    ("decoder", "cond_mode"): "prefix",
    ("quantizer", "bypass"): False,
}
"""Config options added after release 0.1.0, with the value that behaves as 0.1.0 did: the
0.1.0 fingerprint hashed the config without them (see :meth:`EntangleCodec.legacy_fingerprint`)."""

DECODE_ONLY_CONFIG: tuple[tuple[str, str], ...] = (
    ("decoder", "guidance"), ("decoder", "pulse_phase"), ("decoder", "pulse_phase_max_hz"),
    ("decoder", "pulse_f0"), ("decoder", "pulse_voiced_prob"), ("decoder", "noise_scale"),
    ("decoder", "vocoder_passes"),
)
"""Config options that change how tokens are decoded by default but not the token space: left out
of :meth:`EntangleCodec.fingerprint` (and the 0.1.0 fingerprint), so setting them keeps token files valid."""


DECODE_SETTINGS: tuple[str, ...] = tuple(key for _, key in DECODE_ONLY_CONFIG)
"""Names of the :data:`DECODE_ONLY_CONFIG` options (all in the ``decoder`` section)."""


def apply_decode_settings(config: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Check decode-time ``values`` against a codec config mapping (``to_dict`` / ``config.json`` form).

    Only :data:`DECODE_SETTINGS` are accepted (``decoder.``-prefixed names too). The config with
    the values set must validate.

    Returns: the values as the config types them (``guidance=0`` -> ``0.0``), keyed without the prefix.

    Raises:
        ValueError: an unknown or token-changing option, or a value of the wrong type or out of range
            (:class:`~entanglecodec.config.ConfigError`).
    """
    vals = {k.removeprefix("decoder."): v for k, v in values.items()}
    unknown = sorted(set(vals) - set(DECODE_SETTINGS))
    if unknown:
        raise ValueError(
            f"not decode-time settings: {', '.join(unknown)} (these change the tokens or the weights; "
            f"settable: {', '.join(DECODE_SETTINGS)})"
        )
    cfg = {k: v for k, v in config.items() if k not in (WEIGHTS_CHECKSUM_KEY, MODEL_TYPE_KEY)}
    cfg["decoder"] = {**cfg["decoder"], **vals}
    checked = EntangleCodecConfig.from_dict(cfg).decoder
    return {k: getattr(checked, k) for k in vals}


def _read_config(directory: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(path, mapping)`` of a saved codec's ``config.json``; a one-line error when it is not one."""
    path = Path(directory) / CONFIG_NAME
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw.get("decoder"), dict):
            raise KeyError("decoder")
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable codec config ({type(e).__name__}: {e})") from e
    return path, raw


def set_decode_defaults(directory: str | Path, values: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite the decode-time defaults of a saved codec (``config.json`` only, atomically).

    ``values`` as for :func:`apply_decode_settings` (e.g. ``{"guidance": 0.0, "pulse_phase": True}``),
    checked before anything is written. The weights, the token space and the fingerprint stay the
    same, so token files made with the checkpoint stay valid.

    Returns: the decoder section's new values of the given settings.

    Raises:
        ValueError: see :func:`apply_decode_settings`, or a directory without a readable config.
    """
    path, raw = _read_config(directory)
    vals = apply_decode_settings(raw, values)
    raw["decoder"].update(vals)
    atomic_write_text(path, json.dumps(raw, indent=2, sort_keys=True) + "\n")
    return vals


def decode_defaults(directory: str | Path) -> dict[str, Any]:
    """The :data:`DECODE_SETTINGS` a saved codec's ``config.json`` states (absent ones left out)."""
    decoder = _read_config(directory)[1]["decoder"]
    return {k: decoder[k] for k in DECODE_SETTINGS if k in decoder}


OPTIONAL_CONFIG_DEFAULTS: dict[tuple[str, str], Any] = {
    ("decoder", "pitch_cond"): False,
    ("decoder", "pitch_hidden"): 256,
}
"""Config options added after the current fingerprint definition, with the value that behaves as
before they existed: hashed only when set to another value, so the fingerprints of checkpoints
made before them (and their token files) stay valid."""


def _token_space_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` (a config ``to_dict``) without :data:`DECODE_ONLY_CONFIG`, and without the
    :data:`OPTIONAL_CONFIG_DEFAULTS` options left at their default (modified in place)."""
    for section, key in DECODE_ONLY_CONFIG:
        cfg[section].pop(key, None)
    for (section, key), default in OPTIONAL_CONFIG_DEFAULTS.items():
        if cfg[section].get(key, default) == default:
            cfg[section].pop(key, None)
    return cfg


TRAINING_ONLY_TENSORS = ("logit_scale",)
"""Tensors a checkpoint may hold for training (the CLIP temperature of Eq. 10) that inference
never uses: kept aside on load so that saving and :meth:`EntangleCodec.fingerprint` see them."""


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


class EntangleCodec(nn.Module):
    """The unified single-codebook tokenizer with its rectified-flow mel decoder.

    Args:
        config: model configuration (see :class:`EntangleCodecConfig` presets).
        build_text_encoder: build the caption tower (needed for training and :meth:`embed_text`).
        codebook_only: hold the codebook's tensors without building ``vector_quantize_pytorch``'s
            module (built as soon as the model trains); for weights loaded next, as
            :meth:`from_pretrained` does. See :class:`~entanglecodec.codec.quantizer.StoredCodebook`.

    The caption tower of a model read by :meth:`from_pretrained` is built on first use of
    :attr:`text_encoder` (:meth:`embed_text`, training, caption ranking): encoding and decoding
    never load the text model (a Hugging Face ``transformers`` backbone by default).
    """

    def __init__(
        self, config: EntangleCodecConfig, build_text_encoder: bool = True, codebook_only: bool = False
    ) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.frontend = MelFrontend(config.mel)
        self.encoder = UnifiedEncoder(config.mel.n_mels, config.encoder)
        self.audio_proj = AudioProjection(config.encoder.dim, config.align_dim)
        self.__dict__["_pending_text_state"] = None
        self.text_encoder = CaptionEncoder(config.text, config.align_dim) if build_text_encoder else None
        self.quantizer = Quantizer(config.encoder.dim, config.quantizer, codebook_only=codebook_only)
        self.decoder = FlowDecoder(config.mel.n_mels, config.quantizer.dim, config.decoder)
        self.pitch: PitchConditioner | None = None
        if config.decoder.pitch_cond:
            self.pitch = PitchConditioner(config.mel, config.quantizer.dim, config.decoder.pitch_hidden)
        self.__dict__["_vocoder"] = None
        self.__dict__["_fingerprint"] = None
        self.__dict__["_training_tensors"] = {}

    # ------------------------------------------------------------------ caption tower (lazy)
    @property
    def text_encoder(self) -> CaptionEncoder | None:
        """The caption tower, ``None`` when the model has none; a tower whose weights were read by
        :meth:`from_pretrained` is built (and its weights checked and loaded) here, on first use."""
        tower = self._modules.get("text_encoder")
        pending = self.__dict__["_pending_text_state"]
        if tower is None and pending is not None:
            tower = CaptionEncoder(self.config.text, self.config.align_dim)
            check_state(tower.saved_state_dict(), pending, "caption encoder")
            tower.load_state_dict(pending, strict=False)
            tower.train(self.training)
            self._modules["text_encoder"] = tower.to(self.device)
            self.__dict__["_pending_text_state"] = None
        return tower  # type: ignore[return-value]

    @text_encoder.setter
    def text_encoder(self, tower: CaptionEncoder | None) -> None:
        self._modules["text_encoder"] = tower
        self.__dict__["_pending_text_state"] = None

    @property
    def has_text_encoder(self) -> bool:
        """``True`` when the model has a caption tower (built or waiting to be built on first use)."""
        return self._modules.get("text_encoder") is not None or self.__dict__["_pending_text_state"] is not None

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
        return self.frontend.window.device

    @property
    def vocoder(self) -> nn.Module:
        """The mel -> waveform vocoder (``config.vocoder``), loaded on first use."""
        voc = self.__dict__["_vocoder"]
        if voc is None:
            voc = self._load_vocoder(self.config.vocoder)
            self.__dict__["_vocoder"] = voc
        return voc.to(self.device)  # type: ignore[no-any-return]

    def set_vocoder(self, spec: str | nn.Module) -> None:
        """Use another vocoder: ``"griffin-lim"``, ``"default"``, a directory, or a module."""
        self.__dict__["_vocoder"] = spec if isinstance(spec, nn.Module) else self._load_vocoder(spec)

    def _load_vocoder(self, spec: str) -> nn.Module:
        from ..vocoder.load import load_vocoder

        voc = load_vocoder(spec, self.config.mel, griffin_lim_iters=self.config.griffin_lim_iters)
        if not isinstance(voc, nn.Module):
            raise CheckpointError(f"vocoder {spec!r} did not load as a torch module")
        return voc

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
    def _encode_wav(
        self, wav: Tensor, lens: Tensor, flen: Tensor, batch_windows: int = 8
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Waveform ``[B, S]`` -> ``(H [B,F,D], h~ [B,F,Dq], cls [B, D])``, windowed.

        The mel of each window is computed from its own slice of the waveform (exactly the same
        frames as the whole-clip mel), so memory is bounded by the window, not the clip. The CLS
        vector of a long clip is the average of its windows' CLS weighted by their kept frames.
        """
        b, w = wav.shape[0], self.config.max_frames
        frames = wav.new_zeros(b, int(flen.max()), self.config.encoder.dim)
        cls = wav.new_zeros(b, self.config.encoder.dim)
        cls_sum: dict[int, list[Tensor]] = {}

        def whole(items: list[int]) -> None:
            idx = torch.tensor(items, device=wav.device)
            mel = self.frontend(wav[idx, : int(lens[idx].max())], lens[idx])
            out = self.encoder(mel, lengths_to_mask(flen[idx], mel.shape[-1]))
            frames[idx, : mel.shape[-1]] = out.frames
            cls[idx] = out.cls

        def windows(chunk: list[Window]) -> None:
            # samples past each length are already zero (as_batch), so no per-window masking pass
            x = torch.cat([self.frontend.window_mel(wav[c.item : c.item + 1], None, c.start, w) for c in chunk])
            out = self.encoder(x)
            for k, c in enumerate(chunk):
                frames[c.item, c.keep_start : c.keep_end] = out.frames[k, c.inner]
                cls_sum.setdefault(c.item, []).append(out.cls[k] * (c.keep_end - c.keep_start))

        run_windowed(flen, w, self.config.window_context, batch_windows, whole, windows)
        for i, parts in cls_sum.items():
            cls[i] = torch.stack(parts).sum(0) / float(flen[i])
        return frames, self.quantizer.project(frames), cls

    def pitch_features(self, zq: Tensor, f0_hz: Tensor | None) -> Tensor | None:
        """Decoder pitch features ``[B, F, n_mels + 2]`` of ``Z_q [B, F, Dq]`` (``None`` without
        ``decoder.pitch_cond``): predicted from the codes, or, given ``f0_hz [B, F]`` (Hz, 0 =
        unvoiced), that contour's (the oracle control of the diagnosis)."""
        if self.pitch is None:
            return None
        if f0_hz is None:
            return self.pitch.from_codes(zq)
        return self.pitch.features(f0_hz, f0_hz > 0)

    def _decode_mel(
        self,
        zq: Tensor,
        flen: Tensor,
        steps: int,
        guidance: float,
        noise: Tensor,
        batch_windows: int = 4,
        dtype: torch.dtype = torch.float32,
        f0_hz: Tensor | None = None,
    ) -> Tensor:
        """Codebook vectors ``[B, F, Dq]`` -> normalised mel ``[B, n_mels, F]``, windowed; each window
        reads its slice of ``noise [B, n_mels, F]`` (drawn once for the whole clip). ``dtype``: the
        flow decoder's compute dtype (see :mod:`.precision`). ``f0_hz [B, F]``: an oracle F0 contour
        for pitch-conditioned models (see :meth:`pitch_features`)."""
        b, f, _ = zq.shape
        w = self.config.max_frames
        mel = zq.new_zeros(b, self.config.mel.n_mels, f)

        def sample(c: Tensor, m: Tensor | None, z: Tensor, oracle: Tensor | None) -> Tensor:
            return self._sample_mel(c, m, z, steps, guidance, dtype, oracle)

        def whole(items: list[int]) -> None:
            idx = torch.tensor(items, device=zq.device)
            fs = int(flen[idx].max())
            m = lengths_to_mask(flen[idx], fs)
            c = zq[idx, :fs]
            mel[idx, :, :fs] = sample(c, m, noise[idx, :, :fs], None if f0_hz is None else f0_hz[idx, :fs])

        def windows(chunk: list[Window]) -> None:
            c = torch.stack([zq[j.item, j.start : j.start + w] for j in chunk])
            z = torch.stack([noise[j.item, :, j.start : j.start + w] for j in chunk])
            oracle = None if f0_hz is None else torch.stack([f0_hz[j.item, j.start : j.start + w] for j in chunk])
            out = sample(c, None, z, oracle)
            for k, j in enumerate(chunk):
                mel[j.item, :, j.keep_start : j.keep_end] = out[k, :, j.inner]

        run_windowed(flen, w, self.config.window_context, batch_windows, whole, windows)
        return mel

    def _sample_mel(
        self, zq: Tensor, mask: Tensor | None, noise: Tensor, steps: int, guidance: float, dtype: torch.dtype,
        f0_hz: Tensor | None = None,
    ) -> Tensor:
        """One flow-decoder pass over whole windows: ``Z_q [N, W, Dq]``, ``noise [N, n_mels, W]`` (standard
        normal; scaled here by ``decoder.noise_scale``) -> normalised mel ``[N, n_mels, W]`` (float32;
        pitch features computed in float32)."""
        scale = self.config.decoder.noise_scale
        if scale != 1.0:
            noise = noise * scale
        p = self.pitch_features(zq, f0_hz)  # float32: the F0 and the comb stay exact
        with compute_dtype(dtype, zq.device):
            return self.decoder.sample(zq, mask, steps, guidance, noise, p).float()

    def _pulse_pitch(
        self, codes: Tensor | np.ndarray, lengths: Tensor | Sequence[int] | None, f0_hz: Tensor | None
    ) -> tuple[Tensor, Tensor] | None:
        """``(f0_hz [B, F], voiced [B, F])`` for ``decoder.pulse_phase``: the pitch predictor's contour
        of the tokens (voiced where its voicing probability > ``decoder.pulse_voiced_prob``), or the
        oracle ``f0_hz`` when one is given; ``None`` when the option is off."""
        if not self.config.decoder.pulse_phase or self.pitch is None:
            return None
        if f0_hz is not None:
            f0 = f0_hz.to(self.device).float()
            return f0, f0 > 0
        c, _ = self._check_codes(codes, lengths)
        logit, octaves = self.pitch.predict(self.quantizer.embed_codes(c))
        p = self.config.decoder.pulse_voiced_prob
        return octaves_to_hz(octaves).float(), logit > math.log(p / (1 - p))

    def _vocode(
        self, log_mel: Tensor, flen: Tensor, dtype: torch.dtype = torch.float32, pitch: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        """Log-mel ``[B, n_mels, F]`` -> waveform ``[B, F * hop]``. Clips of up to ``max_frames``
        are vocoded together in one padded pass; longer ones one at a time, in windows of
        :data:`~.windowing.VOCODER_WINDOW_FRAMES` (one window per call, keeping each window's
        centre samples), so memory stays bounded by that window. ``dtype``: the compute dtype of
        the vocoder's network (see :mod:`.precision`; its iSTFT head and mel-consistency passes
        always run in float32). ``pitch``: ``(f0_hz [B, F], voiced [B, F])`` for
        ``decoder.pulse_phase`` (a neural vocoder's voiced frames take the phase of
        :func:`~.pitch.pulse_excitation`, computed window by window)."""
        b, _, f = log_mel.shape
        hop, w = self.hop_length, self.config.max_frames
        vw = max(w, VOCODER_WINDOW_FRAMES)

        def voc(mel: Tensor, lengths: Tensor | None, items: Tensor | slice, start: int) -> Tensor:
            part = None if pitch is None else (pitch[0][items], pitch[1][items])
            return self._vocode_piece(mel, lengths, dtype, part, start)

        if int(flen.max()) <= w:
            return voc(log_mel, flen, slice(None), 0)
        out = log_mel.new_zeros(b, f * hop)

        def whole(items: list[int]) -> None:
            short = [i for i in items if int(flen[i]) <= w]
            if short:
                idx = torch.tensor(short, device=log_mel.device)
                fs = int(flen[idx].max())
                out[idx, : fs * hop] = voc(log_mel[idx, :, :fs], flen[idx], idx, 0)
            for i in (i for i in items if int(flen[i]) > w):
                n = int(flen[i])
                out[i, : n * hop] = voc(log_mel[i : i + 1, :, :n], None, slice(i, i + 1), 0)[0]

        def windows(chunk: list[Window]) -> None:
            (j,) = chunk
            piece = voc(log_mel[j.item : j.item + 1, :, j.start : j.start + vw], None, slice(j.item, j.item + 1), j.start)[0]
            out[j.item, j.keep_start * hop : j.keep_end * hop] = piece[j.inner.start * hop : j.inner.stop * hop]

        run_windowed(flen, vw, self.config.window_context, 1, whole, windows)
        return out

    def _vocode_piece(
        self, log_mel: Tensor, lengths: Tensor | None, dtype: torch.dtype, pitch: tuple[Tensor, Tensor] | None,
        start: int,
    ) -> Tensor:
        """The vocoder on one padded batch or window: ``log_mel [N, n_mels, T]`` whose first frame is
        frame ``start`` of its clip -> ``[N, T * hop]`` float32. ``pitch``: the items' whole
        ``(f0_hz [N, F], voiced [N, F])`` for ``decoder.pulse_phase`` (ignored by Griffin-Lim, which
        has no network phase to replace); the pulse train is cut at ``start``."""
        from ..vocoder.model import Vocoder

        network = self.vocoder
        extra: dict[str, Any] = {}
        if isinstance(network, Vocoder) and self.config.decoder.vocoder_passes is not None:
            extra["consistency_passes"] = self.config.decoder.vocoder_passes
        if pitch is not None and isinstance(network, Vocoder):
            hop = self.hop_length
            extra["excitation"] = pulse_excitation(
                pitch[0], pitch[1], hop, self.sample_rate, start * hop, log_mel.shape[-1] * hop,
                interpolate=self.config.decoder.pulse_f0 == "linear",
            )
            extra["excitation_max_hz"] = self.config.decoder.pulse_phase_max_hz
        with compute_dtype(dtype, log_mel.device):
            return torch.as_tensor(network(log_mel, lengths, **extra)).float()

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
    def decode_log_mel(
        self,
        codes: Tensor | np.ndarray | Tokens,
        lengths: Tensor | Sequence[int] | None = None,
        steps: int = 1,
        guidance: float | None = None,
        seed: int = 0,
        f0_hz: Tensor | None = None,
        precision: str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The flow-decoder half of :meth:`decode`: tokens -> ``(log_mel [B, n_mels, F], lengths [B])``,
        the natural-log power mel (as :meth:`MelFrontend.log_mel`, floored past each item's length)
        and the valid frames per item. Arguments as :meth:`decode`."""
        if isinstance(codes, Tokens):
            lengths = codes.lengths if lengths is None else lengths
            codes = codes.codes
        steps, guidance = check_sampling(steps, self.config.decoder.guidance if guidance is None else guidance)
        c, flen = self._check_codes(codes, lengths)
        dtype = resolve_precision(precision, self.device)
        was_training = self.training
        self.eval()
        try:
            b, f = c.shape
            zq = self.quantizer.embed_codes(c)
            noise = torch.zeros(b, self.config.mel.n_mels, f, device=self.device)
            for i in range(b):
                n = int(flen[i])
                noise[i, :, :n] = torch.from_numpy(decode_noise(seed, self.config.mel.n_mels, n)).to(self.device)
            if f0_hz is not None:
                if self.pitch is None:
                    raise TokenError("f0_hz given, but this checkpoint's decoder is not pitch-conditioned")
                if tuple(f0_hz.shape) != (b, f):
                    raise TokenError(f"f0_hz has shape {tuple(f0_hz.shape)}, expected {(b, f)} (items, frames)")
                f0_hz = f0_hz.to(zq)
            mel = self._decode_mel(zq, flen, steps, guidance, noise, dtype=dtype, f0_hz=f0_hz)
            log_mel = self.frontend.denormalize(mel)
            log_mel = log_mel.masked_fill(~lengths_to_mask(flen, f)[:, None, :], math.log(self.config.mel.log_floor))
        finally:
            self.train(was_training)
        return log_mel, flen

    @torch.no_grad()
    def decode(
        self,
        codes: Tensor | np.ndarray | Tokens,
        lengths: Tensor | Sequence[int] | None = None,
        steps: int = 1,
        guidance: float | None = None,
        num_samples: Tensor | Sequence[int] | None = None,
        seed: int = 0,
        return_mel: bool = False,
        f0_hz: Tensor | None = None,
        precision: str | None = None,
    ) -> Audio:
        """Rebuild audio from tokens (one Euler step, as the paper).

        Args:
            codes: ``[F]`` / ``[B, F]`` token ids, or a :class:`Tokens` (its lengths are then used).
            lengths: ``[B]`` valid frames per item.
            steps: Euler steps of the flow sampler.
            guidance: classifier-free guidance scale ``gamma`` (Eq. 12); 0 disables it. ``None``: the
                checkpoint's ``decoder.guidance`` (1.0, the paper's value, unless the checkpoint says otherwise).
            num_samples: ``[B]`` original lengths in samples; output is trimmed to them.
            seed: seed of the initial noise (:func:`~entanglecodec.codec.sampling.decode_noise`:
                each item draws its own, so batching does not change results, and the ONNX runtime
                draws the same).
            return_mel: also attach the decoded log-mel as ``audio.mel`` (``[B, n_mels, F]``).
            f0_hz: ``[B, F]`` F0 contour in Hz (0 = unvoiced) given to a pitch-conditioned decoder
                (``decoder.pitch_cond``) instead of the one it predicts from the tokens: the oracle
                control of ``reports/codec-diagnosis.md``, not a codec path (it is side information).
            precision: the arithmetic of the flow decoder and the vocoder network, ``"auto"``, ``"float32"`` or ``"bfloat16"``
                (see :mod:`entanglecodec.codec.precision`); ``None``: ``$ENTANGLECODEC_DECODE_PRECISION``, else ``"auto"``.

        Returns:
            :class:`Audio` with ``wav [B, S]``: ``F * 480`` samples per item, trimmed to
            ``num_samples`` when known.
        """
        if isinstance(codes, Tokens):
            lengths = codes.lengths if lengths is None else lengths
            num_samples = codes.num_samples if num_samples is None else num_samples
            codes = codes.codes
        dtype = resolve_precision(precision, self.device)
        log_mel, flen = self.decode_log_mel(codes, lengths, steps, guidance, seed, f0_hz, precision)
        b = log_mel.shape[0]
        was_training = self.training
        self.eval()
        try:
            wav = self._vocode(log_mel, flen, dtype, self._pulse_pitch(codes, lengths, f0_hz))
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
        guidance: float | None = None,
        seed: int = 0,
        precision: str | None = None,
    ) -> Audio:
        """``decode(encode(wav))`` at 24 kHz, trimmed to the (resampled) input lengths (``guidance``,
        ``precision``: as :meth:`decode`, ``None`` for the defaults)."""
        steps, guidance = check_sampling(steps, self.config.decoder.guidance if guidance is None else guidance)
        resolve_precision(precision, self.device)  # a bad name fails before encoding
        return self.decode(
            self.encode(wav, sample_rate, lengths), steps=steps, guidance=guidance, seed=seed, precision=precision
        )

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

    # ------------------------------------------------------------------ checkpoints
    @property
    def training_tensors(self) -> dict[str, Tensor]:
        """Training-only tensors read from the checkpoint (:data:`TRAINING_ONLY_TENSORS`); inference
        never uses them, saving writes them back, and :meth:`fingerprint` hashes them."""
        return dict(self.__dict__["_training_tensors"])

    def set_training_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        """Replace :attr:`training_tensors` (the training code does this before exporting)."""
        unknown = sorted(set(tensors) - set(TRAINING_ONLY_TENSORS))
        if unknown:
            raise ValueError(f"not training-only tensors: {unknown} (known: {list(TRAINING_ONLY_TENSORS)})")
        self.__dict__["_training_tensors"] = {k: v.detach().cpu() for k, v in tensors.items()}
        self.__dict__["_fingerprint"] = None

    def fingerprint(self) -> str:
        """16-hex identifier of the token space: hash of the config and of every weight that
        shapes the tokens or their audio (all but the caption tower), so any change of the weights
        changes it.

        Token files store it; decoding tokens with a model of another fingerprint is refused
        (a file of release 0.1.0 stores :meth:`legacy_fingerprint` instead, also accepted).
        """
        cached = self.__dict__["_fingerprint"]
        if cached is not None and not self.training:
            return str(cached)
        h = hashlib.sha256()
        h.update(json.dumps(_token_space_config(self.config.to_dict()), sort_keys=True).encode())
        h.update(self.quantizer.codebook.detach().float().cpu().numpy().tobytes())
        tensors = {k: v for k, v in self.state_dict().items() if not k.startswith("text_encoder.")}
        tensors.update(self.__dict__["_training_tensors"])
        for name, t in sorted(tensors.items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        fp = h.hexdigest()[:16]
        self.__dict__["_fingerprint"] = fp
        return fp

    def legacy_fingerprint(self) -> str | None:
        """The fingerprint of release 0.1.0: hash of the config as that release serialised it and
        of the codebook only (``None`` when the config uses an option 0.1.0 did not have).

        Token files written by that release store it; they decode with the model they came from.
        """
        cfg = _token_space_config(self.config.to_dict())
        for (section, key), default in LEGACY_CONFIG_DEFAULTS.items():
            if cfg[section].pop(key) != default:
                return None
        if any(key in cfg[section] for section, key in OPTIONAL_CONFIG_DEFAULTS):
            return None
        h = hashlib.sha256()
        h.update(json.dumps(cfg, sort_keys=True).encode())
        h.update(self.quantizer.codebook.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def accepts_fingerprint(self, fingerprint: str) -> bool:
        """``True`` when tokens stamped with ``fingerprint`` were made by this model (current or
        0.1.0 definition, see :meth:`legacy_fingerprint`)."""
        return fingerprint == self.fingerprint() or fingerprint == self.legacy_fingerprint()

    def train(self, mode: bool = True) -> EntangleCodec:
        self.__dict__["_fingerprint"] = None
        return super().train(mode)

    def state_dict_for_saving(self) -> dict[str, Tensor]:
        """State dict minus a frozen pretrained text backbone (reloaded from its own directory),
        plus the :attr:`training_tensors` (a caption tower not built yet is saved as it was read)."""
        sd = {k: v for k, v in self.state_dict().items() if not k.startswith("text_encoder.")}
        pending = self.__dict__["_pending_text_state"]
        tower = self.__dict__["_modules"].get("text_encoder")
        text_state = pending if pending is not None else tower.saved_state_dict() if tower is not None else {}
        sd.update({f"text_encoder.{k}": v for k, v in text_state.items()})
        sd.update(self.__dict__["_training_tensors"])
        return {k: v.detach().contiguous().cpu() for k, v in sd.items()}

    def model_card(self) -> str:
        """The ``README.md`` that :meth:`save_pretrained` writes: Hub metadata, sizes, rates, use."""
        params = self.num_parameters()
        c = self.config
        facts = {
            "preset": c.name,
            "sample rate": f"{self.sample_rate} Hz mono",
            "tokens": f"{self.frame_rate} Hz, one codebook of {self.codebook_size} codes ({self.bitrate:.0f} bit/s)",
            "encoder / decoder": f"{c.encoder.dim} x {c.encoder.depth} / "
            f"{c.decoder.transformer.dim} x {c.decoder.transformer.depth} Transformer",
            "caption encoder": c.text.kind,
            "parameters": ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in params.items()),
            "vocoder": c.vocoder,
            "fingerprint": self.fingerprint(),
        }
        usage = (
            "from entanglecodec import EntangleCodec, load_audio\n\n"
            'codec = EntangleCodec.from_pretrained("DIRECTORY or OWNER/REPO")\n'
            'wav, sr = load_audio("speech.flac", sample_rate=None)\n'
            "tokens = codec.encode(wav, sr)      # tokens.codes: [1, F] at 50 Hz\n"
            "audio = codec.decode(tokens)        # audio.wav: [1, S] at 24 kHz"
        )
        return model_card(
            "EntangleCodec tokenizer",
            "A single-codebook audio tokenizer for speech, music and sound, aligned with rich text "
            "captions before quantisation, with a rectified-flow mel decoder "
            "(EntangleCodec, Li et al., 2026).",
            facts,
            usage,
            tags=["audio", "audio-tokenizer", "neural-codec"],
            pipeline_tag="audio-to-audio",
        )

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (mel statistics included) and the model
        card ``README.md`` (Hub metadata) to ``directory``."""
        was_training = self.training
        self.eval()
        meta = {"format": "entanglecodec", "version": "1", "fingerprint": self.fingerprint()}
        card = self.model_card()
        self.train(was_training)
        return save_checkpoint(directory, self.config.to_dict(), self.state_dict_for_saving(), metadata=meta, card=card)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path | None = None,
        map_location: str | torch.device = "cpu",
        build_text_encoder: bool = True,
        cache_dir: str | Path | None = None,
    ) -> EntangleCodec:
        """Load a checkpoint.

        Args:
            directory: a checkpoint directory, a Hugging Face Hub id ``owner/name[@revision]``
                (through ``huggingface_hub``: its cache first, ``HF_HUB_OFFLINE=1`` respected), or
                ``None``: ``$ENTANGLECODEC_CHECKPOINT`` (either of those), else the bundled model.
            map_location: device of the model.
            build_text_encoder: keep the caption tower (built on first use of
                :attr:`text_encoder`); ``False`` drops it.
            cache_dir: Hugging Face cache directory (default: the library's, ``$HF_HUB_CACHE``).

        Raises:
            CheckpointError: nothing found, missing files, invalid config, or weights that do not
                match the config.
        """
        d = resolve_checkpoint(directory, cache_dir) if directory is not None else default_checkpoint_dir(cache_dir)
        raw, state = read_checkpoint(d, map_location=map_location)
        try:
            config = EntangleCodecConfig.from_dict(raw)
        except ConfigError as e:
            raise CheckpointError(f"{d / CONFIG_NAME}: {e}") from e
        model = cls(config, build_text_encoder=False, codebook_only=True)
        extras = {k: state.pop(k) for k in TRAINING_ONLY_TENSORS if k in state}
        text_state = {k.removeprefix("text_encoder."): state.pop(k) for k in list(state) if k.startswith("text_encoder.")}
        check_state(model.state_dict_for_saving(), state, d)
        model.load_state_dict(state, strict=True)
        model.set_training_tensors(extras)
        if build_text_encoder:
            model.__dict__["_pending_text_state"] = text_state
        model.eval()
        return model.to(map_location)

    def num_parameters(self, trainable_only: bool = False) -> dict[str, int]:
        """Parameter counts per component."""
        parts: dict[str, Any] = {
            "encoder": [self.encoder, self.audio_proj],
            "quantizer": [self.quantizer],
            "decoder": [self.decoder] + ([self.pitch] if self.pitch is not None else []),
            "text_encoder": [self.text_encoder] if self.has_text_encoder else [],
        }
        out = {}
        for name, mods in parts.items():
            out[name] = sum(
                p.numel() for m in mods for p in m.parameters() if p.requires_grad or not trainable_only
            )
        out["total"] = sum(out.values())
        return out


__all__ = ["EntangleCodec", "Tokens", "Audio", "CheckpointError", "TokenError", "AudioError", "window_plan"]
