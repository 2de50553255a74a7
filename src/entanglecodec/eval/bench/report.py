"""Benchmark reports: JSON, markdown and figures (through :mod:`entanglecodec.eval.report`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..report import json_safe, report_paths, write_report
from .measure import WAVE_MIB_PER_MIN, Measurement, length_label, linear_fit, memory_slope
from .run import BenchResults

if TYPE_CHECKING:
    pass


def _fmt(x: float, spec: str = ".3f") -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, spec)


def _count(n: float) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def _table(res: BenchResults, batch: int, value: Callable[[Measurement], str]) -> list[str]:
    lengths = res.settings["lengths_s"]
    ops = [op for op in res.ops() if res.series(op, batch)]
    lines = ["| operation | " + " | ".join(length_label(s) for s in lengths) + " |"]
    lines.append("|---|" + "---:|" * len(lengths))
    for op in ops:
        by_len = {m.seconds: m for m in res.series(op, batch)}
        cells = []
        for s in lengths:
            m = by_len.get(s)
            cells.append("" if m is None else "skip" if m.skipped else value(m))
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    return lines


def _attention_gib(res: BenchResults, seconds: float) -> float:
    """Memory of one full (unwindowed) attention score matrix over ``seconds`` of audio (float32)."""
    frames = seconds * 50.0
    heads = int(res.model.get("heads", 4))
    return frames * frames * heads * 4 / 2**30


TARGETS = {"decode-1": 100.0, "end-to-end": 80.0, "onnx · decode-1": 100.0, "onnx · end-to-end": 80.0}
"""Speed targets of the decoding-speed issue, x real time at batch 1 (2 threads on an idle 2-core CPU),
for the torch model and for the compiled runtime (the command line's default backend)."""


def _targets(res: BenchResults) -> list[str]:
    """Speed (x real time = 1 / RTF) of decode and end-to-end at 10 s and at the longest length, batch 1,
    against :data:`TARGETS`."""
    rows = []
    for op, target in TARGETS.items():
        pts = {m.seconds: m for m in res.series(op, 1) if math.isfinite(m.rtf)}
        for sec in sorted({s for s in pts if s == 10.0} | ({max(pts)} if pts else set())):
            x = 1.0 / pts[sec].rtf
            rows.append(f"| {op} | {length_label(sec)} | {x:.0f}x | {target:.0f}x | {'yes' if x >= target else 'no'} |")
    if not rows:
        return []
    return ["", "## Speed targets (batch 1, x real time)", "", "| operation | clip | measured | target | met |",
            "|---|---|---:|---:|---|", *rows,
            "", "The targets hold for 2 threads on an idle 2-core CPU; compare with the load average above."]


IDLE_OTHER_SHARE = 0.05
"""Other processes' share of the machine's CPU under which a run counts as on an idle machine."""


def _load_sentence(ma: Mapping[str, Any]) -> str:
    """What else ran during the benchmark: other processes' CPU share (``/proc/stat`` minus the
    benchmark's own CPU time) when known, and the load average (which counts the benchmark's own threads)."""
    share = ma.get("other_cpu_share")
    avg = f"load average (1/5/15 min, the benchmark's own threads included) {ma['loadavg_start']} at start, {ma['loadavg_end']} at end"
    if share is None:
        return f"**{avg[0].upper()}{avg[1:]}**: a load near the core count means the CPU was shared; times are then pessimistic."
    if share < IDLE_OTHER_SHARE:
        return f"**Idle machine: other processes used {100 * share:.1f} % of its CPU during the run** ({avg})."
    return (f"**Shared machine: other processes used {100 * share:.0f} % of its CPU during the run** ({avg}); "
            "absolute times are pessimistic and noisy.")


def markdown_report(res: BenchResults, plots: dict[str, str], command: str | None = None) -> str:
    """The benchmark report (tables of RTF, memory, linear fits, tokens/s and FLOPs)."""
    mi, ma = res.model, res.machine
    window = float(mi["window_s"])
    lines = [
        "# Speed and scaling benchmark",
        "",
        f"Model: {mi['source']} (encoder {_count(mi['params_encoder'])} + decoder "
        f"{_count(mi['params_decoder'])} parameters, codebook {mi['codebook_size']}, {mi['bitrate']:.0f} bps, "
        f"vocoder {mi['vocoder']}, window {window:g} s).",
        f"Machine: {ma['cpu']}, {ma['cores']} cores, torch {ma['torch']} with {ma['torch_threads']} threads. "
        + _load_sentence(ma),
        f"Total benchmark time {res.settings['total_wall_s']:.0f} s.",
    ]
    loads = [m.load1 for m in res.measurements if math.isfinite(m.load1)]
    if loads:
        lines.append(f"1-minute load average after each measured point: min {min(loads):.2f}, median "
                     f"{sorted(loads)[len(loads) // 2]:.2f}, max {max(loads):.2f} (per point in bench.json).")
    if "decode_precision" in ma:
        lines.append(f"Flow-decoder precision of `decode-1` / `end-to-end`: {ma['decode_precision']} (`auto`; native "
                     f"bfloat16 matrix units: {'yes' if ma.get('native_bf16') else 'no'}; see `entanglecodec.codec.precision`).")
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += _targets(res)
    lines += [
        "",
        "RTF = compute time / audio duration (batch 8: / 8 x clip length); < 1 is faster than real time. "
        + (
            f"Median of {res.settings['reps']} calls when a call holds <= 10 s of audio (batch x length), one call beyond. "
            if res.settings["reps"] > 1
            else "One call per point. "
        )
        + "`skip`: the previous length "
        f"predicted a call longer than {res.settings['max_call_s']:g} s.",
    ]
    for b in res.settings["batches"]:
        lines += ["", f"## Real-time factor, batch {b}", ""] + _table(res, b, lambda m: _fmt(m.rtf, ".4f"))
    lines += [
        "",
        "## Linearity (compute time vs audio length, batch 1)",
        "",
        "| operation | s compute per s audio | intercept (s) | R² | RTF at shortest | RTF at longest | longest |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for op in res.ops():
        pts = [m for m in res.series(op, 1) if math.isfinite(m.wall_s)]
        fit = linear_fit(pts)
        if not pts:
            continue
        lines.append(
            f"| {op} | {_fmt(fit['slope'], '.4f') if fit else '–'} | {_fmt(fit['intercept'], '.3f') if fit else '–'} | "
            f"{_fmt(fit['r2'], '.4f') if fit else '–'} | {_fmt(pts[0].rtf, '.4f')} | {_fmt(pts[-1].rtf, '.4f')} | "
            f"{length_label(pts[-1].seconds)} |"
        )
    lines += [
        "",
        "A linear cost has R² ≈ 1 and an RTF that does not grow with length: long audio is processed in "
        f"{window:g} s windows (with overlap context), so attention cost per second is constant.",
        "",
        "## Peak memory (MiB of resident memory added by the call, batch 1)",
        "",
    ]
    lines += _table(res, 1, lambda m: _fmt(m.peak_mb, ".0f"))
    wave_mib = WAVE_MIB_PER_MIN
    lines += [
        "",
        "| operation | growth past the window (MiB per min of audio) | in float32 waveforms of the same length |",
        "|---|---:|---:|",
    ]
    for op in res.ops():
        s = memory_slope(res.series(op, 1), window)
        if s is not None:
            lines.append(f"| {op} | {s:.1f} | {s / wave_mib:.1f} x |")
    longest = max(res.settings["lengths_s"])
    lines += [
        "",
        f"Method: {ma['memory_method']} (see `entanglecodec.eval.bench.measure`). Growth is the least-squares slope over "
        f"the lengths longer than the {window:g} s window. Attention only ever spans one window; what can still "
        "grow with length is per-clip state (waveforms, frame features, tokens, spectrograms), measured here "
        f"against the clip's own float32 waveform ({wave_mib:.1f} MiB per minute at 24 kHz). For comparison, "
        f"one unwindowed attention score matrix over {length_label(longest)} would need "
        f"{_attention_gib(res, longest):.3g} GiB per layer (float32, {res.model.get('heads', 4)} heads).",
    ]
    if res.memory_breakdown:
        stages = list(next(iter(res.memory_breakdown.values())))
        labels = list(res.memory_breakdown)
        lines += ["", "Peak memory (MiB) of the stages of `encode` (batch 1):", ""]
        lines += ["| stage | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        for st in [x for x in stages if x != "seconds"]:
            lines.append(
                f"| {st} | " + " | ".join(f"{res.memory_breakdown[lab][st]:.0f}" for lab in labels) + " |"
            )
        if len(labels) >= 2:
            first, last = res.memory_breakdown[labels[0]], res.memory_breakdown[labels[-1]]
            minutes = (last["seconds"] - first["seconds"]) / 60.0
            per_min = [f"{st} {(last[st] - first[st]) / minutes:+.1f}" for st in stages if st != "seconds"]
            lines += [
                "",
                f"Growth between {labels[0]} and {labels[-1]} (MiB per minute of audio): "
                + ", ".join(per_min)
                + ".",
            ]
    tok = [m for m in res.series("encode", max(res.settings["batches"])) if math.isfinite(m.wall_s)]
    if tok:
        best = min(tok, key=lambda m: abs(m.seconds - 10.0))
        tps = best.batch * best.seconds * 50.0 / best.wall_s
        lines += [
            "",
            "## Corpus tokenisation",
            "",
            f"`encode` of batch {best.batch} x {best.seconds:g} s clips: **{tps:,.0f} tokens/s** "
            f"({tps / 50.0:,.0f} s of audio per second, {tps / 50.0:,.0f} h of audio per hour of compute, "
            f"50 tokens per second of audio).",
        ]
    if res.flops:
        lines += [
            "",
            "## FLOPs per second of audio (random weights, `FlopCounterMode`)",
            "",
            "| preset | encoder+VQ params | decoder params | encode | decoder pass | decoder step (CFG, 2 passes) | "
            "neural vocoder | decode 1 step + vocoder | encode + decode |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p, f in res.flops.items():
            dec = f["decoder_step_per_s"] + f["vocoder_per_s"]
            lines.append(
                f"| {p} | {_count(f['params_encoder'])} | {_count(f['params_decoder'])} | "
                f"{f['encode_per_s'] / 1e9:.2f} G | {f['decoder_pass_per_s'] / 1e9:.2f} G | "
                f"{f['decoder_step_per_s'] / 1e9:.2f} G | {f['vocoder_per_s'] / 1e9:.2f} G | {dec / 1e9:.2f} G | "
                f"{(dec + f['encode_per_s']) / 1e9:.2f} G |"
            )
        lines += [
            "",
            "GFLOPs per second of audio, counted on 10 s clips (one window for `paper`/`small`). The neural "
            "vocoder column is the shipped `small` Vocos-style vocoder for every preset. FFTs are not counted. "
            "A device sustaining `T` FLOP/s at batch size large enough to be compute-bound reaches "
            "RTF ≈ FLOPs per second of audio / `T` (e.g. decode with `k` Euler steps costs `k` decoder steps "
            "+ one vocoder pass).",
        ]
    for key, title in (("rtf", "RTF vs length"), ("memory", "Peak memory vs length")):
        if key in plots:
            lines += ["", f"![{title}]({plots[key]})"]
    if res.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res.notes]
    return "\n".join(lines) + "\n"


def plot_bench(res: BenchResults, out_dir: Path) -> dict[str, str]:
    """``bench-rtf.png`` (RTF vs length) and ``bench-memory.png`` (peak MiB vs length)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MultipleLocator, NullFormatter

    files = {"rtf": "bench-rtf.png", "memory": "bench-memory.png"}
    window = float(res.model["window_s"])
    for key, file in files.items():
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        for i, op in enumerate(res.ops()):
            for b, style in zip(res.settings["batches"], ("-", "--", ":", "-."), strict=False):
                pts = [m for m in res.series(op, b) if math.isfinite(m.wall_s)]
                if key == "memory":
                    pts = [m for m in pts if math.isfinite(m.peak_mb)]
                if not pts:
                    continue
                ys = [m.rtf if key == "rtf" else m.peak_mb for m in pts]
                ax.plot(
                    [m.seconds for m in pts],
                    ys,
                    style,
                    marker="o",
                    ms=3,
                    color=f"C{i % 10}",
                    label=f"{op} (B={b})",
                )
        ax.axvline(window, color="gray", linewidth=0.8, linestyle=":")
        ax.text(window, ax.get_ylim()[1], " window", va="top", fontsize=7, color="gray")
        if key == "rtf":  # log length: a flat line over decades of length = linear time
            ax.set_xscale("log")
            ax.set_xticks(res.settings["lengths_s"], [length_label(x) for x in res.settings["lengths_s"]])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("clip length")
        elif max(res.settings["lengths_s"]) >= 120:  # linear axes: linear growth is a straight line
            step = math.ceil(max(res.settings["lengths_s"]) / 600)
            ax.xaxis.set_major_locator(MultipleLocator(60 * step))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x / 60:g}"))
            ax.set_xlabel("clip length (min)")
        else:
            ax.set_xlabel("clip length (s)")
        if key == "rtf":
            ax.set_yscale("log")
            ax.set_ylabel("real-time factor (compute s / audio s)")
            ax.set_title("Real-time factor vs length (flat = linear time)")
        else:
            ax.set_ylabel("peak resident memory added (MiB)")
            ax.set_title("Peak memory vs length")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        fig.savefig(out_dir / file, dpi=120)
        plt.close(fig)
    return files


def results_to_json(res: BenchResults) -> dict[str, Any]:
    """JSON-serialisable results (NaN -> ``None``), with linear fits and memory slopes."""

    window = float(res.model["window_s"])
    fits = {
        f"{op} · batch {b}": linear_fit(res.series(op, b))
        for op in res.ops()
        for b in res.settings["batches"]
    }
    mem = {op: memory_slope(res.series(op, 1), window) for op in res.ops()}
    doc = {
        "model": res.model, "machine": res.machine, "settings": res.settings,
        "measurements": [asdict(m) for m in res.measurements], "linear_fits": fits,
        "memory_growth_mib_per_min": mem, "encode_memory_breakdown_mib": res.memory_breakdown,
        "flops": res.flops, "notes": res.notes,
    }  # fmt: skip
    return dict(json_safe(doc))


def write_bench_report(res: BenchResults, out_dir: str | Path, command: str | None = None) -> dict[str, Path]:
    """Write ``bench.md``, ``bench.json``, ``bench-rtf.png`` and ``bench-memory.png`` into ``out_dir``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    plots = plot_bench(res, d)
    doc = {**results_to_json(res), "command": command}
    paths = write_report(
        report_paths(d / "bench", {"markdown": ".md", "json": ".json"}), lambda: markdown_report(res, plots, command), doc
    )
    paths.update({k: d / v for k, v in plots.items()})
    return paths
