"""Probe reports: JSON, markdown and the summary figure (through :mod:`entanglecodec.eval.report`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..report import json_safe, report_paths, write_report
from .run import ProbeResults

if TYPE_CHECKING:
    pass


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def results_to_json(res: ProbeResults) -> dict[str, Any]:
    """A JSON-serialisable summary (NaN -> ``None``)."""

    targets = {
        p.target: {
            "protocol": p.protocol, "reason": p.reason, "n_train": len(p.train), "n_test": len(p.test),
            "classes": p.classes, "dropped": p.dropped, "chance": p.chance, "balanced_chance": p.balanced_chance,
            "description": p.description,
        }
        for p in res.plans
    }  # fmt: skip
    doc = {
        "manifest": res.manifest, "split_train": res.split_train, "split_test": res.split_test,
        "clips": res.clips, "settings": res.settings, "targets": targets, "scores": res.scores,
        "retrieval": res.retrieval, "notes": res.notes,
    }  # fmt: skip
    return dict(json_safe(doc))


def _fmt(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def markdown_report(res: ProbeResults, command: str | None = None, plot_name: str | None = None) -> str:
    """The probe report: accuracy table (rows: feature sets, columns: targets), chance, protocols, retrieval."""
    active = [p for p in res.plans if p.protocol != "skipped"]
    head = ["features"] + [p.target for p in active]
    lines = [
        "# Understanding probes and retrieval",
        "",
        f"Manifest `{res.manifest}`: {res.clips.get(res.split_train, 0)} `{res.split_train}` clips, "
        f"{res.clips.get(res.split_test, 0)} `{res.split_test}` clips.",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += [
        "",
        f"Linear probes: standardised features -> logistic regression (C = {res.settings['C']}, seed "
        f"{res.settings['seed']}), frame features pooled by `{res.settings['pooling']}` over each clip. "
        "Cells are test accuracy in %; `chance` answers the probe-training majority class.",
        "",
        "## Probe accuracy (%)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(active)) + "|",
    ]
    for name in res.feature_rows:
        cells = [_fmt(res.scores[name].get(p.target, {}).get("accuracy")) for p in active]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| *chance* | " + " | ".join(_fmt(p.chance) for p in active) + " |")
    lines += ["", "Balanced accuracy (%) in the same layout:", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * len(active)) + "|")
    for name in res.feature_rows:
        cells = [_fmt(res.scores[name].get(p.target, {}).get("balanced_accuracy")) for p in active]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| *chance* | " + " | ".join(_fmt(p.balanced_chance) for p in active) + " |")
    lines += [
        "",
        "Accuracy favours the majority class of imbalanced targets (e.g. most speech is English); balanced "
        "accuracy (mean per-class recall) does not, its chance level is 1 / number of classes.",
        "",
        "## Targets and protocols",
        "",
        "| target | source | protocol | probe-train clips | eval clips | classes | dropped | reason |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for p in res.plans:
        lines.append(
            f"| {p.target} | {p.description} | {p.protocol} | {len(p.train)} | {len(p.test)} | {len(p.classes)} | "
            f"{p.dropped} | {p.reason} |"
        )
    lines += [
        "",
        "`held-out`: trained on the train split, scored on test clips whose class occurs in training. "
        "`within-test`: the class sets of the two splits barely overlap (the corpus holds voices and "
        "instruments out of training), so the probe is trained and scored on a seeded stratified 50/50 "
        "clip split of the test split: it measures separability of classes the model never saw.",
        "",
        "## Audio <-> caption retrieval (test split, rich captions)",
        "",
    ]
    if res.retrieval:
        lines += [
            "| model | clips | audio->text R@1 | R@5 | text->audio R@1 | R@5 | chance R@1 | chance R@5 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, r in res.retrieval.items():
            lines.append(
                f"| {label} | {int(r['n'])} | {_fmt(r['a2t_r1'])} | {_fmt(r['a2t_r5'])} | {_fmt(r['t2a_r1'])} | "
                f"{_fmt(r['t2a_r5'])} | {_fmt(r['chance_r1'])} | {_fmt(r['chance_r5'])} |"
            )
        lines += [
            "",
            "Recall in %; cosine similarity of `embed_audio` and `embed_text`; identical captions count as matches.",
        ]
    else:
        lines.append("No retrieval row (no model with a caption encoder was given).")
    if plot_name:
        lines += ["", f"![probe accuracy]({plot_name})"]
    timings = res.settings.get("timings_s") or {}
    if timings:
        lines += ["", "Compute time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + "."]
    if res.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res.notes]
    return "\n".join(lines) + "\n"


def plot_probes(res: ProbeResults, path: str | Path) -> None:
    """Grouped bars, one group per target and one bar per feature set, chance as a black line:
    accuracy (top) and balanced accuracy (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    active = [p for p in res.plans if p.protocol != "skipped"]
    n_rows = max(1, len(res.feature_rows))
    width = 0.8 / n_rows
    xs = np.arange(len(active))
    fig, axes = plt.subplots(
        2, 1, figsize=(min(16.0, 2.5 + 0.3 * len(active) * (n_rows + 1)), 7.5), sharex=True
    )
    for ax, metric, chance_of in (
        (axes[0], "accuracy", lambda p: p.chance),
        (axes[1], "balanced_accuracy", lambda p: p.balanced_chance),
    ):
        for j, name in enumerate(res.feature_rows):
            vals = [100 * res.scores[name].get(p.target, {}).get(metric, math.nan) for p in active]
            ax.bar(xs - 0.4 + (j + 0.5) * width, vals, width, label=name, color=f"C{j % 10}")
        for x, p in zip(xs, active, strict=True):
            ax.hlines(100 * chance_of(p), x - 0.42, x + 0.42, colors="black", linewidth=1.5,
                      label="chance" if x == 0 else "_nolegend_")  # fmt: skip
        ax.set_ylabel(f"test {metric.replace('_', ' ')} (%)")
        ax.set_ylim(0, 100)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_title("Linear probes on frozen features")
    axes[1].set_xticks(xs, [f"{p.target}\n({p.protocol})" for p in active], fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=min(3, len(labels)), loc="lower center")
    fig.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(labels) / 3), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_probe_report(res: ProbeResults, out: str | Path, command: str | None = None) -> dict[str, Path]:
    """Write ``OUT.md``, ``OUT.json`` and ``OUT.png``; returns their paths."""
    paths = report_paths(out, {"markdown": ".md", "json": ".json", "plot": ".png"})
    doc = {**results_to_json(res), "command": command}
    return write_report(
        paths,
        lambda: markdown_report(res, command, paths["plot"].name),
        doc,
        figures={"plot": lambda p: plot_probes(res, p)},
    )
