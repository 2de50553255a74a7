"""``entanglecodec data ...`` commands. Heavy imports happen inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from . import data_io
from .common import fail

if TYPE_CHECKING:
    from ..config import EntangleCodecConfig

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
        help="mixed: every domain and split (default). real-speech: only recorded human speech, in every split "
        "(a supplement for training). clean-english: clean English text-to-speech in the test "
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


@app.command("semantic")
def semantic(
    features_dir: Path = typer.Argument(..., help="A finished feature directory ('entanglecodec data features')."),
    teacher: str = typer.Option("base", "--teacher", help="Packaged Whisper model whose encoder gives the targets."),
    threads: int = typer.Option(1, "--threads", min=1, help="CPU threads of the teacher."),
    resume: bool = typer.Option(False, "--resume", help="Complete an interrupted run (finished shards are kept)."),
    reuse: list[Path] = typer.Option([], "--reuse", help="Feature directory whose frames of the same teacher are copied for the clips it holds (repeatable)."),
    part: str = typer.Option("", "--part", metavar="I/N", help="Write only every N-th shard from the I-th (0-based), keeping finished ones: run I = 0 .. N-1 side by side; the last to finish writes semantic.json."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Add per-frame semantic teacher targets (Whisper encoder, 50 Hz) to a feature directory, for loss.semantic."""
    from ..audio import AudioError
    from ..data.features import FeatureError
    from ..data.manifest import ManifestError
    from ..data.semantic import SEMANTIC_NAME, whisper_encoder, write_semantic
    from ..eval.metrics import MetricUnavailable
    from .common import ClipProgress

    which: tuple[int, int] | None = None
    if part:
        i, sep, n = part.partition("/")
        if not (sep and i.isdigit() and n.isdigit() and int(i) < int(n)):
            fail(f"--part must be I/N with 0 <= I < N (e.g. 0/2), got {part!r}", 2)
        which = (int(i), int(n))
    try:
        encode, name = whisper_encoder(teacher, threads)
    except MetricUnavailable as e:
        fail(f"--teacher {teacher}: {e}", 2)
    bar = ClipProgress("semantic", progress)
    try:
        doc = write_semantic(features_dir, encode, name, resume=resume, on_clip=bar.step, on_start=bar.start,
                             reuse=reuse, part=which)
    except (FeatureError, ManifestError, AudioError) as e:
        fail(str(e))
    finally:
        bar.stop()
    if doc is None:
        typer.echo(f"part {part} of {features_dir} written; other parts are unfinished (the last to finish writes "
                   f"{SEMANTIC_NAME}; or run once more with --resume)")
        return
    typer.echo(f"wrote {doc['dim']}-d {doc['teacher']} frames to {features_dir} ({doc['n_frames']} {doc['stats_split']} frames)")


@app.command("compact")
def compact(
    features_dir: Path = typer.Argument(..., help="A feature directory with semantic teacher frames."),
    out: Path = typer.Option(..., "-o", "--out", help="New directory for the smaller copy (must be empty)."),
    dims: int = typer.Option(64, "--dims", min=1, help="Principal components of the teacher frames to keep (int8)."),
    train_shards: int = typer.Option(0, "--train-shards", min=0, help="Train shards to keep, evenly spaced (0: all)."),
    valid_shards: int = typer.Option(0, "--valid-shards", min=0, help="Valid shards to keep (0: all)."),
) -> None:
    """A smaller copy of a feature directory for a machine behind a transfer limit: a subset of its shards,
    the teacher frames reduced to their leading principal components (training reads either kind)."""
    from ..data.features import FeatureError
    from ..data.semantic import compact_features

    caps = {k: v for k, v in (("train", train_shards), ("valid", valid_shards)) if v > 0}
    try:
        doc = compact_features(features_dir, out, dims, caps or None)
    except FeatureError as e:
        fail(str(e))
    r = doc["reduced"]
    typer.echo(f"wrote {out}: teacher frames as {r['dims']} int8 coefficients ({r['explained']:.1%} of their variance)")


@app.command("features")
def features(
    manifests: list[Path] = typer.Argument(..., help="Corpus manifest(s) (.jsonl)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output feature directory (keep it outside the repo)."),
    codec_config: str = typer.Option(
        ..., "--codec-config",
        help="What the features are for: a training recipe (.yaml), a checkpoint directory or a preset name.",
    ),
    split: list[str] = typer.Option(["train", "valid"], "--split", help="Manifest split to write (repeatable)."),
    mel_stats: Path | None = typer.Option(
        None, "--mel-stats",
        help="A run's mel_stats.json, stored as the normalisation 'data.mel_stats: compute' uses "
        "(default: statistics of the written train frames).",
    ),
    max_hours: float | None = typer.Option(None, "--max-hours", help="Cap on the hours written (splits keep their share)."),
    text_field: str | None = typer.Option(
        None, "--text-field", help="Caption field: caption, asr_caption or text (default: the recipe's, else caption)."
    ),
    shard_mib: float = typer.Option(8.0, "--shard-mib", min=0.5, help="Approximate size of one shard's mel array."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out (same arguments)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the features in a non-empty --out."),
    reuse: list[Path] = typer.Option(
        [], "--reuse",
        help="Finished feature directory (same front end) whose clips are copied instead of computed again (repeatable).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Pre-compute training features (uint8 log-mel, F0 targets, caption embeddings) for GPU runs without audio tools."""
    from ..audio import AudioError
    from ..config import ConfigError
    from ..data.features import FeatureError, write_features
    from ..data.manifest import ManifestError
    from .common import ClipProgress

    try:
        codec, recipe_field = _codec_config(codec_config)
    except (ConfigError, OSError, ValueError) as e:
        fail(f"--codec-config: {e}", 2)
    bar = ClipProgress("features", progress)
    try:
        index = write_features(
            manifests, out, codec, splits=split, mel_stats=mel_stats, max_hours=max_hours,
            text_field=text_field or recipe_field or "caption", shard_mib=shard_mib, resume=resume,
            overwrite=overwrite, on_clip=bar.step, on_start=bar.start, reuse=reuse,
        )
    except (FeatureError, ManifestError, AudioError, ConfigError) as e:
        fail(str(e))
    finally:
        bar.stop()
    parts = "; ".join(f"{s}: {v['clips']} clips, {v['hours']:.3f} h" for s, v in index["splits"].items())
    typer.echo(
        f"wrote {parts} to {out} ({index['bytes'] / 2**20:.1f} MiB, {index['bytes_per_hour'] / 2**20:.1f} MiB per hour of audio)"
    )


def _codec_config(spec: str) -> tuple[EntangleCodecConfig, str | None]:
    """``(EntangleCodecConfig, text_field or None)`` of a recipe file, a checkpoint directory or a preset."""
    from ..checkpoint import CONFIG_NAME
    from ..config import EntangleCodecConfig

    p = Path(spec)
    if p.is_dir():
        return EntangleCodecConfig.from_json(p / CONFIG_NAME), None
    if p.suffix in (".yaml", ".yml") or p.is_file():
        from ..training.recipe import load_recipe

        recipe = load_recipe(p)
        return recipe.model.build(), recipe.data.text_field
    return EntangleCodecConfig.preset(spec), None


app.add_typer(data_io.app)
