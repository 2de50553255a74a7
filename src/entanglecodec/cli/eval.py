"""``entanglecodec eval``: evaluate codecs (ours, classical baselines, any external command).

Heavy libraries (torch, faster-whisper, speechmos, pocketsphinx, resemblyzer, matplotlib) are
imported inside the commands.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, cast

import typer

from . import eval_more, eval_profile, eval_startup, eval_vocoder
from .common import fail

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Evaluate codecs: reconstruction metrics and reports."
)


@app.callback()
def _group() -> None:
    """Evaluate codecs: reconstruction metrics and reports (one sub-command per evaluation)."""


@app.command()
def reconstruct(
    manifest: Annotated[
        Path, typer.Option("--manifest", "-m", help="JSONL manifest (id, audio, domain, split, text).")
    ],
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option("--checkpoint", "-c", help="EntangleCodec checkpoint directory (repeatable)."),
    ] = None,
    system: Annotated[
        list[str] | None,
        typer.Option(
            "--system",
            "-s",
            help="External codec NAME=CMD or NAME@BITS_PER_S=CMD; CMD contains {in} and {out} (WAV files). Repeatable.",
        ),
    ] = None,
    baselines: Annotated[
        bool,
        typer.Option(
            help="Also run Codec2 700C/1200/3200, Opus 6 kbps and the mel oracles (Griffin-Lim, neural vocoder)."
        ),
    ] = True,
    bundled: Annotated[
        bool,
        typer.Option(help="Include the bundled default model when no --checkpoint is given (if installed)."),
    ] = True,
    steps: Annotated[
        int, typer.Option(min=1, help="Euler steps of the codec decoder (the paper: 1).")
    ] = 1,
    guidance: Annotated[
        list[float] | None,
        typer.Option(
            "--guidance",
            help="Classifier-free guidance γ of the codec decoder (Eq. 12; default: the checkpoint's "
            "decoder.guidance). Repeatable: one row per checkpoint and value.",
        ),
    ] = None,
    oracle_f0: Annotated[
        bool,
        typer.Option(
            "--oracle-f0",
            help="Also score each pitch-conditioned checkpoint with the input's tracked F0 instead of "
            "the F0 it predicts from the tokens (the diagnosis' oracle control; side information, not a codec).",
        ),
    ] = False,
    split: Annotated[
        str, typer.Option(help="Manifest split to evaluate (train, valid, test or all).")
    ] = "test",
    max_clips: Annotated[
        int | None, typer.Option(help="Evaluate at most N clips (spread over domains).")
    ] = None,
    domains: Annotated[
        str | None, typer.Option(help="Comma-separated domains to keep, e.g. speech,music.")
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Report path prefix: writes OUT.md, .csv, .json, -bitrate.png, -mels.png.")
    ] = Path("reports/reconstruction"),
    max_lag: Annotated[
        float, typer.Option(help="Largest codec delay searched when aligning outputs, seconds.")
    ] = 0.5,
    f0_method: Annotated[str, typer.Option(help="F0 tracker of the V/UV F1: dio, harvest or pyin.")] = "dio",
    pitch_method: Annotated[
        str, typer.Option(help="F0 tracker of the F0 RMSE / correlation: pyin, dio or harvest.")
    ] = "pyin",
    asr: Annotated[
        str,
        typer.Option(
            help="Recogniser of the WER/CER/insertion columns: whisper (tiny.en for English, base for other "
            "languages), whisper-tiny.en, whisper-base, pocketsphinx, or none."
        ),
    ] = "whisper",
    dnsmos: Annotated[
        bool, typer.Option(help="DNSMOS P.835/P.808 (speechmos) on speech clips, originals and every system.")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per clip for external commands.")] = 600.0,
    threads: Annotated[
        int | None, typer.Option(help="torch intra-op threads (default: torch's choice).")
    ] = None,
) -> None:
    """Reconstruct every clip with every system; write per-domain tables, a CSV, a JSON and plots."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ..eval.metrics import F0Method
    from ..eval.reconstruct import evaluate_reconstruction, load_clips, summary_table, write_report
    from ..eval.systems import (
        CodecSystemError,
        EntangleCodecSystem,
        System,
        default_baselines,
        parse_system_spec,
    )

    console = Console()
    if not console.is_terminal:  # piped into a file: do not squeeze the table into 80 columns
        console = Console(width=200)
    err = Console(stderr=True)

    from ..eval.metrics import ASR_ENGINES, F0_METHODS

    for flag, value in (("--f0-method", f0_method), ("--pitch-method", pitch_method)):
        if value not in F0_METHODS:
            fail(f"{flag} must be one of {', '.join(F0_METHODS)}, got {value!r}", 2)

    if asr not in (*ASR_ENGINES, "none"):
        fail(f"--asr must be one of {', '.join(ASR_ENGINES)} or none, got {asr!r}", 2)
    if threads is not None:
        if threads < 1:
            fail(f"--threads must be >= 1, got {threads}", 2)
        import torch

        torch.set_num_threads(threads)
    domain_list = [d.strip() for d in domains.split(",") if d.strip()] if domains else None
    split_sel = None if split == "all" else split
    try:
        clips = load_clips(manifest, split_sel, max_clips, domain_list)
    except (OSError, ValueError) as e:
        fail(str(e), 2)

    systems: list[System] = []
    notes: list[str] = []
    try:
        ckpts = list(checkpoint or [])
        if not ckpts and bundled:
            from ..codec.model import CheckpointError, default_checkpoint_dir

            try:
                ckpts = [default_checkpoint_dir()]
            except CheckpointError as e:
                notes.append(f"bundled model not evaluated: {e}")
        for c in ckpts:
            resolved = Path(c).resolve()
            same_name = sum(Path(o).resolve().name == resolved.name for o in ckpts) > 1
            # runs/a/final and runs/b/final: label them a/final and b/final
            name = f"{resolved.parent.name}/{resolved.name}" if same_name else None
            from ..codec.sampling import check_sampling

            values: list[float | None] = list(guidance) if guidance else [None]
            for g in values:
                try:
                    check_sampling(steps, 1.0 if g is None else g)
                except ValueError as e:
                    fail(str(e), 2)
                label = name or resolved.name
                if g is not None or steps != 1:
                    label = f"{label} (steps {steps}, γ {'default' if g is None else f'{g:g}'})"
                plain = EntangleCodecSystem(c, name=label, steps=steps, guidance=g)
                systems.append(plain)
                if oracle_f0 and plain.model.pitch is not None:  # the same model, given the input's F0
                    systems.append(EntangleCodecSystem(
                        plain.model, name=f"{label} + oracle F0", steps=steps, guidance=g, oracle_f0=True
                    ))
        for spec in system or []:
            systems.append(parse_system_spec(spec, timeout=timeout))
        if baselines:
            systems.extend(default_baselines(notes=notes))
    except (OSError, ValueError, CodecSystemError) as e:
        fail(str(e), 2)
    if not systems:
        fail("nothing to evaluate: give --checkpoint or --system, or keep --baselines", 2)
    for n in notes:
        err.print(f"[yellow]note:[/] {n}", highlight=False)

    total = len(clips) * len(systems)
    with Progress(
        TextColumn("[bold]reconstruct[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=False,
    ) as bar:
        task = bar.add_task("", total=total)
        try:
            res = evaluate_reconstruction(
                manifest,
                systems,
                split=split_sel,
                max_clips=max_clips,
                domains=domain_list,
                max_lag_s=max_lag,
                f0_method=cast(F0Method, f0_method),
                pitch_method=cast(F0Method, pitch_method),
                progress=lambda what: bar.update(task, advance=1, description=what),
                asr=None if asr == "none" else asr,
                dnsmos=dnsmos,
            )
        except (OSError, ValueError, CodecSystemError) as e:
            fail(str(e))
    run_notes = list(res.notes)
    res.notes = notes + res.notes
    command = (
        "entanglecodec eval " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("reconstruct") :])
        if ("reconstruct" in sys.argv)
        else None
    )
    paths = write_report(res, out, command=command)

    header, rows = summary_table(res)
    table = Table(title=f"Reconstruction · {len(res.clips)} clips · {manifest}", show_lines=False)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    for n in run_notes[:10]:
        err.print(f"[yellow]note:[/] {n}", highlight=False)
    if len(run_notes) > 10:
        err.print(f"[yellow]note:[/] ... {len(run_notes) - 10} more in {paths['markdown']}", highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in paths.values()), highlight=False)


app.command("probe")(eval_more.probe)
app.command("bench")(eval_more.bench)
app.command("bench-rss")(eval_more.bench_rss)
app.command("bench-startup")(eval_startup.bench_startup)
app.command("decode-profile")(eval_profile.decode_profile)
app.command("diagnose")(eval_more.diagnose)
app.add_typer(eval_vocoder.app)
