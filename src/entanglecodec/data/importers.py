"""Importers that turn the real corpora of the paper's Table 7 into manifests.

Supported layouts (each function documents its own):

* :func:`import_librispeech` -- ``SUBSET/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac`` with
  ``SPEAKER-CHAPTER.trans.txt`` transcripts and ``SPEAKERS.TXT`` (gender).
* :func:`import_libritts` -- ``SUBSET/SPEAKER/CHAPTER/SPK_CHAP_X_Y.wav`` with
  ``.normalized.txt`` (or ``SPK_CHAP.trans.tsv``) transcripts and ``speakers.tsv`` (gender).
* :func:`import_audiocaps` -- the AudioCaps CSV (``audiocap_id,youtube_id,start_time,caption``) plus
  a directory of downloaded clips found through file-name patterns.
* :func:`import_wavcaps` -- a WavCaps JSON (``{"data": [...]}`` or a plain list) plus its audio.
* :func:`import_musicbench` -- a MusicBench JSON / JSON-lines file (``location``, ``main_caption``,
  ``bpm``, ``key``, ...) plus the extracted archive.

Every row gets a rich ``caption`` from a captioner: by default the template captioner of
:mod:`entanglecodec.data.captions` for LibriSpeech/LibriTTS (speaker gender, language, read style,
transcript) and the dataset's own caption (:class:`DatasetCaptioner`) for AudioCaps, WavCaps and
MusicBench; any object with ``caption(row) -> str`` can replace it, e.g. a ``CommandCaptioner``
running an external audio-captioning program. Each row also gets an ``asr_caption``, the
transcript as ``text`` (speech), ``attributes`` with whatever the dataset states (dataset name,
speaker id, gender, original captions, tempo, key, ...), and a ``split``: the dataset's own split
when it has one, else a seeded hash split. Audio files that are missing or unreadable are reported
(logged, listed in :class:`ImportResult`) and skipped.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .dataset import stable_hash
from .manifest import SPLITS, check_audio_file, write_manifest

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS: tuple[str, ...] = (".flac", ".wav", ".mp3", ".ogg", ".opus", ".m4a")
"""Extensions tried when a dataset names a clip without one."""

DEFAULT_AUDIOCAPS_PATTERNS: tuple[str, ...] = (
    "{audiocap_id}.wav",
    "{audiocap_id}.flac",
    "{youtube_id}_{start_int}.wav",
    "{youtube_id}_{start_int}.flac",
    "{youtube_id}_{start_time}.wav",
    "{youtube_id}_{start_time}.flac",
    "Y{youtube_id}.wav",
    "Y{youtube_id}.flac",
    "{youtube_id}.wav",
    "{youtube_id}.flac",
)
"""File names tried for an AudioCaps clip (fields: ``audiocap_id``, ``youtube_id``, ``start_time``
as written in the CSV, ``start_int``, ``end_int`` = start + 10). The first existing file wins; a
pattern may contain sub-directories, and a bare file name is also looked up anywhere below the
audio directory."""

DEFAULT_WAVCAPS_PATTERNS: tuple[str, ...] = (
    "{id}",
    "{stem}.flac",
    "{stem}.wav",
    "{stem}.mp3",
    "{stem}.ogg",
    "{file_name}",
    "{audio_name}",
)
"""File names tried for a WavCaps clip (fields: ``id``, ``stem`` = id without extension,
``file_name`` and ``audio_name`` = base name of the item's ``audio`` field, when present)."""

_SUBSET_RE = re.compile(r"^(train|dev|test)-(clean|other)(-\d+)?$")
_SUBSET_SPLIT = {"train": "train", "dev": "valid", "test": "test"}
_SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "val": "valid",
    "valid": "valid",
    "validation": "valid",
    "dev": "valid",
    "eval": "test",
    "evaluation": "test",
    "test": "test",
}


class DatasetImportError(ValueError):
    """A dataset's metadata cannot be parsed (the message names the file and line or item)."""


class Captioner(Protocol):
    """Anything that turns a row (``audio``, ``domain``, ``text``, ``attributes``) into a caption."""

    def caption(self, row: dict[str, Any]) -> str: ...


