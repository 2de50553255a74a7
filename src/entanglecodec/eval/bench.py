"""Speed and scaling benchmark: real-time factors, peak memory, tokens/s and FLOPs per preset.

What is measured (all on this machine's CPU, in one process, one call at a time):

* ``encode``: ``model.encode`` (wave -> tokens), ``decode-1`` / ``decode-4``: ``model.decode``
  with 1 and 4 Euler steps (tokens -> mel -> the model's vocoder -> wave), ``end-to-end``:
  ``model.reconstruct`` (encode + 1-step decode). When the model's vocoder is Griffin-Lim, a
  ``decode-1 · neural vocoder`` row uses a randomly initialised Vocos-style vocoder of the
  shipped size instead (speed does not depend on weights).
* Baselines on the same clips: Codec2 3200/700C and Opus 6 kbps (external processes, encode +
  decode) and the Griffin-Lim mel oracle (wave -> log-mel -> 32 Griffin-Lim iterations), through
  :mod:`entanglecodec.eval.systems`.
* For batch sizes 1 and 8 and lengths from 1 s to 10 min. A length is skipped (and the skip
  recorded) when the previous length of the same series predicts, by linear extrapolation, a
  single call longer than ``max_call_s``.

Timing: ``time.perf_counter`` around one call, after a warm-up call on the shortest length; the
median of ``reps`` calls when a call holds at most 10 s of audio (batch x length), one call beyond. ``RTF = compute seconds / audio
seconds`` (batch 8: divided by 8 x the clip length); below 1 is faster than real time.

Peak memory: the process's resident-set high-water mark (``VmHWM``) is reset to the current RSS
through ``/proc/self/clear_refs`` before each measurement (after ``gc.collect`` and glibc
``malloc_trim`` so freed memory does not hide new allocations); the reported value is
``VmHWM - RSS before``: every byte the call made resident (torch CPU tensors included, they are
allocated through malloc). Inputs created before the call are not counted. Where the kernel
interface is unavailable a 2 ms RSS sampling thread is used instead (and named in the report).
External codecs run in child processes: their memory is not attributed.

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over ``encode`` of 10 s and over one Euler
step of the flow decoder (both classifier-free-guidance passes) on 10 s, for every preset, with
random weights. FFTs (mel analysis, iSTFT, Griffin-Lim) are not counted by the flop counter.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
import platform
import re
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .report import json_safe, report_paths, write_report

if TYPE_CHECKING:
    from ..codec.model import EntangleCodec

SAMPLE_RATE = 24000
DEFAULT_LENGTHS: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 60.0, 180.0, 600.0)
"""Clip lengths (seconds) of a full run."""
WAVE_MIB_PER_MIN = SAMPLE_RATE * 60 * 4 / 2**20
"""Size of one minute of float32 audio at 24 kHz, MiB (the yardstick for memory growth)."""
QUICK_LENGTHS: tuple[float, ...] = (0.5, 1.0, 2.5)
"""Clip lengths of ``--quick`` (the tiny preset's window is 2 s, so 2.5 s crosses it)."""


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
        attributable. reps: timed calls. skipped: reason when not run.
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
        last = (sec, m.wall_s)
        out.append(m)
        del call
    return out


# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------
def model_ops(model: EntangleCodec) -> dict[str, Callable[[np.ndarray], Callable[[], Any]]]:
    """The codec's operations as ``audio [B, S] -> call`` factories (tokens prepared outside timing)."""
    import torch

    def enc(x: np.ndarray) -> Callable[[], Any]:
        wav = torch.from_numpy(x)
        return lambda: model.encode(wav, SAMPLE_RATE)

    def dec(steps: int) -> Callable[[np.ndarray], Callable[[], Any]]:
        def factory(x: np.ndarray) -> Callable[[], Any]:
            tokens = model.encode(torch.from_numpy(x), SAMPLE_RATE)
            return lambda: model.decode(tokens, steps=steps)

        return factory

    def e2e(x: np.ndarray) -> Callable[[], Any]:
        wav = torch.from_numpy(x)
        return lambda: model.reconstruct(wav, SAMPLE_RATE)

    return {"encode": enc, "decode-1": dec(1), "decode-4": dec(4), "end-to-end": e2e}


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

    from ..codec.model import EntangleCodec
    from ..config import EntangleCodecConfig
    from ..vocoder.config import VocoderConfig
    from ..vocoder.model import Vocoder

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
        out[_len_label(sec)] = row
    return out


# ---------------------------------------------------------------------------------------------
# Whole benchmark
# ---------------------------------------------------------------------------------------------
@dataclass
class BenchResults:
    """Everything :func:`run_bench` measured."""

    model: dict[str, Any]
    machine: dict[str, Any]
    settings: dict[str, Any]
    measurements: list[Measurement]
    flops: dict[str, dict[str, float]]
    notes: list[str] = field(default_factory=list)
    memory_breakdown: dict[str, dict[str, float]] = field(default_factory=dict)

    def series(self, op: str, batch: int) -> list[Measurement]:
        return [m for m in self.measurements if m.op == op and m.batch == batch]

    def ops(self) -> list[str]:
        return list(dict.fromkeys(m.op for m in self.measurements))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def load_bench_model(
    checkpoint: str | Path | None, preset: str, notes: list[str], bundled: bool = True
) -> tuple[EntangleCodec, dict[str, Any]]:
    """The model to benchmark: ``checkpoint``, else the bundled default (if ``bundled``), else a random ``preset``."""
    import torch

    from ..codec.model import CheckpointError, EntangleCodec
    from ..config import EntangleCodecConfig

    if checkpoint is not None:
        model = EntangleCodec.from_pretrained(checkpoint, build_text_encoder=False)
        info: dict[str, Any] = {
            "source": f"checkpoint {checkpoint}",
            "weights": "trained",
            "preset": model.config.name,
        }
    else:
        why = "the bundled model was not requested"
        loaded: EntangleCodec | None = None
        if bundled:
            try:
                loaded = EntangleCodec.from_pretrained(None, build_text_encoder=False)
                info = {"source": "bundled default model", "weights": "trained", "preset": loaded.config.name}
            except CheckpointError as e:
                why = f"no bundled model ({str(e).split(':')[0]})"
        if loaded is None:
            torch.manual_seed(0)
            loaded = EntangleCodec(EntangleCodecConfig.preset(preset), build_text_encoder=False).eval()
            info = {
                "source": f"randomly initialised `{preset}` preset",
                "weights": "random",
                "preset": preset,
            }
            notes.append(
                f"{why}: benchmarked a randomly initialised `{preset}` preset; speed and memory do not depend on the weights"
            )
        model = loaded
    n = model.num_parameters()
    info.update(
        {
            "params_encoder": n["encoder"] + n["quantizer"],
            "params_decoder": n["decoder"],
            "codebook_size": model.codebook_size,
            "bitrate": model.bitrate,
            "window_s": model.config.max_frames / model.config.frame_rate,
            "heads": model.config.encoder.heads,
            "vocoder": f"{type(model.vocoder).__name__} (config `vocoder: {model.config.vocoder}`)",
        }
    )
    return model, info


def _run_all(
    model: EntangleCodec,
    measurements: list[Measurement],
    notes: list[str],
    batches: Sequence[int],
    lengths: Sequence[float],
    reps: int,
    max_call_s: float,
    neural_vocoder: bool,
    baselines: bool,
    say: Callable[[str], None],
) -> None:
    """Every timing series of :func:`run_bench` (appends to ``measurements`` and ``notes``)."""
    import torch

    with torch.inference_mode():
        for op, factory in model_ops(model).items():
            for b in batches:
                measurements += run_series(op, factory, lengths, b, reps, max_call_s, progress=say)
        from ..vocoder.griffin_lim import GriffinLim

        if neural_vocoder and isinstance(model.vocoder, GriffinLim):
            from ..vocoder.config import VocoderConfig
            from ..vocoder.model import Vocoder

            torch.manual_seed(0)
            voc = Vocoder(VocoderConfig.preset("small")).eval()
            model.set_vocoder(voc)
            try:
                dec1 = model_ops(model)["decode-1"]
                for b in batches:
                    measurements += run_series(
                        "decode-1 · neural vocoder", dec1, lengths, b, reps, max_call_s, progress=say
                    )
            finally:
                model.set_vocoder(model.config.vocoder)
            notes.append(
                "`decode-1 · neural vocoder`: the same decode with a randomly initialised Vocos-style "
                f"vocoder of the shipped `small` size ({voc.num_parameters / 1e6:.1f} M parameters) "
                "instead of Griffin-Lim"
            )
        if baselines:
            from .systems import Codec2System, CodecSystemError, MelOracleSystem, OpusSystem, System

            systems: list[System] = []
            for make in (
                lambda: Codec2System("3200"),
                lambda: Codec2System("700C"),
                lambda: OpusSystem(6.0),
                lambda: MelOracleSystem("griffin-lim"),
            ):
                try:
                    system = make()
                    system.process(bench_signal(0.5)[0])  # fails early when the tool is missing
                    systems.append(system)
                except (CodecSystemError, OSError, ValueError) as e:
                    notes.append(f"baseline skipped: {e}")
            for s in systems:
                external = not isinstance(s, MelOracleSystem)
                measurements += run_series(
                    s.name,
                    system_op(s),
                    lengths,
                    1,
                    reps,
                    max_call_s,
                    track_memory=not external,
                    progress=say,
                )
            if any(not isinstance(s, MelOracleSystem) for s in systems):
                notes.append(
                    "Codec2/Opus run as external processes (encoder + decoder + WAV/raw I/O); memory not attributed"
                )


def run_bench(
    checkpoint: str | Path | None = None,
    preset: str = "small",
    bundled: bool = True,
    lengths: Sequence[float] = DEFAULT_LENGTHS,
    batches: Sequence[int] = (1, 8),
    reps: int = 3,
    max_call_s: float = 30.0,
    baselines: bool = True,
    neural_vocoder: bool = True,
    flops_presets: Sequence[str] = ("paper", "small", "tiny"),
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchResults:
    """Run the whole benchmark (see the module docstring).

    Args:
        checkpoint: model directory (default: the bundled model, else a random ``preset``).
        preset: preset benchmarked when no model is installed (or ``bundled`` is false).
        bundled: use the bundled default model when no ``checkpoint`` is given.
        lengths: clip lengths in seconds.
        batches: batch sizes for the codec's operations (baselines: batch 1 only).
        reps: timed calls per point when a call holds at most 10 s of audio.
        max_call_s: skip points whose predicted call time exceeds this many seconds.
        baselines: also time Codec2, Opus and the Griffin-Lim mel oracle.
        neural_vocoder: add a ``decode-1 · neural vocoder`` row when the model uses Griffin-Lim.
        flops_presets: presets whose FLOPs are counted.
        threads: torch intra-op threads; ``None``: one thread when the 1-minute load average shows
            the cores busy with other jobs (several threads then spin against each other and run
            several times slower), else torch's default. The choice is recorded.
        progress: receives status lines.
    """
    import torch

    if not lengths or min(lengths) <= 0:
        raise BenchError(f"lengths must be positive seconds, got {list(lengths)}")
    if not batches or min(batches) < 1:
        raise BenchError(f"batch sizes must be >= 1, got {list(batches)}")
    if reps < 1 or max_call_s <= 0:
        raise BenchError("reps must be >= 1 and max_call_s > 0")
    say = progress or (lambda _m: None)
    notes: list[str] = []
    if threads is not None:
        torch.set_num_threads(threads)
        threads_why = "set by the caller"
    else:
        load, cores = (_loadavg() or [0.0])[0], os.cpu_count() or 1
        if load > cores - 0.5 and torch.get_num_threads() > 1:
            torch.set_num_threads(1)
            threads_why = f"auto: 1-min load average {load:.1f} on {cores} cores, so one thread"
        else:
            threads_why = "torch default"
    t_start = time.perf_counter()
    machine = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "threads_reason": threads_why,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_start": _loadavg(),
        "memory_method": PeakMemory().method,
    }
    model, info = load_bench_model(checkpoint, preset, notes, bundled)
    measurements: list[Measurement] = []
    gc.collect()
    gc.freeze()  # keep the long-lived objects out of the per-measurement gc.collect (0.3 s each otherwise)
    try:
        _run_all(
            model, measurements, notes, batches, lengths, reps, max_call_s, neural_vocoder, baselines, say
        )
        enc = [
            m.seconds for m in measurements if m.op == "encode" and m.batch == 1 and math.isfinite(m.wall_s)
        ]
        window = model.config.max_frames / model.config.frame_rate
        probe_lengths = sorted({x for x in enc if x > window})[-2:]
        say("encode memory breakdown")
        breakdown = encode_memory_breakdown(model, probe_lengths) if probe_lengths else {}
    finally:
        gc.unfreeze()
    flops: dict[str, dict[str, float]] = {}
    for p in flops_presets:
        say(f"FLOPs · {p}")
        try:
            flops[p] = count_flops(p)
        except (RuntimeError, ValueError, MemoryError) as e:
            notes.append(f"FLOPs of preset {p} not counted: {e}")
    machine["loadavg_end"] = _loadavg()
    settings = {
        "lengths_s": sorted(float(x) for x in lengths), "batches": list(batches), "reps": reps,
        "max_call_s": max_call_s, "flops_presets": list(flops_presets), "total_wall_s": time.perf_counter() - t_start,
    }  # fmt: skip
    return BenchResults(info, machine, settings, measurements, flops, notes, breakdown)


# ---------------------------------------------------------------------------------------------
# Analysis and report
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


def _fmt(x: float, spec: str = ".3f") -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, spec)


