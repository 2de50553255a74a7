"""``entanglecodec eval vocoder`` and ``entanglecodec eval vocoder-speed`` (copy-synthesis scores, speed)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import fail

app = typer.Typer()


@app.command("vocoder-speed")
def speed_cmd(
    vocoder: str = typer.Option("default", "--vocoder", help="vocoder directory or 'default'"),
    out: Path = typer.Option(Path("reports/vocoder-speed.md"), "--out", "-o", help="markdown report"),
    threads: list[int] = typer.Option([1, 2], "--threads", help="thread counts to time (repeatable)"),
    batch: list[int] = typer.Option([1, 16], "--batch", help="batch sizes to time (repeatable)"),
    seconds: float = typer.Option(10.0, "--seconds", min=0.1, help="audio length per item"),
) -> None:
    """Real-time factor of a neural vocoder and Griffin-Lim, batch 1 and 16 -> reports/vocoder-speed.md."""
    import shlex

    from ..eval.vocoder_eval import speed_report

    parts = ["entanglecodec", "eval", "vocoder-speed", "--vocoder", vocoder, "-o", str(out), "--seconds", f"{seconds:g}"]
    parts += [a for n in threads for a in ("--threads", str(n))] + [a for b in batch for a in ("--batch", str(b))]
    cmd = " ".join(shlex.quote(a) for a in parts)
    try:
        path = speed_report(vocoder, out, threads=threads, batch_sizes=batch, seconds=seconds, command=cmd)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(str(path))

@app.command("vocoder")
def vocoder_cmd(
    manifest: str = typer.Option(..., "--manifest", help="corpus manifest.jsonl"),
    vocoder: str = typer.Option("default", "--vocoder", help="vocoder directory or 'default'"),
    out: Path = typer.Option(Path("reports/vocoder.md"), "--out", "-o", help="markdown report"),
    split: str = typer.Option("test", "--split"),
    max_clips: int = typer.Option(40, "--max-clips-per-domain"),
    threads: int | None = typer.Option(None, "--threads"),
    passes: list[int] = typer.Option(
        [], "--passes", help="mel-consistency pass counts to compare, one row each (repeatable; 0 = network alone)"
    ),
) -> None:
    """Copy-synthesis scores of a neural vocoder vs Griffin-Lim -> reports/vocoder.md (+ PNG)."""
    import shlex

    from ..eval.vocoder_eval import run_report

    parts = ["entanglecodec", "eval", "vocoder", "--manifest", manifest, "--vocoder", vocoder, "--out", str(out)]
    parts += ["--split", split, "--max-clips-per-domain", str(max_clips)]
    parts += ["--threads", str(threads)] if threads is not None else []
    parts += [a for n in passes for a in ("--passes", str(n))]
    cmd = " ".join(shlex.quote(a) for a in parts)
    try:
        path = run_report(manifest, vocoder, out, split, max_clips, threads=threads, command=cmd, passes=passes)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(str(path))
