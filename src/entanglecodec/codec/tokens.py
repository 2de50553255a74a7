"""Token files: a small ``.npz`` container for the tokens of one audio file.

Fields: ``codes`` (``uint16``/``int32`` ``[F]``), ``sample_rate`` (of the codec, Hz),
``num_samples`` (original length at that rate), ``frame_rate`` (Hz), ``codebook_size``,
``fingerprint`` (the checkpoint's token-space id, see :meth:`EntangleCodec.fingerprint`),
``source`` (the input file name) and ``format_version``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..fileio import atomic_write_bytes

T = TypeVar("T")

FORMAT_VERSION = 1


class TokenFileError(ValueError):
    """A token file is unreadable, malformed, or belongs to another checkpoint."""


@dataclass
class TokenFile:
    """Tokens of one clip as stored on disk (``codes [F]``)."""

    codes: np.ndarray
    sample_rate: int
    num_samples: int
    frame_rate: float
    codebook_size: int
    fingerprint: str
    source: str = ""

    def check_compatible(self, fingerprint: str | Sequence[str], codebook_size: int, path: str | Path = "") -> None:
        """Raise :class:`TokenFileError` unless the tokens come from a model with this fingerprint.

        ``fingerprint`` may list every fingerprint of the loaded model (the current definition and
        the one of release 0.1.0, see :meth:`EntangleCodec.legacy_fingerprint`); the first one is
        named in the message.
        """
        accepted = [fingerprint] if isinstance(fingerprint, str) else list(fingerprint)
        where = f"{path}: " if path else ""
        if self.codebook_size != codebook_size or self.fingerprint not in accepted:
            raise TokenFileError(
                f"{where}tokens were made by another checkpoint (fingerprint {self.fingerprint}, "
                f"codebook {self.codebook_size}) than the one loaded (fingerprint {accepted[0]}, "
                f"codebook {codebook_size}); decode them with the checkpoint that encoded them"
            )


def save_tokens(path: str | Path, tf: TokenFile) -> None:
    """Write a token file (``.npz``, uncompressed codes are tiny: 2 bytes per 20 ms).

    The file is written atomically (:func:`~entanglecodec.fileio.atomic_write_bytes`): a failure
    leaves no partial file. Raises :class:`~entanglecodec.fileio.OutputError` naming the path.
    """
    codes = np.asarray(tf.codes)
    dtype = np.uint16 if tf.codebook_size <= 65536 else np.int32
    buf = io.BytesIO()
    np.savez(
        buf,
        codes=codes.astype(dtype),
        sample_rate=np.int64(tf.sample_rate),
        num_samples=np.int64(tf.num_samples),
        frame_rate=np.float64(tf.frame_rate),
        codebook_size=np.int64(tf.codebook_size),
        fingerprint=np.str_(tf.fingerprint),
        source=np.str_(tf.source),
        format_version=np.int64(FORMAT_VERSION),
    )
    atomic_write_bytes(path, buf.getvalue())


def _field(p: Path, data: dict[str, Any], name: str, convert: Callable[[Any], T]) -> T:
    """``convert(data[name])`` as a scalar, or a :class:`TokenFileError` naming the file and field."""
    value = np.asarray(data[name])
    if value.ndim != 0 or value.dtype.kind not in "biuf":
        raise TokenFileError(f"{p}: field {name!r} must be a number, got {value.dtype} of shape {value.shape}")
    try:
        out = convert(value.item())
    except (TypeError, ValueError, OverflowError) as e:
        raise TokenFileError(f"{p}: field {name!r} has an invalid value {value.item()!r} ({e})") from e
    if isinstance(out, float) and not np.isfinite(out):
        raise TokenFileError(f"{p}: field {name!r} must be finite, got {out}")
    return out


def load_tokens(path: str | Path) -> TokenFile:
    """Read and validate a token file written by :func:`save_tokens`."""
    p = Path(path)
    if not p.is_file():
        raise TokenFileError(f"{p}: token file not found")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise TokenFileError(f"{p}: not an EntangleCodec token file ({e})") from e
    required = ["codes", "sample_rate", "num_samples", "frame_rate", "codebook_size", "fingerprint", "format_version"]
    missing = [k for k in required if k not in data]
    if missing:
        raise TokenFileError(f"{p}: not an EntangleCodec token file (missing {', '.join(missing)})")
    version = _field(p, data, "format_version", _as_int)
    if version > FORMAT_VERSION:
        raise TokenFileError(f"{p}: token format {version} is newer than supported ({FORMAT_VERSION})")
    raw = np.asarray(data["codes"])
    if raw.dtype.kind not in "iu":
        raise TokenFileError(f"{p}: field 'codes' must hold integer token ids, got dtype {raw.dtype}")
    codes = raw.astype(np.int64)
    if codes.ndim != 1 or codes.size == 0:
        raise TokenFileError(f"{p}: codes must be a non-empty 1-D array, got shape {codes.shape}")
    tf = TokenFile(
        codes=codes,
        sample_rate=_field(p, data, "sample_rate", _as_int),
        num_samples=_field(p, data, "num_samples", _as_int),
        frame_rate=_field(p, data, "frame_rate", float),
        codebook_size=_field(p, data, "codebook_size", _as_int),
        fingerprint=str(data["fingerprint"]),
        source=str(data.get("source", "")),
    )
    for name in ("sample_rate", "num_samples", "codebook_size"):
        if getattr(tf, name) < 1:
            raise TokenFileError(f"{p}: field {name!r} must be >= 1, got {getattr(tf, name)}")
    if codes.min() < 0 or codes.max() >= tf.codebook_size:
        raise TokenFileError(
            f"{p}: token ids outside [0, {tf.codebook_size}) (found values in [{int(codes.min())}, {int(codes.max())}])"
        )
    return tf


def _as_int(value: Any) -> int:
    """An integral scalar as ``int`` (``3.0`` is accepted, ``3.5``, ``True`` and strings are not)."""
    if isinstance(value, bool | str | bytes):
        raise ValueError("not an integer")
    out = int(value)
    if out != value:
        raise ValueError("not a whole number")
    return out