def _count(n: float) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def _len_label(sec: float) -> str:
    return f"{sec / 60:g} min" if sec >= 60 else f"{sec:g} s"


def _table(res: BenchResults, batch: int, value: Callable[[Measurement], str]) -> list[str]:
    lengths = res.settings["lengths_s"]
    ops = [op for op in res.ops() if res.series(op, batch)]
    lines = ["| operation | " + " | ".join(_len_label(s) for s in lengths) + " |"]
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
        f"**Load average (1/5/15 min) at start {ma['loadavg_start']}, at end {ma['loadavg_end']}**: the CPU is "
        "shared with other jobs, so absolute times are pessimistic and noisy.",
        f"Total benchmark time {res.settings['total_wall_s']:.0f} s.",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
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
            f"{_len_label(pts[-1].seconds)} |"
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
        f"Method: {ma['memory_method']} (see `entanglecodec.eval.bench`). Growth is the least-squares slope over "
        f"the lengths longer than the {window:g} s window. Attention only ever spans one window; what can still "
        "grow with length is per-clip state (waveforms, frame features, tokens, spectrograms), measured here "
        f"against the clip's own float32 waveform ({wave_mib:.1f} MiB per minute at 24 kHz). For comparison, "
        f"one unwindowed attention score matrix over {_len_label(longest)} would need "
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
            ax.set_xticks(res.settings["lengths_s"], [_len_label(x) for x in res.settings["lengths_s"]])
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
