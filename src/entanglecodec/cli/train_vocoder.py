"""``entanglecodec train vocoder`` and ``entanglecodec train vocoder-export``."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import fail, weight_dtype

app = typer.Typer()


@app.command("vocoder")
def vocoder(
    config: Path = typer.Option(..., "--config", "-c", help="vocoder recipe YAML (configs/vocoder-*.yaml)"),
    resume: bool = typer.Option(False, "--resume", help="continue from RUN_DIR/checkpoints/last.ckpt"),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="resume from this .ckpt instead"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="output directory (default runs/<name>)"),
    manifest: str | None = typer.Option(None, "--manifest", help="override data.train_manifest"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="override trainer.max_steps"),
    init_from: str | None = typer.Option(
        None, "--init-from", help="warm start from a trained vocoder (tensors with matching shapes); override init_from"
    ),
    set_: list[str] | None = typer.Option(None, "--set", help="Override a recipe value: key.sub=value (repeatable)."),
) -> None:
    """Train the Vocos-style vocoder on corpus manifests (Lightning; resumable)."""
    import logging

    from ..config import ConfigError
    from ..training.vocoder_run import train_vocoder

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        out = train_vocoder(
            config, resume=checkpoint if checkpoint is not None else resume, run_dir=run_dir,
            manifest=manifest, max_steps=max_steps, init_from=init_from, overrides=set_,
        )
    except (ConfigError, FileNotFoundError, FileExistsError) as e:
        fail(f"{e}")
    typer.echo(str(out))


@app.command("vocoder-export")
def vocoder_export(
    source: Path = typer.Argument(..., help="run directory, .ckpt file or exported vocoder directory"),
    out: Path = typer.Option(Path("checkpoints/vocoder-small"), "-o", "--out", help="destination directory"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace existing weights"),
    dtype: str = typer.Option(
        "float32", "--dtype", help="float32, or float16 / bfloat16: weight matrices in 16 bits (half the size)."
    ),
) -> None:
    """Write a trained vocoder as config.json + model.safetensors (e.g. checkpoints/vocoder-small)."""
    from ..config import ConfigError
    from ..training.vocoder_run import export_vocoder
    from ..vocoder.model import VocoderLoadError

    weights = weight_dtype(dtype)
    try:
        path = export_vocoder(source, out, overwrite=overwrite, dtype=weights)
    except (ConfigError, VocoderLoadError, FileNotFoundError, FileExistsError) as e:
        fail(f"{e}")
    typer.echo(str(path))

