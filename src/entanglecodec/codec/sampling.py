"""Torch-free pieces of decoding shared by the torch model and the ONNX runtime: validation of
the sampler settings, the token error, and the initial noise of the flow decoder."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np


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


def decode_noise(seed: int, n_mels: int, n_frames: int) -> np.ndarray:
    """The flow decoder's initial noise for one item: standard normal ``[n_mels, n_frames]`` float32
    drawn from NumPy's PCG64 generator seeded with ``seed``. Every backend (torch on any device, the
    ONNX runtime) starts from these values, so they decode the same tokens to the same audio, and an
    item's noise does not depend on the batch it is decoded in."""
    return np.random.default_rng(int(seed)).standard_normal((n_mels, n_frames), dtype=np.float32)


class NoiseStream:
    """Any frame span of :func:`decode_noise` without holding the whole ``[n_mels, n_frames]`` array.

    The noise is drawn row by row (the array's C order) once, keeping the generator's state every
    ``chunk`` frames of each row; :meth:`slice` restarts from the nearest saved state. Memory:
    ``n_mels * n_frames / chunk`` states (about 13 kB per minute of audio at the defaults) instead
    of 4 bytes per value (1.5 MB per minute). Used by streamed decoding (:mod:`.streaming`).
    """

    def __init__(self, seed: int, n_mels: int, n_frames: int, chunk: int = 500) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.n_mels, self.n_frames, self.chunk = n_mels, n_frames, chunk
        rng = np.random.default_rng(int(seed))
        self._states: list[list[Mapping[str, Any]]] = []
        for _ in range(n_mels):
            row = []
            for s in range(0, n_frames, chunk):
                row.append(rng.bit_generator.state)
                rng.standard_normal(min(chunk, n_frames - s), dtype=np.float32)
            self._states.append(row)
        self._rng = np.random.Generator(type(rng.bit_generator)())

    def slice(self, start: int, stop: int) -> np.ndarray:
        """``decode_noise(seed, n_mels, n_frames)[:, start:stop]``, float32 ``[n_mels, stop - start]``."""
        if not 0 <= start <= stop <= self.n_frames:
            raise ValueError(f"frames [{start}, {stop}) outside the noise of {self.n_frames} frames")
        out = np.empty((self.n_mels, stop - start), dtype=np.float32)
        k = min(start // self.chunk, max(len(self._states[0]) - 1, 0)) if self.n_frames else 0
        skip = start - k * self.chunk
        for r in range(self.n_mels):
            if not self._states[r]:
                break
            self._rng.bit_generator.state = self._states[r][k]
            if skip:
                self._rng.standard_normal(skip, dtype=np.float32)
            out[r] = self._rng.standard_normal(stop - start, dtype=np.float32)
        return out


__all__ = ["MAX_GUIDANCE", "WARN_GUIDANCE", "NoiseStream", "TokenError", "check_sampling", "decode_noise"]
