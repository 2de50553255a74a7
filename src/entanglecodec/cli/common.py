"""What every ``entanglecodec`` command shares: the exit-code policy, messages, input checks.

Exit-code policy (every command, documented in the README): ``0`` success; ``1`` the command
ran but failed (bad or unreadable input, unwritable output, some files skipped with
``--skip-errors``...), with one ``error: ...`` line naming the file and the problem; ``2`` the
command line itself is wrong (unknown option, a value out of range: typer's usage errors, or
:func:`fail` with ``code=2``); ``130`` interrupted. Warnings (output peak-limited, truncated file,
very short clip) are one ``warning: ...`` line each and do not change the exit code.

Commands report expected failures through :func:`fail` or by raising ``ValueError``/``OSError``
inside a function wrapped by :func:`user_errors`.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

AUDIO_EXTS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus"}



def fail(msg: str, code: int = 1) -> NoReturn:
    """Print one ``error: msg`` line on stderr and exit with ``code`` (1: the command failed,
    2: the command line is wrong)."""
    console.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


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
        from ..fileio import describe_os_error

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


def check_files(
    files: list[Path], check: Callable[[Path], object], skip_errors: bool, results: dict[int, Any] | None = None
) -> tuple[list[int], int]:
    """Check every input up front; return the indices of the usable ones and the number of bad ones.

    Without ``skip_errors`` any bad file is an error whose one-line message lists every bad file
    found (not only the first); with it each bad file is reported on its own line. ``results``
    (optional) receives ``check``'s return value per usable index, so a caller need not read again.
    """
    good: list[int] = []
    bad: list[str] = []
    for i, f in enumerate(files):
        try:
            value = check(f)
            if results is not None:
                results[i] = value
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


def guidance_value(value: float | None) -> float | None:
    """typer callback: a finite guidance scale in the accepted range (see ``check_sampling``), or
    ``None`` (the checkpoint's default)."""
    from ..codec.sampling import MAX_GUIDANCE

    if value is None:
        return None
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
    from ..fileio import check_writable, is_any_of

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
    from ..codec.model import EntangleCodec

    model = EntangleCodec.from_pretrained(checkpoint, build_text_encoder=text)
    if vocoder:
        model.set_vocoder(vocoder)
    return model


BACKENDS = ("auto", "torch", "onnx")


def backend_value(value: str) -> str:
    """typer callback: one of :data:`BACKENDS` (any case)."""
    v = value.lower()
    if v not in BACKENDS:
        raise typer.BadParameter(f"must be one of {', '.join(BACKENDS)}, got {value!r}")
    return v


ONNX_AUTO_MAX_SECONDS = 120.0
"""Most audio (summed over a command's inputs) ``--backend auto`` gives the compiled runtime: it
starts ~1.5 s sooner than torch but decodes about half as fast on a 2-core CPU (NumPy's single-threaded
FFTs and separate ONNX sessions against torch's fused, threaded ops; ``reports/bench.md``), so past
a couple of minutes of audio torch finishes first."""


def onnx_runtime(
    backend: str, checkpoint: Path | None, vocoder: str | None = None, steps: int = 1, guidance: float | None = None,
    audio_seconds: float = 0.0,
) -> Any:
    """The :class:`~entanglecodec.runtime.OnnxCodec` a command should use, or ``None`` for torch.

    ``auto`` takes the runtime for up to :data:`ONNX_AUTO_MAX_SECONDS` of audio (``audio_seconds``:
    the command's total) whenever it can give what torch gives (one Euler step, the checkpoint's
    own guidance, a neural vocoder), compiling it into the cache on first use, and falls back to
    torch with a warning when it cannot be compiled; ``onnx`` insists (an error names the setting
    it cannot run); ``torch`` never uses it. Nothing here loads torch unless a runtime has to be
    compiled.
    """
    if backend == "torch" or (backend == "auto" and audio_seconds > ONNX_AUTO_MAX_SECONDS):
        return None
    import json

    from ..checkpoint import CONFIG_NAME
    from ..runtime import OnnxCodec, RuntimeFolderError, build_runtime, find_runtime, resolve_pair

    codec_dir, voc_dir = resolve_pair(checkpoint, vocoder)
    compiled = float(json.loads((codec_dir / CONFIG_NAME).read_text()).get("decoder", {}).get("guidance", 1.0))
    why = None
    if steps != 1:
        why = f"{steps} Euler steps (it runs the one-step decoder)"
    elif guidance is not None and float(guidance) != compiled:
        why = f"guidance {guidance:g} (it runs the checkpoint's guidance {compiled:g})"
    elif voc_dir is None:
        why = "this vocoder (it runs a neural vocoder checkpoint, not Griffin-Lim)"
    if why is not None or voc_dir is None:
        if backend == "onnx":
            raise ValueError(f"--backend onnx cannot run {why}; use --backend torch")
        return None
    folder = find_runtime(codec_dir, voc_dir)
    if folder is None:
        console.print("compiling the ONNX runtime of this checkpoint (once; later runs start without torch)")
        try:
            folder = build_runtime(codec_dir, voc_dir)
        except RuntimeFolderError as e:
            if backend == "onnx":
                raise
            warn(f"{e}; running on torch")
            return None
    return OnnxCodec(folder)


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    )


class ClipProgress:
    """A progress bar over clips for writers that report ``on_start(total)`` and ``on_clip(id)``
    (silent when disabled); :meth:`stop` in a ``finally``."""

    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label = label
        self.bar = _progress() if enabled else None
        self.task: int | None = None

    def start(self, total: int) -> None:
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total)

    def step(self, _clip: str) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


CheckpointOpt = typer.Option(None, "--checkpoint", "-c", help="Checkpoint directory (default: the bundled model).")
OverwriteOpt = typer.Option(False, help="Replace existing outputs.")
StepsOpt = typer.Option(1, help="Euler steps of the flow decoder (>= 1).", callback=positive_int)
GuidanceOpt = typer.Option(
    None,
    help="Classifier-free guidance scale in [0, 10] (0 disables; above 3 warns). Default: the checkpoint's "
    "decoder.guidance (the paper's 1 unless the checkpoint says otherwise).",
    callback=guidance_value,
)
SkipErrorsOpt = typer.Option(
    False, "--skip-errors", help="Report bad input files, process the others, exit 1 with the count."
)
VocoderOpt = typer.Option(None, help="'griffin-lim', 'default' or a vocoder directory.")
BackendOpt = typer.Option(
    "auto",
    "--backend",
    help="'auto': the checkpoint's compiled ONNX runtime (no torch: starts fast; built into the cache on first "
    "use) for up to 2 minutes of audio when the settings allow it (one step, the checkpoint's guidance, a neural "
    "vocoder), else torch (faster on long audio); 'torch'; 'onnx' (an error when the settings need torch).",
    callback=backend_value,
)


def weight_dtype(name: str) -> Any:
    """``--dtype`` of the export commands: ``float32`` keeps the weights as they are (``None``);
    ``float16`` / ``bfloat16`` give that ``torch.dtype``. Anything else exits with a one-line error."""
    import torch

    dtypes = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in dtypes:
        fail(f"--dtype: choose float32, float16 or bfloat16, not {name!r}", 2)
    return dtypes[name]
