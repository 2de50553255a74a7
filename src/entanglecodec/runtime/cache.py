"""Where compiled runtime folders live, and which checkpoint pair each belongs to (torch-free).

A runtime folder is keyed by the codec checkpoint and the vocoder it decodes with:
:func:`runtime_key` hashes both ``config.json`` files and both weight checksums, so retraining,
re-exporting or swapping the vocoder gives a new key and a stale folder is never used. Folders
live under :func:`cache_root` (``$ENTANGLECODEC_CACHE``, else ``$XDG_CACHE_HOME/entanglecodec``,
else ``~/.cache/entanglecodec``) in ``runtime/<key>``; deleting them is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..checkpoint import (
    CONFIG_NAME,
    WEIGHTS_CHECKSUM_KEY,
    WEIGHTS_NAME,
    CheckpointError,
    default_checkpoint_dir,
    default_vocoder_dir,
    file_sha256,
    is_checkpoint_dir,
    resolve_checkpoint,
)

FORMAT_VERSION = 1
"""Layout version of a runtime folder (part of the key: a new layout never reads an old folder)."""
META_NAME = "runtime.json"


class RuntimeFolderError(ValueError):
    """A runtime folder cannot be built or read (the message names the folder or the reason)."""


def cache_root() -> Path:
    """The library's cache directory (see the module docstring)."""
    env = os.environ.get("ENTANGLECODEC_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "entanglecodec"


def _identity(directory: Path) -> bytes:
    cfg = (directory / CONFIG_NAME).read_bytes()
    stored = json.loads(cfg).get(WEIGHTS_CHECKSUM_KEY)
    weights = stored if isinstance(stored, str) else file_sha256(directory / WEIGHTS_NAME)
    return cfg + weights.encode()


def resolve_pair(checkpoint: str | Path | None, vocoder: str | None) -> tuple[Path, Path | None]:
    """``(codec directory, vocoder directory)`` of a checkpoint spec and a vocoder spec, without
    torch. The vocoder directory is ``None`` when the pair cannot run in the runtime (Griffin-Lim,
    or no neural vocoder installed)."""
    codec = default_checkpoint_dir() if checkpoint is None else resolve_checkpoint(checkpoint)
    spec = vocoder
    if spec is None:
        try:
            spec = str(json.loads((codec / CONFIG_NAME).read_text()).get("vocoder", "default"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{codec / CONFIG_NAME}: not a readable JSON file ({e})") from e
    if spec.lower() in ("griffin-lim", "griffinlim", "gl"):
        return codec, None
    voc = default_vocoder_dir() if spec == "default" else resolve_checkpoint(spec)
    return codec, voc if voc is not None and is_checkpoint_dir(voc) else None


def runtime_key(codec_dir: Path, vocoder_dir: Path) -> str:
    """Hex key of a (codec, vocoder) pair of checkpoint directories (see the module docstring)."""
    h = hashlib.sha256(f"entanglecodec-runtime-{FORMAT_VERSION}".encode())
    for d in (codec_dir, vocoder_dir):
        h.update(_identity(d))
    return h.hexdigest()[:20]


def runtime_dir(key: str) -> Path:
    return cache_root() / "runtime" / key


def find_runtime(codec_dir: Path, vocoder_dir: Path) -> Path | None:
    """The compiled folder of this pair, or ``None`` when it has not been built, or a file is missing
    or has another size than when it was written (a damaged folder is compiled again)."""
    key = runtime_key(codec_dir, vocoder_dir)
    d = runtime_dir(key)
    try:
        meta = json.loads((d / META_NAME).read_text())
    except (OSError, ValueError):
        return None
    if meta.get("key") != key or meta.get("format") != FORMAT_VERSION:
        return None
    files = meta.get("files") or {}
    for name in ("encoder.onnx", "decoder.onnx", "vocoder.onnx", "dsp.npz"):
        p = d / name
        if not p.is_file() or p.stat().st_size != files.get(name):  # missing or cut short: compile again
            return None
    return d


def build_runtime(codec_dir: Path, vocoder_dir: Path, threads: int = 1) -> Path:
    """Compile the pair into its cache folder (loads torch; seconds) and return the folder."""
    from ..codec.model import EntangleCodec
    from .export import export_runtime

    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise RuntimeFolderError(f"the ONNX runtime needs `pip install onnx onnxruntime` ({e.name} is missing)") from e
    model = EntangleCodec.from_pretrained(codec_dir, build_text_encoder=False)
    model.set_vocoder(str(vocoder_dir))
    key = runtime_key(codec_dir, vocoder_dir)
    return export_runtime(model, runtime_dir(key), key, threads)


__all__ = [
    "FORMAT_VERSION", "META_NAME", "RuntimeFolderError", "build_runtime", "cache_root", "find_runtime",
    "resolve_pair", "runtime_dir", "runtime_key",
]
