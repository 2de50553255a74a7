"""``entanglecodec data`` commands for manifests, importers and shards.

:func:`register` adds to a typer app:

* ``shard MANIFEST --out DIR``: pack a manifest into WebDataset-style tar shards.
* ``import-librispeech ROOT --out MANIFEST`` / ``import-libritts ROOT --out MANIFEST``
* ``import-audiocaps CSV --audio-dir DIR --out MANIFEST``
* ``import-wavcaps JSON --audio-dir DIR --out MANIFEST``
* ``import-musicbench JSON --audio-dir DIR --out MANIFEST``
* ``validate MANIFEST``: check every file decodes; print counts per domain/split and hours.

Outputs are never overwritten without ``--overwrite``; failures exit with status 1 and a one-line
message naming the problem. Heavy modules are imported inside the commands.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import fail

app = typer.Typer()

_CaptionerCmd = Annotated[
    str | None,
    typer.Option(
        "--captioner-cmd",
        help="External captioner: a command line with an {audio} placeholder that prints a caption "
        "(default: the template captioner for speech corpora, the dataset's own captions otherwise).",
    ),
]
_Out = Annotated[Path, typer.Option("--out", "-o", help="Output manifest (.jsonl).")]
_Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
_Workers = Annotated[int, typer.Option("--workers", min=1, help="Parallel threads (captioning / checking).")]
_Seed = Annotated[int, typer.Option("--seed", help="Seed of the hash split (datasets without their own split).")]
_ValidFrac = Annotated[float, typer.Option("--valid-fraction", min=0.0, max=0.5, help="Hash split: share of valid.")]
_TestFrac = Annotated[float, typer.Option("--test-fraction", min=0.0, max=0.5, help="Hash split: share of test.")]
_Split = Annotated[
    str | None, typer.Option("--split", help="Force this split (train/valid/test) for every imported clip.")
]


def _setup_logging() -> None:
    root = logging.getLogger("entanglecodec")
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
        root.setLevel(logging.INFO)


def _expected_errors() -> tuple[type[BaseException], ...]:
    from ..audio import AudioError
    from ..data.importers import DatasetImportError
    from ..data.manifest import ManifestError
    from ..data.shards import ShardError

    return (
        ManifestError,
        DatasetImportError,
        ShardError,
        AudioError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        ValueError,
        OSError,
    )


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        fail(f"{out}: already exists (pass --overwrite to replace it)")
    if out.exists() and out.is_dir():
        fail(f"{out}: is a directory, expected a manifest file path")


def _run_import(out: Path, overwrite: bool, fn: Callable[[], Any]) -> None:
    _setup_logging()
    _check_out(out, overwrite)
    try:
        result = fn()
        if not result.rows:
            fail(f"nothing imported: {result.summary()}")
        n = result.write(out, overwrite=overwrite)
    except typer.Exit:
        raise
    except _expected_errors() as e:
        fail(str(e))
    typer.echo(result.summary())
    typer.echo(f"wrote {n} rows to {out}")


def _captioner(cmd: str | None) -> Any:
    """An external-command captioner, or ``None`` for the importer's default captioner."""
    if not cmd:
        return None
    from ..data.importers import default_captioner

    return default_captioner(cmd)



@app.command("shard")
def shard(
    manifest: Annotated[Path, typer.Argument(help="Manifest (.jsonl) to pack.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for the tar shards.")],
    max_count: Annotated[int, typer.Option("--max-count", min=1, help="Clips per shard at most.")] = 1000,
    max_size_mb: Annotated[float, typer.Option("--max-size-mb", min=0.01, help="Shard size limit (MB).")] = 1024.0,
    sample_rate: Annotated[
        int, typer.Option("--sample-rate", min=0, help="Store audio at this rate, mono (0: keep each file's).")
    ] = 24000,
    split: _Split = None,
    shuffle: Annotated[bool, typer.Option("--shuffle/--no-shuffle", help="Shuffle clips before packing.")] = True,
    seed: Annotated[int, typer.Option("--seed", help="Shuffle seed.")] = 0,
    overwrite: _Overwrite = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on an unreadable file instead of skipping it.")] = False,
) -> None:
    """Pack a manifest into WebDataset-style tar shards (FLAC + JSON per clip) plus index.json."""
    _setup_logging()
    from ..data.shards import write_shards

    try:
        index = write_shards(
            manifest,
            out,
            max_count=max_count,
            max_size=int(max_size_mb * 1024 * 1024),
            sample_rate=sample_rate or None,
            split=split,
            shuffle=shuffle,
            seed=seed,
            overwrite=overwrite,
            on_error="raise" if strict else "skip",
            progress=sys.stderr.isatty(),
        )
    except _expected_errors() as e:
        fail(str(e))
    size = sum(s["bytes"] for s in index["shards"]) / 1e6
    typer.echo(
        f"wrote {index['total']} clips in {len(index['shards'])} shards ({size:.1f} MB) to {out}; "
        f"skipped {len(index['skipped'])} unreadable"
    )

