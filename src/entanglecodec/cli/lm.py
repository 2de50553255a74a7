"""``entanglecodec tokenize`` and ``entanglecodec lm ...``: audio language models on codec tokens.

=================  ====================================================================
command            what
=================  ====================================================================
``tokenize``       a manifest -> token shards (batched, deterministic, resumable, torchrun)
``lm train``       train an LM recipe (``configs/lm-*.yaml``), phases, resume
``lm tts``         text (+ optional style caption) -> speech file
``lm tta``         caption -> audio file
``lm ask``         audio + question -> answer on stdout
``lm caption``     audio -> rich caption on stdout
``lm fit-kmeans``  fit the k-means-of-mel baseline tokenizer on a manifest's train split
``lm compare``     the codec-controlled comparison (``configs/lm-compare.yaml`` -> reports/lm.md)
=================  ====================================================================
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from .common import _progress, console, fail, positive_int, user_errors

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Audio language models on codec tokens (Qwen3).")

LMOpt = typer.Option(..., "--lm", help="Trained LM directory (RUN/lm of `lm train`).")
CodecOpt = typer.Option(None, "--codec", help="Audio tokenizer: codec checkpoint or k-means directory (default: bundled codec).")
SetOpt = typer.Option(None, "--set", help="Override a recipe value: key.sub=value (repeatable).")


@contextmanager
def _bar(what: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar fed by ``(done, total)`` callbacks."""
    if not enabled:
        yield lambda done, total: None
        return
    with _progress() as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _check_output(out: Path, inputs: list[Path], overwrite: bool) -> None:
    from ..fileio import check_writable, is_any_of

    if out.suffix.lower() not in (".wav", ".flac"):
        raise ValueError(f"{out}: output must end in .wav or .flac")
    if is_any_of(out, inputs):
        raise ValueError(f"{out}: output would overwrite an input file")
    if out.is_dir():
        raise FileExistsError(f"{out}: exists and is a directory")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    check_writable(out)


