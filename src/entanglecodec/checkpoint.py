"""Checkpoint integrity: a SHA-256 of ``model.safetensors`` stored in ``config.json``.

``save_pretrained`` writes the checksum of the weights file under :data:`WEIGHTS_CHECKSUM_KEY`;
``from_pretrained`` verifies it before loading, so weights corrupted after saving (a bad copy, a
flipped block) are refused even when the safetensors header is intact. Checkpoints saved before
the checksum existed (no key) still load: there is nothing to verify them against.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHTS_CHECKSUM_KEY = "weights_sha256"
"""Key of ``config.json`` holding the hex SHA-256 of ``model.safetensors``."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_weights_checksum(weights: str | Path, expected: object) -> None:
    """Check ``weights`` against the checksum from ``config.json`` (``None``: nothing to check).

    Raises:
        ValueError: the stored checksum is malformed, or the file's checksum differs (the message
            names the file and says it is corrupted or was changed after saving).
    """
    if expected is None:
        return
    if not isinstance(expected, str) or len(expected) != 64:
        raise ValueError(f"{weights}: config.json has a malformed {WEIGHTS_CHECKSUM_KEY!r} entry: {expected!r}")
    actual = file_sha256(weights)
    if actual != expected.lower():
        raise ValueError(
            f"{weights}: checksum mismatch (config.json says {expected[:12]}..., the file is {actual[:12]}...): "
            "the weights are corrupted or were changed after saving"
        )
