"""Arithmetic precision of the decoder's networks at inference (decode only; encoding is always float32).

The matrix products of the flow decoder and of the vocoder's ConvNeXt network dominate decoding
on a CPU. On CPUs with native bfloat16 matrix units (Intel AMX or AVX512-BF16; oneDNN uses them
through ``torch.autocast``) running them in bfloat16 autocast is about 2-3x faster; the residual
stream, the norms, the mel the flow decoder returns, the vocoder's iSTFT head and its
mel-consistency passes stay float32. It changes the decoded mel by about 1 % RMS of its normalised
value and the vocoder's features by about 0.4 % (see ``reports/decode-profile.md`` for the measured
effect on quality), so it is a setting:

* ``"float32"``: the reference arithmetic (what training computes);
* ``"bfloat16"``: bfloat16 autocast for the flow decoder and the vocoder network (slow on CPUs
  without native support);
* ``"auto"`` (default): ``"bfloat16"`` on a CPU with native bfloat16 matrix support, else
  ``"float32"`` (always ``"float32"`` on other devices).

The default can be changed with the environment variable ``ENTANGLECODEC_DECODE_PRECISION``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

PRECISIONS = ("auto", "float32", "bfloat16")
PRECISION_ENV = "ENTANGLECODEC_DECODE_PRECISION"


def native_cpu_bf16() -> bool:
    """``True`` when this CPU multiplies bfloat16 matrices natively (AMX tiles or AVX512-BF16)."""
    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported())  # type: ignore[union-attr]
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str | None, device: torch.device) -> torch.dtype:
    """The flow decoder's compute dtype for ``precision`` (``None``: ``$ENTANGLECODEC_DECODE_PRECISION``,
    else ``"auto"``) on ``device``.

    Raises:
        ValueError: an unknown precision name (from the argument or the environment).
    """
    name = precision if precision is not None else os.environ.get(PRECISION_ENV) or "auto"
    if name not in PRECISIONS:
        where = "" if precision is not None else f" (from ${PRECISION_ENV})"
        raise ValueError(f"decode precision must be one of {', '.join(PRECISIONS)}, got {name!r}{where}")
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cpu" and native_cpu_bf16() else torch.float32


@contextlib.contextmanager
def compute_dtype(dtype: torch.dtype, device: torch.device) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device`` (nothing for float32)."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
