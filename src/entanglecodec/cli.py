"""The ``entanglecodec`` command line (typer + rich).

Exit-code policy (every command, documented in the README): ``0`` success; ``1`` the command
ran but failed (bad or unreadable input, unwritable output, some files skipped with
``--skip-errors``...), with one ``error: ...`` line naming the file and the problem; ``2`` the
command line itself is wrong (unknown option, a value out of range: typer's usage errors);
``130`` interrupted. Warnings (output peak-limited, truncated file, very short clip) are one
``warning: ...`` line each and do not change the exit code.

Core commands live here (``encode``, ``decode``, ``reconstruct``, ``info``, ``mel-stats``, ``demo``);
sub-commands live next to the code they drive: ``data`` (entanglecodec.data.cli), ``train``
(entanglecodec.training.cli), ``eval`` (entanglecodec.eval.cli), ``vocode`` (entanglecodec.vocoder_cli).
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="EntangleCodec audio tokenizer.")
console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

AUDIO_EXTS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus"}


def _add_subapp(module: str, name: str) -> None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return
        raise
    app.add_typer(mod.app, name=name)


def _register(module: str) -> None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return
        raise
    mod.register(app)


def fail(msg: str) -> None:
    """Print ``error: msg`` and exit with status 1."""
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(1)


def warn(msg: str) -> None:
    """Print a one-line ``warning: msg`` on stderr."""
    console.print(f"[bold yellow]warning:[/] {msg}", markup=True, highlight=False)


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Show Python warnings raised inside as one ``warning: ...`` line each (no source line)."""

    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        warn(str(message))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def error_message(e: BaseException) -> str:
    """One line for an expected failure; OS errors name their file and the reason."""
    if isinstance(e, OSError) and not str(e).startswith(str(e.filename or "\0")):
        from .fileio import describe_os_error

        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{describe_os_error(e)}"
    return " ".join(str(e).split()) or type(e).__name__


