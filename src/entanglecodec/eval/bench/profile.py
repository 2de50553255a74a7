"""Where decoding spends its time: a per-stage profile of :meth:`EntangleCodec.decode` plus the
I/O around it (``entanglecodec eval decode-profile`` -> ``reports/decode-profile.md``).

Stages are timed with forward hooks on the modules that decoding calls, so the profile measures the
real decode path (windows, padding, the vocoder's own windows) without a copy of it:

* ``flow decoder``: :class:`~entanglecodec.codec.decoder.FlowDecoder` forward passes (both
  classifier-free-guidance branches run as one batch);
* ``vocoder network``: the vocoder's ConvNeXt backbone and its magnitude prior (vocoder forward
  minus the two stages below);
* ``iSTFT head``: the head's projection to magnitude/phase and its inverse STFT;
* ``mel-consistency passes``: the parameter-free filter after the network;
* ``other``: the rest of ``decode`` (token checks, code-vector lookup, noise, mel de-normalisation,
  masks, window copies).

The clock is the calling thread's CPU time when torch runs one thread (on a machine shared with
other jobs it does not count the time spent waiting for a core), else wall time.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .measure import SAMPLE_RATE, BenchError, bench_signal, length_label

if TYPE_CHECKING:
    from torch import nn

    from ...codec.model import EntangleCodec

STAGES = ("flow decoder", "vocoder network", "iSTFT head", "mel-consistency passes", "other")
IO_STAGES = ("read tokens file", "write WAV (24 kHz, 16-bit)", "resample 44.1 kHz input to 24 kHz")


def stage_clock() -> tuple[Callable[[], float], str]:
    """``(clock, name)``: thread CPU time with one torch thread, else wall time."""
    import torch

    if torch.get_num_threads() == 1:
        return time.thread_time, "CPU time of the calling thread (torch uses 1 thread)"
    return time.perf_counter, f"wall time ({torch.get_num_threads()} torch threads)"


@contextmanager
def _timed_modules(modules: dict[str, nn.Module], clock: Callable[[], float]) -> Iterator[dict[str, float]]:
    """Accumulate the time spent inside each module's forward (``{name: seconds}``, filled on exit)."""
    totals = dict.fromkeys(modules, 0.0)
    starts: dict[str, float] = {}
    handles = []
    for name, mod in modules.items():

        def pre(_m: Any, _a: Any, name: str = name) -> None:
            starts[name] = clock()

        def post(_m: Any, _a: Any, _o: Any, name: str = name) -> None:
            totals[name] += clock() - starts.pop(name)

        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        yield totals
    finally:
        for h in handles:
            h.remove()


@dataclass
class StageProfile:
    """One decode configuration: median seconds per stage over ``reps`` calls."""

    precision: str
    batch: int
    seconds: float
    reps: int
    total_s: float
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def audio_s(self) -> float:
        return self.batch * self.seconds

    @property
    def speed(self) -> float:
        """Seconds of audio per second of compute (x real time)."""
        return self.audio_s / self.total_s if self.total_s > 0 else float("inf")


def profile_decode(
    model: EntangleCodec, seconds: float, batch: int, precision: str, reps: int = 3
) -> StageProfile:
    """Profile ``model.decode`` of ``batch`` clips of ``seconds`` (tokens of :func:`bench_signal`,
    encoded outside the timing) at ``precision``; median of ``reps`` calls per stage."""
    import torch

    from ...vocoder.model import Vocoder

    clock, _ = stage_clock()
    tokens = model.encode(torch.from_numpy(bench_signal(seconds, batch)), SAMPLE_RATE)
    voc = model.vocoder
    mods: dict[str, nn.Module] = {"flow": model.decoder, "vocoder": voc}
    if isinstance(voc, Vocoder):
        mods.update({"head": voc.head, "consistency": voc.consistency})
    model.decode(tokens.codes[:, : min(50, tokens.codes.shape[1])], precision=precision)  # warm-up
    runs: list[dict[str, float]] = []
    for _ in range(reps):
        with _timed_modules(mods, clock) as t:
            t0 = clock()
            model.decode(tokens, precision=precision)
            total = clock() - t0
        head, cons = t.get("head", 0.0), t.get("consistency", 0.0)
        runs.append({
            "total": total,
            "flow decoder": t["flow"],
            "vocoder network": t["vocoder"] - head - cons,
            "iSTFT head": head,
            "mel-consistency passes": cons,
            "other": total - t["flow"] - t["vocoder"],
        })  # fmt: skip
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return StageProfile(precision, batch, seconds, reps, med.pop("total"), med)


def profile_io(model: EntangleCodec, seconds: float, reps: int = 3) -> dict[str, float]:
    """Median seconds of the I/O around decoding one clip of ``seconds``: reading its token file,
    writing the decoded audio as WAV, and resampling a 44.1 kHz input to 24 kHz (reconstruct)."""
    import torch

    from ...audio import resample_tensor, save_audio
    from ...codec.tokens import TokenFile, load_tokens, save_tokens

    clock, _ = stage_clock()
    wav = bench_signal(seconds)
    tokens = model.encode(torch.from_numpy(wav), SAMPLE_RATE)
    wav44 = torch.from_numpy(bench_signal(seconds * 44100 / SAMPLE_RATE))
    out: dict[str, list[float]] = {k: [] for k in IO_STAGES}
    with tempfile.TemporaryDirectory() as tmp:
        tok_path, wav_path = Path(tmp) / "x.npz", Path(tmp) / "x.wav"
        save_tokens(tok_path, TokenFile(
            codes=tokens.codes[0].numpy(), num_samples=int(tokens.num_samples[0]), sample_rate=SAMPLE_RATE,
            frame_rate=model.frame_rate, codebook_size=model.codebook_size, fingerprint=model.fingerprint(),
        ))  # fmt: skip
        for _ in range(reps):
            t0 = clock()
            load_tokens(tok_path)
            out[IO_STAGES[0]].append(clock() - t0)
            t0 = clock()
            save_audio(wav_path, wav[0], SAMPLE_RATE)
            out[IO_STAGES[1]].append(clock() - t0)
            t0 = clock()
            resample_tensor(wav44, 44100, SAMPLE_RATE)
            out[IO_STAGES[2]].append(clock() - t0)
    return {k: statistics.median(v) for k, v in out.items()}


