"""``entanglecodec data ...`` commands. Heavy imports happen inside the commands."""

from __future__ import annotations

from pathlib import Path

import typer

from . import data_io
from .common import fail

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
    exclude_speakers: Path | None = typer.Option(
        None, "--exclude-speakers",
        help="Keep more speakers out of every split: a text file with one speaker id per line "
        "('ktuberling:de', 'flite:slt', or 'package:NAME' for a whole Debian package), or a .jsonl manifest "
        "whose speakers are excluded. The held-out dev/test speakers of 'data real-speech' are always excluded.",
    ),
) -> None:
    """Generate the synthetic captioned multi-domain corpus (24 kHz FLAC + manifest.jsonl + corpus.json)."""
    from ..data.heldout import HeldoutError, read_exclusions
    from ..data.synth import PROFILES, CorpusError, generate_corpus
    from ..data.synth.assets import AssetError
    from ..data.synth.signal import SynthError
    from ..data.synth.speech import recorded_voices, tts_voices

    if profile not in PROFILES:  # a usage error (exit 2), like any invalid option value
        fail(f"--profile: unknown profile {profile!r} (choose one of {', '.join(PROFILES)})", 2)

    exclude = None
    if exclude_speakers is not None:  # a bad --exclude-speakers list is a usage error (exit 2)
        try:
            known = [v.id for v in recorded_voices()] + [v.id for v in tts_voices()]
            exclude = read_exclusions(exclude_speakers, known_speakers=known)
        except (HeldoutError, AssetError, SynthError) as e:
            fail(f"--exclude-speakers: {e}", 2)
    try:
        summary = generate_corpus(
            out, hours=hours, seed=seed, workers=workers, overwrite=overwrite, progress=progress, resume=resume,
            profile=profile, exclude=exclude,
        )
    except (CorpusError, SynthError, AssetError, HeldoutError) as e:
        fail(f"{e}")
    counts = ", ".join(f"{d}: {sum(c.values())}" for d, c in summary["counts"].items())
    typer.echo(f"wrote {summary['clips']} clips ({summary['hours_generated']:.3f} h; {counts}) to {out}")


@app.command("real-speech")
def real_speech(
    out: Path = typer.Option(..., "--out", help="Output directory (must be empty unless --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the set in a non-empty --out."),
) -> None:
    """Build the real-speech evaluation set: held-out recorded speakers (dev = split 'valid', test) plus real
    music and sound for the test split, from Debian packages (24 kHz FLAC + manifest.jsonl + real-speech.json)."""
    from ..data.heldout import HeldoutError
    from ..data.realspeech import RealSpeechError, build_real_speech
    from ..data.synth.assets import AssetError
    from ..data.synth.signal import SynthError

    try:
        summary = build_real_speech(out, overwrite=overwrite)
    except (RealSpeechError, SynthError, AssetError, HeldoutError) as e:
        fail(f"{e}", 2)
    sets = "; ".join(
        f"{w} (split {s['split']}): {s['clips']} clips, {s['hours'] * 60:.1f} min" for w, s in summary["sets"].items()
    )
    typer.echo(f"wrote {summary['clips']} clips ({sets}) to {out}")


app.add_typer(data_io.app)
