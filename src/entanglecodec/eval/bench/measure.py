"""Benchmark measurements: peak memory, timed calls over clip lengths, flop counts, memory
breakdowns, and the fits over the measured points."""

from __future__ import annotations

import ctypes
import gc
import math
import os
import re
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ...codec.model import EntangleCodec


SAMPLE_RATE = 24000
DEFAULT_LENGTHS: tuple[float, ...] = (1.0, 10.0, 30.0, 60.0, 600.0)
"""Clip lengths (seconds) of a full run (five points keep `make bench` within a few minutes)."""
WAVE_MIB_PER_MIN = SAMPLE_RATE * 60 * 4 / 2**20
"""Size of one minute of float32 audio at 24 kHz, MiB (the yardstick for memory growth)."""
QUICK_LENGTHS: tuple[float, ...] = (0.5, 1.0, 2.5)
"""Clip lengths of ``--quick`` (the tiny preset's window is 2 s, so 2.5 s crosses it)."""


def length_label(sec: float) -> str:
    """A clip length for tables and logs: ``"30 s"``, ``"10 min"``."""
    return f"{sec / 60:g} min" if sec >= 60 else f"{sec:g} s"


class BenchError(ValueError):
    """Bad benchmark settings."""


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------
def _status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _can_reset_hwm() -> bool:
    if _status_kib("VmHWM") is None:
        return False
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Context manager measuring the peak RSS growth (bytes) of the code inside it.

    ``method`` is ``"VmHWM reset"`` (exact high-water mark) or ``"RSS sampling (2 ms)"``.
    """

    def __init__(self) -> None:
        self.method = "VmHWM reset" if _can_reset_hwm() else "RSS sampling (2 ms)"
        self.peak_bytes = 0
        self._base = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._max = 0

    @staticmethod
    def rss_bytes() -> int:
        """Current resident set size in bytes (0 when unknown)."""
        kib = _status_kib("VmRSS")
        return 1024 * kib if kib is not None else 0

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._max = max(self._max, self.rss_bytes())

    def __enter__(self) -> PeakMemory:
        gc.collect()
        _malloc_trim()
        if self.method == "VmHWM reset":
            Path("/proc/self/clear_refs").write_text("5")
        self._base = self.rss_bytes()
        if self.method != "VmHWM reset":
            self._max = self._base
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.method == "VmHWM reset":
            peak = 1024 * (_status_kib("VmHWM") or 0)
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._max, self.rss_bytes())
        self.peak_bytes = max(0, peak - self._base)


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------
@dataclass
class Measurement:
    """One (operation, batch, length) point.

    Attributes:
        op: operation label. batch: clips per call. seconds: length of each clip (s).
        wall_s: median compute time of one call (s); ``NaN`` when skipped.
        rtf: ``wall_s / (batch * seconds)``. peak_mb: peak RSS growth (MiB), ``NaN`` when not
        attributable. reps: timed calls. skipped: reason when not run. load1: the machine's 1-minute
        load average right after the point was measured.
    """

    op: str
    batch: int
    seconds: float
    wall_s: float = math.nan
    rtf: float = math.nan
    peak_mb: float = math.nan
    reps: int = 0
    times: list[float] = field(default_factory=list)
    skipped: str = ""
    load1: float = math.nan


def bench_signal(seconds: float, batch: int = 1, seed: int = 0) -> np.ndarray:
    """``float32 [batch, S]`` deterministic test audio: a gliding harmonic tone over white noise."""
    n = int(round(seconds * SAMPLE_RATE))
    if n < 1:
        raise BenchError(f"clip length must be positive, got {seconds} s")
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    f0 = 150.0 * 2.0 ** np.sin(2 * np.pi * 0.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    tone = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4))
    out = np.empty((batch, n), dtype=np.float32)
    for b in range(batch):
        out[b] = 0.2 * tone + 0.02 * rng.standard_normal(n)
    return out


def _time_calls(fn: Callable[[], Any], reps: int, track_memory: bool) -> tuple[list[float], float]:
    times = []
    peak = math.nan
    for r in range(reps):
        if track_memory and r == 0:
            with PeakMemory() as pm:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            peak = pm.peak_bytes / 2**20
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times, peak


def run_series(
    op: str,
    make_call: Callable[[np.ndarray], Callable[[], Any]],
    lengths: Sequence[float],
    batch: int,
    reps: int = 3,
    max_call_s: float = 30.0,
    track_memory: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[Measurement]:
    """Measure one operation over increasing lengths.

    Args:
        op: label.
        make_call: ``audio [batch, S] -> zero-argument callable`` doing the work (any set-up such
            as encoding for a decode benchmark happens in ``make_call``, outside the timing).
        lengths: clip lengths in seconds (sorted ascending here).
        batch: clips per call.
        reps: timed calls when a call holds at most 10 s of audio in total (more: one call).
        max_call_s: skip a length whose predicted call time exceeds this.
        track_memory: measure peak RSS on the first timed call.
        progress: receives a status line per point.
    """
    lens = sorted(float(x) for x in lengths)
    out: list[Measurement] = []
    make_call(bench_signal(lens[0], batch))()  # warm-up: thread pools, caches, lazily built modules
    last: tuple[float, float] | None = None
    for sec in lens:
        m = Measurement(op, batch, sec)
        if last is not None:
            predicted = last[1] * sec / last[0]
            if predicted > max_call_s:
                m.skipped = f"predicted {predicted:.0f} s per call > max {max_call_s:.0f} s"
                out.append(m)
                continue
        if progress is not None:
            progress(f"{op} · batch {batch} · {sec:g} s")
        call = make_call(bench_signal(sec, batch))
        n = reps if sec * batch <= 10.0 else 1
        times, peak = _time_calls(call, n, track_memory)
        m.times = times
        m.reps = n
        m.wall_s = statistics.median(times)
        m.rtf = m.wall_s / (batch * sec)
        m.peak_mb = peak
        m.load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
        last = (sec, m.wall_s)
        out.append(m)
        del call
    return out


# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------
def model_ops(model: EntangleCodec) -> dict[str, Callable[[np.ndarray], Callable[[], Any]]]:
    """The codec's operations as ``audio [B, S] -> call`` factories (tokens prepared outside timing):
    ``encode``, ``decode-1`` (one Euler step at the default precision, see
    :mod:`entanglecodec.codec.precision`), ``end-to-end`` and, when that default is not float32,
    ``decode-1 · float32``."""
    import torch

    from ...codec.precision import resolve_precision

    def enc(x: np.ndarray) -> Callable[[], Any]:
        wav = torch.from_numpy(x)
        return lambda: model.encode(wav, SAMPLE_RATE)

    def dec(steps: int, precision: str | None = None) -> Callable[[np.ndarray], Callable[[], Any]]:
        def factory(x: np.ndarray) -> Callable[[], Any]:
            tokens = model.encode(torch.from_numpy(x), SAMPLE_RATE)
            return lambda: model.decode(tokens, steps=steps, precision=precision)

        return factory

    def e2e(x: np.ndarray) -> Callable[[], Any]:
        wav = torch.from_numpy(x)
        return lambda: model.reconstruct(wav, SAMPLE_RATE)

    ops = {"encode": enc, "decode-1": dec(1), "end-to-end": e2e}
    if resolve_precision(None, model.device) != torch.float32:
        ops["decode-1 · float32"] = dec(1, "float32")
    return ops


def onnx_ops(runtime: Any) -> dict[str, Callable[[np.ndarray], Callable[[], Any]]]:
    """The compiled runtime's operations (:class:`~entanglecodec.runtime.OnnxCodec`, one clip per
    call): ``onnx · encode``, ``onnx · decode-1`` (tokens prepared outside timing) and
    ``onnx · end-to-end``."""

    def one(x: np.ndarray) -> np.ndarray:
        if x.shape[0] != 1:
            raise BenchError("the compiled runtime processes one clip per call")
        return np.ascontiguousarray(x[0])

    def enc(x: np.ndarray) -> Callable[[], Any]:
        clip = one(x)
        return lambda: runtime.encode(clip, SAMPLE_RATE)

    def dec(x: np.ndarray) -> Callable[[], Any]:
        codes = runtime.encode(one(x), SAMPLE_RATE)
        return lambda: runtime.decode(codes)

    def e2e(x: np.ndarray) -> Callable[[], Any]:
        clip = one(x)
        return lambda: runtime.reconstruct(clip, SAMPLE_RATE)

    return {"onnx · encode": enc, "onnx · decode-1": dec, "onnx · end-to-end": e2e}


FLOAT32_BATCHES = (1,)
FLOAT32_MAX_S = 60.0
"""Batch sizes and longest clip of the ``decode-1 · float32`` row (the reference arithmetic beside
the default; ``reports/decode-profile.md`` compares the two at 10 min)."""


def system_op(system: Any) -> Callable[[np.ndarray], Callable[[], Any]]:
    """A :class:`~entanglecodec.eval.systems.System` as a batch-1 call factory."""

    def factory(x: np.ndarray) -> Callable[[], Any]:
        if x.shape[0] != 1:
            raise BenchError("baseline systems process one clip per call")
        clip = np.ascontiguousarray(x[0])
        return lambda: system.process(clip)

    return factory


def count_flops(preset: str, seconds: float = 10.0) -> dict[str, float]:
    """FLOPs of a randomly initialised preset per second of audio.

    Returns:
        ``{"params_encoder", "params_decoder", "encode_per_s", "decoder_step_per_s",
        "decoder_pass_per_s", "vocoder_per_s", "window_s"}``; ``vocoder_per_s`` counts a
        Vocos-style neural vocoder of the shipped ``small`` size (its iSTFT is not counted).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ...codec.model import EntangleCodec
    from ...config import EntangleCodecConfig
    from ...vocoder.config import VocoderConfig
    from ...vocoder.model import Vocoder

    torch.manual_seed(0)
    model = EntangleCodec(EntangleCodecConfig.preset(preset), build_text_encoder=False).eval()
    wav = torch.from_numpy(bench_signal(seconds, 1))
    with FlopCounterMode(display=False) as fc:
        tokens = model.encode(wav, SAMPLE_RATE)
    enc = fc.get_total_flops()
    zq = model.quantizer.embed_codes(tokens.codes)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.decoder.sample(zq, None, steps=1, guidance=1.0)
    step = fc.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.decoder.sample(zq, None, steps=1, guidance=0.0)
    one_pass = fc.get_total_flops()
    voc = Vocoder(VocoderConfig.preset("small")).eval()
    mel = model.frontend.log_mel(wav)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        voc(mel, None)
    vflops = fc.get_total_flops()
    n = model.num_parameters()
    return {
        "params_encoder": float(n["encoder"] + n["quantizer"]),
        "params_decoder": float(n["decoder"]),
        "encode_per_s": enc / seconds,
        "decoder_step_per_s": step / seconds,
        "decoder_pass_per_s": one_pass / seconds,
        "vocoder_per_s": vflops / seconds,
        "window_s": model.config.max_frames / model.config.frame_rate,
    }


