"""``entanglecodec vocode``: copy-synthesis (audio -> log-mel -> vocoder -> audio).

Registered on the main command by :func:`register`; heavy imports happen inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from .config import MelConfig

AUDIO_SUFFIX = ".wav"


def vocode_command(
    inputs: list[Path],
    out: Path,
    checkpoint: str = "default",
    overwrite: bool = False,
    consistency_passes: int | None = None,
    skip_errors: bool = False,
) -> list[Path]:
    """Re-synthesise audio files through the codec's log-mel and a vocoder.

    Args:
        inputs: audio files or directories (searched recursively for audio files).
        out: output ``.wav`` for a single input, else an output directory (created).
        checkpoint: ``"default"`` (shipped weights, Griffin-Lim fallback), ``"griffin-lim"`` or
            a vocoder directory (``config.json`` + ``model.safetensors``).
        overwrite: replace existing output files.
        consistency_passes: mel-consistency passes after a neural vocoder (``None``: the
            checkpoint's own setting; 0: the network alone).
        skip_errors: report unreadable inputs and vocode the others (the caller decides the
            exit status from ``len(inputs) - len(written)``).

    Returns:
        The written paths. Each output has exactly the input's length (at 24 kHz).

    Raises:
        FileNotFoundError / FileExistsError / ValueError: missing inputs, outputs that exist,
        unreadable audio or an unusable vocoder checkpoint (messages name the file).
    """
    import torch

    from .audio import MelFrontend, audio_info, load_audio, num_frames, save_audio
    from .cli import AUDIO_EXTS, check_files, error_message, expand_inputs, output_paths, warn
    from .vocoder import load_vocoder

    files = expand_inputs(list(inputs), AUDIO_EXTS)
    targets = output_paths(files, out, AUDIO_SUFFIX, overwrite)
    good, _ = check_files(files, audio_info, skip_errors)
    vocoder = load_vocoder(checkpoint, consistency_passes=consistency_passes)
    mel_cfg = vocoder_mel_config(vocoder)
    frontend = MelFrontend(mel_cfg)
    written = []
    for i in good:
        src, dst = files[i], targets[i]
        try:
            wav, sr = load_audio(src, mel_cfg.sample_rate)
        except ValueError as e:
            if not skip_errors:
                raise
            warn(f"skipped: {error_message(e)}")
            continue
        x = torch.from_numpy(wav)[None]
        with torch.inference_mode():
            log_mel = frontend.log_mel(x)
            frames = torch.tensor([num_frames(x.shape[1], mel_cfg.hop_length)])
            y = vocoder(log_mel, frames)[0, : x.shape[1]]
        save_audio(dst, y, sr)
        written.append(dst)
    return written


def vocoder_mel_config(vocoder: object) -> MelConfig:
    """The :class:`MelConfig` a vocoder expects (neural: its own; Griffin-Lim: its ``cfg``)."""
    from .config import MelConfig

    config = getattr(vocoder, "config", None)
    if config is not None and hasattr(config, "mel_config"):
        mel: MelConfig = config.mel_config()
        return mel
    cfg = getattr(vocoder, "cfg", None)
    return cfg if isinstance(cfg, MelConfig) else MelConfig()


def register(app: typer.Typer) -> None:
    """Add the ``vocode`` command to ``app``."""

    from .cli import user_errors

    @app.command("vocode")
    @user_errors
    def vocode(
        inputs: list[Path] = typer.Argument(..., help="audio files or directories"),
        out: Path = typer.Option(..., "-o", "--out", help="output .wav (one input) or directory"),
        checkpoint: str = typer.Option(
            "default", "--vocoder", "--checkpoint", help="'default', 'griffin-lim' or a vocoder directory"
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace existing outputs"),
        consistency_passes: int | None = typer.Option(
            None,
            "--consistency-passes",
            min=0,
            help="mel-consistency passes after a neural vocoder (default: the checkpoint's; 0: network alone)",
        ),
        skip_errors: bool = typer.Option(
            False, "--skip-errors", help="Report bad input files, vocode the others, exit 1 with the count."
        ),
    ) -> None:
        """Copy-synthesis: audio -> codec log-mel -> vocoder -> audio (same length as the input)."""
        from .cli import AUDIO_EXTS, expand_inputs, fail

        paths = vocode_command(inputs, out, checkpoint, overwrite, consistency_passes, skip_errors)
        for p in paths:
            typer.echo(str(p))
        n_bad = len(expand_inputs(list(inputs), AUDIO_EXTS)) - len(paths)
        if n_bad:
            fail(f"{n_bad} input file(s) skipped because of errors (listed above)")
