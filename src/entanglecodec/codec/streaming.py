"""Streamed encoding and decoding of long files: memory bounded by the window, whatever the duration.

:func:`decode_stream` is the other direction: it yields the waveform of a token sequence piece by
piece (one vocoder window of 30 s at a time), computing only the flow-decoder windows that piece
needs and drawing their noise from a :class:`~.sampling.NoiseStream`, so neither the noise, nor the
mel, nor the waveform of the whole clip is ever held. Its pieces join into exactly what
:meth:`EntangleCodec.decode` returns (same windows, same batches of windows, same noise).

:func:`encode_file` reads the file block by block (:func:`~entanglecodec.audio.audio_blocks`,
which resamples with a soxr stream) and runs the codec's window plan
(:mod:`.windowing`, the same plan as the in-memory path) as soon as each window's samples have arrived, keeping
only about two windows of samples in memory. Only the token array (2 bytes per 20 ms once saved)
grows with the duration.

A window ``j`` of a clip longer than one window starts at ``j*K - C`` unless it is clamped to the
clip's end (``F - W``); a window can be run before the end of the file is known once more than
its last sample has been read, because the clip then has at least ``start + W`` frames, so it is
not clamped. The rest of the plan runs when the file ends. Clips of at most one window are
encoded in one pass by :meth:`EntangleCodec.encode`, like the in-memory path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..audio import audio_blocks, num_frames, warn_if_short
from .precision import resolve_precision
from .sampling import NoiseStream, TokenError, check_sampling
from .windowing import VOCODER_WINDOW_FRAMES, Window, unclamped_start, window_plan

if TYPE_CHECKING:
    from .model import EntangleCodec


@dataclass
class StreamedTokens:
    """Tokens of one streamed clip: ``codes [F]`` (int64) and ``num_samples`` at the codec's rate."""

    codes: np.ndarray
    num_samples: int