def encode_memory_breakdown(model: EntangleCodec, seconds: Sequence[float]) -> dict[str, dict[str, float]]:
    """Peak RSS growth (MiB) of the two stages of ``encode`` on one clip of each length.

    Stages (public API): ``encoder features`` (``encode_features``: mel front end, windowed encoder,
    projection to ``h~``) and ``nearest-code search`` (``model.quantizer.nearest`` on the whole
    clip's ``h~``).

    Returns:
        ``{length label: {stage: MiB, "seconds": length}}``.
    """
    import torch

    out: dict[str, dict[str, float]] = {}
    for sec in seconds:
        x = torch.from_numpy(bench_signal(sec))
        lens = torch.tensor([x.shape[1]])
        row: dict[str, float] = {"seconds": float(sec)}
        with torch.inference_mode():
            with PeakMemory() as pm:
                feats = model.encode_features(x, SAMPLE_RATE, lens)
            row["encoder features"] = pm.peak_bytes / 2**20
            pre = feats["pre_quant"]
            del feats
            with PeakMemory() as pm:
                model.quantizer.nearest(pre)
            row["nearest-code search"] = pm.peak_bytes / 2**20
        out[length_label(sec)] = row
    return out


# ---------------------------------------------------------------------------------------------
# Fits over the measured points
# ---------------------------------------------------------------------------------------------
def linear_fit(points: Sequence[Measurement]) -> dict[str, float] | None:
    """Least-squares ``wall_s = intercept + slope * audio_s`` over measured points (>= 3 lengths).

    Returns:
        ``{"slope", "intercept", "r2", "n"}`` (``slope``: compute seconds per audio second) or None.
    """
    pts = [(m.batch * m.seconds, m.wall_s) for m in points if math.isfinite(m.wall_s)]
    if len(pts) < 3:
        return None
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    a = np.vstack([x, np.ones_like(x)]).T
    (slope, intercept), *_ = np.linalg.lstsq(a, y, rcond=None)
    ss_res = float(np.sum((y - (slope * x + intercept)) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "slope": float(slope),
        "intercept": float(intercept),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0,
        "n": float(len(pts)),
    }


def memory_slope(points: Sequence[Measurement], window_s: float) -> float | None:
    """Peak-memory growth past the window, MiB per minute of audio, or None.

    Least-squares slope over the lengths strictly longer than the window (those processed window by
    window; a clip of exactly one window is still a single pass).
    """
    pts = [(m.seconds, m.peak_mb) for m in points if m.seconds > window_s and math.isfinite(m.peak_mb)]
    if len(pts) < 2:
        return None
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0] * 60.0)
