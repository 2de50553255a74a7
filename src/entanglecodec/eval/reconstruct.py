"""Reconstruction evaluation of any set of systems on a manifest: per-clip metrics, tables, plots.

:func:`evaluate_reconstruction` runs every system on every clip of a manifest split, aligns each
output to its reference (cross-correlation, see :func:`~entanglecodec.eval.metrics.align`), and
computes every metric that applies to the clip's domain:

* all domains: log-mel L1, multi-resolution STFT distance, SI-SDR;
* clips with speech (domain ``speech``, or ``mixture`` with a transcript): STOI, wideband PESQ,
  voiced/unvoiced F1, speaker similarity, and, when an English transcript exists (or one whose
  language the manifest does not state), pocketsphinx WER/CER of the reconstruction *and* of the
  original (the original's error rate is the floor a codec can reach with this recogniser).

:func:`write_report` writes ``<out>.md`` (markdown tables), ``<out>.csv`` (one row per clip and
system), ``<out>.json`` (aggregates) and two figures: ``<out>-bitrate.png`` (metric vs. bitrate,
every system) and ``<out>-mels.png`` (log-mel of one clip per domain, every system).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from .jsonsafe import json_safe
from .systems import SAMPLE_RATE, CodecSystemError, System

DOMAINS: tuple[str, ...] = ("speech", "music", "sound", "mixture")
"""Domains in report order."""


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is named, reported and aggregated.

    Attributes:
        key: column name in the CSV/JSON.
        label: column header in tables.
        higher_is_better: direction (shown as an arrow).
        speech: computed only on clips with speech.
        fmt: format of the aggregated value.
    """

    key: str
    label: str
    higher_is_better: bool
    speech: bool
    fmt: str = "{:.3f}"


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("stoi", "STOI", True, True),
    MetricSpec("pesq", "PESQ-WB", True, True, "{:.2f}"),
    MetricSpec("vuv_f1", "V/UV F1", True, True),
    MetricSpec("spk_sim", "SIM", True, True),
    MetricSpec("wer", "WER %", False, True, "{:.1f}"),
    MetricSpec("cer", "CER %", False, True, "{:.1f}"),
    MetricSpec("mel_l1", "mel L1", False, False),
    MetricSpec("mr_stft", "MR-STFT", False, False),
    MetricSpec("si_sdr", "SI-SDR dB", True, False, "{:.1f}"),
)
"""Every metric of the evaluation, in table order (WER/CER are corpus-level, in percent)."""

ASR_LANGUAGE = "en"
"""The language pocketsphinx's bundled model recognises: WER/CER are computed only on clips whose
language is English or not stated."""


@dataclass(frozen=True)
class Clip:
    """One evaluation clip.

    Attributes:
        id: clip id from the manifest.
        audio: absolute path of the audio file.
        domain: ``speech``, ``music``, ``sound`` or ``mixture``.
        text: the transcript, or ``None`` without one.
        duration: seconds, if the manifest states it.
        language: spoken language (``"en"``, ``"fr"``, ...) if the manifest states it.
    """

    id: str
    audio: Path
    domain: str
    text: str | None
    duration: float | None = None
    language: str | None = None

    @property
    def has_speech(self) -> bool:
        """Speech metrics apply: a speech clip, or a mixture with a transcript."""
        return self.domain == "speech" or (self.domain == "mixture" and self.text is not None)

    @property
    def scores_asr(self) -> bool:
        """WER/CER apply: speech with a transcript in English (or in an unstated language)."""
        english = self.language is None or self.language.lower().split("-")[0].split("_")[0] == ASR_LANGUAGE
        return self.has_speech and self.text is not None and english


