"""Copy-synthesis evaluation of mel vocoders (neural vs Griffin-Lim) and ``reports/vocoder.md``.

Every clip of a manifest split is analysed with the codec's log-mel
(:meth:`entanglecodec.audio.MelFrontend.log_mel`) and re-synthesised by each vocoder; the output is
compared with the original (same length, no delay: both vocoders are frame-aligned):

* speech clips: STOI and wideband PESQ (computed at 16 kHz by :mod:`entanglecodec.eval.metrics`);
* every clip: log-mel L1 (nats) and multi-resolution STFT distance;
* speed: real-time factor (audio seconds per compute second) at batch 1 and 16 on 10 s inputs.

Command (in :mod:`entanglecodec.cli.eval_vocoder`)::

    entanglecodec eval vocoder --manifest data/synth/manifest.jsonl \
        --vocoder checkpoints/vocoder-small --out reports/vocoder.md
"""

from __future__ import annotations

import logging
import math
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import MelFrontend
from ..config import MelConfig
from ..vocoder.load import MelVocoder, copy_synthesis
from .load import load_clip
from .report import report_paths, write_report

logger = logging.getLogger(__name__)

SPEECH_METRICS = ("stoi", "pesq_wb")
ALL_METRICS = ("log_mel_l1", "mr_stft")
HIGHER_IS_BETTER = {"stoi": True, "pesq_wb": True, "log_mel_l1": False, "mr_stft": False}


@dataclass
class ClipScores:
    """Scores of one vocoder on one clip (``nan`` where a metric does not apply or failed)."""

    clip_id: str
    domain: str
    seconds: float
    scores: dict[str, float] = field(default_factory=dict)


def score_clip(reference: np.ndarray, estimate: np.ndarray, sample_rate: int, speech: bool) -> dict[str, float]:
    """All applicable metrics for one (reference, estimate) pair; failures give ``nan`` (logged)."""
    from . import metrics as M

    out: dict[str, float] = {}
    fns: dict[str, Any] = {"log_mel_l1": M.log_mel_l1, "mr_stft": M.mr_stft_distance}
    if speech:
        fns.update({"stoi": M.stoi, "pesq_wb": M.pesq_wb})
    for name, fn in fns.items():
        try:
            out[name] = float(fn(reference, estimate, sample_rate))
        except M.MetricError as e:
            logger.warning("%s not computed: %s", name, e)
            out[name] = math.nan
    return out


def evaluate(
    manifest: str | Path,
    vocoders: Mapping[str, MelVocoder],
    split: str = "test",
    max_clips_per_domain: int | None = 40,
    max_seconds: float = 10.0,
    mel_cfg: MelConfig | None = None,
) -> dict[str, list[ClipScores]]:
    """Copy-synthesis scores of each vocoder on the clips of ``split``.

    Args:
        manifest: corpus manifest (``manifest.jsonl``).
        vocoders: ``{name: vocoder}``.
        split: manifest split to evaluate.
        max_clips_per_domain: first N clips (manifest order) per domain; ``None``: all.
        max_seconds: clips are cut to their first ``max_seconds``.
        mel_cfg: the mel analysis (default :class:`MelConfig()`).

    Returns:
        ``{name: [ClipScores, ...]}`` in the same clip order for every vocoder.
    """
    from ..data.manifest import read_manifest

    cfg = mel_cfg or MelConfig()
    frontend = MelFrontend(cfg).eval()
    rows = read_manifest(manifest, split)
    if not rows:
        raise ValueError(f"{manifest}: no clips in split {split!r}")
    per_domain: dict[str, int] = defaultdict(int)
    chosen = []
    for r in rows:
        if max_clips_per_domain is None or per_domain[r["domain"]] < max_clips_per_domain:
            per_domain[r["domain"]] += 1
            chosen.append(r)
    results: dict[str, list[ClipScores]] = {name: [] for name in vocoders}
    for k, row in enumerate(chosen):
        sr = cfg.sample_rate
        wav = load_clip(row["audio"], max_seconds, sr)
        ref = torch.from_numpy(wav)
        speech = row["domain"] == "speech"
        for name, voc in vocoders.items():
            est = copy_synthesis(voc, ref, frontend).numpy()
            results[name].append(ClipScores(row["id"], row["domain"], wav.size / sr, score_clip(wav, est, sr, speech)))
        if (k + 1) % 10 == 0:
            logger.info("scored %d / %d clips", k + 1, len(chosen))
    return results