class _Buffer:
    """Samples ``[start, start + len)`` of the stream, appended block by block and trimmed in front."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.start = 0
        self.end = 0

    def append(self, x: np.ndarray) -> None:
        self.parts.append(x)
        self.end += x.shape[0]

    def slice(self, s0: int, s1: int) -> np.ndarray:
        """Samples ``[s0, s1)`` with zeros outside ``[0, end)`` (the mel's zero padding)."""
        data = np.concatenate(self.parts) if len(self.parts) != 1 else self.parts[0]
        self.parts = [data]
        lo, hi = max(s0, 0), min(s1, self.end)
        if lo < self.start:
            raise AssertionError(f"samples from {lo} were already dropped (buffer starts at {self.start})")
        seg = data[lo - self.start : max(lo, hi) - self.start]
        return np.pad(seg, (lo - s0, s1 - max(lo, hi)))

    def drop_before(self, s: int) -> None:
        if s <= self.start:
            return
        data = np.concatenate(self.parts) if len(self.parts) != 1 else self.parts[0]
        cut = min(s, self.end) - self.start
        self.parts = [data[cut:].copy()]
        self.start += cut

    def all(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.float32)


@torch.no_grad()
def encode_stream(model: EntangleCodec, blocks: Iterable[np.ndarray], batch_windows: int = 8) -> StreamedTokens:
    """Tokenise a mono waveform given as consecutive ``float32`` blocks at ``model.sample_rate``.

    Gives the codes of :meth:`EntangleCodec.encode` on the concatenated blocks (same window plan,
    same batches of ``batch_windows`` windows) with memory bounded by about two windows.
    """
    cfg = model.config
    hop, n_fft = cfg.mel.hop_length, cfg.mel.n_fft
    w, c = cfg.max_frames, cfg.window_context
    k = w - 2 * c
    was_training = model.training
    model.eval()
    buf = _Buffer()
    codes: list[np.ndarray] = []
    pending: list[Window] = []  # windows waiting for a batch
    j = 0  # next window index of the unclamped plan

    def window_span(start: int) -> tuple[int, int]:
        return start * hop - n_fft // 2, (start + w - 1) * hop - n_fft // 2 + n_fft

    def run(batch: list[Window]) -> None:
        segs = [torch.from_numpy(buf.slice(*window_span(win.start)))[None] for win in batch]
        mel = torch.cat([model.frontend.normalize(_segment_log_mel(model, x)) for x in segs]).to(model.device)
        out = model.encoder(mel)
        for i, win in enumerate(batch):
            pre = model.quantizer.project(out.frames[i : i + 1, win.inner])
            codes.append(model.quantizer.nearest(pre)[0].cpu().numpy().astype(np.int64))

    def flush(force: bool) -> None:
        while pending and (force or len(pending) >= batch_windows):
            batch = pending[:batch_windows]
            del pending[:batch_windows]
            run(batch)

    try:
        for block in blocks:
            buf.append(np.asarray(block, dtype=np.float32).reshape(-1))
            while True:
                start = unclamped_start(j, w, c)
                s1 = window_span(start)[1]
                if buf.end < max(s1 + 1, w * hop + 1):
                    break
                pending.append(Window(0, start, j * k, (j + 1) * k))
                j += 1
            flush(force=False)
            # earliest frame still needed: a pending window, or a final window clamped to F - W,
            # which starts at or after (j - 1) * K - C since window j - 1 ran unclamped
            first = max(0, (j - 1) * k - c)
            if pending:
                first = min(first, pending[0].start)
            buf.drop_before(first * hop - n_fft // 2)
        total = buf.end
        if total == 0:
            raise ValueError("empty audio stream")
        f = int(num_frames(total, hop))
        if f <= w:  # one pass, exactly like EntangleCodec.encode
            tokens = model.encode(torch.from_numpy(buf.all()), model.sample_rate)
            return StreamedTokens(codes=tokens.codes[0].cpu().numpy().astype(np.int64), num_samples=total)
        pending.extend(Window(0, s, ks, ke) for s, ks, ke in window_plan(f, w, c)[j:])
        flush(force=True)
    finally:
        model.train(was_training)
    out = np.concatenate(codes)
    if out.shape[0] != f:
        raise AssertionError(f"streamed encoding produced {out.shape[0]} codes for {f} frames")
    warn_if_short([total], model.sample_rate)
    return StreamedTokens(codes=out, num_samples=total)


def _segment_log_mel(model: EntangleCodec, seg: torch.Tensor) -> torch.Tensor:
    """Un-normalised log-mel ``[1, n_mels, W]`` of a pre-cut, zero-padded sample segment."""
    fe = model.frontend
    spec = torch.stft(
        seg.float(),
        n_fft=fe.cfg.n_fft,
        hop_length=fe.cfg.hop_length,
        win_length=fe.cfg.win_length,
        window=fe.window,
        center=False,
        return_complex=True,
    )
    mel = torch.matmul(fe.fb, spec.abs().pow(2))
    return torch.log(mel.clamp_min(fe.cfg.log_floor))


def encode_file(model: EntangleCodec, path: str | Path, block_seconds: float = 10.0) -> StreamedTokens:
    """Tokenise an audio file read block by block (any rate/channels; see :func:`encode_stream`).

    Raises:
        AudioError: unreadable, empty or non-finite audio (the message names the file).
    """
    return encode_stream(model, audio_blocks(path, model.sample_rate, block_seconds))


@torch.no_grad()
def decode_stream(
    model: EntangleCodec,
    codes: np.ndarray | torch.Tensor,
    num_samples: int | None = None,
    steps: int = 1,
    guidance: float | None = None,
    seed: int = 0,
    precision: str | None = None,
    batch_windows: int = 4,
) -> Iterator[np.ndarray]:
    """Decode one token sequence ``codes [F]`` as consecutive float32 waveform pieces.

    The pieces concatenate to ``model.decode(codes, num_samples=[num_samples], ...).wav[0]`` (the
    same flow-decoder windows in the same batches of ``batch_windows``, the same noise, the same
    vocoder windows), but memory stays bounded by one vocoder window (30 s) however long the clip
    is: only the codes, their pitch contour and a few bytes of noise state per second grow with it.
    Clips of at most one vocoder window are decoded in one call.

    Raises:
        TokenError: ids out of range, not one item, or ``num_samples`` inconsistent with ``F``.
    """
    c, flen = model._check_codes(torch.as_tensor(np.asarray(codes)).reshape(1, -1), None)
    f, hop = int(flen[0]), model.hop_length
    if num_samples is not None and not (f - 1) * hop < int(num_samples) <= f * hop:
        raise TokenError(f"num_samples {num_samples} inconsistent with {f} tokens (must lie in ({(f - 1) * hop}, {f * hop}])")
    total = f * hop if num_samples is None else int(num_samples)
    cfg = model.config
    w, ctx = cfg.max_frames, cfg.window_context
    vw = max(w, VOCODER_WINDOW_FRAMES)
    if f <= vw:
        audio = model.decode(c, steps=steps, guidance=guidance, num_samples=[total], seed=seed, precision=precision)
        yield audio.wav[0, :total].cpu().numpy()
        return
    steps, guidance = check_sampling(steps, cfg.decoder.guidance if guidance is None else guidance)
    dtype = resolve_precision(precision, model.device)
    was_training = model.training
    model.eval()
    try:
        zq = model.quantizer.embed_codes(c)  # [1, F, Dq]
        pitch = model._pulse_pitch(c, flen, None)
        noise = NoiseStream(seed, cfg.mel.n_mels, f)
        flow = [Window(0, s, ks, ke) for s, ks, ke in window_plan(f, w, ctx)]
        kept: dict[int, torch.Tensor] = {}  # flow window -> its kept normalised mel [n_mels, ke - ks]

        def compute_group(g: int) -> None:  # windows [g*B, (g+1)*B): the in-memory decoder's batch
            batch = flow[g * batch_windows : (g + 1) * batch_windows]
            zw = torch.stack([zq[0, j.start : j.start + w] for j in batch])
            z = torch.from_numpy(np.stack([noise.slice(j.start, j.start + w) for j in batch])).to(model.device)
            out = model._sample_mel(zw, None, z, steps, guidance, dtype)
            for k, j in enumerate(batch):
                kept[g * batch_windows + k] = out[k, :, j.inner]

        written = 0
        for vs, vks, vke in window_plan(f, vw, ctx):
            lo, hi = vs, vs + vw
            parts = []
            for i, j in enumerate(flow):
                if j.keep_end <= lo or j.keep_start >= hi:
                    continue
                if i not in kept:
                    compute_group(i // batch_windows)
                parts.append(kept[i][:, max(lo, j.keep_start) - j.keep_start : min(hi, j.keep_end) - j.keep_start])
            log_mel = model.frontend.denormalize(torch.cat(parts, dim=-1)[None])
            wav = model._vocode_piece(log_mel, None, dtype, pitch, vs)[0]
            piece = wav[(vks - vs) * hop : (vke - vs) * hop][: total - written]
            written += piece.shape[0]
            for i in [i for i, j in enumerate(flow) if j.keep_end <= vke - ctx]:  # no later window needs them
                kept.pop(i, None)
            yield piece.cpu().numpy()
    finally:
        model.train(was_training)
