"""``entanglecodec eval bench-startup`` (registered on the eval app): start-up times by hyperfine."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import fail, user_errors


@user_errors
def bench_startup(
    out: Path = typer.Option(Path("reports"), help="Directory for bench-startup.md and bench-startup.json."),
    runs: int = typer.Option(10, min=2, help="Timed runs per command."),
    warmup: int = typer.Option(2, min=0, help="Untimed runs first (file cache, bytecode)."),
    checkpoint: str | None = typer.Option(None, "--checkpoint", "-c", help="Model of the reconstruct row."),
) -> None:
    """Time `import entanglecodec`, `entanglecodec --help` and `reconstruct` of a 5 s clip -> OUT/bench-startup.md."""
    from ..eval.bench.startup import StartupBenchError, run_startup_bench, write_startup_report

    try:
        bench = run_startup_bench(runs, warmup, checkpoint)
    except StartupBenchError as e:
        fail(str(e))
    cmd = "entanglecodec eval bench-startup" + (f" --runs {runs}" if runs != 10 else "")
    md, _ = write_startup_report(bench, out, cmd)
    typer.echo(md.read_text(encoding="utf-8"))
