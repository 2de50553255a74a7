"""The one long-audio runner: window plans, short/long split, window batches, centre copy.

Long audio is processed in windows of ``W = max_frames`` frames (the training crop, 10 s by
default) so that memory stays bounded whatever the input length. The plan of an item depends only
on its own length ``F``:

* ``F <= W``: one pass over the whole clip, exactly like training (such items are batched
  together, padded and masked).
* ``F > W``: the clip is cut into kept chunks of ``K = W - 2C`` frames (``C = window_context``).
  Chunk ``j`` keeps frames ``[jK, min((j+1)K, F))`` and is computed inside the ``W``-frame window
  starting at ``max(0, min(jK - C, F - W))``, i.e. with at least ``C`` frames of context on each
  side except at the clip edges. All windows have exactly ``W`` frames (no padding), so windows
  of different items are batched freely.

:func:`run_windowed` drives encoding, decoding and vocoding of :class:`~.model.EntangleCodec` and of
the ONNX runtime (:class:`entanglecodec.runtime.OnnxCodec`);
:mod:`.streaming` runs the same plan incrementally (:func:`unclamped_start` tells it where a window
starts before the clip's end is known). Because windows depend only on the item itself and
padding is masked, an item gives the same result alone or inside a padded batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch-free at run time: the ONNX runtime plans its windows here too
    from torch import Tensor

#: Window of the vocoder stage of decoding, in frames (30 s at 50 Hz). The vocoder is local: an
#: output sample depends on input frames within about 41 frames of it (the embedding and 8 ConvNeXt
#: blocks of kernel 7: 27 frames; the inverse STFT: 2; six mel-consistency passes: 12), fewer than
#: the ``window_context`` of 50 frames each window keeps on each side. So a longer window changes
#: its output only by float noise, while fewer windows mean less recomputed context (25 % of the
#: vocoder's work at the flow decoder's 500-frame window, 7 % at this one). Longer windows are not
#: faster: on 5 minutes of mel (2 threads, bfloat16 network) the vocoder stage took a median
#: 0.0043 s per second of audio in 1 000- or 1 500-frame windows against 0.0053 in 3 000-frame ones,
#: whose FFT frames no longer fit the cache (``reports/decode-profile.md`` §7). Memory stays bounded
#: by this window (about 75 MB of activations).
VOCODER_WINDOW_FRAMES = 1500

PREDICT_CHUNK_FRAMES = 1500
"""Frames the pitch predictor reads per call on long clips (30 s; see
:meth:`entanglecodec.codec.pitch.PitchConditioner.predict`, and the ONNX runtime's ``pitch``)."""
PREDICT_CONTEXT_FRAMES = 8
"""Context frames on each side of such a chunk: the predictor sees 4 (two convolutions of 5 taps)."""


@dataclass(frozen=True)
class Window:
    """Window ``[start, start + W)`` of item ``item`` whose frames ``[keep_start, keep_end)`` are kept."""

    item: int
    start: int
    keep_start: int
    keep_end: int

    @property
    def inner(self) -> slice:
        """The kept frames in the window's own coordinates (``[keep_start - start, keep_end - start)``)."""
        return slice(self.keep_start - self.start, self.keep_end - self.start)


def unclamped_start(j: int, window: int, context: int) -> int:
    """Start frame of window ``j`` of a clip longer than ``window``, before clamping to the
    clip's end (``F - W``): ``0`` for ``j = 0``, else ``j*K - C`` with ``K = window - 2*context``."""
    return 0 if j == 0 else j * (window - 2 * context) - context


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
        start = max(0, min(unclamped_start(j, window, context), n_frames - window))
        plan.append((start, keep_s, keep_e))
    return plan


def run_windowed(
    frame_lengths: Tensor | Sequence[int],
    window: int,
    context: int,
    batch_windows: int,
    whole: Callable[[list[int]], None],
    windows: Callable[[list[Window]], None],
) -> None:
    """Run a computation over a padded batch with the plan above.

    Args:
        frame_lengths: ``[B]`` valid frames per item.
        window: ``W`` frames per window.
        context: ``C`` frames of context kept on each side of a chunk.
        batch_windows: windows per call of ``windows`` (windows of several items mix).
        whole: called once with the indices of the items of at most ``W`` frames (if any); it
            processes them in one padded pass.
        windows: called with up to ``batch_windows`` :class:`Window` s of the longer items, in
            order; it computes each window and copies the :attr:`Window.inner` frames into place.
    """
    lengths = [int(n) for n in (frame_lengths.tolist() if hasattr(frame_lengths, "tolist") else frame_lengths)]
    short = [i for i, n in enumerate(lengths) if n <= window]
    if short:
        whole(short)
    jobs = [
        Window(i, s, ks, ke) for i, n in enumerate(lengths) if n > window for (s, ks, ke) in window_plan(n, window, context)
    ]
    for j0 in range(0, len(jobs), batch_windows):
        windows(jobs[j0 : j0 + batch_windows])
