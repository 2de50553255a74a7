"""Safe output files: atomic writes, early writability checks and input/output identity.

Every file the package writes for a user (token files, audio, checkpoint files) goes through
:func:`atomic_write_bytes` / :func:`atomic_write`: the content is written to a temporary file in
the target's own directory, flushed, and renamed over the target. A failure at any point (disk
full, permission denied, read-only file system, interrupted write) removes the temporary file and
leaves the previous target, if any, untouched: no truncated output is ever left behind.
OS errors are turned into :class:`OutputError`, a one-line message naming the path and the reason.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "OutputError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable",
    "describe_os_error",
    "same_file",
]


class OutputError(ValueError):
    """An output cannot be written (its message names the path and the reason)."""


def describe_os_error(exc: BaseException) -> str:
    """A short human reason for an OS error (``'no space left on device'``, ...)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    text = str(exc).strip()
    return text or type(exc).__name__


def _fail(path: Path, exc: BaseException, what: str = "cannot write") -> OutputError:
    return OutputError(f"{path}: {what} ({describe_os_error(exc)})")


def check_writable(path: str | Path, create_parent: bool = True) -> None:
    """Fail early (before any long computation) if ``path`` cannot be written.

    Creates the parent directory when ``create_parent`` (a missing parent is otherwise an error),
    then creates and removes a temporary file next to ``path``: this catches read-only file
    systems, missing permissions and paths whose parent is a file.

    Raises:
        OutputError: the path cannot be written; the message names it and the reason.
    """
    p = Path(path)
    parent = p.parent
    if p.is_dir():
        raise OutputError(f"{p}: is a directory, cannot write a file there")
    try:
        if create_parent:
            parent.mkdir(parents=True, exist_ok=True)
        elif not parent.is_dir():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(parent))
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".check", dir=parent)
    except OSError as e:
        raise _fail(p, e) from e
    os.close(fd)
    os.unlink(tmp)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file, which is then renamed.

    The temporary file lives in the target's directory and keeps its suffix (so writers that
    choose a format from the extension still work). If ``write`` or the rename fails, the
    temporary file is removed and the target is left as it was.

    Raises:
        OutputError: an OS-level failure (the message names ``path`` and the reason); other
            exceptions raised by ``write`` propagate unchanged (after the clean-up).
    """
    p = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=f".tmp{p.suffix}", dir=p.parent)
    except OSError as e:
        raise _fail(p, e) from e
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        _fsync(tmp)
        # keep the usual permissions of a new file (mkstemp creates 0600)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, p)
    except OSError as e:
        _remove(tmp)
        raise _fail(p, e) from e
    except BaseException:
        _remove(tmp)
        raise
    return p


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data`` (see :func:`atomic_write`)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically replace ``path`` with UTF-8 ``text`` (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def replace_dir(src: str | Path, dst: str | Path) -> Path:
    """Move the finished directory ``src`` to ``dst`` on the same file system; an existing ``dst``
    (a cache entry the library owns, never a user's output) is moved aside first and then deleted,
    so a reader sees the old folder or the new one, never a half-written one."""
    src, dst = Path(src), Path(dst)
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dst


def same_file(a: str | Path, b: str | Path) -> bool:
    """True if ``a`` and ``b`` name the same file: same path, symlink or hard link (same inode)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare resolved paths
        return Path(a).resolve() == Path(b).resolve()


def is_any_of(path: str | Path, others: Iterable[str | Path]) -> bool:
    """True if ``path`` is the same file as any of ``others`` (see :func:`same_file`)."""
    return any(same_file(path, o) for o in others)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def prepare_output_dir(out: Path, overwrite: bool, owned: tuple[str, ...], what: str) -> str | None:
    """Make ``out`` ready for a generated data set; returns an error message instead of raising.

    A non-empty ``out`` is refused unless ``overwrite``; then only the entries this writer owns
    (``owned``: file or folder names directly under ``out``) are removed, nothing else of the user's.
    ``what`` names the set in the message (``"corpus"``, ``"set"``).
    """
    if out.exists() and not out.is_dir():
        return f"output path {out} exists and is not a directory"
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            return f"output directory {out} is not empty; pass --overwrite to replace its {what}"
        for name in owned:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return None
