"""The one report writer of the evaluation: a path prefix -> markdown + JSON (+ CSV) + PNG figures.

Every evaluation (reconstruction, probes, benchmarks, vocoder copy-synthesis) describes its files
as ``{role: path}`` from :func:`report_paths` and writes them with :func:`write_report`: the JSON
document is made valid (:func:`json_safe`), the figures are drawn first so the markdown can link
them, and every text file is written atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text


def json_safe(x: Any) -> Any:
    """Recursively replace non-finite floats (NaN/Inf, invalid in JSON) by ``None``; tuples become lists."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def report_paths(out: str | Path, files: Mapping[str, str]) -> dict[str, Path]:
    """Paths of a report's files: ``{role: prefix + suffix}``.

    Args:
        out: the prefix (``reports/probe`` -> ``reports/probe.md``, ...); a trailing suffix that
            one of the files uses (``.md``, ``.json``, ``.csv``, ``.png``) is dropped first.
        files: ``{role: suffix}``, e.g. ``{"markdown": ".md", "json": ".json", "plot": ".png"}``.
    """
    prefix = Path(out)
    if prefix.suffix and any(s.endswith(prefix.suffix) for s in files.values()):
        prefix = prefix.with_suffix("")
    return {role: prefix.with_name(prefix.name + suffix) for role, suffix in files.items()}


def write_report(
    paths: Mapping[str, Path],
    markdown: Callable[[], str],
    doc: Mapping[str, Any] | None = None,
    figures: Mapping[str, Callable[[Path], object]] | None = None,
    extra: Mapping[str, Callable[[Path], object]] | None = None,
) -> dict[str, Path]:
    """Write a report: figures, then extra files (e.g. CSV), the JSON ``doc``, the markdown last.

    Args:
        paths: from :func:`report_paths`; must hold ``"markdown"`` and, with ``doc``, ``"json"``.
        markdown: builds the markdown text (called after the figures exist).
        doc: the JSON document (non-finite floats become ``null``).
        figures: ``{role: draw(path)}`` for PNG figures.
        extra: ``{role: write(path)}`` for other files.

    Returns:
        ``paths`` as a dict.
    """
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    for role, draw in (figures or {}).items():
        draw(paths[role])
    for role, write in (extra or {}).items():
        write(paths[role])
    if doc is not None:
        atomic_write_text(paths["json"], json.dumps(json_safe(dict(doc)), indent=1))
    atomic_write_text(paths["markdown"], markdown())
    return dict(paths)