def _language(row: dict[str, Any]) -> str | None:
    """``language`` of a manifest row: top level, ``attributes.language`` or ``attributes.speaker.language``."""
    attrs = row.get("attributes")
    attrs = attrs if isinstance(attrs, dict) else {}
    speaker = attrs.get("speaker")
    speaker = speaker if isinstance(speaker, dict) else {}
    for value in (row.get("language"), attrs.get("language"), speaker.get("language")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


@dataclass
class SystemInfo:
    """Name and bitrate (bits/s, ``None`` when not applicable) of an evaluated system."""

    name: str
    bitrate: float | None


@dataclass
class ReconstructionResults:
    """Everything an evaluation produced.

    Attributes:
        manifest: the manifest path.
        split: the split evaluated.
        clips: the clips evaluated.
        systems: evaluated systems, in run order.
        rows: one dict per (clip, system) with every metric (``NaN`` where it does not apply).
        original_asr: clip id -> ASR result of the unprocessed original (clips with text).
        aggregates: system -> group (a domain, ``"speech-metrics"`` or ``"all"``) -> metric -> value.
        floor: group -> ``{"wer": ..., "cer": ...}`` of the originals (the ASR floor, percent).
        examples: domain -> ``{"reference": wav, <system>: wav}`` (aligned, 24 kHz) for the figure.
        notes: metrics that could not be computed and why.
    """

    manifest: str
    split: str | None
    clips: list[Clip]
    systems: list[SystemInfo]
    rows: list[dict[str, Any]] = field(default_factory=list)
    original_asr: dict[str, M.AsrResult] = field(default_factory=dict)
    aggregates: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    floor: dict[str, dict[str, float]] = field(default_factory=dict)
    examples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------
def _read_rows(path: Path, split: str | None) -> list[dict[str, Any]]:
    """Rows of a JSONL manifest: the project's reader when installed, else a minimal local one."""
    try:
        from ..data.manifest import read_manifest
    except ModuleNotFoundError as e:
        if e.name not in ("entanglecodec.data", "entanglecodec.data.manifest"):
            raise
    else:
        return [dict(r) for r in read_manifest(path, split=split)]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({err.msg})") from None
        if not isinstance(obj, dict) or "audio" not in obj or "domain" not in obj:
            raise ValueError(f"{path}:{lineno}: each line needs at least the keys 'audio' and 'domain'")
        audio = Path(obj["audio"])
        obj["audio"] = str(audio if audio.is_absolute() else (path.parent / audio).resolve())
        obj.setdefault("id", str(Path(obj["audio"]).stem))
        if split is None or obj.get("split", "train") == split:
            rows.append(obj)
    if not rows:
        raise ValueError(f"{path}: no rows" + (f" of split {split!r}" if split else ""))
    return rows


def load_clips(
    manifest: str | Path,
    split: str | None = "test",
    max_clips: int | None = None,
    domains: Sequence[str] | None = None,
) -> list[Clip]:
    """Read the clips to evaluate from a JSONL manifest.

    Args:
        manifest: JSON lines with ``id``, ``audio`` (relative to the manifest's directory),
            ``domain``, ``split``, ``text`` (transcript, or empty/null) and ``duration``.
        split: keep only this split (``None``: every row).
        max_clips: keep at most this many clips, spread over the domains round-robin so every
            domain stays represented.
        domains: keep only these domains.

    Raises:
        ValueError: unknown domain requested, or no clip left after filtering.
    """
    path = Path(manifest)
    if domains is not None:
        unknown = sorted(set(domains) - set(DOMAINS))
        if unknown:
            raise ValueError(f"unknown domain(s) {unknown}: use {', '.join(DOMAINS)}")
    clips = []
    for r in _read_rows(path, split):
        if domains is not None and r["domain"] not in domains:
            continue
        text = r.get("text")
        text = text if isinstance(text, str) and M.normalize_text(text) else None
        dur = r.get("duration")
        clips.append(
            Clip(
                str(r["id"]),
                Path(r["audio"]),
                str(r["domain"]),
                text,
                float(dur) if dur else None,
                _language(r),
            )
        )
    if not clips:
        raise ValueError(
            f"{path}: no clips of split {split!r}" + (f" in domains {list(domains)}" if domains else "")
        )
    if max_clips is not None:
        if max_clips < 1:
            raise ValueError(f"max_clips must be >= 1, got {max_clips}")
        by_domain: dict[str, list[Clip]] = {}
        for c in clips:
            by_domain.setdefault(c.domain, []).append(c)
        chosen: list[Clip] = []
        depth = 0
        while len(chosen) < min(max_clips, len(clips)):
            for d in by_domain.values():
                if depth < len(d) and len(chosen) < max_clips:
                    chosen.append(d[depth])
            depth += 1
        keep = {id(c) for c in chosen}
        clips = [c for c in clips if id(c) in keep]
    return clips


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
def _safe(fn: Callable[[], float], what: str, notes: list[str]) -> float:
    try:
        return float(fn())
    except M.MetricError as e:
        notes.append(f"{what}: {e}")
        return math.nan


def score_clip(
    clip: Clip,
    reference: np.ndarray,
    estimate: np.ndarray,
    notes: list[str],
    original_asr: M.AsrResult | None = None,
    max_lag_s: float = 0.5,
    f0_method: M.F0Method = "dio",
) -> tuple[dict[str, Any], np.ndarray]:
    """Align one reconstruction to its reference and compute every metric that applies.

    Args:
        clip: the clip (its domain and text decide which metrics apply).
        reference: ``[S]`` original at 24 kHz.
        estimate: ``[S']`` reconstruction at 24 kHz.
        notes: receives one line per metric that could not be computed.
        original_asr: ASR result of the original (copied into the row as the floor).
        max_lag_s: largest delay searched by the alignment, in seconds.
        f0_method: ``"dio"`` or ``"harvest"`` for the V/UV F1.

    Returns:
        ``(row, aligned_estimate)``; the row holds ``lag_ms`` and every metric (``NaN`` = n/a).
    """
    sr = SAMPLE_RATE
    est, lag = M.align(reference, estimate, sr, max_lag_s)
    ref = reference.astype(np.float64)
    where = f"clip {clip.id}"
    row: dict[str, Any] = {"lag_ms": 1000.0 * lag / sr}
    row["mel_l1"] = _safe(lambda: M.log_mel_l1(ref, est, sr), f"{where} mel L1", notes)
    row["mr_stft"] = _safe(lambda: M.mr_stft_distance(ref, est, sr), f"{where} MR-STFT", notes)
    row["si_sdr"] = _safe(lambda: M.si_sdr(ref, est, sr), f"{where} SI-SDR", notes)
    for key in ("stoi", "pesq", "vuv_f1", "spk_sim", "wer", "cer", "wer_original", "cer_original"):
        row[key] = math.nan
    row["hypothesis"] = ""
    row["_word_errors"] = row["_ref_words"] = row["_char_errors"] = row["_ref_chars"] = 0
    if clip.has_speech:
        row["stoi"] = _safe(lambda: M.stoi(ref, est, sr), f"{where} STOI", notes)
        row["pesq"] = _safe(lambda: M.pesq_wb(ref, est, sr), f"{where} PESQ", notes)
        row["vuv_f1"] = _safe(lambda: M.vuv_f1(ref, est, sr, method=f0_method), f"{where} V/UV F1", notes)
        row["spk_sim"] = _safe(lambda: M.speaker_similarity(ref, est, sr), f"{where} SIM", notes)
        if clip.scores_asr and clip.text is not None:
            asr = M.asr_errors(clip.text, est, sr)
            row.update(wer=100 * asr.wer, cer=100 * asr.cer, hypothesis=asr.hypothesis)
            row.update(_word_errors=asr.word_errors, _ref_words=asr.ref_words)
            row.update(_char_errors=asr.char_errors, _ref_chars=asr.ref_chars)
            if original_asr is not None:
                row.update(wer_original=100 * original_asr.wer, cer_original=100 * original_asr.cer)
    return row, est


def _aggregate(rows: list[dict[str, Any]], clips_by_id: dict[str, Clip]) -> dict[str, dict[str, float]]:
    """Means of every metric per group, corpus-level WER/CER, real-time factor and clip counts."""
    groups: dict[str, list[dict[str, Any]]] = {"all": rows}
    groups["speech-metrics"] = [r for r in rows if clips_by_id[r["clip_id"]].has_speech]
    for d in DOMAINS:
        groups[d] = [r for r in rows if r["domain"] == d]
    out: dict[str, dict[str, float]] = {}
    for g, rs in groups.items():
        if not rs:
            continue
        agg: dict[str, float] = {"clips": float(len(rs))}
        for m in METRICS:
            if m.key in ("wer", "cer"):
                continue
            vals = [r[m.key] for r in rs if not math.isnan(r[m.key])]
            agg[m.key] = float(np.mean(vals)) if vals else math.nan
        words = sum(r["_ref_words"] for r in rs)
        chars = sum(r["_ref_chars"] for r in rs)
        agg["wer"] = 100.0 * sum(r["_word_errors"] for r in rs) / words if words else math.nan
        agg["cer"] = 100.0 * sum(r["_char_errors"] for r in rs) / chars if chars else math.nan
        seconds = sum(r["duration_s"] for r in rs)
        compute = sum(r["process_s"] for r in rs)
        agg["x_realtime"] = seconds / compute if compute > 0 else math.inf
        out[g] = agg
    return out


def evaluate_reconstruction(
    manifest: str | Path,
    systems: Sequence[System],
    split: str | None = "test",
    max_clips: int | None = None,
    domains: Sequence[str] | None = None,
    max_lag_s: float = 0.5,
    f0_method: M.F0Method = "dio",
    progress: Callable[[str], None] | None = None,
) -> ReconstructionResults:
    """Run every system on every clip and compute all applicable metrics.

    Args:
        manifest: JSONL manifest (see :func:`load_clips`).
        systems: the codecs to compare (see :mod:`entanglecodec.eval.systems`).
        split: manifest split to evaluate (``None``: all rows).
        max_clips: evaluate at most this many clips (spread over domains).
        domains: restrict to these domains.
        max_lag_s: largest codec delay searched by the alignment, in seconds.
        f0_method: F0 tracker of the V/UV F1 (``"dio"`` or ``"harvest"``).
        progress: called with a short description after each (clip, system) step.

    Returns:
        A :class:`ReconstructionResults` with per-clip rows and per-system aggregates.

    Raises:
        CodecSystemError: a system failed on a clip (the message names the system and the clip).
        ValueError: no systems, duplicate system names, or nothing to evaluate.
    """
    from ..audio import load_audio

    if not systems:
        raise ValueError("no systems to evaluate")
    names = [s.name for s in systems]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"system names must be unique, got duplicates {dupes}")
    clips = load_clips(manifest, split, max_clips, domains)
    res = ReconstructionResults(str(manifest), split, clips, [SystemInfo(s.name, s.bitrate) for s in systems])
    clips_by_id = {c.id: c for c in clips}
    for clip in clips:
        ref, _ = load_audio(clip.audio, SAMPLE_RATE)
        original = None
        if clip.scores_asr and clip.text is not None:
            original = M.asr_errors(clip.text, ref, SAMPLE_RATE)
            res.original_asr[clip.id] = original
        keep_example = clip.domain not in res.examples
        if keep_example:
            res.examples[clip.domain] = {"reference": ref}
        for system in systems:
            t0 = time.perf_counter()
            try:
                out = system.process(ref)
            except CodecSystemError as e:
                raise CodecSystemError(f"{system.name} failed on clip {clip.id} ({clip.audio}): {e}") from e
            elapsed = time.perf_counter() - t0
            row, aligned = score_clip(clip, ref, np.asarray(out), res.notes, original, max_lag_s, f0_method)
            row = {
                "system": system.name,
                "bitrate": system.bitrate if system.bitrate is not None else math.nan,
                "clip_id": clip.id,
                "domain": clip.domain,
                "duration_s": ref.size / SAMPLE_RATE,
                "process_s": elapsed,
                **row,
            }
            res.rows.append(row)
            if keep_example:
                res.examples[clip.domain][system.name] = aligned.astype(np.float32)
            if progress is not None:
                progress(f"{clip.id} · {system.name}")
    for s in systems:
        res.aggregates[s.name] = _aggregate([r for r in res.rows if r["system"] == s.name], clips_by_id)
    res.floor = _floor(res)
    return res


