"""The corpus manifest: one JSON object per line (JSONL), one line per audio clip.

Every data source (the synthetic generator, the real-dataset importers, user-made lists) writes this
format, and every loader (:class:`~entanglecodec.data.dataset.ManifestDataset`, the WebDataset shard
writer, ``entanglecodec data validate``) reads it through :func:`read_manifest`.

Keys of a row (see :class:`ManifestRow`):

================  ==========  ========  ==========================================================
key               type        required  meaning
================  ==========  ========  ==========================================================
``audio``         str         yes       audio file; relative paths are relative to the manifest's
                                        directory, absolute paths are allowed
``domain``        str         yes       one of :data:`DOMAINS` (``speech``, ``music``, ``sound``,
                                        ``mixture``)
``caption``       str         yes       the rich natural-language caption (paper App. C.2)
``id``            str         no        unique clip id; default: the audio path without suffix
``split``         str         no        one of :data:`SPLITS` (``train``, ``valid``, ``test``);
                                        default ``train``
``duration``      number      no        seconds (> 0); ``null``/absent when unknown
``asr_caption``   str/null    no        transcript only (speech) or the bare label (non-speech),
                                        for the paper's "w/o rich caption" ablation; null/absent
                                        -> ``""``
``text``          str/null    no        the transcript when the clip holds speech; null/absent
                                        -> ``""``
``attributes``    object      no        structured ground truth / dataset metadata; default ``{}``
================  ==========  ========  ==========================================================

Unknown extra keys are kept as they are. A malformed line raises :class:`ManifestError` naming
the file, the line number and the problem.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

DOMAINS: tuple[str, ...] = ("speech", "music", "sound", "mixture")
"""Allowed values of the ``domain`` key."""

SPLITS: tuple[str, ...] = ("train", "valid", "test")
"""Allowed values of the ``split`` key."""

REQUIRED_KEYS: tuple[str, ...] = ("audio", "domain", "caption")
"""Keys every manifest line must carry."""

_STR_KEYS: tuple[str, ...] = ("audio", "domain", "caption", "id", "split", "asr_caption", "text")
_NULLABLE_KEYS: tuple[str, ...] = ("text", "asr_caption")


class ManifestError(ValueError):
    """A manifest is malformed: bad JSON, a missing key, a wrong type or an unknown domain/split.

    The message names the file and the 1-based line number of the first offending line.
    """


class ManifestRow(TypedDict):
    """One normalised manifest row, as returned by :func:`read_manifest`.

    ``audio`` is an absolute path after reading (resolved against the manifest's directory).
    Extra keys found in the file are kept in the dict as well.
    """

    id: str
    audio: str
    domain: str
    split: str
    caption: str
    asr_caption: str
    text: str
    duration: float | None
    attributes: dict[str, Any]


def validate_row(obj: Any, where: str = "row") -> None:
    """Check one manifest object and raise :class:`ManifestError` with ``where`` in the message.

    Args:
        obj: the parsed JSON value of one line (must be an object).
        where: a location prefix for messages, e.g. ``"corpus/manifest.jsonl:12"``.

    Raises:
        ManifestError: not an object, a required key missing or empty, a wrong value type,
            a non-positive or non-finite duration, or an unknown ``domain``/``split``.
    """
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in REQUIRED_KEYS:
        if key not in obj:
            raise ManifestError(f"{where}: missing required key '{key}' (required: {', '.join(REQUIRED_KEYS)})")
    for key in _STR_KEYS:
        if key in _NULLABLE_KEYS and obj.get(key) is None:
            continue  # e.g. ``text: null`` for non-speech clips
        if key in obj and not isinstance(obj[key], str):
            raise ManifestError(f"{where}: key '{key}' must be a string, got {type(obj[key]).__name__} {obj[key]!r}")
    if not obj["audio"].strip():
        raise ManifestError(f"{where}: key 'audio' is empty")
    if "id" in obj and not obj["id"].strip():
        raise ManifestError(f"{where}: key 'id' is empty")
    if obj["domain"] not in DOMAINS:
        raise ManifestError(f"{where}: unknown domain {obj['domain']!r} (expected one of {', '.join(DOMAINS)})")
    if "split" in obj and obj["split"] not in SPLITS:
        raise ManifestError(f"{where}: unknown split {obj['split']!r} (expected one of {', '.join(SPLITS)})")
    if "attributes" in obj and not isinstance(obj["attributes"], dict):
        raise ManifestError(f"{where}: key 'attributes' must be an object, got {type(obj['attributes']).__name__}")
    dur = obj.get("duration")
    if dur is not None:
        if isinstance(dur, bool) or not isinstance(dur, int | float):
            raise ManifestError(f"{where}: key 'duration' must be a number of seconds, got {dur!r}")
        if not math.isfinite(dur) or dur <= 0:
            raise ManifestError(f"{where}: key 'duration' must be a positive finite number of seconds, got {dur!r}")


def _default_id(audio: str) -> str:
    p = Path(audio)
    return str(p.with_suffix("")) if p.suffix else str(p)


def normalize_row(obj: Mapping[str, Any], base_dir: Path | None) -> ManifestRow:
    """Fill defaults for the optional keys and resolve ``audio`` against ``base_dir``.

    The input must already have passed :func:`validate_row`.
    """
    row: dict[str, Any] = dict(obj)
    audio = str(obj["audio"])
    row.setdefault("id", _default_id(audio))
    if base_dir is not None and not os.path.isabs(audio):
        audio = str((base_dir / audio).resolve())
    row["audio"] = audio
    row.setdefault("split", "train")
    for key in _NULLABLE_KEYS:  # null / absent -> ""
        if row.get(key) is None:
            row[key] = ""  # type: ignore[literal-required]
    row.setdefault("attributes", {})
    dur = row.get("duration")
    row["duration"] = float(dur) if dur is not None else None
    return row  # type: ignore[return-value]


def iter_manifest_lines(path: str | Path, error: type[ValueError] = ManifestError) -> Iterator[tuple[str, int, Any]]:
    """The one JSON-lines reader: ``(where, line number, object)`` for every non-blank line.

    ``where`` is ``"path:line"`` for messages. Raises ``error`` (naming the file and line) on
    invalid JSON, ``FileNotFoundError`` when the file is missing. Objects are not validated here
    (see :func:`read_manifest`, which does).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: manifest not found")
    if p.is_dir():
        raise error(f"{p}: is a directory, expected a .jsonl manifest file")
    with p.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            yield where, lineno, obj


def read_manifest(path: str | Path, split: str | None = None, allow_empty: bool = False) -> list[ManifestRow]:
    """Read and validate a JSONL manifest.

    Args:
        path: the ``.jsonl`` file. Blank lines are ignored.
        split: keep only rows of this split (one of :data:`SPLITS`), or ``None`` for all rows.
        allow_empty: return an empty list instead of raising when no row (of ``split``) is found.

    Returns:
        The rows in file order, normalised by :func:`normalize_row` (``audio`` made absolute,
        optional keys filled with their defaults).

    Raises:
        FileNotFoundError: the manifest does not exist.
        ManifestError: a malformed line (the message names the file and line number), a duplicate
            ``id``, an unknown ``split`` argument, or no row at all of the requested split.
    """
    p = Path(path)
    if split is not None and split not in SPLITS:
        raise ManifestError(f"unknown split {split!r} requested from {p} (expected one of {', '.join(SPLITS)})")
    base = p.resolve().parent
    rows: list[ManifestRow] = []
    seen: dict[str, int] = {}
    split_counts: Counter[str] = Counter()
    for where, lineno, obj in iter_manifest_lines(p):
        validate_row(obj, where)
        row = normalize_row(obj, base)
        if row["id"] in seen:
            raise ManifestError(f"{where}: duplicate id {row['id']!r} (first seen on line {seen[row['id']]})")
        seen[row["id"]] = lineno
        split_counts[row["split"]] += 1
        if split is None or row["split"] == split:
            rows.append(row)
    if not rows and not allow_empty:
        if split is None:
            raise ManifestError(f"{p}: manifest holds no rows")
        present = ", ".join(f"{k}={v}" for k, v in sorted(split_counts.items())) or "none"
        raise ManifestError(
            f"{p}: no rows of split {split!r} (rows per split: {present}); choose one of those splits "
            "(commands that read a split take --split; 'all' uses every row) or make a larger corpus"
        )
    return rows


def audio_paths(path: str | Path, split: str | None = None) -> list[Path]:
    """Audio files listed by a JSONL manifest (only ``audio`` is required; rows without a
    ``split`` count as any split) or by a plain list file (one path per line), relative to the
    file's directory.

    Raises:
        FileNotFoundError: the file is missing.
        ManifestError: invalid JSON, a row without ``audio``, or no audio rows (of ``split``).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: manifest not found")
    base = p.parent
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    files: list[Path] = []
    if lines and lines[0].startswith("{"):
        for where, _, row in iter_manifest_lines(p):
            if not isinstance(row, dict) or "audio" not in row:
                raise ManifestError(f"{where}: row has no 'audio' field")
            if split and row.get("split", split) != split:
                continue
            files.append(base / row["audio"])
    else:
        files = [base / ln for ln in lines]
    if not files:
        raise ManifestError(f"{p}: no audio rows" + (f" in split {split!r}" if split else ""))
    return files


def read_manifests(paths: str | Path | Sequence[str | Path], split: str | None = None) -> list[ManifestRow]:
    """Read several manifests (one path or a list) and concatenate their rows.

    With ``split`` given, a manifest holding no row of that split contributes nothing, but at least
    one row must be found over all files.

    Raises:
        ManifestError: as :func:`read_manifest`, or no rows at all.
    """
    path_list = [paths] if isinstance(paths, str | Path) else list(paths)
    if not path_list:
        raise ManifestError("no manifest given")
    out: list[ManifestRow] = []
    for p in path_list:
        out.extend(read_manifest(p, split, allow_empty=True))
    if not out:
        what = "rows" if split is None else f"rows of split {split!r}"
        raise ManifestError(f"no {what} in any of {', '.join(str(p) for p in path_list)}")
    return out


def _portable_audio(audio: str, out_dir: Path) -> str:
    """Rewrite an absolute path under ``out_dir`` as a relative one (POSIX separators)."""
    if not os.path.isabs(audio):
        return audio
    try:
        return Path(audio).resolve().relative_to(out_dir).as_posix()
    except ValueError:
        return audio


def write_manifest(
    rows: Iterable[Mapping[str, Any]],
    path: str | Path,
    overwrite: bool = False,
    relative_paths: bool = True,
) -> int:
    """Validate rows and write them as JSONL, atomically (temporary file + rename).

    Args:
        rows: manifest rows (at least the required keys; see the module docstring).
        path: destination ``.jsonl``; its parent directories are created.
        overwrite: replace an existing file; otherwise an existing file is an error.
        relative_paths: store absolute ``audio`` paths that lie under the manifest's directory as
            relative paths, so that the corpus directory can be moved as a whole. Relative paths
            in ``rows`` are written unchanged (they are taken as relative to the manifest).

    Returns:
        The number of rows written.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ManifestError: a row is invalid (the message gives its 0-based index), a duplicate id,
            or a value JSON cannot represent (NaN, Inf, non-serialisable objects).
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p}: already exists (pass overwrite=True / --overwrite to replace it)")
    p.parent.mkdir(parents=True, exist_ok=True)
    out_dir = p.parent.resolve()
    lines: list[str] = []
    seen: dict[str, int] = {}
    for i, r in enumerate(rows):
        where = f"row {i} for {p}"
        validate_row(dict(r), where)
        obj = dict(r)
        if relative_paths:
            obj["audio"] = _portable_audio(str(obj["audio"]), out_dir)
        rid = str(obj.get("id", _default_id(obj["audio"])))
        if rid in seen:
            raise ManifestError(f"{where}: duplicate id {rid!r} (also row {seen[rid]})")
        seen[rid] = i
        try:
            lines.append(json.dumps(obj, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as e:
            raise ManifestError(f"{where}: cannot be written as JSON ({e})") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(lines)


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Count rows and hours per domain and per split.

    Returns:
        ``{"rows": int, "hours": float, "unknown_duration": int, "per_domain": {domain: {"rows",
        "hours"}}, "per_split": {split: {"rows", "hours"}}}``; rows without a duration count as
        rows but add nothing to the hours (``unknown_duration`` tells how many).
    """
    per_domain: dict[str, dict[str, float]] = {}
    per_split: dict[str, dict[str, float]] = {}
    total_s = 0.0
    n = 0
    unknown = 0
    for r in rows:
        n += 1
        d = r.get("duration")
        sec = float(d) if d is not None else 0.0
        unknown += d is None
        total_s += sec
        for table, key in ((per_domain, str(r["domain"])), (per_split, str(r.get("split", "train")))):
            e = table.setdefault(key, {"rows": 0, "hours": 0.0})
            e["rows"] += 1
            e["hours"] += sec / 3600.0
    return {
        "rows": n,
        "hours": total_s / 3600.0,
        "unknown_duration": unknown,
        "per_domain": per_domain,
        "per_split": per_split,
    }


def check_audio_file(path: str | Path, decode: bool = True) -> tuple[float | None, str | None]:
    """``(duration in seconds, None)`` for a usable audio file, else ``(None, reason)``.

    ``decode=False`` reads the header only (frames and rate); ``decode=True`` also decodes every
    sample (in 1 Mi-frame blocks) and refuses NaN/Inf. Used by the importers and ``data validate``.
    """
    import numpy as np
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            n, sr = f.frames, f.samplerate
            if n <= 0 or sr <= 0:
                return None, "contains no samples (zero-length audio)"
            if decode:
                got = 0
                for block in f.blocks(blocksize=1 << 20, dtype="float32", always_2d=True):
                    if not np.isfinite(block).all():
                        return None, "contains NaN or Inf samples"
                    got += block.shape[0]
                if got == 0:
                    return None, "decodes to zero samples"
                n = got
            return n / sr, None
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as e:
        if not Path(path).exists():
            return None, "file not found"
        return None, f"cannot be read as audio ({e})"


def check_files(
    rows: Sequence[Mapping[str, Any]], decode: bool = True, workers: int = 1
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]], int]:
    """Check every row's audio with :func:`check_audio_file` (``workers`` threads).

    Returns:
        ``(checked, bad, mismatched)``: the readable rows with their measured ``duration``,
        ``(id, audio, reason)`` of each unusable file, and how many rows declare a duration that
        differs from the file's by more than 0.1 s.
    """
    from concurrent.futures import ThreadPoolExecutor

    paths = [str(r["audio"]) for r in rows]
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            res = list(pool.map(lambda p: check_audio_file(p, decode), paths))
    else:
        res = [check_audio_file(p, decode) for p in paths]
    checked: list[dict[str, Any]] = []
    bad: list[tuple[str, str, str]] = []
    mismatched = 0
    for r, (dur, err) in zip(rows, res, strict=True):
        if err is not None:
            bad.append((str(r["id"]), str(r["audio"]), err))
            continue
        declared = r.get("duration")
        if declared is not None and dur is not None and abs(float(declared) - dur) > 0.1:
            mismatched += 1
        checked.append({**r, "duration": dur})
    return checked, bad, mismatched
