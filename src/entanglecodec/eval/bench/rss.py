"""Peak memory of the ``entanglecodec encode`` and ``decode`` processes on long files (``eval bench-rss``).

For each duration (1 min, 10 min, 1 h by default) a test file is written block by block (a tone
sweep plus noise, 16-bit WAV at 44.1 kHz stereo so that reading, down-mixing and resampling are
all exercised), then ``entanglecodec encode`` runs on it in a child process, and ``entanglecodec
decode --backend torch`` on the tokens it wrote; each child's peak resident set size (``ru_maxrss``
from ``wait4``) is recorded. Encoding streams the file window by window, and decoding yields the
waveform one 30 s vocoder window at a time (``codec.streaming.decode_stream``) while the writer
spools it to disk, so neither peak should grow with the duration beyond the token array and the
pitch contour (about 100 bytes per second of audio in memory).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_RSS_SECONDS: tuple[float, ...] = (60.0, 600.0, 3600.0)
"""Durations of the default run: 1 min, 10 min, 1 h."""
FILE_RATE = 44100
"""Sample rate of the generated files (not the codec's, so the resampler is streamed too)."""


@dataclass
class RssPoint:
    """One measured run: duration (s), peak RSS of the encode process (MiB), wall time (s), and the
    same for decoding the tokens back to a file (``None`` when not measured)."""

    seconds: float
    peak_rss_mib: float
    wall_s: float
    decode_rss_mib: float | None = None
    decode_wall_s: float | None = None


def write_long_wav(path: str | Path, seconds: float, block_seconds: float = 10.0, seed: int = 0) -> Path:
    """Write a stereo 16-bit WAV of ``seconds`` (sweeping tone + noise) without holding it in memory."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total = int(seconds * FILE_RATE)
    block = int(block_seconds * FILE_RATE)
    with sf.SoundFile(str(path), "w", FILE_RATE, 2, subtype="PCM_16", format="WAV") as f:
        for start in range(0, total, block):
            t = (np.arange(start, min(start + block, total)) / FILE_RATE).astype(np.float64)
            freq = 220.0 + 200.0 * np.sin(2 * np.pi * t / 30.0)
            tone = 0.3 * np.sin(2 * np.pi * np.cumsum(freq) / FILE_RATE)
            noise = 0.05 * rng.standard_normal((t.size, 2))
            f.write((tone[:, None] + noise).astype(np.float32))
    return Path(path)


CLI_MODULE = "entanglecodec.cli"
"""What ``python -m`` runs for the child process (the package's ``cli/__main__.py``)."""


def cli_rss(args: Sequence[str], threads: int = 2) -> tuple[float, float]:
    """Run ``entanglecodec ARGS`` in a child; return ``(peak RSS MiB, wall s)``.

    Raises:
        RuntimeError: the command failed (its output is in the message).
    """
    cmd = [sys.executable, "-m", CLI_MODULE, *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TERM": "dumb"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {output.decode(errors='replace')[-500:]}")
    return usage.ru_maxrss / 1024.0, wall  # ru_maxrss is in KiB on Linux


def encode_rss(audio: Path, out: Path, checkpoint: Path | None = None, threads: int = 2) -> tuple[float, float]:
    """``entanglecodec encode audio -o out`` in a child: ``(peak RSS MiB, wall s)``."""
    return cli_rss(["encode", str(audio), "-o", str(out), "--overwrite", *(["-c", str(checkpoint)] if checkpoint else [])], threads)


def decode_rss(tokens: Path, out: Path, checkpoint: Path | None = None, threads: int = 2) -> tuple[float, float]:
    """``entanglecodec decode tokens -o out --backend torch`` (the streamed path) in a child."""
    return cli_rss(
        ["decode", str(tokens), "-o", str(out), "--overwrite", "--backend", "torch", *(["-c", str(checkpoint)] if checkpoint else [])],
        threads,
    )


def run_rss(
    seconds: Sequence[float] = DEFAULT_RSS_SECONDS,
    checkpoint: Path | None = None,
    workdir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[RssPoint]:
    """Measure the encode process's peak RSS for each duration (files are generated, then deleted)."""
    say = progress or (lambda _m: None)
    points = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for sec in sorted(seconds):
            wav = Path(tmp) / f"long-{int(sec)}s.wav"
            say(f"writing {sec:g} s test file")
            write_long_wav(wav, sec)
            say(f"encoding {sec:g} s")
            rss, wall = encode_rss(wav, Path(tmp) / "out.npz", checkpoint)
            wav.unlink()
            say(f"{sec:g} s: encode peak RSS {rss:.0f} MiB, {wall:.1f} s; decoding")
            d_rss, d_wall = decode_rss(Path(tmp) / "out.npz", Path(tmp) / "out.wav", checkpoint)
            (Path(tmp) / "out.wav").unlink()
            points.append(RssPoint(float(sec), rss, wall, d_rss, d_wall))
            say(f"{sec:g} s: decode peak RSS {d_rss:.0f} MiB, {d_wall:.1f} s")
    return points


def rss_markdown(points: Sequence[RssPoint], command: str) -> str:
    """A short markdown report of :func:`run_rss` results."""
    lines = [
        "# Peak memory of `entanglecodec encode` and `decode` on long files",
        "",
        f"Command: `{command}`. Input: generated 44.1 kHz stereo 16-bit WAV (tone sweep + noise), read "
        "block by block, down-mixed and resampled as a stream, then its tokens decoded back to a 24 kHz "
        "WAV with `--backend torch` (the streamed decoder: one 30 s vocoder window at a time, spooled to "
        "disk before the atomic write). Peak RSS of the whole CLI process (`ru_maxrss`), model loading included.",
        "",
        "| duration | encode peak RSS (MiB) | growth vs shortest | wall (s) | decode peak RSS (MiB) | growth vs shortest | wall (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    base = points[0].peak_rss_mib if points else 0.0
    dbase = points[0].decode_rss_mib if points else None
    for p in points:
        label = f"{p.seconds / 60:g} min" if p.seconds < 3600 else f"{p.seconds / 3600:g} h"
        dec = "| – | – | –"
        if p.decode_rss_mib is not None and p.decode_wall_s is not None:
            grow = f"{p.decode_rss_mib - dbase:+.0f}" if dbase is not None else "–"
            dec = f"| {p.decode_rss_mib:.0f} | {grow} | {p.decode_wall_s:.1f}"
        lines.append(f"| {label} | {p.peak_rss_mib:.0f} | {p.peak_rss_mib - base:+.0f} | {p.wall_s:.1f} {dec} |")
    return "\n".join(lines) + "\n"
