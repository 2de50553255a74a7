"""The codec commands: ``encode``, ``decode``, ``reconstruct``, ``vocode``, ``info``, ``mel-stats``, ``demo``.

Heavy libraries (torch, the model) are imported inside the commands so that ``--help`` is fast.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from .common import (
    AUDIO_EXTS,
    BackendOpt,
    CheckpointOpt,
    GuidanceOpt,
    OverwriteOpt,
    SkipErrorsOpt,
    StepsOpt,
    VocoderOpt,
    _progress,
    check_files,
    console,
    error_message,
    expand_inputs,
    fail,
    finish,
    load_model,
    onnx_runtime,
    output_paths,
    positive_int,
    user_errors,
    warn,
)

app = typer.Typer()

@app.command()
@user_errors
def encode(
    inputs: list[Path] = typer.Argument(..., help="Audio files or directories."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .npz (one input) or directory."),
    checkpoint: Path | None = CheckpointOpt,
    batch_size: int = typer.Option(8, help="Files encoded together in one padded batch (>= 1).", callback=positive_int),
    overwrite: bool = OverwriteOpt,
    skip_errors: bool = SkipErrorsOpt,
    backend: str = BackendOpt,
) -> None:
    """Tokenise audio files into token files (.npz: codes + rates + length + fingerprint).

    On torch, clips longer than the model's window are read and encoded block by block (memory
    does not grow with their duration) and shorter ones in padded batches; the compiled runtime
    (``--backend auto`` for up to two minutes of audio in all) encodes file by file.
    """
    from ..audio_io import audio_info, load_audio
    from ..codec.tokens import TokenFile, save_tokens
    from ..fileio import OutputError

    files = expand_inputs(inputs, AUDIO_EXTS)
    outs = output_paths(files, out, ".npz", overwrite)
    infos: dict[int, tuple[int, int]] = {}
    good, n_bad = check_files(files, audio_info, skip_errors, infos)
    rt = onnx_runtime(backend, checkpoint, audio_seconds=sum(infos[i][0] / infos[i][1] for i in good))
    model = rt if rt is not None else load_model(checkpoint)
    fp = model.fingerprint()

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

    with _progress() as prog:
        task = prog.add_task("encoding", total=len(good))
        if rt is not None:
            for i in good:

                def whole_file(i: int = i) -> None:
                    wav, _ = load_audio(files[i], rt.sample_rate)
                    write(i, rt.encode(wav, rt.sample_rate), wav.shape[0])

                attempt([i], whole_file)
                prog.advance(task)
        else:
            _encode_torch(model, files, good, infos, batch_size, skip_errors, write, attempt, lambda k: prog.advance(task, k))
    finish(written, n_bad, f"token file(s) ({model.bitrate:.0f} bps)", outs[0].parent)


def _encode_torch(
    model: Any, files: list[Path], good: list[int], infos: dict[int, tuple[int, int]], batch_size: int,
    skip_errors: bool, write: Callable[[int, Any, int], None], attempt: Callable[[list[int], Callable[[], None]], None],
    advance: Callable[[int], None],
) -> None:
    """The torch side of ``encode``: long files block by block, short ones in padded batches."""
    import torch

    from ..audio import load_audio, pad_batch
    from ..codec.streaming import encode_file

    window_s = model.config.max_frames / model.frame_rate
    long_ = [i for i in good if infos[i][0] / infos[i][1] > window_s]
    short = [i for i in good if i not in set(long_)]
    for i in long_:

        def one(i: int = i) -> None:
            st = encode_file(model, files[i])
            write(i, st.codes, st.num_samples)

        attempt([i], one)
        advance(1)
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
        advance(len(group))


@app.command()
@user_errors
def decode(
    inputs: list[Path] = typer.Argument(..., help="Token files (.npz) or directories of them."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .wav (one input) or directory."),
    checkpoint: Path | None = CheckpointOpt,
    steps: int = StepsOpt,
    guidance: float | None = GuidanceOpt,
    vocoder: str | None = VocoderOpt,
    seed: int = typer.Option(0, help="Noise seed."),
    overwrite: bool = OverwriteOpt,
    skip_errors: bool = SkipErrorsOpt,
    backend: str = BackendOpt,
) -> None:
    """Decode token files back to 24 kHz audio."""
    from ..codec.sampling import check_sampling
    from ..codec.tokens import load_tokens

    check_sampling(steps, 1.0 if guidance is None else guidance)
    files = expand_inputs(inputs, {".npz"})
    outs = output_paths(files, out, ".wav", overwrite)
    loaded: dict[int, Any] = {}
    good, n_bad = check_files(files, load_tokens, skip_errors, loaded)
    tokens = {files[i]: tf for i, tf in loaded.items()}
    seconds = sum(tf.num_samples / tf.sample_rate for tf in tokens.values())
    rt = onnx_runtime(backend, checkpoint, vocoder, steps, guidance, seconds)
    if rt is not None:

        def one(f: Path) -> tuple[Any, int]:
            tf = tokens[f]
            tf.check_compatible(rt.accepted_fingerprints(), rt.codebook_size, f)
            return rt.decode(tf.codes, seed, tf.num_samples), rt.sample_rate

    else:
        from ..codec.streaming import decode_stream

        model = load_model(checkpoint, vocoder)
        accepted = [x for x in (model.fingerprint(), model.legacy_fingerprint()) if x]

        def one(f: Path) -> tuple[Any, int]:  # streamed: memory bounded by one 30 s window, whatever the length
            tf = tokens[f]
            tf.check_compatible(accepted, model.codebook_size, f)
            return decode_stream(model, tf.codes, tf.num_samples, steps, guidance, seed), model.sample_rate

    done, skipped = _write_each(files, outs, good, "decoding", skip_errors, one)
    finish(done, n_bad + skipped, "file(s)", outs[0].parent)


@app.command()
@user_errors
def reconstruct(
    inputs: list[Path] = typer.Argument(..., help="Audio files or directories."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .wav (one input) or directory."),
    checkpoint: Path | None = CheckpointOpt,
    steps: int = StepsOpt,
    guidance: float | None = GuidanceOpt,
    vocoder: str | None = VocoderOpt,
    overwrite: bool = OverwriteOpt,
    skip_errors: bool = SkipErrorsOpt,
    backend: str = BackendOpt,
) -> None:
    """Encode then decode audio (24 kHz output, trimmed to the input length)."""
    from ..audio_io import audio_info, load_audio
    from ..codec.sampling import check_sampling

    check_sampling(steps, 1.0 if guidance is None else guidance)
    files = expand_inputs(inputs, AUDIO_EXTS)
    outs = output_paths(files, out, ".wav", overwrite)
    infos: dict[int, tuple[int, int]] = {}
    good, n_bad = check_files(files, audio_info, skip_errors, infos)
    seconds = sum(n / sr for n, sr in infos.values())
    rt = onnx_runtime(backend, checkpoint, vocoder, steps, guidance, seconds)
    if rt is not None:

        def one(f: Path) -> tuple[Any, int]:
            wav, sr = load_audio(f, rt.sample_rate)
            return rt.reconstruct(wav, sr), rt.sample_rate

    else:
        import torch

        model = load_model(checkpoint, vocoder)

        def one(f: Path) -> tuple[Any, int]:
            wav, sr = load_audio(f, model.sample_rate)
            a = model.reconstruct(torch.from_numpy(wav), sr, steps=steps, guidance=guidance)
            return a.wav[0, : int(a.lengths[0])], a.sample_rate

    done, skipped = _write_each(files, outs, good, "reconstructing", skip_errors, one)
    finish(done, n_bad + skipped, "file(s)", outs[0].parent)


def _write_each(
    files: list[Path], outs: list[Path], good: list[int], label: str, skip_errors: bool,
    make: Callable[[Path], tuple[Any, int]],
) -> tuple[int, int]:
    """``make(file) -> (wav [S] or an iterator of consecutive pieces, sample_rate)`` for each input in
    ``good``, saved to its output (pieces are written as they come: a streamed decode).

    A ``ValueError`` names the file; with ``skip_errors`` it is printed and the file skipped.
    Returns ``(written, skipped)``.
    """
    from ..audio_io import save_audio, save_audio_stream

    done = skipped = 0
    with _progress() as prog:
        task = prog.add_task(label, total=len(good))
        for i in good:
            f = files[i]
            try:
                wav, sr = make(f)
                streamed = isinstance(wav, Iterator)
                if streamed:
                    save_audio_stream(outs[i], wav, sr)  # decoding runs inside: its errors land below
            except ValueError as e:
                msg = str(e) if str(f) in str(e) else f"{f}: {error_message(e)}"
                if not skip_errors:
                    raise ValueError(msg) from e
                skipped += 1
                console.print(f"[bold yellow]skipped:[/] {msg}", highlight=False)
            else:
                if not streamed:
                    save_audio(outs[i], wav, sr)
                done += 1
            prog.advance(task)
    return done, skipped


@app.command()
@user_errors
def info(
    checkpoint: Path | None = typer.Argument(None, help="Checkpoint directory (default: the bundled model)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a checkpoint's parameters and bitrate, and the available presets."""
    from rich.table import Table

    from ..codec.model import CheckpointError, EntangleCodec
    from ..config import EntangleCodecConfig

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
    from ..audio import compute_mel_stats, save_mel_stats
    from ..config import MelConfig

    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    from ..data.manifest import audio_paths

    files = audio_paths(manifest, split)
    if len(files) > max_files:
        step = len(files) / max_files
        files = [files[int(i * step)] for i in range(max_files)]
    cfg = MelConfig()
    mean, std, n = compute_mel_stats(files, cfg)
    save_mel_stats(out, mean, std, n, cfg)
    console.print(f"mel statistics over {len(files)} files / {n} frames written to {out}")


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Directory for the demo outputs."),
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", "-c", help="Checkpoint directory or Hugging Face repo id (default: the bundled model)."
    ),
    clips: str | None = typer.Option(
        None, help="Comma-separated subset of speech-recorded,speech-tts,music,sound,mixture (default: all)."
    ),
) -> None:
    """Every domain (recorded and TTS speech, music, a sound event, a mixture) through the codec, beside
    Codec2 700C and Opus 6 kbps: tokens, WAVs, one mel PNG, scores, caption ranking and index.html."""
    from .demo import run_demo

    run_demo(out, checkpoint, console, [c.strip() for c in clips.split(",") if c.strip()] if clips else None)


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

    from ..audio import audio_info, load_audio, save_audio
    from ..vocoder.load import copy_synthesis, load_vocoder

    files = expand_inputs(list(inputs), AUDIO_EXTS)
    targets = output_paths(files, out, AUDIO_SUFFIX, overwrite)
    good, _ = check_files(files, audio_info, skip_errors)
    vocoder = load_vocoder(checkpoint, consistency_passes=consistency_passes)
    sample_rate = vocoder.mel_config.sample_rate
    written = []
    for i in good:
        src, dst = files[i], targets[i]
        try:
            wav, sr = load_audio(src, sample_rate)
        except ValueError as e:
            if not skip_errors:
                raise
            warn(f"skipped: {error_message(e)}")
            continue
        save_audio(dst, copy_synthesis(vocoder, torch.from_numpy(wav)), sr)
        written.append(dst)
    return written


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
    paths = vocode_command(inputs, out, checkpoint, overwrite, consistency_passes, skip_errors)
    for p in paths:
        typer.echo(str(p))
    n_bad = len(expand_inputs(list(inputs), AUDIO_EXTS)) - len(paths)
    if n_bad:
        fail(f"{n_bad} input file(s) skipped because of errors (listed above)")

