"""The whole benchmark: models and classical systems over lengths and batch sizes."""

from __future__ import annotations

import gc
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .measure import (
    DEFAULT_LENGTHS,
    FLOAT32_BATCHES,
    FLOAT32_MAX_S,
    BenchError,
    Measurement,
    PeakMemory,
    bench_signal,
    count_flops,
    encode_memory_breakdown,
    model_ops,
    onnx_ops,
    run_series,
    system_op,
)

if TYPE_CHECKING:
    from ...codec.model import EntangleCodec


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


def _machine_cpu() -> tuple[float, float] | None:
    """``(busy, total)`` CPU seconds of the whole machine since boot, all cores (``/proc/stat``;
    ``None`` where it is not readable)."""
    try:
        v = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        hz = float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
    return (sum(v) - v[3] - v[4]) / hz, sum(v) / hz  # busy = all but idle and iowait


def _own_cpu() -> float:
    """CPU seconds of this process and its waited-for children (the baselines' subprocesses)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def other_cpu_share(start: tuple[tuple[float, float] | None, float], end: tuple[tuple[float, float] | None, float]) -> float | None:
    """Share of the machine's CPU (0..1, all cores) that *other* processes used between two
    ``(_machine_cpu(), _own_cpu())`` readings: the load the benchmark competed with, which the load
    average cannot tell apart from the benchmark's own threads."""
    (m0, own0), (m1, own1) = start, end
    if m0 is None or m1 is None or m1[1] <= m0[1]:
        return None
    return min(1.0, max(0.0, (m1[0] - m0[0]) - (own1 - own0)) / (m1[1] - m0[1]))


def load_bench_model(
    checkpoint: str | Path | None, preset: str, notes: list[str], bundled: bool = True
) -> tuple[EntangleCodec, dict[str, Any]]:
    """The model to benchmark: ``checkpoint``, else the bundled default (if ``bundled``), else a random ``preset``."""
    from ..load import load_codec

    loaded = load_codec(checkpoint, preset, seed=0, bundled=bundled, text_encoder=False)
    model = loaded.model
    info: dict[str, Any] = {
        "source": loaded.source,
        "weights": "trained" if loaded.trained else "random",
        "preset": model.config.name if loaded.trained else preset,
    }
    if not loaded.trained:
        notes.append(
            f"{loaded.note}: benchmarked a randomly initialised `{preset}` preset; speed and memory do not depend on the weights"
        )
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


def _compiled_runtime(checkpoint: str | Path | None, info: dict[str, Any], notes: list[str], threads: int) -> Any:
    """The benchmarked checkpoint's compiled ONNX runtime (built when missing), or ``None`` with a note."""
    if info["weights"] != "trained":
        return None
    from ...runtime import OnnxCodec, RuntimeFolderError, build_runtime, find_runtime, resolve_pair

    try:
        codec_dir, voc_dir = resolve_pair(checkpoint, None)
        if voc_dir is None:
            notes.append("`onnx · …` rows not run: the model decodes with Griffin-Lim (the runtime needs a neural vocoder)")
            return None
        folder = find_runtime(codec_dir, voc_dir) or build_runtime(codec_dir, voc_dir)
    except (RuntimeFolderError, ValueError, OSError) as e:
        notes.append(f"`onnx · …` rows not run: {e}")
        return None
    notes.append(
        f"`onnx · …`: the compiled runtime (`entanglecodec.runtime`, ONNX Runtime with {threads} intra-op "
        "thread(s) + NumPy DSP, float32), one clip per call; the default backend of the command line"
    )
    return OnnxCodec(folder, threads=threads)


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
    runtime: Any = None,
) -> None:
    """Every timing series of :func:`run_bench` (appends to ``measurements`` and ``notes``);
    ``runtime``: the model's compiled :class:`~entanglecodec.runtime.OnnxCodec`, timed at batch 1."""
    import torch

    with torch.inference_mode():
        for op, factory in model_ops(model).items():
            reference = op == "decode-1 · float32"
            lens = lengths
            if reference:
                lens = [x for x in lengths if x <= FLOAT32_MAX_S] or sorted(lengths)[:1]
            for b in [b for b in batches if b in FLOAT32_BATCHES] if reference else batches:
                measurements += run_series(op, factory, lens, b, reps, max_call_s, progress=say)
        if runtime is not None:
            for op, factory in onnx_ops(runtime).items():
                measurements += run_series(op, factory, lengths, 1, reps, max_call_s, progress=say)
        from ...vocoder.griffin_lim import GriffinLim

        if neural_vocoder and isinstance(model.vocoder, GriffinLim):
            from ...vocoder.config import VocoderConfig
            from ...vocoder.model import Vocoder

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
            from ..systems import Codec2System, CodecSystemError, MelOracleSystem, OpusSystem, System

            systems: list[System] = []
            for make in (
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
    cpu_start = (_machine_cpu(), _own_cpu())
    from ...codec.precision import native_cpu_bf16, resolve_precision

    machine = {
        "decode_precision": str(resolve_precision(None, torch.device("cpu"))).removeprefix("torch."),
        "native_bf16": native_cpu_bf16(),
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
    runtime = _compiled_runtime(checkpoint, info, notes, torch.get_num_threads())
    measurements: list[Measurement] = []
    gc.collect()
    gc.freeze()  # keep the long-lived objects out of the per-measurement gc.collect (0.3 s each otherwise)
    try:
        _run_all(
            model, measurements, notes, batches, lengths, reps, max_call_s, neural_vocoder, baselines, say, runtime
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
    machine["other_cpu_share"] = other_cpu_share(cpu_start, (_machine_cpu(), _own_cpu()))
    settings = {
        "lengths_s": sorted(float(x) for x in lengths), "batches": list(batches), "reps": reps,
        "max_call_s": max_call_s, "flops_presets": list(flops_presets), "total_wall_s": time.perf_counter() - t_start,
    }  # fmt: skip
    return BenchResults(info, machine, settings, measurements, flops, notes, breakdown)
