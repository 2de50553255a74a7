"""Torch-free pieces of decoding shared by the torch model and the ONNX runtime: validation of
the sampler settings, the token error, and the initial noise of the flow decoder."""

from __future__ import annotations

import math
import numbers
import warnings
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


__all__ = ["MAX_GUIDANCE", "WARN_GUIDANCE", "TokenError", "check_sampling", "decode_noise"]