def tokenize(
    manifest: Path = typer.Argument(..., help="JSON-lines manifest (every split is tokenised)."),
    out: Path = typer.Option(..., "-o", "--out", help="Token directory (resumed when it holds the same plan)."),
    codec: Path | None = CodecOpt,
    batch_size: int = typer.Option(8, help="Clips per encoder batch.", callback=positive_int),
    shard_size: int = typer.Option(256, help="Rows per shard (the unit of resumption).", callback=positive_int),
    max_seconds: float | None = typer.Option(None, help="Record longer clips as failures instead of encoding them."),
    overwrite: bool = typer.Option(False, help="Replace a token directory of another plan (only its own files)."),
    threads: int | None = typer.Option(None, help="torch threads (default: torch's)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Tokenise a manifest into memory-mapped shards (run under torchrun for several processes)."""
    import os

    from ..fileio import prepare_output_dir
    from ..lm.audio_tokenizer import load_audio_tokenizer
    from ..lm.shards import META, OWNED, barrier, tokenize_manifest

    @user_errors
    def run() -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: manifest not found")
        foreign = out.is_dir() and any(out.iterdir()) and not (out / META).is_file() and not overwrite
        # Every rank looks before any rank writes: rank 0 creates the directory's files, and a slower
        # rank checking afterwards would take them for a stranger's (seen once under load in the tests).
        barrier(world)
        if foreign:
            raise FileExistsError(f"{out}: exists, is not empty and is not a token directory (choose another -o)")
        if overwrite:
            err = prepare_output_dir(out, True, OWNED, "tokens") if rank == 0 else None
            barrier(world)  # the other ranks look at the directory only once it is cleared
            if err:
                raise ValueError(err)
        tok = load_audio_tokenizer(codec)
        with _bar(f"tokenize ({tok.name})", progress and rank == 0) as update:
            index = tokenize_manifest(manifest, out, tok, batch_size, shard_size, max_seconds, update)
        if rank == 0:
            for f in index.get("failed", [])[:10]:
                console.print(f"[bold yellow]skipped:[/] {f['id']}: {f['error']}", highlight=False)
            console.print(f"wrote {index['items']} token sequences to {out} ({len(index['failed'])} failed)", highlight=False)

    run()


@app.command()
def train(
    config: Path = typer.Option(..., "--config", "-c", help="LM recipe (configs/lm-*.yaml)."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Run folder (default: runs/<recipe name>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir (finished phases are kept)."),
    set_: list[str] | None = SetOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Train an audio LM: build it (vocabulary + initialised rows), then run the recipe's phases."""
    from ..lm.recipe import load_lm_recipe
    from ..lm.train import run_lm_training

    @user_errors
    def run() -> None:
        recipe = load_lm_recipe(config, set_)
        final = run_lm_training(recipe, run_dir or Path("runs") / config.stem, resume, progress)
        console.print(f"trained LM written to {final}", highlight=False)

    run()


def _load(lm: Path, codec: Path | None, vocoder: str | None = None) -> Any:
    from ..lm.generate import AudioLM

    return AudioLM(lm, codec, vocoder)


def _generate(task: str, text: str, out: Path, lm: Path, codec: Path | None, style: str | None, temperature: float,
              top_k: int, top_p: float, max_seconds: float, min_seconds: float, seed: int, guidance: float,
              overwrite: bool, vocoder: str | None) -> None:  # fmt: skip
    from ..audio import save_audio
    from ..lm.generate import Sampling

    @user_errors
    def run() -> None:
        if not text.strip():
            raise ValueError(f"the {'text' if task == 'tts' else 'caption'} is empty")
        if not 0 <= min_seconds <= max_seconds or max_seconds <= 0:
            raise ValueError(f"need 0 <= --min-seconds <= --max-seconds and --max-seconds > 0, got {min_seconds}, {max_seconds}")
        _check_output(out, [], overwrite)
        model = _load(lm, codec, vocoder)
        rate = model.vocab.frame_rate
        s = Sampling(temperature, top_k, top_p, max(1, int(round(max_seconds * rate))), seed, guidance,
                     max(1, int(round(min_seconds * rate)))).check()  # fmt: skip
        with _bar(f"{task}: audio tokens") as update:
            wav, _ = model.synthesize(task, text, s, style, update)
        save_audio(out, wav, model.tok.sample_rate)
        console.print(f"wrote {out} ({wav.size / model.tok.sample_rate:.2f} s)", highlight=False)

    run()


TempOpt = typer.Option(1.0, help="Sampling temperature (0 = greedy).")
TopKOpt = typer.Option(0, help="Sample from the k most likely tokens (0 = off).")
TopPOpt = typer.Option(1.0, help="Nucleus sampling mass in (0, 1] (1 = off).")
MaxSecOpt = typer.Option(10.0, help="Maximum audio length in seconds (generation stops there with a warning).")
MinSecOpt = typer.Option(0.0, help="Minimum audio length in seconds (the closing token is refused before; at least 1 token).")
SeedOpt = typer.Option(0, help="Sampling and decoder seed.")
CfgOpt = typer.Option(
    1.0, "--guidance", help="Classifier-free guidance gamma over the null prompt (1 = none, the paper's value; 0-10)."
)
OutOpt = typer.Option(..., "-o", "--out", help="Output .wav/.flac (never overwritten without --overwrite).")
VocoderOpt = typer.Option(None, help="'griffin-lim', 'default' or a vocoder directory (default: the codec's).")


@app.command()
def tts(
    text: str = typer.Argument(..., help="Text to speak."),
    out: Path = OutOpt, lm: Path = LMOpt, codec: Path | None = CodecOpt,
    style: str | None = typer.Option(None, help="Optional speaker/style caption (e.g. 'a woman speaks slowly')."),
    temperature: float = TempOpt, top_k: int = TopKOpt, top_p: float = TopPOpt, max_seconds: float = MaxSecOpt,
    min_seconds: float = MinSecOpt, seed: int = SeedOpt, guidance: float = CfgOpt, overwrite: bool = typer.Option(False, help="Replace --out."),
    vocoder: str | None = VocoderOpt,
) -> None:  # fmt: skip
    """Text-to-speech: transcript (+ style caption) -> speech tokens -> codec decoder -> vocoder."""
    _generate("tts", text, out, lm, codec, style, temperature, top_k, top_p, max_seconds, min_seconds, seed, guidance,
              overwrite, vocoder)


@app.command()
def tta(
    caption: str = typer.Argument(..., help="Description of the sound or music."),
    out: Path = OutOpt, lm: Path = LMOpt, codec: Path | None = CodecOpt,
    temperature: float = TempOpt, top_k: int = TopKOpt, top_p: float = TopPOpt, max_seconds: float = MaxSecOpt,
    min_seconds: float = MinSecOpt, seed: int = SeedOpt, guidance: float = CfgOpt, overwrite: bool = typer.Option(False, help="Replace --out."),
    vocoder: str | None = VocoderOpt,
) -> None:  # fmt: skip
    """Text-to-audio: caption -> audio tokens -> codec decoder -> vocoder."""
    _generate("tta", caption, out, lm, codec, None, temperature, top_k, top_p, max_seconds, min_seconds, seed, guidance,
              overwrite, vocoder)


def _understand(task: str, audio: Path, lm: Path, codec: Path | None, question: str | None, max_tokens: int) -> None:
    from ..audio import load_audio

    @user_errors
    def run() -> None:
        if question is not None and not question.strip():
            raise ValueError("the question is empty")
        model = _load(lm, codec)
        wav, _ = load_audio(audio, model.tok.sample_rate)
        codes = model.encode_audio(wav)
        with _bar(f"{task}: answer tokens") as update:
            text, _ = model.answer(task, codes, question, max_tokens, update)
        typer.echo(text)

    run()


@app.command()
def ask(
    audio: Path = typer.Argument(..., help="Audio file."),
    question: str = typer.Argument(..., help="Question about the audio (options may be listed: '(A) x (B) y')."),
    lm: Path = LMOpt, codec: Path | None = CodecOpt,
    max_tokens: int = typer.Option(64, help="Maximum answer length in tokens.", callback=positive_int),
) -> None:  # fmt: skip
    """Audio question answering: prints the answer."""
    _understand("aqa", audio, lm, codec, question, max_tokens)


@app.command()
def caption(
    audio: Path = typer.Argument(..., help="Audio file."),
    lm: Path = LMOpt, codec: Path | None = CodecOpt,
    max_tokens: int = typer.Option(128, help="Maximum caption length in tokens.", callback=positive_int),
) -> None:  # fmt: skip
    """Audio captioning: prints a rich caption."""
    _understand("caption", audio, lm, codec, None, max_tokens)


@app.command("fit-kmeans")
def fit_kmeans(
    manifest: Path = typer.Argument(..., help="Manifest; the k-means is fitted on its train split."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory (config.json + model.safetensors)."),
    k: int | None = typer.Option(None, help="Clusters (default: the codec's codebook size).", callback=positive_int),
    codec: Path | None = CodecOpt,
    seed: int = SeedOpt,
    max_clips: int = typer.Option(2000, help="Train clips used for fitting.", callback=positive_int),
) -> None:
    """Fit the k-means-of-mel tokenizer (same 50 Hz rate and codebook size as the codec)."""
    from ..lm.compare import fit_kmeans_tokenizer

    @user_errors
    def run() -> None:
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out}: exists and is not empty (choose another --out)")
        d = fit_kmeans_tokenizer(manifest, out, k, codec, seed, max_clips)
        console.print(f"wrote k-means-of-mel tokenizer to {d}", highlight=False)

    run()


@app.command()
def compare(
    config: Path = typer.Option(Path("configs/lm-compare.yaml"), "--config", "-c", help="Comparison config."),
    work_dir: Path = typer.Option(Path("runs/lm-compare"), "--work-dir", help="Tokens, runs and generated audio."),
    out: Path = typer.Option(Path("reports/lm"), "-o", "--out", help="Report path without extension (.md/.json)."),
    set_: list[str] | None = SetOpt,
    only: list[str] | None = typer.Option(
        None, "--only",
        help="Prepare just this tokenizer's rows (repeatable) and write no report: lets processes fill rows in parallel.",
    ),
) -> None:
    """Codec-controlled comparison: identical LMs on each tokenizer's tokens -> reports/lm.md."""
    from ..lm.compare import load_compare_config, run_comparison

    @user_errors
    def run() -> None:
        cfg = load_compare_config(config, set_)
        sets = "".join(f" --set {shlex.quote(x)}" for x in set_ or [])
        q = shlex.quote
        command = f"entanglecodec lm compare -c {q(str(config))} --work-dir {q(str(work_dir))} -o {q(str(out))}{sets}"
        paths = run_comparison(cfg, work_dir, out, command=command,
                               progress=lambda m: console.print(m, highlight=False), only=only)
        if paths:
            console.print(f"wrote {paths['markdown']}", highlight=False)

    run()


__all__ = ["app", "tokenize", "fail"]