def _floor(res: ReconstructionResults) -> dict[str, dict[str, float]]:
    """Corpus-level WER/CER (percent) of the unprocessed originals, per group."""
    domain_of = {c.id: c.domain for c in res.clips}
    out: dict[str, dict[str, float]] = {}
    for group in ("all", "speech-metrics", *DOMAINS):
        asr = [
            a
            for cid, a in res.original_asr.items()
            if group in ("all", "speech-metrics") or domain_of[cid] == group
        ]
        words = sum(a.ref_words for a in asr)
        chars = sum(a.ref_chars for a in asr)
        if words:
            out[group] = {
                "wer": 100.0 * sum(a.word_errors for a in asr) / words,
                "cer": 100.0 * sum(a.char_errors for a in asr) / chars,
            }
    return out


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------
def _fmt(value: float, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return fmt.format(value)


def _bitrate(b: float | None) -> str:
    return "–" if b is None else f"{b:,.0f}"


def summary_table(res: ReconstructionResults) -> tuple[list[str], list[list[str]]]:
    """One row per system: bitrate, speech metrics over speech clips, signal metrics over all clips.

    A last row ``original (ASR floor)`` gives the recogniser's WER/CER on the unprocessed audio.

    Returns:
        ``(header, rows)`` of display strings.
    """
    header = ["system", "bitrate (bps)"]
    header += [m.label + (" ↑" if m.higher_is_better else " ↓") for m in METRICS]
    header.append("× real time")
    rows = []
    for s in res.systems:
        agg = res.aggregates.get(s.name, {})
        speech = agg.get("speech-metrics", {})
        allg = agg.get("all", {})
        line = [s.name, _bitrate(s.bitrate)]
        for m in METRICS:
            line.append(_fmt((speech if m.speech else allg).get(m.key, math.nan), m.fmt))
        line.append(_fmt(allg.get("x_realtime", math.nan), "{:.1f}"))
        rows.append(line)
    if "all" in res.floor:
        line = ["original (ASR floor)", "–"]
        for m in METRICS:
            line.append(_fmt(res.floor["all"][m.key], m.fmt) if m.key in ("wer", "cer") else "")
        line.append("")
        rows.append(line)
    return header, rows


def domain_table(res: ReconstructionResults, domain: str) -> tuple[list[str], list[list[str]]]:
    """Per-system means for one domain (only the metrics that apply to it)."""
    has_speech = any(c.has_speech for c in res.clips if c.domain == domain)
    has_text = any(c.scores_asr for c in res.clips if c.domain == domain)
    shown = [m for m in METRICS if (not m.speech or has_speech) and (m.key not in ("wer", "cer") or has_text)]
    header = ["system", "bitrate (bps)", "clips"] + [
        m.label + (" ↑" if m.higher_is_better else " ↓") for m in shown
    ]
    rows = []
    for s in res.systems:
        agg = res.aggregates.get(s.name, {}).get(domain)
        if agg is None:
            continue
        rows.append(
            [s.name, _bitrate(s.bitrate), f"{agg['clips']:.0f}"] + [_fmt(agg[m.key], m.fmt) for m in shown]
        )
    if has_text and domain in res.floor:
        rows.append(
            ["original (ASR floor)", "–", ""]
            + [_fmt(res.floor[domain][m.key], m.fmt) if m.key in ("wer", "cer") else "" for m in shown]
        )
    return header, rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Report files
# ---------------------------------------------------------------------------------------------
def write_report(res: ReconstructionResults, out: str | Path, command: str | None = None) -> dict[str, Path]:
    """Write the markdown report, per-clip CSV, aggregate JSON and the two figures.

    Args:
        res: results of :func:`evaluate_reconstruction`.
        out: path prefix, e.g. ``reports/mymodel`` -> ``reports/mymodel.md`` etc.
        command: the command line that produced the results (recorded in the report).

    Returns:
        ``{"markdown", "csv", "json", "bitrate_plot", "mel_plot"}`` -> written paths.
    """
    prefix = Path(out)
    if prefix.suffix in (".md", ".csv", ".json"):
        prefix = prefix.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": prefix.with_name(prefix.name + ".md"),
        "csv": prefix.with_name(prefix.name + ".csv"),
        "json": prefix.with_name(prefix.name + ".json"),
        "bitrate_plot": prefix.with_name(prefix.name + "-bitrate.png"),
        "mel_plot": prefix.with_name(prefix.name + "-mels.png"),
    }
    _write_csv(res, paths["csv"])
    _write_json(res, paths["json"], command)
    plot_metric_vs_bitrate(res, paths["bitrate_plot"])
    plot_mel_comparison(res, paths["mel_plot"])
    paths["markdown"].write_text(_markdown(res, paths, command), encoding="utf-8")
    return paths