@dataclass
class ImportResult:
    """What an importer found.

    Attributes:
        dataset: dataset name (``librispeech``, ``libritts``, ``audiocaps``, ``wavcaps``, ``musicbench``).
        rows: manifest rows (absolute ``audio`` paths) for the clips that were found and captioned.
        missing: audio paths (or descriptions of looked-up clips) the metadata lists but that do
            not exist.
        unreadable: ``(path, reason)`` for files that exist but cannot be decoded or are empty.
        caption_failed: ``(path, reason)`` for clips the captioner failed on (or returned nothing).
    """

    dataset: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    caption_failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        """Clips listed by the metadata but left out of ``rows``."""
        return len(self.missing) + len(self.unreadable) + len(self.caption_failed)

    def summary(self) -> str:
        """One-line human summary with the counts per split."""
        per: dict[str, int] = {}
        for r in self.rows:
            per[r["split"]] = per.get(r["split"], 0) + 1
        splits = ", ".join(f"{k}={per[k]}" for k in SPLITS if k in per) or "none"
        hours = sum(r.get("duration") or 0.0 for r in self.rows) / 3600.0
        return (
            f"{self.dataset}: {len(self.rows)} clips ({splits}; {hours:.2f} h); skipped "
            f"{len(self.missing)} missing, {len(self.unreadable)} unreadable, "
            f"{len(self.caption_failed)} caption failures"
        )

    def write(self, path: str | Path, overwrite: bool = False) -> int:
        """Write :attr:`rows` as a manifest (paths relative to it when under its directory)."""
        if not self.rows:
            raise DatasetImportError(f"{self.dataset}: no clips to write ({self.summary()})")
        return write_manifest(self.rows, path, overwrite=overwrite)


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------
def hash_split(key: str, seed: int = 0, valid_fraction: float = 0.02, test_fraction: float = 0.02) -> str:
    """Deterministic split for a grouping key (e.g. a speaker or clip id).

    The same key always lands in the same split for a given seed, so all clips of a speaker stay
    together. Fractions are of keys, not of hours.
    """
    if not (0 <= valid_fraction and 0 <= test_fraction and valid_fraction + test_fraction < 1):
        raise ValueError(f"bad split fractions valid={valid_fraction}, test={test_fraction}")
    u = stable_hash(f"{seed}:{key}") / float(1 << 63)
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


def split_from_name(name: str) -> str | None:
    """Guess a split from a file name such as ``train.csv``, ``val.csv`` or ``MusicBench_test_A.json``."""
    for word in re.split(r"[^a-z]+", Path(name).stem.lower()):
        if word in _SPLIT_WORDS:
            return _SPLIT_WORDS[word]
    return None


def default_captioner(captioner_cmd: str | None = None) -> Captioner:
    """The template captioner, or an external-command captioner when ``captioner_cmd`` is given.

    ``captioner_cmd`` is a command line with an ``{audio}`` placeholder, e.g.
    ``"my-audio-llm --describe {audio}"``; it must print the caption on stdout.
    """
    from . import captions

    if captioner_cmd:
        return captions.CommandCaptioner(captioner_cmd)  # type: ignore[no-any-return]
    return captions.TemplateCaptioner()  # type: ignore[no-any-return]


class DatasetCaptioner:
    """Use the caption the dataset ships (``attributes["original_caption"]``), else ``fallback``.

    The default for AudioCaps, WavCaps and MusicBench: their human / LLM-written captions describe
    the audio better than a template can from their sparse metadata (and a template would have to
    guess what is absent, e.g. speech in an AudioCaps scene).
    """

    def __init__(self, fallback: Captioner | None = None) -> None:
        self.fallback = fallback

    def caption(self, row: dict[str, Any]) -> str:
        original = (row.get("attributes") or {}).get("original_caption")
        if isinstance(original, str) and original.strip():
            return " ".join(original.split())
        if self.fallback is None:
            self.fallback = default_captioner()
        return self.fallback.caption(row)


def default_asr_caption() -> Callable[[dict[str, Any]], str]:
    """The ``asr_caption(row)`` function of :mod:`entanglecodec.data.captions`."""
    from . import captions

    return captions.asr_caption  # type: ignore[no-any-return]


def _contains_text(caption: str, text: str) -> bool:
    def norm(s: str) -> str:
        return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())

    return norm(text) in norm(caption)


