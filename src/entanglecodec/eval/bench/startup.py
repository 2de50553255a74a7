"""Start-up times of the command line and the package (``eval bench-startup``), timed by ``hyperfine``.

Five commands, each in a fresh interpreter: ``import torch`` (the floor every torch program pays),
``import entanglecodec``, ``entanglecodec --help`` and ``entanglecodec reconstruct`` of a 5 s clip
end to end (model loading, encoding, decoding with the default vocoder, writing the WAV), once with
the default backend (the compiled ONNX runtime, built before timing with ``entanglecodec runtime
build``) and once with ``--backend torch`` for reference. Targets (issue 16): ``--help`` < 0.5 s,
``import`` < 1 s, ``reconstruct`` of 5 s < 1.5 s. The machine's load
average and core count are recorded beside the numbers: on a shared machine they decide them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLIP_SECONDS = 5.0


class StartupBenchError(RuntimeError):
    """hyperfine is missing, or a timed command failed."""


@dataclass
class StartupRow:
    """One timed command: mean, standard deviation, min and max wall time (s) over ``runs``."""

    name: str
    command: str
    mean_s: float
    stdev_s: float
    min_s: float
    max_s: float
    runs: int
    target_s: float | None

    @property
    def verdict(self) -> str:
        if self.target_s is None:
            return "reference"
        return "meets" if self.mean_s < self.target_s else "misses"


@dataclass
class StartupBench:
    """All rows plus the machine's state (1-minute load average before and after, cores)."""

    rows: list[StartupRow]
    load_before: float
    load_after: float
    cores: int
    hyperfine: str
    runtime_note: str = ""
    """Why the default ``reconstruct`` row ran on torch (the runtime could not be compiled), else empty."""


def write_clip(path: Path, seconds: float = CLIP_SECONDS) -> Path:
    """A speech-like test clip: a flite sentence when flite is installed, else a gliding harmonic tone."""
    import soundfile as sf

    sr = 24000
    if shutil.which("flite"):
        raw = path.with_suffix(".flite.wav")
        text = "The quick brown fox jumps over the lazy dog, and the codec writes it down in tokens."
        subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(raw)], check=True, capture_output=True)
        from ...audio import load_audio

        wav, _ = load_audio(raw, sr)
        raw.unlink()
    else:
        t = np.arange(int(seconds * sr)) / sr
        f0 = 140 + 40 * np.sin(2 * np.pi * 0.5 * t)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        wav = np.sum([0.2 / k * np.sin(k * phase) for k in range(1, 8)], axis=0).astype(np.float32)
    n = int(seconds * sr)
    out = np.zeros(n, dtype=np.float32)
    out[: min(n, wav.size)] = wav[:n]
    sf.write(path, out, sr)
    return path


def commands(clip: Path, out_wav: Path, checkpoint: str | None = None) -> list[tuple[str, list[str], float | None]]:
    """``(name, argv, target seconds)`` of every timed command (this interpreter, no shell)."""
    py = sys.executable
    ck = ["--checkpoint", checkpoint] if checkpoint else []
    rec = [py, "-m", "entanglecodec.cli", "reconstruct", str(clip), "-o", str(out_wav), "--overwrite", *ck]
    return [
        ("import torch (floor)", [py, "-c", "import torch"], None),
        ("import entanglecodec", [py, "-c", "import entanglecodec"], 1.0),
        ("entanglecodec --help", [py, "-m", "entanglecodec.cli", "--help"], 0.5),
        (f"entanglecodec reconstruct ({CLIP_SECONDS:g} s clip)", rec, 1.5),
        (f"entanglecodec reconstruct --backend torch ({CLIP_SECONDS:g} s clip)", [*rec, "--backend", "torch"], None),
    ]


def run_startup_bench(runs: int = 10, warmup: int = 2, checkpoint: str | None = None) -> StartupBench:
    """Time :func:`commands` with hyperfine (``--warmup``, ``--runs``, no intermediate shell).

    Raises:
        StartupBenchError: hyperfine is not installed or a command failed.
    """
    exe = shutil.which("hyperfine")
    if exe is None:
        raise StartupBenchError("hyperfine is not installed (Debian: apt-get install hyperfine; `make bench` does it as root)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    rows = []
    load_before = os.getloadavg()[0]
    ck = ["--checkpoint", checkpoint] if checkpoint else []
    built = subprocess.run([sys.executable, "-m", "entanglecodec.cli", "runtime", "build", *ck], capture_output=True, text=True)
    note = "" if built.returncode == 0 else " ".join((built.stderr or built.stdout).split())[-300:]
    with tempfile.TemporaryDirectory(prefix="entanglecodec-startup-") as d:
        clip = write_clip(Path(d) / "clip.wav")
        for name, argv, target in commands(clip, Path(d) / "out.wav", checkpoint):
            report = Path(d) / "hyperfine.json"
            cmd = [exe, "--shell=none", "--style", "none", "--warmup", str(warmup), "--runs", str(runs),
                   "--export-json", str(report), shlex.join(argv)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise StartupBenchError(f"{name}: hyperfine failed: {' '.join((proc.stderr or proc.stdout).split())[-400:]}")
            (res,) = json.loads(report.read_text())["results"]
            rows.append(StartupRow(name, shlex.join(["…/python", *argv[1:]]), res["mean"], res["stddev"] or 0.0,
                                   res["min"], res["max"], len(res["times"]), target))
    return StartupBench(rows, load_before, os.getloadavg()[0], os.cpu_count() or 1, version, note)


def startup_markdown(bench: StartupBench, command: str) -> str:
    """The report: one row per command with its target and verdict, and the machine's load."""
    lines = [
        "# Start-up times",
        "",
        f"Command: `{command}` ({bench.hyperfine}, each command in a fresh interpreter). Machine: "
        f"{bench.cores} cores, 1-minute load average {bench.load_before:.2f} before and {bench.load_after:.2f} "
        "after (a load near the core count means every number below is inflated by sharing the CPU).",
        "",
        "| command | mean (s) | ± sd | min (s) | max (s) | runs | target | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if bench.runtime_note:
        lines[4:4] = [f"The compiled runtime could not be built, so the default `reconstruct` ran on torch: {bench.runtime_note}", ""]
    for r in bench.rows:
        target = f"< {r.target_s:g} s" if r.target_s is not None else "—"
        lines.append(
            f"| `{r.name}` | {r.mean_s:.3f} | {r.stdev_s:.3f} | {r.min_s:.3f} | {r.max_s:.3f} | {r.runs} | {target} | {r.verdict} |"
        )
    return "\n".join(lines) + "\n"


def startup_json(bench: StartupBench, command: str) -> dict[str, object]:
    """The same numbers as a JSON document."""
    return {
        "command": command,
        "hyperfine": bench.hyperfine,
        "cores": bench.cores,
        "load_before": bench.load_before,
        "load_after": bench.load_after,
        "runtime_note": bench.runtime_note,
        "rows": [
            {"name": r.name, "command": r.command, "mean_s": r.mean_s, "stdev_s": r.stdev_s, "min_s": r.min_s,
             "max_s": r.max_s, "runs": r.runs, "target_s": r.target_s, "verdict": r.verdict}
            for r in bench.rows
        ],
    }


def write_startup_report(bench: StartupBench, out: Path, command: str) -> Sequence[Path]:
    """Write ``bench-startup.md`` and ``bench-startup.json`` to ``out``."""
    from ...fileio import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "bench-startup.md", out / "bench-startup.json"
    atomic_write_text(md, startup_markdown(bench, command))
    atomic_write_text(js, json.dumps(startup_json(bench, command), indent=2) + "\n")
    return md, js