_CSV_COLUMNS = (
    "system", "bitrate", "clip_id", "domain", "duration_s", "process_s", "lag_ms",
    "stoi", "pesq", "vuv_f1", "spk_sim", "wer", "cer", "wer_original", "cer_original",
    "mel_l1", "mr_stft", "si_sdr", "hypothesis",
)  # fmt: skip


def _write_csv(res: ReconstructionResults, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(_CSV_COLUMNS)
        for r in res.rows:
            w.writerow(["" if isinstance(r[k], float) and math.isnan(r[k]) else r[k] for k in _CSV_COLUMNS])


def _write_json(res: ReconstructionResults, path: Path, command: str | None) -> None:
    counts: dict[str, int] = {}
    for c in res.clips:
        counts[c.domain] = counts.get(c.domain, 0) + 1
    doc = {
        "manifest": res.manifest,
        "split": res.split,
        "command": command,
        "clips_per_domain": counts,
        "systems": [asdict(s) for s in res.systems],
        "metrics": {
            m.key: {"label": m.label, "higher_is_better": m.higher_is_better, "speech_only": m.speech}
            for m in METRICS
        },
        "aggregates": res.aggregates,
        "asr_floor": res.floor,
        "notes": res.notes,
    }
    path.write_text(json.dumps(json_safe(doc), indent=1), encoding="utf-8")


def _markdown(res: ReconstructionResults, paths: dict[str, Path], command: str | None) -> str:
    counts: dict[str, int] = {}
    for c in res.clips:
        counts[c.domain] = counts.get(c.domain, 0) + 1
    parts = [
        "# Reconstruction evaluation",
        "",
        f"Manifest `{res.manifest}`, split `{res.split or 'all'}`: {len(res.clips)} clips ("
        + ", ".join(f"{d} {n}" for d, n in counts.items())
        + ").",
    ]
    if command:
        parts += ["", "Produced by:", "", "```", command, "```"]
    n_asr = sum(c.scores_asr for c in res.clips)
    header, rows = summary_table(res)
    parts += [
        "",
        "## Summary",
        "",
        "Speech metrics (STOI, PESQ-WB, V/UV F1, SIM, WER, CER) are averaged over clips with speech "
        "(domain `speech`, or `mixture` with a transcript) at 16 kHz; WER/CER are corpus-level over the "
        f"{n_asr} clip(s) with an English transcript (pocketsphinx's English model, text lower-cased without "
        "punctuation) and the `original` row is the recogniser's "
        "floor on the unprocessed audio. Signal metrics (log-mel L1 in nats, multi-resolution STFT "
        "distance, SI-SDR) are averaged over all clips. Every output is first aligned to its reference "
        "by cross-correlation (|lag| ≤ 0.5 s; waveform correlation for waveform-matching codecs, RMS-envelope "
        "correlation for phase-free ones such as vocoders and Codec2; the lag is in the CSV). `× real time` = seconds of audio per second of processing "
        "on this machine. Bitrate `–`: continuous (mel oracles) or unknown.",
        "",
        _markdown_table(header, rows),
        "",
        f"![metric vs bitrate]({paths['bitrate_plot'].name})",
    ]
    for d in DOMAINS:
        if d not in counts:
            continue
        header, rows = domain_table(res, d)
        parts += ["", f"## Domain: {d}", "", _markdown_table(header, rows)]
    parts += ["", "## Log-mel of one clip per domain", "", f"![mel comparison]({paths['mel_plot'].name})"]
    parts += ["", f"Per-clip rows: `{paths['csv'].name}`; aggregates: `{paths['json'].name}`."]
    if res.notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in res.notes]
    parts += [
        "",
        "## Metric definitions",
        "",
        "- STOI: short-time objective intelligibility, 0–1. PESQ-WB: ITU-T P.862.2 MOS-LQO, about 1.02–4.64.",
        "- V/UV F1: voiced/unvoiced frame F1 (10 ms frames, WORLD DIO+StoneMask F0 at 16 kHz), reference voicing as truth.",
        "- SIM: cosine of resemblyzer speaker embeddings (offline stand-in for WavLM-SIM).",
        "- mel L1: mean |Δ| of the codec's 128-bin natural-log power mel (24 kHz). MR-STFT: mean over "
        "FFT sizes 512/1024/2048 of spectral convergence + log-magnitude L1. SI-SDR: scale-invariant SDR, capped at 100 dB.",
        "",
    ]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def plot_metric_vs_bitrate(res: ReconstructionResults, path: str | Path) -> None:
    """Scatter of each metric against bitrate (log axis) for every system.

    Systems without a bitrate (mel oracles, unknown commands) are drawn as dashed horizontal lines.
    Speech metrics use the speech clips, signal metrics all clips.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    shown = [
        m
        for m in METRICS
        if m.key != "cer" and any(not math.isnan(_agg(res, s.name, m)) for s in res.systems)
    ]
    ncol = min(4, max(1, len(shown)))
    nrow = max(1, math.ceil(len(shown) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    colors = plt.get_cmap("tab10")
    for i, m in enumerate(shown):
        ax = axes[i // ncol][i % ncol]
        for j, s in enumerate(res.systems):
            v = _agg(res, s.name, m)
            if math.isnan(v):
                continue
            c = colors(j % 10)
            if s.bitrate is None:
                ax.axhline(v, color=c, linestyle="--", linewidth=1.2, label=s.name)
            else:
                ax.scatter([s.bitrate], [v], color=c, s=40, label=s.name, zorder=3)
                ax.annotate(s.name, (s.bitrate, v), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if m.key == "wer" and "speech-metrics" in res.floor:
            ax.axhline(
                res.floor["speech-metrics"]["wer"],
                color="black",
                linestyle=":",
                linewidth=1,
                label="original (floor)",
            )
        if any(s.bitrate for s in res.systems):
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(_bps_label))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("bitrate (bits/s)")
        ax.set_title(
            f"{m.label} {'↑' if m.higher_is_better else '↓'}" + (" (speech)" if m.speech else " (all)"),
            fontsize=10,
        )
        ax.grid(True, alpha=0.3)
    for k in range(len(shown), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(
        handles, labels, loc="lower center", ncol=min(6, max(1, len(labels))), fontsize=8, frameon=False
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _save_png(fig, path, dpi=110)
    plt.close(fig)


def _save_png(fig: Any, path: str | Path, dpi: int) -> None:
    """Save a figure as a 256-colour PNG (spectrograms compress 3-4x better than in RGB)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(colors=256).save(path, format="PNG", optimize=True)