def _finish(
    dataset: str,
    candidates: Iterable[dict[str, Any]],
    captioner: Captioner | None,
    asr: Callable[[dict[str, Any]], str] | None,
    workers: int = 1,
    append_transcript: bool = True,
    missing: Sequence[str] = (),
    dataset_captions: bool = False,
) -> ImportResult:
    """Check audio, caption and assemble rows for a list of candidate rows.

    A candidate has ``id``, ``audio`` (absolute path), ``domain``, ``split``, ``text`` and
    ``attributes``. With ``append_transcript`` a speech clip's transcript is appended to its
    caption when the caption does not already contain it (the paper does this for LibriSpeech and
    LibriTTS, App. C.2). Without a ``captioner``, rows are captioned by the template captioner, or
    with ``dataset_captions`` by :class:`DatasetCaptioner`.
    """
    if captioner is not None:
        cap = captioner
    else:
        cap = DatasetCaptioner() if dataset_captions else default_captioner()
    asr_fn = asr if asr is not None else default_asr_caption()
    result = ImportResult(dataset=dataset, missing=list(missing))
    cands = list(candidates)

    def work(c: dict[str, Any]) -> tuple[str, dict[str, Any] | None, str | None]:
        if not os.path.isfile(c["audio"]):
            return "missing", None, None
        dur, reason = check_audio_file(c["audio"], decode=False)
        if reason is not None:
            return "unreadable", None, reason
        row = {
            "id": c["id"],
            "audio": c["audio"],
            "domain": c["domain"],
            "split": c["split"],
            "duration": round(float(dur or 0.0), 6),
            "text": c.get("text", ""),
            "attributes": c.get("attributes", {}),
        }
        try:
            caption = str(cap.caption(dict(row))).strip()
            asr_text = str(asr_fn(dict(row))).strip()
        except Exception as e:  # an external captioner can fail in any way; report and skip
            return "caption", None, f"{type(e).__name__}: {e}"
        if not caption:
            return "caption", None, "captioner returned an empty caption"
        text = row["text"]
        if append_transcript and text and not _contains_text(caption, text):
            caption = f'{caption.rstrip()} Transcript: "{text}"'
        row["caption"] = caption
        row["asr_caption"] = asr_text
        return "ok", row, None

    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(work, cands))
    else:
        outcomes = [work(c) for c in cands]
    for c, (status, row, reason) in zip(cands, outcomes, strict=True):
        if status == "ok":
            assert row is not None
            result.rows.append(row)
        elif status == "missing":
            result.missing.append(c["audio"])
        elif status == "unreadable":
            result.unreadable.append((c["audio"], reason or ""))
        else:
            result.caption_failed.append((c["audio"], reason or ""))
    for what, items in (
        ("missing audio file", [(m, "") for m in result.missing]),
        ("unreadable audio file", result.unreadable),
        ("captioner failure", result.caption_failed),
    ):
        for path, why in items[:10]:
            logger.warning("%s: %s%s", what, path, f" ({why})" if why else "")
        if len(items) > 10:
            logger.warning("... and %d more of type: %s", len(items) - 10, what)
    logger.info("%s", result.summary())
    return result


def _find_upwards(start: Path, names: Sequence[str], levels: int = 3) -> Path | None:
    d = start
    for _ in range(levels + 1):
        for n in names:
            if (d / n).is_file():
                return d / n
        if d.parent == d:
            break
        d = d.parent
    return None


def _gender(code: str) -> str | None:
    c = code.strip().upper()
    return {"M": "male", "F": "female"}.get(c)


def _subset_of(path: Path, root: Path) -> str | None:
    for part in [*reversed(path.relative_to(root).parts), root.name]:
        if _SUBSET_RE.match(part):
            return part
    return None


def _split_for_subset(subset: str | None, speaker: str, seed: int, valid_fraction: float, test_fraction: float) -> str:
    if subset is not None:
        return _SUBSET_SPLIT[subset.split("-", 1)[0]]
    return hash_split(speaker, seed, valid_fraction, test_fraction)


def _check_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: {what} not found")
    if not p.is_dir():
        raise NotADirectoryError(f"{p}: {what} must be a directory")
    return p.resolve()


def _check_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: {what} not found")
    return p.resolve()


