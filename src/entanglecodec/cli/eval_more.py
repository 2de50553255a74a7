"""``entanglecodec eval probe``, ``eval bench`` and ``eval bench-rss`` (registered on the eval app).

Heavy libraries (torch, scikit-learn, matplotlib) are imported inside the commands.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, cast

import typer

from .common import fail


def _command_line(name: str) -> str | None:
    """The ``entanglecodec eval NAME ...`` command line that is running, for the reports."""
    if name not in sys.argv:
        return None
    return "entanglecodec eval " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index(name) :])


def _split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def probe(
    manifest: Annotated[
        Path,
        typer.Option(
            "--manifest", "-m", help="JSONL manifest with `attributes` (e.g. the synthetic corpus)."
        ),
    ],
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--checkpoint",
            "-c",
            help="Checkpoint directory, or LABEL=DIR (repeatable: ablations are just more checkpoints).",
        ),
    ] = None,
    random_preset: Annotated[
        list[str] | None,
        typer.Option(
            help="Also probe a randomly initialised preset (paper/small/tiny), labelled 'untrained'."
        ),
    ] = None,
    bundled: Annotated[
        bool, typer.Option(help="Use the bundled default model when no --checkpoint is given (if installed).")
    ] = True,
    features: Annotated[
        str,
        typer.Option(
            help="Comma-separated feature sets: tokens, tokens-hist, prequant, frames, logmel, kmeans."
        ),
    ] = "tokens,prequant,logmel,kmeans",
    targets: Annotated[
        str | None, typer.Option(help="Comma-separated built-in targets (default: all; see --list-targets).")
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", help="Extra target NAME=dotted.path in `attributes` (repeatable)."),
    ] = None,
    list_targets: Annotated[bool, typer.Option(help="Print the built-in targets and exit.")] = False,
    split_train: Annotated[str, typer.Option(help="Split the probes are trained on.")] = "train",
    split_test: Annotated[str, typer.Option(help="Split the probes are scored on.")] = "test",
    max_clips: Annotated[
        int | None, typer.Option(help="At most N clips per split (domain round-robin, seeded).")
    ] = None,
    max_seconds: Annotated[
        float, typer.Option(help="Crop every clip to its first N seconds (0: no crop).")
    ] = 30.0,
    kmeans_k: Annotated[
        int | None,
        typer.Option(help="k-means codebook size (default: the first model's codebook size, else 8192)."),
    ] = None,
    pooling: Annotated[str, typer.Option(help="Pooling of frame features: meanstd or mean.")] = "meanstd",
    c: Annotated[
        float, typer.Option("--C", help="Inverse L2 regularisation of the logistic regression.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of clip selection, k-means, splits and probes.")] = 0,
    retrieval: Annotated[
        bool, typer.Option(help="Audio<->caption retrieval for models with a caption tower.")
    ] = True,
    out: Annotated[Path, typer.Option(help="Report prefix: writes OUT.md, OUT.json, OUT.png.")] = Path(
        "reports/probe"
    ),
    threads: Annotated[int | None, typer.Option(help="torch intra-op threads.")] = None,
) -> None:
    """Linear probes on frozen features (tokens, pre-quantisation, log-mel, k-means) + retrieval R@k."""
    from rich.console import Console

    from ..eval.probe.measure import MODEL_FEATURES, TARGETS, Pooling, ProbeError, resolve_targets
    from ..eval.probe.report import write_probe_report
    from ..eval.probe.run import ModelSpec, run_probes

    err = Console(stderr=True, soft_wrap=True)
    if list_targets:
        for t in TARGETS.values():
            typer.echo(f"{t.name:12s} {t.description}")
        raise typer.Exit(0)
    if pooling not in ("meanstd", "mean"):
        fail(f"--pooling must be meanstd or mean, got {pooling!r}", 2)
    if c <= 0:
        fail(f"--C must be positive, got {c}", 2)
    if threads is not None:
        if threads < 1:
            fail(f"--threads must be >= 1, got {threads}", 2)
        import torch

        torch.set_num_threads(threads)
    try:
        tgts = resolve_targets(_split_list(targets), target or [])
    except ProbeError as e:
        fail(str(e), 2)

    models: list[ModelSpec] = []
    for spec in checkpoint or []:
        label, sep, path = spec.partition("=")
        if not sep:
            label, path = Path(spec).resolve().name, spec
        if not Path(path).is_dir():
            fail(f"--checkpoint {path}: not a directory (expected config.json + model.safetensors)", 2)
        models.append(ModelSpec(label=label, checkpoint=path))
    if not checkpoint and bundled:
        from ..codec.model import CheckpointError, default_checkpoint_dir

        try:
            d = default_checkpoint_dir()
            models.append(ModelSpec(label=d.name, checkpoint=str(d)))
        except CheckpointError as e:
            err.print(f"[yellow]note:[/] bundled model not probed: {e}", highlight=False)
    for preset in random_preset or []:
        models.append(ModelSpec(label=f"{preset} random init (untrained)", preset=preset, seed=seed))

    feats = _split_list(features) or []
    if not models:
        dropped = [f for f in feats if f in MODEL_FEATURES]
        if dropped:
            err.print(f"[yellow]note:[/] no model given: skipping feature sets {dropped}", highlight=False)
        feats = [f for f in feats if f not in MODEL_FEATURES]
    if not feats:
        fail(
            "nothing to probe: give --checkpoint/--random-preset or a baseline feature set (logmel, kmeans)",
            2,
        )

    try:
        res = run_probes(
            manifest, models, feats, tgts, split_train, split_test, max_clips,
            max_seconds if max_seconds > 0 else None, kmeans_k, cast(Pooling, pooling), c, seed, retrieval,
            progress=lambda m: err.print(f"[dim]{m}[/]", highlight=False),
        )  # fmt: skip
    except (OSError, ValueError) as e:
        fail(str(e), 2)
    paths = write_probe_report(res, out, command=_command_line("probe"))
    typer.echo(paths["markdown"].read_text(encoding="utf-8"))
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


def _floats(value: str, what: str) -> list[float]:
    try:
        out = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        fail(f"{what} must be comma-separated numbers, got {value!r}", 2)
    if not out or min(out) <= 0:
        fail(f"{what} must be positive numbers, got {value!r}", 2)
    return out


def bench(
    out: Annotated[Path, typer.Option(help="Directory for bench.md, bench.json and the PNG plots.")] = Path(
        "reports"
    ),
    max_seconds: Annotated[
        float, typer.Option(help="Longest clip in seconds (lengths above it are dropped).")
    ] = 600.0,
    quick: Annotated[
        bool,
        typer.Option(
            help="Seconds-long smoke run: tiny random preset (unless --checkpoint), clips of 0.5-2.5 s, one call each."
        ),
    ] = False,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", "-c", help="Model directory (default: the bundled model, else a random preset)."
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="Random preset used when no model is installed (default small; quick: tiny)."),
    ] = None,
    lengths: Annotated[
        str | None,
        typer.Option(help="Comma-separated clip lengths in seconds (default 1,3,10,30,60,180,600)."),
    ] = None,
    batches: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8",
    reps: Annotated[
        int | None, typer.Option(help="Timed calls per point holding <= 10 s of audio (default 3; quick: 1).")
    ] = None,
    max_call_s: Annotated[
        float, typer.Option(help="Skip a length when the previous one predicts a call longer than this (s).")
    ] = 30.0,
    baselines: Annotated[
        bool, typer.Option(help="Also time Codec2, Opus and the Griffin-Lim mel oracle.")
    ] = True,
    neural_vocoder: Annotated[
        bool,
        typer.Option(
            help="Add a decode row with a random-init neural vocoder when the model uses Griffin-Lim."
        ),
    ] = True,
    flops_presets: Annotated[
        str | None,
        typer.Option(help="Presets whose FLOPs are counted (default paper,small,tiny; quick: tiny)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch intra-op threads (default: torch's choice).")
    ] = None,
) -> None:
    """Speed and scaling: RTF and peak memory vs length for batch 1/8, baselines, tokens/s, FLOPs per preset."""
    from rich.console import Console

    from ..eval.bench.measure import DEFAULT_LENGTHS, QUICK_LENGTHS, BenchError
    from ..eval.bench.report import write_bench_report
    from ..eval.bench.run import run_bench

    err = Console(stderr=True, soft_wrap=True)
    if max_seconds <= 0:
        fail(f"--max-seconds must be positive, got {max_seconds}", 2)
    if threads is not None and threads < 1:
        fail(f"--threads must be >= 1, got {threads}", 2)
    if checkpoint is not None and not checkpoint.is_dir():
        fail(
            f"--checkpoint {checkpoint}: not a directory (expected config.json + model.safetensors)", 2
        )
    if lengths is not None:
        lens = _floats(lengths, "--lengths")
    else:
        lens = list(QUICK_LENGTHS if quick else DEFAULT_LENGTHS)
    kept = [x for x in lens if x <= max_seconds]
    if not kept:
        fail(f"no clip length <= --max-seconds {max_seconds:g} (lengths {lens})", 2)
    batch_list = [int(b) for b in _floats(batches, "--batches")]
    presets = _split_list(flops_presets) or (["tiny"] if quick else ["paper", "small", "tiny"])
    from ..config import EntangleCodecConfig

    for p in presets + ([preset] if preset else []):
        if p not in EntangleCodecConfig.presets():
            fail(f"unknown preset {p!r}: choose from {', '.join(EntangleCodecConfig.presets())}", 2)
    try:
        res = run_bench(
            checkpoint=checkpoint,
            preset=preset or ("tiny" if quick else "small"),
            bundled=not quick,
            lengths=kept,
            batches=batch_list,
            reps=reps if reps is not None else (1 if quick else 3),
            max_call_s=max_call_s,
            baselines=baselines,
            neural_vocoder=neural_vocoder,
            flops_presets=presets,
            threads=threads,
            progress=lambda m: err.print(f"[dim]{m}[/]", highlight=False),
        )
    except (BenchError, OSError, ValueError) as e:
        fail(str(e), 2)
    paths = write_bench_report(res, out, command=_command_line("bench"))
    typer.echo(paths["markdown"].read_text(encoding="utf-8"))
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


def bench_rss(
    out: Path = typer.Option(Path("reports"), help="Directory for bench-rss.md."),
    seconds: str = typer.Option("60,600,3600", help="Durations in seconds, comma-separated."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Codec directory (default: bundled)."),
) -> None:
    """Peak RSS of the encode and decode CLIs on 1 min / 10 min / 1 h generated files -> OUT/bench-rss.md."""
    from ..eval.bench.rss import rss_markdown, run_rss
    from ..fileio import atomic_write_text

    try:
        secs = [float(x) for x in seconds.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"not a list of numbers: {seconds!r}", param_hint="--seconds") from None
    if not secs or min(secs) <= 0:
        raise typer.BadParameter("durations must be positive", param_hint="--seconds")
    points = run_rss(secs, checkpoint, progress=lambda m: typer.echo(m, err=True))
    out.mkdir(parents=True, exist_ok=True)
    cmd = "entanglecodec eval bench-rss" + (f" --seconds {seconds}" if seconds != "60,600,3600" else "")
    atomic_write_text(out / "bench-rss.md", rss_markdown(points, cmd))
    typer.echo(str(out / "bench-rss.md"))


def diagnose(
    checkpoint: Path = typer.Argument(..., help="Codec checkpoint directory (config.json + model.safetensors)."),
    manifest: Path = typer.Option(..., "--manifest", "-m", help="Manifest with speech clips (e.g. the real-speech set)."),
    split: str = typer.Option("valid", help="Manifest split to use."),
    out: Path = typer.Option(..., "-o", "--out", help="Report prefix: writes OUT.md and OUT.json."),
    max_clips: int = typer.Option(24, min=2, help="Speech clips to use (probes fit on half, score on the other)."),
    threads: int = typer.Option(2, min=1, help="Torch threads."),
    decode: list[str] = typer.Option(
        [], "--decode", metavar="STEPS:GUIDANCE",
        help="A decode setting to score, e.g. 1:0 (repeatable; default 1:1, 8:1 and 32:3)."),
    teacher: str | None = typer.Option(
        None, "--teacher",
        help="Also probe how much of this packaged Whisper model's encoder frames (e.g. base) the mel, h~ and Z_q hold."),
) -> None:
    """Where pitch dies: gradient per loss term into the encoder, F0/voicing probes on H / h~ / Z_q,
    and decoded F0 accuracy vs Euler steps and guidance -> OUT.md + OUT.json."""
    import torch

    from ..eval.codec_diagnosis import write_diagnosis
    from ..eval.metrics import MetricUnavailable

    torch.set_num_threads(threads)
    if not (checkpoint / "config.json").is_file():
        fail(f"{checkpoint}: not a codec checkpoint directory (no config.json)", 2)
    if not manifest.is_file():
        fail(f"{manifest}: manifest not found", 2)
    settings: list[tuple[int, float]] = []
    for d in decode:
        steps_s, _, guid_s = d.partition(":")
        try:
            steps_i, guid = int(steps_s), float(guid_s)
        except ValueError:
            fail(f"--decode {d!r}: expected STEPS:GUIDANCE, e.g. 1:0 or 8:1", 2)
        if steps_i < 1 or guid < 0:
            fail(f"--decode {d!r}: steps must be >= 1 and guidance >= 0", 2)
        settings.append((steps_i, guid))
    try:
        path = write_diagnosis(checkpoint, manifest, split, out, max_clips=max_clips,
                               settings=settings or ((1, 1.0), (8, 1.0), (32, 3.0)),
                               command=_command_line("diagnose") or "", teacher=teacher)
    except MetricUnavailable as e:
        fail(f"--teacher {teacher}: {e}", 2)
    except ValueError as e:
        fail(str(e), 1)
    typer.echo(str(path))
