"""``entanglecodec data ...`` commands. Heavy imports happen inside the commands."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Corpora: synthesis, import, shards.")


@app.command("synth")
def synth(
    hours: float = typer.Option(..., "--hours", help="Amount of audio to generate, in hours (e.g. 0.05)."),
    out: Path = typer.Option(..., "--out", help="Output directory (must be empty unless --overwrite)."),
    seed: int = typer.Option(0, "--seed", help="Corpus seed: the same seed gives byte-identical output."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (output does not depend on it)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the corpus in a non-empty --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run in --out (same --hours/--seed/--profile); byte-identical result."
    ),
    profile: str = typer.Option(
        "mixed", "--profile",
        help="mixed: every domain and split (default). clean-english: clean English text-to-speech in the test "
        "split only, a test set on which the ASR word error rate of 'eval reconstruct' is meaningful.",
    ),
) -> None:
    """Generate the synthetic captioned multi-domain corpus (24 kHz FLAC + manifest.jsonl + corpus.json)."""
    from .synth import PROFILES, CorpusError, generate_corpus
    from .synth.assets import AssetError
    from .synth.signal import SynthError

    if profile not in PROFILES:  # a usage error (exit 2), like any invalid option value
        typer.echo(f"error: --profile: unknown profile {profile!r} (choose one of {', '.join(PROFILES)})", err=True)
        raise typer.Exit(code=2)

    try:
        summary = generate_corpus(
            out, hours=hours, seed=seed, workers=workers, overwrite=overwrite, progress=progress, resume=resume,
            profile=profile,
        )
    except (CorpusError, SynthError, AssetError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from e  # the CLI's exit-code policy: 1 for a failed command
    counts = ", ".join(f"{d}: {sum(c.values())}" for d, c in summary["counts"].items())
    typer.echo(f"wrote {summary['clips']} clips ({summary['hours_generated']:.3f} h; {counts}) to {out}")


try:
    from .cli_io import register

    register(app)
except ModuleNotFoundError as e:
    if e.name != __package__ + ".cli_io":
        raise