def measure_rtf(
    vocoder: MelVocoder,
    batch_sizes: Sequence[int] = (1, 16),
    seconds: float = 10.0,
    repeats: int = 3,
    n_mels: int = 128,
) -> dict[int, float]:
    """Real-time factor (audio seconds / wall seconds, best of ``repeats``) on random mels.

    Inputs are ``[B, n_mels, F]`` log-mels of ``seconds`` each; one warm-up call is not timed.
    """
    hop = int(vocoder.hop_length)
    sr = int(vocoder.sample_rate)
    frames = int(math.ceil(seconds * sr / hop))
    out: dict[int, float] = {}
    gen = torch.Generator().manual_seed(0)
    for b in batch_sizes:
        mel = torch.randn(b, n_mels, frames, generator=gen) * 2.0 - 6.0
        with torch.inference_mode():
            vocoder(mel, None)
            best = math.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                vocoder(mel, None)
                best = min(best, time.perf_counter() - t0)
        out[b] = b * frames * hop / sr / best
    return out


def summarize(results: Mapping[str, list[ClipScores]]) -> dict[str, dict[str, dict[str, tuple[float, int]]]]:
    """``{vocoder: {domain or 'all': {metric: (mean, n)}}}`` ignoring ``nan`` scores."""
    out: dict[str, dict[str, dict[str, tuple[float, int]]]] = {}
    for name, clips in results.items():
        groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for c in clips:
            for m, v in c.scores.items():
                if not math.isnan(v):
                    groups[c.domain][m].append(v)
                    groups["all"][m].append(v)
        out[name] = {
            d: {m: (statistics.fmean(vs), len(vs)) for m, vs in ms.items()} for d, ms in sorted(groups.items())
        }
    return out