def user_errors(fn: F) -> F:
    """Run a command: expected failures become one ``error:`` line and exit status 1, warnings
    become ``warning:`` lines. Unexpected exceptions also exit 1 with one line (set
    ``ENTANGLECODEC_DEBUG=1`` for the traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings_as_lines():
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, KeyboardInterrupt):
                raise
            except (ValueError, OSError) as e:
                fail(error_message(e))
            except Exception as e:  # a bug or an unforeseen fault: still no traceback for users
                if os.environ.get("ENTANGLECODEC_DEBUG"):
                    raise
                fail(f"unexpected {type(e).__name__}: {error_message(e)} (set ENTANGLECODEC_DEBUG=1 for details)")

    return wrapper  # type: ignore[return-value]


def check_files(files: list[Path], check: Callable[[Path], object], skip_errors: bool) -> tuple[list[int], int]:
    """Check every input up front; return the indices of the usable ones and the number of bad ones.

    Without ``skip_errors`` any bad file is an error whose one-line message lists every bad file
    found (not only the first); with it each bad file is reported on its own line.
    """
    good: list[int] = []
    bad: list[str] = []
    for i, f in enumerate(files):
        try:
            check(f)
        except (ValueError, OSError) as e:
            bad.append(error_message(e))
        else:
            good.append(i)
    if bad and not skip_errors:
        raise ValueError(
            f"{len(bad)} of {len(files)} input file(s) unusable: " + " | ".join(bad)
            + (" (pass --skip-errors to process the others)" if good else "")
        )
    for msg in bad:
        console.print(f"[bold yellow]skipped:[/] {msg}", highlight=False)
    if not good:
        raise ValueError(f"none of the {len(files)} input file(s) is usable")
    return good, len(bad)


def finish(n_done: int, n_bad: int, what: str, where: Path) -> None:
    """Final summary line; exit status 1 when files were skipped."""
    console.print(f"wrote {n_done} {what} to {where}", highlight=False)
    if n_bad:
        fail(f"{n_bad} input file(s) skipped because of errors (listed above)")


def positive_int(value: int) -> int:
    """typer callback: a whole number >= 1."""
    if value is not None and value < 1:
        raise typer.BadParameter(f"must be >= 1, got {value}")
    return value


def guidance_value(value: float) -> float:
    """typer callback: a finite guidance scale in the accepted range (see ``check_sampling``)."""
    from .model import MAX_GUIDANCE

    if not math.isfinite(value) or not 0.0 <= value <= MAX_GUIDANCE:
        raise typer.BadParameter(f"must be a finite number in [0, {MAX_GUIDANCE:g}], got {value}")
    return value


def expand_inputs(inputs: list[Path], exts: set[str]) -> list[Path]:
    """Files as given, directories expanded recursively to files with one of ``exts``."""
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in exts and q.is_file())
            if not found:
                raise ValueError(f"{p}: directory holds no files with extensions {sorted(exts)}")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    if not files:
        raise ValueError("no input files")
    return files


def output_paths(inputs: list[Path], out: Path, suffix: str, overwrite: bool) -> list[Path]:
    """Map inputs to outputs: ``out`` is a file for one input with ``suffix``, else a directory.

    Refuses to overwrite existing files (or to map two inputs to one output) unless ``overwrite``.
    """
    if len(inputs) == 1 and out.suffix.lower() == suffix and not out.is_dir():
        paths = [out]
    else:
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a directory (several inputs need an output directory)")
        paths = [out / (p.stem + suffix) for p in inputs]
        dupes = {str(q) for q in paths if paths.count(q) > 1}
        if dupes:
            raise ValueError(f"several inputs would write the same output: {sorted(dupes)[:3]}")
    from .fileio import check_writable, is_any_of

    for q in paths:
        if is_any_of(q, inputs):
            raise ValueError(f"{q}: output would overwrite an input file (same file, link or path)")
        if q.is_dir():
            raise FileExistsError(f"{q}: exists and is a directory")
        if q.exists() and not overwrite:
            raise FileExistsError(f"{q}: already exists (pass --overwrite to replace it)")
    for q in paths:  # before any long computation: read-only file system, permissions, no space
        check_writable(q)
    return paths


def load_model(checkpoint: Path | None, vocoder: str | None = None, text: bool = False) -> Any:
    from .model import EntangleCodec

    model = EntangleCodec.from_pretrained(checkpoint, build_text_encoder=text)
    if vocoder:
        model.set_vocoder(vocoder)
    return model


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    )


CheckpointOpt = typer.Option(None, "--checkpoint", "-c", help="Checkpoint directory (default: the bundled model).")
OverwriteOpt = typer.Option(False, help="Replace existing outputs.")
StepsOpt = typer.Option(1, help="Euler steps of the flow decoder (>= 1).", callback=positive_int)
GuidanceOpt = typer.Option(
    1.0, help="Classifier-free guidance scale in [0, 10] (0 disables; above 3 warns).", callback=guidance_value
)
SkipErrorsOpt = typer.Option(
    False, "--skip-errors", help="Report bad input files, process the others, exit 1 with the count."
)
VocoderOpt = typer.Option(None, help="'griffin-lim', 'default' or a vocoder directory.")


@app.command()
@user_errors
def encode(
    inputs: list[Path] = typer.Argument(..., help="Audio files or directories."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .npz (one input) or directory."),
    checkpoint: Path | None = CheckpointOpt,
    batch_size: int = typer.Option(8, help="Files encoded together in one padded batch (>= 1).", callback=positive_int),
    overwrite: bool = OverwriteOpt,
    skip_errors: bool = SkipErrorsOpt,
) -> None:
    """Tokenise audio files into token files (.npz: codes + rates + length + fingerprint).

    Clips longer than the model's window are read and encoded block by block (memory does not
    grow with their duration); shorter ones are encoded in padded batches.
    """
    import torch

    from .audio import audio_info, load_audio, pad_batch
    from .fileio import OutputError
    from .streaming import encode_file
    from .tokens_io import TokenFile, save_tokens

    files = expand_inputs(inputs, AUDIO_EXTS)
    outs = output_paths(files, out, ".npz", overwrite)
    good, n_bad = check_files(files, audio_info, skip_errors)
    infos = {i: audio_info(files[i]) for i in good}
    model = load_model(checkpoint)
    fp = model.fingerprint()
    window_s = model.config.max_frames / model.frame_rate

    written = 0

    def write(i: int, codes: Any, num_samples: int) -> None:
        nonlocal written
        save_tokens(
            outs[i],
            TokenFile(
                codes=codes,
                sample_rate=model.sample_rate,
                num_samples=num_samples,
                frame_rate=float(model.frame_rate),
                codebook_size=model.codebook_size,
                fingerprint=fp,
                source=files[i].name,
            ),
        )
        written += 1

    def attempt(indices: list[int], job: Callable[[], None]) -> None:
        nonlocal n_bad
        try:
            job()
        except (ValueError, OSError) as e:
            if not skip_errors or isinstance(e, OutputError):  # an unwritable output stops the run
                raise
            n_bad += len(indices)
            console.print(f"[bold yellow]skipped:[/] {error_message(e)}", highlight=False)

    long_ = [i for i in good if infos[i][0] / infos[i][1] > window_s]
    short = [i for i in good if i not in set(long_)]
    with _progress() as prog:
        task = prog.add_task("encoding", total=len(good))
        for i in long_:

            def one(i: int = i) -> None:
                st = encode_file(model, files[i])
                write(i, st.codes, st.num_samples)

            attempt([i], one)
            prog.advance(task)
        for g in range(0, len(short), batch_size):
            group = short[g : g + batch_size]

            def batch(group: list[int] = group) -> None:
                wavs = [torch.from_numpy(load_audio(files[i], model.sample_rate)[0]) for i in group]
                wav, lens = pad_batch(wavs)
                tokens = model.encode(wav, model.sample_rate, lens)
                for j, i in enumerate(group):
                    n = int(tokens.lengths[j])
                    write(i, tokens.codes[j, :n].cpu().numpy(), int(tokens.num_samples[j]))

            if skip_errors and len(group) > 1:
                for i in group:  # one bad file must not cost its batch-mates
                    attempt([i], functools.partial(batch, [i]))
            else:
                attempt(group, batch)
            prog.advance(task, len(group))
    finish(written, n_bad, f"token file(s) ({model.bitrate:.0f} bps)", outs[0].parent)


@app.command()
@user_errors
def decode(
    inputs: list[Path] = typer.Argument(..., help="Token files (.npz) or directories of them."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .wav (one input) or directory."),
    checkpoint: Path | None = CheckpointOpt,
    steps: int = StepsOpt,
    guidance: float = GuidanceOpt,
    vocoder: str | None = VocoderOpt,
    seed: int = typer.Option(0, help="Noise seed."),
    overwrite: bool = OverwriteOpt,
    skip_errors: bool = SkipErrorsOpt,
) -> None:
    """Decode token files back to 24 kHz audio."""
    from .audio import save_audio
    from .model import check_sampling
    from .tokens_io import load_tokens

    check_sampling(steps, guidance)
    files = expand_inputs(inputs, {".npz"})
    outs = output_paths(files, out, ".wav", overwrite)
    good, n_bad = check_files(files, load_tokens, skip_errors)
    model = load_model(checkpoint, vocoder)
    fp = model.fingerprint()
    done = 0
    with _progress() as prog:
        task = prog.add_task("decoding", total=len(good))
        for i in good:
            f, o = files[i], outs[i]
            try:
                tf = load_tokens(f)
                tf.check_compatible(fp, model.codebook_size, f)
                audio = model.decode(tf.codes, steps=steps, guidance=guidance, num_samples=[tf.num_samples], seed=seed)
            except ValueError as e:
                if not skip_errors:
                    raise ValueError(f"{f}: {e}" if str(f) not in str(e) else str(e)) from e
                n_bad += 1
                console.print(f"[bold yellow]skipped:[/] {f}: {error_message(e)}", highlight=False)
                prog.advance(task)
                continue
            save_audio(o, audio.wav[0, : int(audio.lengths[0])], audio.sample_rate)
            done += 1
            prog.advance(task)
    finish(done, n_bad, "file(s)", outs[0].parent)


@app.command()
@user_errors
def reconstruct(
    inputs: list[Path] = typer.Argument(..., help="Audio files or directories."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .wav (one input) or directory."),
    checkpoint: Path | None = CheckpointOpt,
    steps: int = StepsOpt,
    guidance: float = GuidanceOpt,
    vocoder: str | None = VocoderOpt,
    overwrite: bool = OverwriteOpt,
    skip_errors: bool = SkipErrorsOpt,
) -> None:
    """Encode then decode audio (24 kHz output, trimmed to the input length)."""
    import torch

    from .audio import audio_info, load_audio, save_audio
    from .model import check_sampling

    check_sampling(steps, guidance)
    files = expand_inputs(inputs, AUDIO_EXTS)
    outs = output_paths(files, out, ".wav", overwrite)
    good, n_bad = check_files(files, audio_info, skip_errors)
    model = load_model(checkpoint, vocoder)
    done = 0
    with _progress() as prog:
        task = prog.add_task("reconstructing", total=len(good))
        for i in good:
            f, o = files[i], outs[i]
            try:
                wav, sr = load_audio(f, model.sample_rate)
                audio = model.reconstruct(torch.from_numpy(wav), sr, steps=steps, guidance=guidance)
            except ValueError as e:
                if not skip_errors:
                    raise
                n_bad += 1
                console.print(f"[bold yellow]skipped:[/] {error_message(e)}", highlight=False)
                prog.advance(task)
                continue
            save_audio(o, audio.wav[0, : int(audio.lengths[0])], audio.sample_rate)
            done += 1
            prog.advance(task)
    finish(done, n_bad, "file(s)", outs[0].parent)


@app.command()
@user_errors
def info(
    checkpoint: Path | None = typer.Argument(None, help="Checkpoint directory (default: the bundled model)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a checkpoint's parameters and bitrate, and the available presets."""
    from rich.table import Table

    from .config import EntangleCodecConfig
    from .model import CheckpointError, EntangleCodec

    result: dict[str, Any] = {"presets": {}}
    for name in EntangleCodecConfig.presets():
        cfg = EntangleCodecConfig.preset(name)
        result["presets"][name] = {
            "encoder": f"{cfg.encoder.dim}x{cfg.encoder.depth}",
            "decoder": f"{cfg.decoder.transformer.dim}x{cfg.decoder.transformer.depth}",
            "codebook_size": cfg.quantizer.codebook_size,
            "bitrate": cfg.bitrate,
            "text": cfg.text.kind,
        }
    try:
        model = EntangleCodec.from_pretrained(checkpoint, build_text_encoder=True)
        result["checkpoint"] = {
            "path": str(checkpoint) if checkpoint else "bundled default",
            "preset": model.config.name,
            "parameters": model.num_parameters(),
            "sample_rate": model.sample_rate,
            "frame_rate": model.frame_rate,
            "codebook_size": model.codebook_size,
            "bitrate_bps": model.bitrate,
            "fingerprint": model.fingerprint(),
            "window_frames": model.config.max_frames,
            "vocoder": model.config.vocoder,
        }
    except CheckpointError as e:
        if checkpoint is not None:
            raise
        result["checkpoint"] = None
        result["note"] = str(e)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    out = Console()
    if result["checkpoint"]:
        t = Table(title="checkpoint")
        t.add_column("field")
        t.add_column("value")
        for k, v in result["checkpoint"].items():
            t.add_row(k, json.dumps(v) if isinstance(v, dict) else str(v))
        out.print(t)
    else:
        out.print(f"[yellow]{result['note']}[/]")
    t = Table(title="presets")
    for col in ["preset", "encoder", "decoder", "codebook", "bps", "text encoder"]:
        t.add_column(col)
    for name, p in result["presets"].items():
        t.add_row(name, p["encoder"], p["decoder"], str(p["codebook_size"]), f"{p['bitrate']:.0f}", p["text"])
    out.print(t)