# ---------------------------------------------------------------------------------------------
# LibriSpeech / LibriTTS
# ---------------------------------------------------------------------------------------------
def _read_speech_row(
    dataset: str,
    utt: str,
    audio: Path,
    speaker: str,
    chapter: str,
    subset: str | None,
    speakers: Mapping[str, Mapping[str, str]],
    text: str,
    split: str,
) -> dict[str, Any]:
    """The candidate row of one utterance of a read-speech corpus (LibriSpeech, LibriTTS)."""
    attrs: dict[str, Any] = {
        "dataset": dataset,
        "speaker": {"id": speaker, "language": "en", "kind": "recorded", "style": "read"},
        "chapter_id": chapter,
    }
    if subset:
        attrs["subset"] = subset
    if "gender" in speakers.get(speaker, {}):
        attrs["speaker"]["gender"] = speakers[speaker]["gender"]
    return {"id": f"{dataset}/{utt}", "audio": str(audio), "domain": "speech", "split": split, "text": text,
            "attributes": attrs}


def read_librispeech_speakers(path: str | Path) -> dict[str, dict[str, str]]:
    """Parse LibriSpeech ``SPEAKERS.TXT`` (``ID | SEX | SUBSET | MINUTES | NAME``, ``;`` comments)."""
    out: dict[str, dict[str, str]] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 3:
            raise DatasetImportError(f"{path}:{lineno}: expected 'ID | SEX | SUBSET | MINUTES | NAME', got {line!r}")
        entry = {"subset": parts[2]}
        g = _gender(parts[1])
        if g:
            entry["gender"] = g
        out[parts[0]] = entry
    return out


def read_libritts_speakers(path: str | Path) -> dict[str, dict[str, str]]:
    """Parse LibriTTS ``speakers.tsv`` (``READER<TAB>GENDER<TAB>SUBSET<TAB>NAME`` with a header)."""
    out: dict[str, dict[str, str]] = {}
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or (lineno == 1 and line.upper().startswith("READER")):
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) < 2:
            raise DatasetImportError(f"{path}:{lineno}: expected 'READER<TAB>GENDER<TAB>SUBSET<TAB>NAME', got {line!r}")
        entry = {"subset": parts[2]} if len(parts) > 2 else {}
        g = _gender(parts[1])
        if g:
            entry["gender"] = g
        out[parts[0]] = entry
    return out


