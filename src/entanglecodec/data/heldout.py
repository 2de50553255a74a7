"""Held-out speakers and packages: the one list that keeps evaluation data out of training.

The real-speech evaluation set (``entanglecodec data real-speech``, :mod:`.realspeech`) is made of
whole speakers and whole packages that the synthetic-corpus generator (``entanglecodec data synth``)
never trains on. Both read this module:

* :data:`DEV_SPEAKERS` / :data:`TEST_SPEAKERS`: recorded speakers (ids as in the generator's
  ``attributes.speaker.id``) reserved for the dev (manifest split ``valid``) and test sets. The
  generator uses neither in ``train``/``valid`` clips; its own ``test`` clips draw their recorded
  speakers from :data:`TEST_SPEAKERS` only.
* :data:`TEST_PACKAGES`: packages whose recordings (real music and sound effects) only the
  evaluation set uses; the generator never reads them.

KDE's KTuberling and KLettres were recorded language by language by volunteers, and we cannot tell
whether the same person spoke both packages' words in one language, so a language held out in one
of them is held out in the other as well (:func:`check_heldout` enforces it).

Users exclude more with a file (``--exclude-speakers FILE``, :func:`read_exclusions`): one entry per
line, ``#`` starts a comment; an entry is a speaker id (``ktuberling:de``, ``flite:slt``) or
``package:NAME`` (everything from that Debian package). A ``.jsonl`` manifest is accepted too: the
speaker ids of its rows (``attributes.speaker.id`` or a top-level ``speaker``) are excluded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

HELDOUT_SETS: tuple[str, ...] = ("dev", "test")
"""Names of the evaluation sets; ``dev`` is written with the manifest split ``valid``."""

SPLIT_OF_SET: dict[str, str] = {"dev": "valid", "test": "test"}
"""Manifest split (see :data:`entanglecodec.data.manifest.SPLITS`) of each evaluation set."""

TEST_SPEAKERS: tuple[str, ...] = (
    "asterisk:june",  # Canadian French, female, exact transcripts
    "asterisk:ivrvoice-ru",  # Russian, female, exact transcripts
    "ktuberling:en",  # English words (exact)
    "klettres:en",  # English letters and syllables (same language as ktuberling:en)
    "klettres:en_GB",
)
DEV_SPEAKERS: tuple[str, ...] = (
    "asterisk:carlo",  # Italian, male, exact transcripts
    "ktuberling:nl",  # Dutch words (exact)
    "klettres:nl",  # Dutch letters and syllables
    "klettres:de",  # German letters and syllables
    "klettres:cs",  # Czech letters and syllables
)
TEST_PACKAGES: tuple[str, ...] = (
    "warzone2100-music",  # real music: test set only
    "openarena-data",  # real sound effects: test set only
)
HELDOUT_SPEAKERS: dict[str, tuple[str, ...]] = {"dev": DEV_SPEAKERS, "test": TEST_SPEAKERS}


class HeldoutError(ValueError):
    """An exclusion list cannot be read, or the held-out lists contradict each other."""


@dataclass(frozen=True)
class Exclusions:
    """Speakers and packages a corpus must not use.

    Attributes:
        speakers: speaker ids (``family:name``) that must not occur.
        packages: Debian packages none of whose files may be used.
    """

    speakers: frozenset[str] = frozenset()
    packages: frozenset[str] = frozenset()

    def __or__(self, other: Exclusions) -> Exclusions:
        return Exclusions(self.speakers | other.speakers, self.packages | other.packages)

    def blocks(self, speaker_id: str | None = None, package: str | None = None) -> bool:
        """Whether a speaker (or a file of ``package``) is excluded."""
        return (speaker_id is not None and speaker_id in self.speakers) or (
            package is not None and package in self.packages
        )

    def as_dict(self) -> dict[str, list[str]]:
        """JSON-ready form (sorted), for ``corpus.json``."""
        return {"speakers": sorted(self.speakers), "packages": sorted(self.packages)}


def heldout_speakers(which: str | None = None) -> tuple[str, ...]:
    """Held-out speaker ids of one set (``dev``/``test``), or of both when ``which`` is ``None``."""
    if which is None:
        return DEV_SPEAKERS + TEST_SPEAKERS
    if which not in HELDOUT_SPEAKERS:
        raise HeldoutError(f"unknown held-out set {which!r} (expected one of {', '.join(HELDOUT_SETS)})")
    return HELDOUT_SPEAKERS[which]


_TWINS = {"ktuberling": "klettres", "klettres": "ktuberling"}


def with_twins(speaker_ids: Iterable[str]) -> frozenset[str]:
    """The ids plus, for a KTuberling/KLettres language, the same language in the other package."""
    out = set(speaker_ids)
    for sid in list(out):
        family, _, lang = sid.partition(":")
        if family in _TWINS:
            out.add(f"{_TWINS[family]}:{lang}")
    return frozenset(out)


def training_exclusions(extra: Exclusions | None = None) -> Exclusions:
    """What ``train``/``valid`` clips of a generated corpus must not use.

    Both held-out sets (with their KDE twins, see :func:`with_twins`), the test-only packages and
    ``extra`` (a user's list).
    """
    base = Exclusions(with_twins(heldout_speakers()), frozenset(TEST_PACKAGES))
    return base | extra if extra is not None else base


def check_heldout() -> None:
    """Check that dev and test share no speaker and that the KDE word packages are held out per language.

    Raises:
        HeldoutError: naming the offending speaker.
    """
    both = set(DEV_SPEAKERS) & set(TEST_SPEAKERS)
    if both:
        raise HeldoutError(f"speakers held out for both dev and test: {', '.join(sorted(both))}")
    for which, ids in HELDOUT_SPEAKERS.items():
        for sid in ids:
            for other in with_twins([sid]) - {sid}:
                for other_set, other_ids in HELDOUT_SPEAKERS.items():
                    if other_set != which and other in other_ids:
                        raise HeldoutError(f"{sid} is held out for {which} but {other} (maybe the same person) for {other_set}")


def _manifest_speakers(path: Path) -> set[str]:
    from .manifest import iter_manifest_lines

    out: set[str] = set()
    for where, _, row in iter_manifest_lines(path, error=HeldoutError):
        if not isinstance(row, dict):
            raise HeldoutError(f"{where}: expected a JSON object in the exclusion manifest")
        attrs = row.get("attributes")
        speaker = attrs.get("speaker") if isinstance(attrs, dict) else None
        sid = speaker.get("id") if isinstance(speaker, dict) else row.get("speaker")
        if isinstance(sid, str) and sid:
            out.add(sid)
    return out


def read_exclusions(path: str | Path, known_speakers: Iterable[str] | None = None) -> Exclusions:
    """Read a user exclusion list (text file or ``.jsonl`` manifest; see the module docstring).

    Args:
        path: the file.
        known_speakers: when given, a text-file entry naming none of these speakers is an error
            (it is probably a typo); manifests may name speakers the caller does not know.

    Raises:
        HeldoutError: missing/unreadable file, a malformed entry or an unknown speaker id.
    """
    p = Path(path)
    if not p.is_file():
        raise HeldoutError(f"exclusion list {p} does not exist or is not a file")
    if p.suffix == ".jsonl":
        return Exclusions(speakers=frozenset(_manifest_speakers(p)))
    known = set(known_speakers) if known_speakers is not None else None
    speakers: set[str] = set()
    packages: set[str] = set()
    for lineno, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        if entry.startswith("package:"):
            name = entry.split(":", 1)[1].strip()
            if not name:
                raise HeldoutError(f"{p}:{lineno}: empty package name in {entry!r}")
            packages.add(name)
            continue
        if ":" not in entry or " " in entry:
            raise HeldoutError(
                f"{p}:{lineno}: {entry!r} is not a speaker id like 'ktuberling:de' or an entry 'package:NAME'"
            )
        if known is not None and entry not in known:
            raise HeldoutError(f"{p}:{lineno}: unknown speaker {entry!r} (known ids look like {', '.join(sorted(known)[:4])}, ...)")
        speakers.add(entry)
    return Exclusions(frozenset(speakers), frozenset(packages))