def _read_speech_command(name: str, importer: str, root_help: str, doc: str) -> None:
    """Register ``import-NAME ROOT --out MANIFEST``: a read-speech corpus tree (LibriSpeech, LibriTTS)."""

    def command(
        out: _Out,
        root: Path = typer.Argument(..., help=root_help),
        captioner_cmd: _CaptionerCmd = None,
        workers: _Workers = 1,
        seed: _Seed = 0,
        valid_fraction: _ValidFrac = 0.02,
        test_fraction: _TestFrac = 0.02,
        overwrite: _Overwrite = False,
    ) -> None:
        from ..data import importers

        run = getattr(importers, importer)
        _run_import(
            out,
            overwrite,
            lambda: run(
                root,
                captioner=_captioner(captioner_cmd),
                seed=seed,
                valid_fraction=valid_fraction,
                test_fraction=test_fraction,
                workers=workers,
            ),
        )

    command.__doc__ = doc
    command.__name__ = f"{importer}_cmd"
    app.command(name)(command)


_read_speech_command(
    "import-librispeech", "import_librispeech", "LibriSpeech directory (or one subset inside it).",
    "Import LibriSpeech (transcripts from *.trans.txt, gender from SPEAKERS.TXT).",
)
_read_speech_command(
    "import-libritts", "import_libritts", "LibriTTS / LibriTTS-R directory (or one subset).",
    "Import LibriTTS (transcripts from *.normalized.txt / *.trans.tsv, gender from speakers.tsv).",
)


@app.command("import-audiocaps")
def import_audiocaps_cmd(
    csv_path: Annotated[Path, typer.Argument(help="AudioCaps CSV (audiocap_id,youtube_id,start_time,caption).")],
    audio_dir: Annotated[Path, typer.Option("--audio-dir", help="Directory holding the downloaded clips.")],
    out: _Out,
    pattern: Annotated[
        list[str] | None,
        typer.Option(
            "--pattern",
            help="File-name pattern (repeatable), fields {audiocap_id} {youtube_id} {start_time} "
            "{start_int} {end_int}; default: several common namings.",
        ),
    ] = None,
    split: _Split = None,
    captioner_cmd: _CaptionerCmd = None,
    workers: _Workers = 1,
    seed: _Seed = 0,
    overwrite: _Overwrite = False,
) -> None:
    """Import an AudioCaps CSV (split from the CSV name unless --split)."""
    from ..data.importers import DEFAULT_AUDIOCAPS_PATTERNS, import_audiocaps

    _run_import(
        out,
        overwrite,
        lambda: import_audiocaps(
            csv_path,
            audio_dir,
            captioner=_captioner(captioner_cmd),
            patterns=tuple(pattern) if pattern else DEFAULT_AUDIOCAPS_PATTERNS,
            split=split,
            seed=seed,
            workers=workers,
        ),
    )

@app.command("import-wavcaps")
def import_wavcaps_cmd(
    json_path: Annotated[Path, typer.Argument(help="WavCaps JSON file (one source).")],
    audio_dir: Annotated[Path, typer.Option("--audio-dir", help="Directory holding that source's audio.")],
    out: _Out,
    pattern: Annotated[
        list[str] | None,
        typer.Option("--pattern", help="File-name pattern (repeatable), fields {id} {stem} {file_name} {audio_name}."),
    ] = None,
    source: Annotated[str | None, typer.Option("--source", help="Source name (default: from the file name).")] = None,
    split: _Split = None,
    captioner_cmd: _CaptionerCmd = None,
    workers: _Workers = 1,
    seed: _Seed = 0,
    valid_fraction: _ValidFrac = 0.02,
    test_fraction: _TestFrac = 0.02,
    overwrite: _Overwrite = False,
) -> None:
    """Import a WavCaps JSON (hash split, as WavCaps has none, unless --split)."""
    from ..data.importers import DEFAULT_WAVCAPS_PATTERNS, import_wavcaps

    _run_import(
        out,
        overwrite,
        lambda: import_wavcaps(
            json_path,
            audio_dir,
            captioner=_captioner(captioner_cmd),
            patterns=tuple(pattern) if pattern else DEFAULT_WAVCAPS_PATTERNS,
            source=source,
            split=split,
            seed=seed,
            valid_fraction=valid_fraction,
            test_fraction=test_fraction,
            workers=workers,
        ),
    )