def import_librispeech(
    root: str | Path,
    captioner: Captioner | None = None,
    asr: Callable[[dict[str, Any]], str] | None = None,
    seed: int = 0,
    valid_fraction: float = 0.02,
    test_fraction: float = 0.02,
    workers: int = 1,
    append_transcript: bool = True,
    speakers_file: str | Path | None = None,
) -> ImportResult:
    """Import a LibriSpeech tree (the ``LibriSpeech`` directory, or one subset inside it).

    Transcripts come from every ``*.trans.txt`` below ``root`` (lines ``UTT-ID TRANSCRIPT``; the
    audio is ``UTT-ID.flac``, or ``.wav``, next to it). Gender comes from ``SPEAKERS.TXT`` found in
    ``root`` or up to three levels above it (or ``speakers_file``). The split is the subset's:
    ``train-*`` -> train, ``dev-*`` -> valid, ``test-*`` -> test; clips under no recognisable subset
    directory get a seeded hash split by speaker (all of a speaker's clips in one split).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        DatasetImportError: no transcript file, or a malformed transcript/speaker line.
    """
    base = _check_dir(root, "LibriSpeech root")
    spk_path = Path(speakers_file) if speakers_file else _find_upwards(base, ["SPEAKERS.TXT", "SPEAKERS.txt"])
    speakers = read_librispeech_speakers(spk_path) if spk_path else {}
    if spk_path is None:
        logger.warning("%s: no SPEAKERS.TXT found; speaker gender will be unknown", base)
    trans_files = sorted(base.rglob("*.trans.txt"))
    if not trans_files:
        raise DatasetImportError(f"{base}: no *.trans.txt transcript files found (is this a LibriSpeech directory?)")
    cands: list[dict[str, Any]] = []
    for tf in trans_files:
        subset = _subset_of(tf.parent, base)
        for lineno, line in enumerate(tf.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt, _, text = line.strip().partition(" ")
            ids = utt.split("-")
            if len(ids) != 3 or not text.strip():
                raise DatasetImportError(f"{tf}:{lineno}: expected 'SPEAKER-CHAPTER-UTTERANCE TRANSCRIPT', got {line!r}")
            speaker, chapter = ids[0], ids[1]
            audio = tf.parent / f"{utt}.flac"
            if not audio.exists() and (tf.parent / f"{utt}.wav").exists():
                audio = tf.parent / f"{utt}.wav"
            split = _split_for_subset(subset, speaker, seed, valid_fraction, test_fraction)
            cands.append(_read_speech_row("librispeech", utt, audio, speaker, chapter, subset, speakers, text.strip(), split))
    return _finish("librispeech", cands, captioner, asr, workers, append_transcript)


def import_libritts(
    root: str | Path,
    captioner: Captioner | None = None,
    asr: Callable[[dict[str, Any]], str] | None = None,
    seed: int = 0,
    valid_fraction: float = 0.02,
    test_fraction: float = 0.02,
    workers: int = 1,
    append_transcript: bool = True,
    speakers_file: str | Path | None = None,
) -> ImportResult:
    """Import a LibriTTS (or LibriTTS-R) tree.

    Utterances are found from their transcripts: ``UTT.normalized.txt`` next to ``UTT.wav``, and
    the rows of each chapter's ``SPK_CHAP.trans.tsv`` (``UTT<TAB>original<TAB>normalized``) for
    utterances without a ``.normalized.txt``. Gender comes from ``speakers.tsv`` (or a LibriSpeech
    style ``SPEAKERS.TXT``) in ``root`` or up to three levels above it. Splits as for
    :func:`import_librispeech`.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        DatasetImportError: no transcript found, or a malformed transcript/speaker line.
    """
    base = _check_dir(root, "LibriTTS root")
    if speakers_file:
        spk_path: Path | None = Path(speakers_file)
    else:
        spk_path = _find_upwards(base, ["speakers.tsv", "SPEAKERS.tsv"]) or _find_upwards(base, ["SPEAKERS.TXT", "SPEAKERS.txt"])
    speakers: dict[str, dict[str, str]] = {}
    if spk_path is not None:
        speakers = read_libritts_speakers(spk_path) if spk_path.suffix == ".tsv" else read_librispeech_speakers(spk_path)
    else:
        logger.warning("%s: no speakers.tsv found; speaker gender will be unknown", base)
    texts: dict[Path, str] = {}
    for nf in sorted(base.rglob("*.normalized.txt")):
        text = nf.read_text(encoding="utf-8").strip()
        if text:
            texts[nf.parent / (nf.name[: -len(".normalized.txt")] + ".wav")] = text
    for tsv in sorted(base.rglob("*.trans.tsv")):
        for lineno, line in enumerate(tsv.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise DatasetImportError(f"{tsv}:{lineno}: expected 'UTT<TAB>original<TAB>normalized', got {line!r}")
            wav = tsv.parent / f"{parts[0].strip()}.wav"
            texts.setdefault(wav, parts[-1].strip())
    if not texts:
        raise DatasetImportError(f"{base}: no *.normalized.txt or *.trans.tsv transcripts found (is this LibriTTS?)")
    cands: list[dict[str, Any]] = []
    for wav, text in sorted(texts.items()):
        utt = wav.stem
        ids = utt.split("_")
        if len(ids) < 2:
            raise DatasetImportError(f"{wav}: utterance id {utt!r} is not SPEAKER_CHAPTER_...")
        speaker, chapter = ids[0], ids[1]
        subset = _subset_of(wav.parent, base)
        split = _split_for_subset(subset, speaker, seed, valid_fraction, test_fraction)
        cands.append(_read_speech_row("libritts", utt, wav, speaker, chapter, subset, speakers, text, split))
    return _finish("libritts", cands, captioner, asr, workers, append_transcript)


# ---------------------------------------------------------------------------------------------
# Caption datasets
# ---------------------------------------------------------------------------------------------
class _AudioLocator:
    """Finds a clip's file from name patterns: an exact relative path first, then by base name."""

    def __init__(self, audio_dir: Path) -> None:
        self.audio_dir = audio_dir
        self._by_name: dict[str, str] | None = None

    def _names(self) -> dict[str, str]:
        if self._by_name is None:
            names: dict[str, str] = {}
            for dirpath, _, files in os.walk(self.audio_dir):
                for f in files:
                    names.setdefault(f, os.path.join(dirpath, f))
            self._by_name = names
        return self._by_name

    def find(self, patterns: Sequence[str], fields: Mapping[str, Any]) -> str | None:
        for pat in patterns:
            try:
                name = pat.format(**fields)
            except (KeyError, IndexError, ValueError):
                continue
            if not name or name.endswith("/"):
                continue
            p = self.audio_dir / name
            if p.is_file():
                return str(p)
            hit = self._names().get(Path(name).name)
            if hit is not None:
                return hit
        return None


def _split_or(explicit: str | None, from_file: str | None) -> str | None:
    if explicit is not None:
        if explicit not in SPLITS:
            raise ValueError(f"unknown split {explicit!r} (expected one of {', '.join(SPLITS)})")
        return explicit
    return from_file


def import_audiocaps(
    csv_path: str | Path,
    audio_dir: str | Path,
    captioner: Captioner | None = None,
    asr: Callable[[dict[str, Any]], str] | None = None,
    patterns: Sequence[str] = DEFAULT_AUDIOCAPS_PATTERNS,
    split: str | None = None,
    seed: int = 0,
    valid_fraction: float = 0.02,
    test_fraction: float = 0.02,
    workers: int = 1,
) -> ImportResult:
    """Import an AudioCaps CSV (``audiocap_id,youtube_id,start_time,caption``).

    Rows of the same clip (same ``youtube_id`` and ``start_time``; the AudioCaps val/test sets give
    five captions per clip) become one manifest row whose attributes keep all captions
    (``original_captions``) and the first one as ``original_caption`` (the paper conditions on the
    first caption). The clip's file is found with ``patterns`` (see
    :data:`DEFAULT_AUDIOCAPS_PATTERNS`). The split is ``split`` if given, else the one the CSV
    name states (``train.csv`` / ``val.csv`` / ``test.csv``), else a seeded hash split by clip.

    Raises:
        FileNotFoundError: the CSV or the audio directory does not exist.
        DatasetImportError: missing columns or a malformed row (named by line number).
    """
    csv_file = _check_file(csv_path, "AudioCaps CSV")
    adir = _check_dir(audio_dir, "audio directory")
    file_split = _split_or(split, split_from_name(csv_file.name))
    clips: dict[tuple[str, str], dict[str, Any]] = {}
    with csv_file.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"youtube_id", "start_time", "caption"}
        if reader.fieldnames is None or not need <= {c.strip() for c in reader.fieldnames}:
            raise DatasetImportError(f"{csv_file}: expected columns audiocap_id,youtube_id,start_time,caption; got {reader.fieldnames}")
        for rec in reader:
            lineno = reader.line_num
            rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items()}
            ytid, start, cap = rec["youtube_id"], rec["start_time"], rec["caption"]
            try:
                start_f = float(start)
            except ValueError:
                raise DatasetImportError(f"{csv_file}:{lineno}: start_time {start!r} is not a number") from None
            if not ytid:
                raise DatasetImportError(f"{csv_file}:{lineno}: empty youtube_id")
            clip = clips.setdefault(
                (ytid, start),
                {"youtube_id": ytid, "start_time": start, "start_f": start_f, "captions": [], "audiocap_ids": []},
            )
            if cap:
                clip["captions"].append(cap)
            if rec.get("audiocap_id"):
                clip["audiocap_ids"].append(rec["audiocap_id"])
    loc = _AudioLocator(adir)
    cands: list[dict[str, Any]] = []
    missing: list[str] = []
    for (ytid, start), clip in clips.items():
        start_int = int(clip["start_f"])
        found = None
        for acid in clip["audiocap_ids"] or [""]:
            fields = {
                "audiocap_id": acid,
                "youtube_id": ytid,
                "start_time": start,
                "start_int": start_int,
                "end_int": start_int + 10,
            }
            found = loc.find(patterns, fields)
            if found:
                break
        clip_id = f"{ytid}_{start_int}"
        if found is None:
            missing.append(f"AudioCaps clip {clip_id}: no file in {adir} matching the name patterns")
            continue
        attrs: dict[str, Any] = {
            "dataset": "audiocaps",
            "youtube_id": ytid,
            "start_time": clip["start_f"],
            "audiocap_ids": clip["audiocap_ids"],
        }
        if clip["captions"]:
            attrs["original_caption"] = clip["captions"][0]
            attrs["original_captions"] = clip["captions"]
        cands.append(
            {
                "id": f"audiocaps/{clip_id}",
                "audio": found,
                "domain": "sound",
                "split": file_split or hash_split(clip_id, seed, valid_fraction, test_fraction),
                "text": "",
                "attributes": attrs,
            }
        )
    return _finish(
        "audiocaps", cands, captioner, asr, workers, append_transcript=False, missing=missing, dataset_captions=True
    )


