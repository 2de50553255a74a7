"""``entanglecodec eval decode-profile`` (registered on the eval app): decode time per stage."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import fail, user_errors


@user_errors
def decode_profile(
    out: Path = typer.Option(Path("reports/decode-profile-stages.md"), help="Markdown report path (a .json beside it)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Model directory (default: the bundled model)."),
    lengths: str = typer.Option("10,600", help="Comma-separated clip lengths in seconds."),
    batches: str = typer.Option("1,8", help="Comma-separated batch sizes."),
    precision: list[str] = typer.Option(["float32", "bfloat16"], help="Flow-decoder precisions to compare (repeat)."),
    max_audio_s: float = typer.Option(1200.0, help="Largest audio per call (s); bigger points use shorter clips."),
    reps: int = typer.Option(3, min=1, help="Calls per point holding <= 60 s of audio (median)."),
    threads: int = typer.Option(1, min=1, help="torch intra-op threads (1: stages timed in thread CPU time)."),
) -> None:
    """Profile decode per stage (flow decoder, vocoder network, iSTFT, mel-consistency passes, I/O)."""
    import json

    import torch
    from rich.console import Console

    from ..codec.precision import PRECISIONS
    from ..eval.bench.profile import profile_markdown, run_decode_profile
    from ..eval.load import load_codec
    from ..eval.report import json_safe
    from ..fileio import OutputError, atomic_write_text, check_writable
    from .eval_more import _command_line, _floats

    bad = [p for p in precision if p not in PRECISIONS]
    if bad:
        fail(f"--precision must be one of {', '.join(PRECISIONS)}, got {bad[0]!r}", 2)
    if checkpoint is not None and not checkpoint.is_dir():
        fail(f"--checkpoint {checkpoint}: not a directory (expected config.json + model.safetensors)", 2)
    try:  # before minutes of profiling: a missing folder is made, an unwritable path is one line
        check_writable(out)
    except OutputError as e:
        fail(str(e))
    torch.set_num_threads(threads)
    model = load_codec(checkpoint, "small", seed=0, bundled=True, text_encoder=False).model
    err = Console(stderr=True, soft_wrap=True)
    res = run_decode_profile(
        model, _floats(lengths, "--lengths"), [int(b) for b in _floats(batches, "--batches")], precision,
        max_audio_s, reps, progress=lambda m: err.print(f"[dim]{m}[/]", highlight=False),
    )  # fmt: skip
    md = profile_markdown(res, _command_line("decode-profile") or "entanglecodec eval decode-profile")
    atomic_write_text(out, md)
    doc = {"machine": res.machine, "notes": res.notes, "io": res.io,
           "profiles": [{**vars(p), "speed": p.speed} for p in res.profiles]}  # fmt: skip
    atomic_write_text(out.with_suffix(".json"), json.dumps(json_safe(doc), indent=1))
    typer.echo(md)