def spectrogram_figure(
    path: str | Path, reference: np.ndarray, estimates: Mapping[str, np.ndarray], mel_cfg: MelConfig | None = None
) -> None:
    """PNG with the log-mel of the reference and of each vocoder's copy, one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fe = MelFrontend(mel_cfg or MelConfig())
    mels = {"reference": fe.log_mel(torch.from_numpy(reference)[None])[0]}
    for name, est in estimates.items():
        mels[name] = fe.log_mel(torch.from_numpy(np.ascontiguousarray(est, dtype=np.float32))[None])[0]
    lo, hi = float(mels["reference"].min()), float(mels["reference"].max())
    fig, axes = plt.subplots(len(mels), 1, figsize=(10, 2.6 * len(mels)), squeeze=False)
    for ax, (name, m) in zip(axes[:, 0], mels.items(), strict=True):
        ax.imshow(m.numpy(), origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
        ax.set_title(name)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("frame (20 ms)")
    fig.tight_layout()
    fig.savefig(str(path), dpi=80)
    plt.close(fig)


def _fmt(v: tuple[float, int] | None) -> str:
    return "–" if v is None else f"{v[0]:.3f}"


def render_report(
    summary: Mapping[str, Mapping[str, Mapping[str, tuple[float, int]]]],
    rtf: Mapping[str, Mapping[int, float]],
    command: str,
    manifest: str,
    split: str,
    png_name: str | None,
    notes: Sequence[str] = (),
) -> str:
    """Markdown text of the report."""
    names = list(summary)
    lines = [
        "# Vocoder: copy-synthesis vs Griffin-Lim",
        "",
        f"Data: `{manifest}`, split `{split}`. Each clip (first 10 s) -> codec log-mel (24 kHz, hop 480,"
        " 128 bins) -> vocoder -> waveform, compared with the original.",
        "STOI / PESQ (wideband, 16 kHz) on speech clips; log-mel L1 (nats, lower is better) and"
        " multi-resolution STFT distance (SC + log-magnitude L1 at 512/1024/2048, lower is better) on all clips.",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s).",
        "",
        "## Speech",
        "",
        "| vocoder | STOI ↑ | PESQ-WB ↑ | log-mel L1 ↓ | MR-STFT ↓ | clips |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        s = summary[n].get("speech", {})
        clips = max((v[1] for v in s.values()), default=0)
        lines.append(
            f"| {n} | {_fmt(s.get('stoi'))} | {_fmt(s.get('pesq_wb'))} | "
            f"{_fmt(s.get('log_mel_l1'))} | {_fmt(s.get('mr_stft'))} | {clips} |"
        )
    domains = sorted({d for n in names for d in summary[n] if d != "all"})
    lines += ["", "## All domains (log-mel L1 / MR-STFT)", "", "| vocoder | " + " | ".join(domains + ["all"]) + " |"]
    lines.append("|---|" + "---|" * (len(domains) + 1))
    for n in names:
        cells = []
        for d in [*domains, "all"]:
            s = summary[n].get(d, {})
            cells.append(f"{_fmt(s.get('log_mel_l1'))} / {_fmt(s.get('mr_stft'))} (n={s.get('log_mel_l1', (0, 0))[1]})")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Speed (real-time factor: seconds of audio per second of compute, 10 s inputs)", ""]
    bs = sorted({b for r in rtf.values() for b in r})
    lines.append("| vocoder | " + " | ".join(f"batch {b}" for b in bs) + " |")
    lines.append("|---|" + "---|" * len(bs))
    for n, r in rtf.items():
        lines.append(f"| {n} | " + " | ".join(f"{r[b]:.0f}x" if b in r else "–" for b in bs) + " |")
    if png_name:
        lines += ["", "## Spectrograms", "", f"![log-mel of a test speech clip and its copies]({png_name})"]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {x}" for x in notes]
    return "\n".join(lines) + "\n"


def neural_and_griffin_lim(
    vocoder: str, cfg: MelConfig, griffin_lim_iters: int = 32, passes: Sequence[int] | None = None
) -> dict[str, MelVocoder]:
    """``{label: vocoder}`` for the neural vocoder ``vocoder`` (a directory or ``default``) and Griffin-Lim.

    ``passes``: mel-consistency pass counts to list, one row each (0: the network alone). By
    default the checkpoint's own setting, preceded by the network alone when that setting is > 0.

    Raises:
        ValueError: ``vocoder`` resolves to Griffin-Lim (no trained neural vocoder installed), or a
            negative pass count.
    """
    from ..vocoder.griffin_lim import GriffinLim
    from ..vocoder.load import load_vocoder
    from ..vocoder.model import Vocoder

    neural = load_vocoder(vocoder, cfg)
    if not isinstance(neural, Vocoder):
        raise ValueError(f"vocoder {vocoder!r} resolved to Griffin-Lim: there is no trained neural vocoder")
    label = f"neural ({Path(vocoder).name if vocoder != 'default' else 'default'}, {neural.num_parameters / 1e6:.1f} M)"
    own = neural.config.consistency_passes
    counts = list(dict.fromkeys(passes)) if passes else ([0, own] if own > 0 else [0])
    if any(n < 0 for n in counts):
        raise ValueError(f"mel-consistency pass counts must be >= 0, got {counts}")
    systems: dict[str, MelVocoder] = {}
    for n in counts:
        name = f"{label}, network only" if n == 0 else f"{label} + {n} mel-consistency passes"
        systems[name] = neural if n == own else load_vocoder(vocoder, cfg, consistency_passes=n)
    systems[f"Griffin-Lim ({griffin_lim_iters} it.)"] = GriffinLim(cfg, n_iter=griffin_lim_iters)
    return systems


def run_report(
    manifest: str,
    vocoder: str = "default",
    out: str | Path = "reports/vocoder.md",
    split: str = "test",
    max_clips_per_domain: int | None = 40,
    griffin_lim_iters: int = 32,
    threads: int | None = None,
    command: str = "",
    passes: Sequence[int] | None = None,
) -> Path:
    """Evaluate ``vocoder`` (a directory or ``default``) against Griffin-Lim and write the report + PNG.

    ``passes``: mel-consistency pass counts to compare (see :func:`neural_and_griffin_lim`).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    cfg = MelConfig()
    systems = neural_and_griffin_lim(vocoder, cfg, griffin_lim_iters, passes)
    results = evaluate(manifest, systems, split=split, max_clips_per_domain=max_clips_per_domain)
    summary = summarize(results)
    rtf = {name: measure_rtf(v) for name, v in systems.items()}
    paths = report_paths(out, {"markdown": ".md", "json": ".json", "plot": ".png"})
    from ..data.manifest import read_manifest

    speech = [r for r in read_manifest(manifest, split) if r["domain"] == "speech"]
    figures = {}
    if speech:
        wav = load_clip(speech[0]["audio"], 4.0, cfg.sample_rate)
        fe = MelFrontend(cfg)
        ests = {n: copy_synthesis(v, torch.from_numpy(wav), fe).numpy() for n, v in systems.items()}
        figures["plot"] = lambda path: spectrogram_figure(path, wav, ests, cfg)
    notes = []
    if any("mel-consistency" in n for n in systems):
        notes.append(
            "mel-consistency passes: after the network, each pass re-analyses the output with the mel's own STFT "
            "and rescales its spectrum band by band towards the input mel, keeping the network's phase "
            "(`entanglecodec.vocoder.mel_consistency`, no parameters; `consistency_passes` in the "
            "vocoder's config.json, `--consistency-passes` on `entanglecodec vocode`). The 'network only' row "
            "is the same checkpoint without it."
        )
    doc = {"command": command, "manifest": str(manifest), "split": split, "summary": summary, "rtf": rtf}
    plot_name = paths["plot"].name if speech else None
    write_report(
        {k: v for k, v in paths.items() if k != "plot" or speech},
        lambda: render_report(summary, rtf, command, manifest, split, plot_name, notes),
        doc,
        figures,
    )
    return paths["markdown"]