def _load_json_items(path: Path) -> tuple[list[Any], dict[str, Any]]:
    """Items of a JSON array, a ``{"data": [...]}`` object, or a JSON-lines file."""
    text = path.read_text(encoding="utf-8")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as first:
        items = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as e:
                if lineno == 1:
                    raise DatasetImportError(f"{path}: invalid JSON ({first.msg} at line {first.lineno})") from None
                raise DatasetImportError(f"{path}:{lineno}: invalid JSON line ({e.msg})") from None
        return items, {}
    if isinstance(obj, list):
        return obj, {}
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        return obj["data"], {k: v for k, v in obj.items() if k != "data"}
    if isinstance(obj, dict):  # a single JSON-lines record
        return [obj], {}
    raise DatasetImportError(f"{path}: expected a JSON list, an object with a 'data' list, or JSON lines")


_WAVCAPS_SOURCES = {
    "fsd": "FreeSound",
    "freesound": "FreeSound",
    "sb": "SoundBible",
    "soundbible": "SoundBible",
    "bbc": "BBC_Sound_Effects",
    "as": "AudioSet_SL",
    "audioset": "AudioSet_SL",
}


def _wavcaps_source(path: Path) -> str:
    for word in re.split(r"[^a-z]+", path.stem.lower()):
        if word in _WAVCAPS_SOURCES:
            return _WAVCAPS_SOURCES[word]
    return path.stem