@app.command("mel-stats")
@user_errors
def mel_stats(
    manifest: Path = typer.Argument(..., help="manifest.jsonl (audio paths relative to it) or a text file list."),
    out: Path = typer.Option(..., "-o", "--out", help="Output JSON with per-bin mean/std."),
    split: str | None = typer.Option("train", help="Only rows of this split (manifests)."),
    max_files: int = typer.Option(2000, help="Use at most this many files (evenly spaced)."),
    overwrite: bool = typer.Option(False),
) -> None:
    """Compute the per-bin log-mel mean/std used to normalise the codec's input."""
    from .audio import compute_mel_stats, save_mel_stats
    from .config import MelConfig

    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    files = manifest_audio_files(manifest, split)
    if len(files) > max_files:
        step = len(files) / max_files
        files = [files[int(i * step)] for i in range(max_files)]
    cfg = MelConfig()
    mean, std, n = compute_mel_stats(files, cfg)
    save_mel_stats(out, mean, std, n, cfg)
    console.print(f"mel statistics over {len(files)} files / {n} frames written to {out}")


def manifest_audio_files(manifest: Path, split: str | None) -> list[Path]:
    """Audio paths of a ``manifest.jsonl`` (relative to its directory) or of a plain list file."""
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: manifest not found")
    files: list[Path] = []
    base = manifest.parent
    for lineno, line in enumerate(manifest.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{manifest}:{lineno}: invalid JSON ({e.msg})") from e
            if "audio" not in row:
                raise ValueError(f"{manifest}:{lineno}: row has no 'audio' field")
            if split and row.get("split", split) != split:
                continue
            files.append(base / row["audio"])
        else:
            files.append(base / line)
    if not files:
        raise ValueError(f"{manifest}: no audio rows" + (f" in split {split!r}" if split else ""))
    return files


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Directory for the demo outputs."),
    checkpoint: Path | None = CheckpointOpt,
) -> None:
    """Tokenise and rebuild a bundled sample with the default model (the main job, end to end)."""
    from .demo import run_demo

    run_demo(out, checkpoint, console)


_add_subapp("entanglecodec.data.cli", "data")
_add_subapp("entanglecodec.training.cli", "train")
_add_subapp("entanglecodec.eval.cli", "eval")
_register("entanglecodec.vocoder_cli")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
