"""``entanglecodec train ...``: stage 1, discriminator pre-training, stage 2, export (+ vocoder)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import train_vocoder
from .common import fail, weight_dtype

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train EntangleCodec (Lightning recipes).")

ConfigOpt = typer.Option(..., "--config", "-c", help="YAML recipe (see configs/).")
RunDirOpt = typer.Option(None, "--run-dir", help="Run folder (default: runs/<recipe name>); keep it outside the repo.")
ResumeOpt = typer.Option(False, "--resume", help="Continue the run in --run-dir from its last checkpoint.")
SetOpt = typer.Option(None, "--set", help="Override a recipe value: key.sub=value (repeatable).")
BarOpt = typer.Option(True, "--progress/--no-progress", help="Show the progress bar.")


def _train(config: Path, run_dir: Path | None, resume: bool, overrides: list[str] | None, stage: str, bar: bool) -> None:
    from ..config import ConfigError
    from ..training.recipe import load_recipe
    from ..training.run import run_training

    try:
        recipe = load_recipe(config, overrides)
        if recipe.stage != stage:
            raise ConfigError(f"{config}: recipe is for stage {recipe.stage!r}, not {stage!r}")
        rd = run_dir or Path("runs") / config.stem
        run_training(recipe, rd, resume=resume, enable_progress_bar=bar)
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError) as e:
        fail(str(e))


@app.command()
def stage1(config: Path = ConfigOpt, run_dir: Path | None = RunDirOpt, resume: bool = ResumeOpt,
           set_: list[str] | None = SetOpt, progress: bool = BarOpt) -> None:
    """Stage 1: encoder + caption encoder + quantizer + flow decoder (L_flow + L_contrast + L_vq)."""
    _train(config, run_dir, resume, set_, "stage1", progress)


@app.command()
def disc(config: Path = ConfigOpt, run_dir: Path | None = RunDirOpt, resume: bool = ResumeOpt,
         set_: list[str] | None = SetOpt, progress: bool = BarOpt) -> None:
    """Pre-train the mel discriminator against a frozen stage-1 model's decoded mels."""
    _train(config, run_dir, resume, set_, "disc", progress)


@app.command()
def stage2(config: Path = ConfigOpt, run_dir: Path | None = RunDirOpt, resume: bool = ResumeOpt,
           set_: list[str] | None = SetOpt, progress: bool = BarOpt) -> None:
    """Stage 2: frozen encoder/quantizer; decoder refined with L_flow + L_vq + L_adv."""
    _train(config, run_dir, resume, set_, "stage2", progress)


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run folder (uses checkpoints/last.ckpt) or a .ckpt file."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory (config.json + model.safetensors)."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output directory."),
    dtype: str = typer.Option(
        "float32", "--dtype", help="float32, or float16 / bfloat16: weight matrices in 16 bits (half the size)."
    ),
    decode_from: Path | None = typer.Option(
        None, "--decode-from", help="Copy the decode-time defaults (guidance, pulse phase) of this saved codec."
    ),
    decode: list[str] | None = typer.Option(
        None, "--decode", help="Set a decode-time default: NAME=VALUE, e.g. guidance=0 (repeatable; after --decode-from)."
    ),
) -> None:
    """Export trained weights (no optimiser state) for EntangleCodec.from_pretrained."""
    from ..codec.model import decode_defaults
    from ..training.recipe import parse_assignment
    from ..training.run import export_run

    weights = weight_dtype(dtype)
    try:
        settings = decode_defaults(decode_from) if decode_from is not None else {}
        settings |= dict(parse_assignment(a, "--decode") for a in decode or [])
        d = export_run(run, out, overwrite, weights, settings)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    typer.echo(f"exported to {d}" + (f" (decode defaults: {decode_defaults(d)})" if settings else ""))


@app.command()
def slim(
    run: Path = typer.Argument(..., help="Run folder (uses checkpoints/last.ckpt) or a .ckpt file."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .ckpt file (replaced atomically)."),
    dtype: str = typer.Option("float16", "--dtype", help="float16, bfloat16 or float32 for the stored tensors."),
) -> None:
    """Write a warm-start checkpoint (recipe + weights incl. auxiliary heads, no optimiser) for init_from."""
    from ..training.run import slim_checkpoint

    weights = weight_dtype(dtype)
    if out.resolve() == run.resolve():
        fail(f"{out}: would overwrite the checkpoint it reads")
    try:
        p = slim_checkpoint(run, out, weights)
    except (FileNotFoundError, ValueError) as e:  # OutputError is a ValueError
        fail(str(e))
    typer.echo(f"wrote {p} ({p.stat().st_size / 2**20:.1f} MiB)")


@app.command()
def throughput(
    config: Path = ConfigOpt,
    steps: int = typer.Option(30, help="Optimiser steps to time (the first 5 are discarded as warm-up)."),
    set_: list[str] | None = SetOpt,
    out: Path = typer.Option(Path("reports/training-throughput.md"), "-o", "--out", help="Markdown report to write."),
) -> None:
    """Time a recipe for a few steps on this machine and write samples/s and s/step to a report."""
    from ..config import ConfigError
    from ..training.throughput import measure_throughput

    try:
        measure_throughput(config, steps, set_ or [], out)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    typer.echo(f"wrote {out}")


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run folder (reads logs/**/metrics.csv)."),
    out: Path = typer.Option(..., "-o", "--out", help="Markdown report (a PNG of the curves is written beside it)."),
    title: str = typer.Option("", help="Report title."),
) -> None:
    """Summarise a run: loss, codebook usage/dead codes and retrieval curves plus a milestone table."""
    from ..training.report import write_training_report

    try:
        write_training_report(run, out, title)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    typer.echo(f"wrote {out}")


app.add_typer(train_vocoder.app)