def import_wavcaps(
    json_path: str | Path,
    audio_dir: str | Path,
    captioner: Captioner | None = None,
    asr: Callable[[dict[str, Any]], str] | None = None,
    patterns: Sequence[str] = DEFAULT_WAVCAPS_PATTERNS,
    source: str | None = None,
    split: str | None = None,
    seed: int = 0,
    valid_fraction: float = 0.02,
    test_fraction: float = 0.02,
    workers: int = 1,
) -> ImportResult:
    """Import a WavCaps JSON file (one of its sources: FreeSound, BBC, SoundBible, AudioSet_SL).

    Accepts the released ``{"num_captions_per_audio": 1, "data": [...]}`` layout and plain lists.
    Each item needs an ``id`` and a ``caption`` (or ``caption_1..N``); other fields (``title``,
    ``description``, ``tags``, ``category``, ``author``, ``href``) are kept in ``attributes``. The
    file is found with ``patterns`` (see :data:`DEFAULT_WAVCAPS_PATTERNS`). WavCaps has no split:
    ``split`` if given, else a seeded hash split by clip id.

    Raises:
        FileNotFoundError: the JSON or the audio directory does not exist.
        DatasetImportError: invalid JSON, or an item without ``id``/caption (named by index).
    """
    jf = _check_file(json_path, "WavCaps JSON")
    adir = _check_dir(audio_dir, "audio directory")
    split = _split_or(split, None)
    items, header = _load_json_items(jf)
    src = source or _wavcaps_source(jf)
    n_caps = int(header.get("num_captions_per_audio", 1) or 1)
    loc = _AudioLocator(adir)
    cands: list[dict[str, Any]] = []
    missing: list[str] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item:
            raise DatasetImportError(f"{jf}: item {i} has no 'id'")
        cid = str(item["id"])
        caps = [str(item["caption"])] if item.get("caption") else []
        caps += [str(item[f"caption_{k}"]) for k in range(1, max(n_caps, 5) + 1) if item.get(f"caption_{k}")]
        if not caps:
            raise DatasetImportError(f"{jf}: item {i} (id {cid!r}) has no caption")
        stem = cid.rsplit(".", 1)[0] if Path(cid).suffix.lower() in AUDIO_EXTENSIONS else cid
        if stem in seen:
            continue
        seen.add(stem)
        fields = {
            "id": cid,
            "stem": stem,
            "file_name": item.get("file_name", ""),
            "audio_name": Path(str(item["audio"])).name if item.get("audio") else "",
        }
        found = loc.find(patterns, fields)
        if found is None:
            missing.append(f"WavCaps clip {cid!r}: no file in {adir} matching the name patterns")
            continue
        attrs: dict[str, Any] = {"dataset": "wavcaps", "source": src, "original_caption": caps[0]}
        if len(caps) > 1:
            attrs["original_captions"] = caps
        for k in ("title", "description", "tags", "category", "author", "href"):
            if item.get(k):
                attrs[k] = item[k]
        cands.append(
            {
                "id": f"wavcaps/{src}/{stem}",
                "audio": found,
                "domain": "sound",
                "split": split or hash_split(f"{src}/{stem}", seed, valid_fraction, test_fraction),
                "text": "",
                "attributes": attrs,
            }
        )
    return _finish(
        "wavcaps", cands, captioner, asr, workers, append_transcript=False, missing=missing, dataset_captions=True
    )


