"""Summarise a training run from its CSV logs: curves (PNG), a milestone table (markdown + JSON)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

CURVES: list[tuple[str, list[str]]] = [
    ("losses", ["train/loss", "train/flow", "train/contrast", "train/vq", "train/adv", "val/loss"]),
    ("codebook", ["train/usage", "train/active_codes"]),
    ("codebook_counts", ["train/perplexity", "train/dead_codes"]),
    ("alignment", ["train/retrieval_acc", "val/retrieval_acc"]),
]


def read_run_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """Merge ``logs/metrics.csv`` and every resumed segment's ``logs/resume-N/metrics.csv`` by step."""
    files = sorted((run_dir / "logs").glob("**/metrics.csv"))
    if not files:
        raise FileNotFoundError(f"{run_dir}/logs: no metrics.csv (is this a training run folder?)")
    merged: dict[int, dict[str, float]] = {}
    for f in files:
        with open(f) as fh:
            for row in csv.DictReader(fh):
                step = int(row["step"])
                slot = merged.setdefault(step, {})
                for k, v in row.items():
                    if k not in ("step", "epoch") and v not in ("", None):
                        slot[k] = float(v)
    return merged


def _smooth(xs: list[float], k: int = 10) -> list[float]:
    return [sum(xs[max(0, i - k + 1) : i + 1]) / len(xs[max(0, i - k + 1) : i + 1]) for i in range(len(xs))]


def _draw_curves(m: dict[int, dict[str, float]], png: Path) -> None:
    """One panel per :data:`CURVES` group over the logged steps (training curves smoothed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(m)
    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 3.6))
    for ax, (name, keys) in zip(axes, CURVES, strict=True):
        for k in keys:
            pts = [(s, m[s][k]) for s in steps if k in m[s]]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, _smooth(list(ys)) if k.startswith("train/") else ys, label=k, marker="" if len(xs) > 20 else "o")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        if name == "codebook_counts":
            ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)


def write_training_report(run_dir: str | Path, out_md: str | Path, title: str = "") -> Path:
    """Plot the run's curves next to ``out_md`` and write a table of values at ~8 milestones
    (markdown + JSON + PNG through :func:`entanglecodec.eval.report.write_report`)."""
    from ..eval.report import report_paths, write_report

    run = Path(run_dir)
    m = read_run_metrics(run)
    steps = sorted(m)
    keys = [k for _, ks in CURVES for k in ks if any(k in m[s] for s in steps)]
    train_steps = [s for s in steps if "train/loss" in m[s]]
    if not train_steps:
        raise ValueError(f"{run}: no training rows logged yet")
    paths = report_paths(out_md, {"markdown": ".md", "json": ".json", "plot": ".png"})
    out, png = paths["markdown"], paths["plot"]
    marks = sorted({train_steps[min(len(train_steps) - 1, round(i * (len(train_steps) - 1) / 7))] for i in range(8)})
    table: dict[int, dict[str, float]] = {}
    for s in marks:
        row: dict[str, float] = {}
        for k in keys:
            if k.startswith("val/"):
                vals = [m[t][k] for t in steps if t <= s and k in m[t]]
                row[k] = vals[-1] if vals else math.nan
            else:
                window = [m[t][k] for t in train_steps if s - 10 * 10 < t <= s and k in m[t]][-10:]
                row[k] = sum(window) / len(window) if window else math.nan
        table[s] = row

    def markdown() -> str:
        lines = [f"# {title or 'Training run ' + run.name}\n\n",
                 f"Run folder `{run}`; {len(train_steps)} logged training steps (last: {train_steps[-1]}). "
                 "Training columns are means over the 10 logged steps up to the milestone.\n\n",
                 "| step | " + " | ".join(keys) + " |\n", "|---" * (len(keys) + 1) + "|\n"]
        for s, row in table.items():
            cells = ["–" if math.isnan(v) else f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}" for v in row.values()]
            lines.append(f"| {s} | " + " | ".join(cells) + " |\n")
        lines.append(f"\n![curves]({png.name})\n\nRegenerate: `entanglecodec train report {run} -o {out}`\n")
        return "".join(lines)

    doc = {"run": str(run), "logged_train_steps": len(train_steps), "milestones": {str(s): r for s, r in table.items()}}
    write_report(paths, markdown, doc, {"plot": lambda p: _draw_curves(m, p)})
    return out
