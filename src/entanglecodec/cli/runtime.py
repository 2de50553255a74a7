"""``entanglecodec runtime ...``: compile a checkpoint into the torch-free ONNX runtime, and say where it is."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import CheckpointOpt, VocoderOpt, console, fail, user_errors

app = typer.Typer(help="The compiled ONNX runtime: encode, decode and reconstruct without loading torch.")


def _pair(checkpoint: str | None, vocoder: str | None) -> tuple[Path, Path]:
    from ..runtime import resolve_pair

    codec_dir, voc_dir = resolve_pair(checkpoint, vocoder)
    if voc_dir is None:
        fail(f"{codec_dir}: the ONNX runtime needs a neural vocoder checkpoint (this one decodes with Griffin-Lim or none is installed)")
    return codec_dir, voc_dir


@app.command("build")
@user_errors
def build(
    checkpoint: str | None = CheckpointOpt,
    vocoder: str | None = VocoderOpt,
    force: bool = typer.Option(False, "--force", help="Compile again even when a folder exists."),
) -> None:
    """Compile the checkpoint and its vocoder into the cache (once; `encode`/`decode`/`reconstruct` then
    start without torch). Every graph is checked against the torch model before it is kept."""
    from ..runtime import build_runtime, find_runtime

    codec_dir, voc_dir = _pair(checkpoint, vocoder)
    folder = None if force else find_runtime(codec_dir, voc_dir)
    if folder is not None:
        console.print(f"already compiled: {folder}", highlight=False)
        return
    folder = build_runtime(codec_dir, voc_dir)
    console.print(f"compiled {codec_dir} + {voc_dir} into {folder}", highlight=False)


@app.command("info")
@user_errors
def info(checkpoint: str | None = CheckpointOpt, vocoder: str | None = VocoderOpt) -> None:
    """Where the checkpoint's compiled runtime is (or would be), and whether it exists."""
    from ..runtime import cache_root, find_runtime, runtime_key

    codec_dir, voc_dir = _pair(checkpoint, vocoder)
    folder = find_runtime(codec_dir, voc_dir)
    key = runtime_key(codec_dir, voc_dir)
    state = f"compiled: {folder}" if folder else "not compiled (run `entanglecodec runtime build`)"
    typer.echo(f"codec   {codec_dir}\nvocoder {voc_dir}\ncache   {cache_root()}\nkey     {key}\n{state}")