def speed_report(
    vocoder: str = "default",
    out: str | Path = "reports/vocoder-speed.md",
    threads: Sequence[int] = (1, 2),
    batch_sizes: Sequence[int] = (1, 16),
    griffin_lim_iters: int = 32,
    seconds: float = 10.0,
    command: str = "",
) -> Path:
    """Real-time factors of ``vocoder`` and Griffin-Lim for each thread count -> markdown report.

    The load average before and after is written too: a number taken while other jobs run is not
    a number for this machine.
    """
    import os

    systems = neural_and_griffin_lim(vocoder, MelConfig(), griffin_lim_iters)
    load_before = os.getloadavg()
    before = torch.get_num_threads()
    rows: list[tuple[str, int, dict[int, float]]] = []
    try:
        for n in threads:
            torch.set_num_threads(int(n))
            for name, v in systems.items():
                rows.append((name, int(n), measure_rtf(v, batch_sizes, seconds=seconds)))
    finally:
        torch.set_num_threads(before)
    load_after = os.getloadavg()
    lines = [
        "# Vocoder speed",
        "",
        "Real-time factor = seconds of audio per second of compute (best of 3 after one warm-up call),"
        f" {seconds:g} s of random log-mel per item.",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
        f"1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} after.",
        "",
        "| vocoder | threads | " + " | ".join(f"batch {b}" for b in batch_sizes) + " |",
        "|---|---|" + "---|" * len(batch_sizes),
    ]
    for name, n, r in rows:
        lines.append(f"| {name} | {n} | " + " | ".join(f"{r[b]:.0f}x" for b in batch_sizes) + " |")
    paths = report_paths(out, {"markdown": ".md", "json": ".json"})
    doc = {
        "command": command, "seconds": seconds, "load_average_1min": [load_before[0], load_after[0]],
        "rtf": [{"vocoder": name, "threads": n, "batch": {str(b): r[b] for b in batch_sizes}} for name, n, r in rows],
    }
    write_report(paths, lambda: "\n".join(lines) + "\n", doc)
    return paths["markdown"]