@app.command("import-musicbench")
def import_musicbench_cmd(
    json_path: Annotated[Path, typer.Argument(help="MusicBench JSON (e.g. MusicBench_train.json).")],
    audio_dir: Annotated[Path, typer.Option("--audio-dir", help="Extracted MusicBench archive (holds data/...).")],
    out: _Out,
    split: _Split = None,
    captioner_cmd: _CaptionerCmd = None,
    workers: _Workers = 1,
    seed: _Seed = 0,
    overwrite: _Overwrite = False,
) -> None:
    """Import a MusicBench JSON (split from the file name unless --split)."""
    from ..data.importers import import_musicbench

    _run_import(
        out,
        overwrite,
        lambda: import_musicbench(
            json_path,
            audio_dir,
            captioner=_captioner(captioner_cmd),
            split=split,
            seed=seed,
            workers=workers,
        ),
    )

@app.command("merge")
def merge_cmd(
    manifests: Annotated[list[Path], typer.Argument(help="Manifests (.jsonl) to join, in order.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The joined manifest (.jsonl) to write.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """Join corpora into one manifest (audio paths made absolute; ids must stay unique; splits kept).

    For tools that read one manifest, e.g. the LM comparison over several synthetic corpora.
    """
    _setup_logging()
    from ..data.manifest import read_manifests, summarize, write_manifest

    if any(out.resolve() == m.resolve() for m in manifests):
        fail(f"{out}: is one of the input manifests; write the joined manifest elsewhere")
    errors: tuple[type[BaseException], ...] = (*_expected_errors(), FileExistsError, FileNotFoundError)
    try:
        rows = read_manifests(manifests)
        n = write_manifest(rows, out, overwrite=overwrite, relative_paths=False)
    except errors as e:
        fail(str(e))
    per_split = summarize(rows)["per_split"]
    splits = ", ".join(f"{k} {int(v['rows'])} ({v['hours']:.2f} h)" for k, v in sorted(per_split.items()))
    typer.echo(f"wrote {n} rows from {len(manifests)} manifests to {out}: {splits} (files not checked; see data validate)")


@app.command("validate")
def validate_cmd(
    manifest: Annotated[Path, typer.Argument(help="Manifest (.jsonl) to check.")],
    split: _Split = None,
    quick: Annotated[bool, typer.Option("--quick", help="Read file headers only (no full decode).")] = False,
    workers: _Workers = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Check that every file of a manifest exists and decodes; print counts and hours.

    Exits with status 1 if the manifest is malformed or any file is missing/unreadable.
    """
    _setup_logging()
    from ..data.manifest import check_files, read_manifest, summarize

    try:
        rows = read_manifest(manifest, split)
    except _expected_errors() as e:
        fail(str(e))
    checked, bad, mismatched = check_files(rows, decode=not quick, workers=workers)
    summary = summarize(checked)
    summary["manifest"] = str(manifest)
    summary["bad_files"] = [{"id": i, "audio": a, "error": r} for i, a, r in bad]
    summary["duration_mismatch"] = mismatched
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
    else:
        typer.echo(_format_summary(summary, len(rows)))
    if bad:
        raise typer.Exit(code=1)


def _format_summary(s: dict[str, Any], n_rows: int) -> str:
    lines = [f"manifest: {s['manifest']}", f"rows: {n_rows}, readable: {s['rows']}, total hours: {s['hours']:.3f}"]
    for title, table in (("domain", s["per_domain"]), ("split", s["per_split"])):
        lines.append(f"{title:<10}{'rows':>10}{'hours':>12}")
        for k in sorted(table):
            lines.append(f"{k:<10}{int(table[k]['rows']):>10}{table[k]['hours']:>12.3f}")
    if s["duration_mismatch"]:
        lines.append(f"warning: {s['duration_mismatch']} rows declare a duration differing from the file by > 0.1 s")
    if s["bad_files"]:
        lines.append(f"bad files: {len(s['bad_files'])}")
        for b in s["bad_files"][:20]:
            lines.append(f"  {b['audio']}: {b['error']}")
        if len(s["bad_files"]) > 20:
            lines.append(f"  ... and {len(s['bad_files']) - 20} more")
    else:
        lines.append("all files decode")
    return "\n".join(lines)