def _bps_label(x: float, _pos: int) -> str:
    return f"{x / 1000:g}k" if x >= 1000 else f"{x:g}"


def _agg(res: ReconstructionResults, system: str, m: MetricSpec) -> float:
    return (
        res.aggregates.get(system, {}).get("speech-metrics" if m.speech else "all", {}).get(m.key, math.nan)
    )


def plot_mel_comparison(res: ReconstructionResults, path: str | Path) -> None:
    """Log-mel images: one row per domain (its first clip), one column for the reference and each system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    fe = M._mel_frontend()
    domains = [d for d in DOMAINS if d in res.examples]
    cols = ["reference"] + [s.name for s in res.systems]
    fig, axes = plt.subplots(
        max(1, len(domains)), len(cols), figsize=(2.4 * len(cols), 2.0 * max(1, len(domains))), squeeze=False
    )
    for i, d in enumerate(domains):
        ex = res.examples[d]
        with torch.no_grad():
            ref_mel = fe.log_mel(torch.from_numpy(ex["reference"].astype(np.float32))[None])[0].numpy()
        vmin, vmax = float(ref_mel.min()), float(ref_mel.max())
        clip_id = next(c.id for c in res.clips if c.domain == d)
        for j, name in enumerate(cols):
            ax = axes[i][j]
            if name in ex:
                with torch.no_grad():
                    mel = fe.log_mel(torch.from_numpy(ex[name].astype(np.float32))[None])[0].numpy()
                ax.imshow(
                    mel,
                    origin="lower",
                    aspect="auto",
                    vmin=vmin,
                    vmax=vmax,
                    cmap="magma",
                    interpolation="antialiased",
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{d}\n{clip_id}", fontsize=7)
    fig.tight_layout()
    _save_png(fig, path, dpi=80)
    plt.close(fig)