def import_musicbench(
    json_path: str | Path,
    audio_dir: str | Path,
    captioner: Captioner | None = None,
    asr: Callable[[dict[str, Any]], str] | None = None,
    split: str | None = None,
    seed: int = 0,
    valid_fraction: float = 0.02,
    test_fraction: float = 0.02,
    workers: int = 1,
) -> ImportResult:
    """Import a MusicBench JSON (JSON lines or a list): ``MusicBench_train.json``, ``..._test_A.json``.

    Each record's ``location`` (e.g. ``data_aug2/-0SdAVK79lg_1.wav``) is relative to ``audio_dir``
    (the extracted ``MusicBench.tar.gz``). Attributes keep ``original_caption`` (``main_caption``),
    ``alt_caption``, the control sentences (``prompt_*``) and ``music``: ``tempo_bpm`` (``bpm``,
    flagged ``tempo_estimated``), ``key``/``mode`` (from ``key``), ``chords`` and ``beats_per_bar``
    (the largest beat position in ``beats``). The
    split is ``split`` if given, else the file's (``train``/``test`` in its name), else a seeded
    hash split by the source clip (augmented copies stay with their original).

    Raises:
        FileNotFoundError: the JSON or the audio directory does not exist.
        DatasetImportError: invalid JSON, or a record without ``location`` (named by index).
    """
    jf = _check_file(json_path, "MusicBench JSON")
    adir = _check_dir(audio_dir, "audio directory")
    file_split = _split_or(split, split_from_name(jf.name))
    items, _ = _load_json_items(jf)
    cands: list[dict[str, Any]] = []
    missing: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("location"):
            raise DatasetImportError(f"{jf}: record {i} has no 'location'")
        loc = str(item["location"])
        audio = adir / loc
        if not audio.is_file():
            missing.append(str(audio))
            continue
        stem = Path(loc).stem
        source_clip = re.sub(r"_\d+$", "", stem)
        attrs: dict[str, Any] = {"dataset": "musicbench"}
        if item.get("dataset"):
            attrs["source_dataset"] = item["dataset"]
        if item.get("main_caption"):
            attrs["original_caption"] = str(item["main_caption"])
        if item.get("alt_caption"):
            attrs["alt_caption"] = str(item["alt_caption"])
        music: dict[str, Any] = {}
        if isinstance(item.get("bpm"), int | float) and not isinstance(item.get("bpm"), bool):
            music["tempo_bpm"] = float(item["bpm"])
            music["tempo_estimated"] = True  # MusicBench tempi come from a beat tracker
        key = item.get("key")
        if isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key):
            music["key"], music["mode"] = key[0], key[1]
        if isinstance(item.get("chords"), list) and item["chords"]:
            music["chords"] = [str(c) for c in item["chords"]]
        beats = item.get("beats")
        if isinstance(beats, list) and len(beats) == 2 and isinstance(beats[1], list) and beats[1]:
            try:
                music["beats_per_bar"] = int(max(float(b) for b in beats[1]))
            except (TypeError, ValueError):
                pass
        if music:
            attrs["music"] = music
        for k in ("prompt_bpm", "prompt_key", "prompt_ch", "prompt_bt", "prompt_aug"):
            if item.get(k):
                attrs[k] = str(item[k])
        cands.append(
            {
                "id": f"musicbench/{Path(loc).with_suffix('').as_posix()}",
                "audio": str(audio),
                "domain": "music",
                "split": file_split or hash_split(source_clip, seed, valid_fraction, test_fraction),
                "text": "",
                "attributes": attrs,
            }
        )
    return _finish(
        "musicbench", cands, captioner, asr, workers, append_transcript=False, missing=missing, dataset_captions=True
    )