@dataclass
class DecodeProfile:
    """Everything :func:`run_decode_profile` measured."""

    machine: dict[str, Any]
    profiles: list[StageProfile]
    io: dict[str, dict[str, float]]
    notes: list[str]


def run_decode_profile(
    model: EntangleCodec,
    lengths: Sequence[float] = (10.0, 600.0),
    batches: Sequence[int] = (1, 8),
    precisions: Sequence[str] = ("float32", "bfloat16"),
    max_audio_s: float = 1200.0,
    reps: int = 3,
    progress: Callable[[str], None] | None = None,
) -> DecodeProfile:
    """Profile decode for every (length, batch, precision); a point holding more than
    ``max_audio_s`` seconds of audio is sized down to a shorter clip (noted). Precisions are
    interleaved per point, so before/after pairs see the same machine load."""
    import torch

    from ...codec.precision import native_cpu_bf16
    from .run import _cpu_name, _loadavg

    if not lengths or min(lengths) <= 0 or not batches or min(batches) < 1 or reps < 1:
        raise BenchError("lengths must be positive, batches >= 1 and reps >= 1")
    say = progress or (lambda _m: None)
    _, clock_name = stage_clock()
    machine: dict[str, Any] = {
        "cpu": _cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "native_bf16": native_cpu_bf16(), "clock": clock_name,
        "loadavg_start": _loadavg(),
    }  # fmt: skip
    notes: list[str] = []
    profiles: list[StageProfile] = []
    with torch.inference_mode():
        for sec in lengths:
            for b in batches:
                s = float(sec)
                if b * s > max_audio_s:
                    s = max_audio_s / b
                    notes.append(
                        f"batch {b} x {length_label(sec)} sized down to batch {b} x {length_label(s)} "
                        f"({b * s:g} s of audio per call, the limit of this run)"
                    )
                n = reps if b * s <= 60 else 1
                for p in precisions:
                    say(f"decode · {p} · batch {b} · {length_label(s)}")
                    profiles.append(profile_decode(model, s, b, p, n))
        io = {}
        for sec in lengths:
            say(f"I/O · {length_label(sec)}")
            io[length_label(sec)] = profile_io(model, sec, reps if sec <= 60 else 1)
    machine["loadavg_end"] = _loadavg()
    return DecodeProfile(machine, profiles, io, notes)


def profile_markdown(res: DecodeProfile, command: str) -> str:
    """The ``decode-profile.md`` report."""
    ma = res.machine
    lines = [
        "# Decode profile per stage",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {ma['cpu']}, {ma['cores']} cores, torch {ma['torch']} with {ma['torch_threads']} thread(s), "
        f"native bfloat16 matrix units: {'yes' if ma['native_bf16'] else 'no'}. **Load average (1/5/15 min) at start "
        f"{ma['loadavg_start']}, at end {ma['loadavg_end']}.** Clock: {ma['clock']}.",
        "",
        "Speed = seconds of audio per second of compute (x real time). Stage columns: share of the decode "
        "time. "
        + (f"Median of {max(p.reps for p in res.profiles)} calls when a call holds <= 60 s of audio, else one call."
           if any(p.reps > 1 for p in res.profiles) else "One call per point (after a warm-up call)."),
        "",
        "| precision | batch | clip | audio per call | decode (s) | speed | " + " | ".join(STAGES) + " |",
        "|---|---:|---|---:|---:|---:|" + "---:|" * len(STAGES),
    ]
    for p in res.profiles:
        shares = " | ".join(f"{100 * p.stages[k] / p.total_s:.0f} %" for k in STAGES)
        lines.append(
            f"| {p.precision} | {p.batch} | {length_label(p.seconds)} | {p.audio_s:.0f} s | "
            f"{p.total_s:.2f} | {p.speed:.0f}x | {shares} |"
        )
    lines += ["", "Seconds per second of audio, per stage:", "",
              "| precision | batch | clip | " + " | ".join(STAGES) + " |", "|---|---:|---|" + "---:|" * len(STAGES)]
    for p in res.profiles:
        cells = " | ".join(f"{p.stages[k] / p.audio_s:.4f}" for k in STAGES)
        lines.append(f"| {p.precision} | {p.batch} | {length_label(p.seconds)} | {cells} |")
    lines += ["", "## I/O around decoding (one clip, seconds)", "", "| clip | " + " | ".join(IO_STAGES) + " |",
              "|---|" + "---:|" * len(IO_STAGES)]
    for label, row in res.io.items():
        lines.append(f"| {label} | " + " | ".join(f"{row[k]:.3f}" for k in IO_STAGES) + " |")
    if res.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res.notes]
    return "\n".join(lines) + "\n"
