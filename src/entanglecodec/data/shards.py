"""WebDataset-style tar shards for corpora too large for loose files.

Layout of an output directory written by :func:`write_shards`::

    shard-000000.tar   members 000000000.flac, 000000000.json, 000000001.flac, ...
    shard-000001.tar
    index.json         {"format", "sample_rate", "total", "shards": [{"file", "count", "bytes",
                        "splits": {split: n}, "domains": {domain: n}, "groups": {"split/domain": n}}],
                        "skipped": [{"id", "audio", "error"}]}

Each sample is a FLAC file plus its manifest row as JSON (``audio`` renamed to the member name,
the original path kept in ``source_audio``), grouped by a zero-padded key with no dots, which is
the convention the ``webdataset`` package reads. Tar headers carry fixed metadata (mtime 0, uid 0),
so the same manifest and seed give byte-identical shards.

:class:`ShardDataset` streams the shards and yields exactly the dicts
:class:`~entanglecodec.data.dataset.ManifestDataset` yields for the same clips: same decoding path,
same crop for the same ``(seed, epoch, id)``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..audio import AudioError
from .dataset import LOAD_ERRORS, check_text_field, crop_length, crop_rng, dist_world, load_clip, make_item
from .manifest import DOMAINS, SPLITS, ManifestRow, normalize_row, read_manifests, validate_row

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
SHARD_PATTERN = "shard-{:06d}.tar"
FORMAT = "entanglecodec-shards/1"
_HIGH_PRECISION = {"PCM_24", "PCM_32", "FLOAT", "DOUBLE"}


class ShardError(ValueError):
    """A shard directory or tar file is missing, malformed or inconsistent with its index."""


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def encode_flac(path: str | Path, sample_rate: int | None) -> bytes:
    """Return FLAC bytes for an audio file, copying the file unchanged when it already fits.

    Args:
        path: source audio file (any format libsndfile reads).
        sample_rate: target rate (the audio is also down-mixed to mono), or ``None`` to keep the
            file's rate and channels.

    A FLAC source already at the target (mono, ``sample_rate``) is copied byte for byte; anything
    else is decoded, (down-mixed and resampled with soxr,) and encoded as FLAC: 16-bit, or 24-bit
    when the source has more than 16 bits of precision.

    Raises:
        AudioError: unreadable, empty or NaN/Inf audio.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: file not found")
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{p}: cannot be read as audio ({e})") from e
    if info.frames <= 0:
        raise AudioError(f"{p}: contains no samples (zero-length audio)")
    fits = sample_rate is None or (info.samplerate == sample_rate and info.channels == 1)
    if info.format == "FLAC" and fits:
        data = p.read_bytes()
        # decode once to make sure the bytes we copy are valid
        load_clip(data, info.samplerate, None, "start", None, name=str(p))
        return data
    wav, _ = load_clip(str(p), sample_rate or info.samplerate, None, "start", None)
    out_sr = sample_rate or info.samplerate
    arr: np.ndarray = wav
    if sample_rate is None and info.channels > 1:
        with sf.SoundFile(str(p)) as f:
            arr = f.read(dtype="float32", always_2d=True)
    subtype = "PCM_24" if info.subtype in _HIGH_PRECISION else "PCM_16"
    buf = io.BytesIO()
    sf.write(buf, np.clip(arr, -1.0, 1.0), out_sr, format="FLAC", subtype=subtype)
    return buf.getvalue()


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mtime = 0
    ti.mode = 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    tar.addfile(ti, io.BytesIO(data))


class _ShardSink:
    """Writes samples into size/count-limited tar files, each renamed into place when complete."""

    def __init__(self, out_dir: Path, max_count: int, max_size: int) -> None:
        self.out_dir = out_dir
        self.max_count = max_count
        self.max_size = max_size
        self.shards: list[dict[str, Any]] = []
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None
        self._cur: dict[str, Any] = {}

    def _open(self) -> None:
        name = SHARD_PATTERN.format(len(self.shards))
        self._tmp = self.out_dir / f".{name}.tmp"
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self._cur = {"file": name, "count": 0, "bytes": 0, "splits": Counter(), "domains": Counter(), "groups": Counter()}

    def close(self) -> None:
        if self._tar is None or self._tmp is None:
            return
        self._tar.close()
        os.replace(self._tmp, self.out_dir / self._cur["file"])
        entry = dict(self._cur)
        entry["bytes"] = (self.out_dir / self._cur["file"]).stat().st_size
        entry["splits"] = dict(sorted(self._cur["splits"].items()))
        entry["domains"] = dict(sorted(self._cur["domains"].items()))
        entry["groups"] = dict(sorted(self._cur["groups"].items()))
        self.shards.append(entry)
        self._tar = None
        self._tmp = None

    def add(self, key: str, audio: bytes, meta: dict[str, Any]) -> None:
        meta_bytes = json.dumps(meta, ensure_ascii=False, allow_nan=False, sort_keys=True).encode("utf-8")
        size = len(audio) + len(meta_bytes) + 3 * 512
        if self._tar is not None and (
            self._cur["count"] >= self.max_count or self._cur["bytes"] + size > self.max_size
        ):
            self.close()
        if self._tar is None:
            self._open()
        assert self._tar is not None
        _tar_add(self._tar, f"{key}.flac", audio)
        _tar_add(self._tar, f"{key}.json", meta_bytes)
        self._cur["count"] += 1
        self._cur["bytes"] += size
        self._cur["splits"][meta.get("split", "train")] += 1
        self._cur["domains"][meta["domain"]] += 1
        self._cur["groups"][f"{meta.get('split', 'train')}/{meta['domain']}"] += 1

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


def write_shards(
    manifest: str | Path | Sequence[str | Path] | Sequence[ManifestRow],
    out_dir: str | Path,
    max_count: int = 1000,
    max_size: int = 1 << 30,
    sample_rate: int | None = 24000,
    split: str | None = None,
    shuffle: bool = True,
    seed: int = 0,
    overwrite: bool = False,
    on_error: Literal["skip", "raise"] = "skip",
    progress: bool = False,
) -> dict[str, Any]:
    """Pack the clips of a manifest into tar shards plus ``index.json``.

    Args:
        manifest: manifest path(s), or already-read rows.
        out_dir: output directory; it must be empty or absent unless ``overwrite`` (which replaces
            the shard files and index there, and nothing else).
        max_count: at most this many clips per shard.
        max_size: start a new shard before a shard would exceed this many bytes.
        sample_rate: store audio at this rate, mono (``None``: the file's own rate and channels).
        split: pack only rows of this split.
        shuffle: shuffle the clips (seeded) before packing, so that each shard mixes domains and
            sequential reading is close to random order.
        seed: shuffle seed.
        overwrite: allow a non-empty ``out_dir``.
        on_error: ``"skip"`` unreadable files (logged, listed in the index under ``skipped``) or
            ``"raise"``.
        progress: show a progress bar (rich).

    Returns:
        The index dictionary that was written to ``out_dir/index.json``.

    Raises:
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is false.
        AudioError: an unreadable file with ``on_error="raise"``.
        ManifestError: a malformed manifest.
    """
    if max_count < 1:
        raise ValueError(f"max_count must be >= 1, got {max_count}")
    if max_size < 4096:
        raise ValueError(f"max_size must be at least 4096 bytes, got {max_size}")
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    rows: list[ManifestRow]
    if isinstance(manifest, str | Path) or (manifest and isinstance(manifest[0], str | Path)):
        rows = read_manifests(manifest, split)  # type: ignore[arg-type]
    else:
        rows = []
        for i, r in enumerate(manifest):
            validate_row(r, f"row {i}")
            row = normalize_row(r, None)  # type: ignore[arg-type]
            if split is None or row["split"] == split:
                rows.append(row)
    if not rows:
        raise ValueError("no rows to pack into shards")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: is not empty (pass overwrite=True / --overwrite to replace its shards)")
        for old in [*out.glob("shard-*.tar"), out / INDEX_NAME]:
            old.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(rows)) if shuffle else np.arange(len(rows))
    sink = _ShardSink(out, max_count, max_size)
    skipped: list[dict[str, str]] = []
    bar = _progress(progress, len(rows), "packing shards")
    try:
        for k, i in enumerate(order.tolist()):
            row = rows[i]
            try:
                audio = encode_flac(row["audio"], sample_rate)
            except LOAD_ERRORS as e:
                if on_error == "raise":
                    raise
                logger.warning("skipping unreadable clip %r (%s): %s", row.get("id"), row["audio"], e)
                skipped.append({"id": str(row.get("id")), "audio": str(row["audio"]), "error": str(e)})
                continue
            finally:
                if bar is not None:
                    bar[0].update(bar[1], advance=1)
            key = f"{k:09d}"
            meta = dict(row)
            meta["source_audio"] = str(row["audio"])
            meta["audio"] = f"{key}.flac"
            sink.add(key, audio, meta)
        sink.close()
    except BaseException:
        sink.abort()
        raise
    finally:
        if bar is not None:
            bar[0].stop()
    total = sum(s["count"] for s in sink.shards)
    if total == 0:
        raise AudioError(f"no readable audio among {len(rows)} clips ({len(skipped)} skipped)")
    index = {
        "format": FORMAT,
        "sample_rate": sample_rate,
        "total": total,
        "shards": sink.shards,
        "skipped": skipped,
    }
    tmp = out / f".{INDEX_NAME}.tmp"
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, out / INDEX_NAME)
    if skipped:
        logger.warning("%d of %d clips skipped while packing shards into %s", len(skipped), len(rows), out)
    return index


def _progress(enabled: bool, total: int, label: str) -> tuple[Any, Any] | None:
    if not enabled:
        return None
    from rich.progress import Progress

    prog = Progress()
    prog.start()
    return prog, prog.add_task(label, total=total)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def iter_tar_samples(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {extension: bytes})`` for consecutive members sharing a key in a tar file.

    Raises:
        ShardError: the tar file is missing or unreadable.
    """
    p = Path(path)
    if not p.exists():
        raise ShardError(f"{p}: shard not found")
    try:
        tar = tarfile.open(p, "r")
    except (tarfile.TarError, OSError) as e:
        raise ShardError(f"{p}: not a readable tar file ({e})") from e
    with tar:
        key: str | None = None
        group: dict[str, bytes] = {}
        try:
            for m in tar:
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                if "." not in base:
                    continue
                k, ext = base.split(".", 1)
                prefix = m.name[: len(m.name) - len(base)]
                k = prefix + k
                if key is not None and k != key:
                    yield key, group
                    group = {}
                key = k
                fobj = tar.extractfile(m)
                group[ext] = fobj.read() if fobj is not None else b""
        except (tarfile.TarError, OSError) as e:
            raise ShardError(f"{p}: corrupt tar file ({e})") from e
        if key is not None:
            yield key, group


def read_index(shard_dir: str | Path) -> dict[str, Any]:
    """Read and check ``index.json`` of a shard directory.

    Raises:
        ShardError: missing index, unknown format, or a listed shard file missing.
    """
    d = Path(shard_dir)
    f = d / INDEX_NAME
    if not f.exists():
        raise ShardError(f"{d}: no {INDEX_NAME} (write shards with `entanglecodec data shard`)")
    try:
        index = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ShardError(f"{f}: invalid JSON ({e})") from e
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ShardError(f"{f}: not an entanglecodec shard index (expected format {FORMAT!r})")
    for s in index["shards"]:
        if not (d / s["file"]).exists():
            raise ShardError(f"{d / s['file']}: listed in {f} but missing")
    return index


def _equal_quotas(counts: list[list[int]]) -> list[list[int]]:
    """Per-(rank, worker) sample quotas so that every rank yields the same number of samples.

    ``counts[r][w]`` is the number of samples the shards of worker ``w`` of rank ``r`` hold. Each
    rank yields ``min_r sum_w counts[r][w]``, spread over its workers in proportion to their counts.
    """
    per_rank = [sum(c) for c in counts]
    limit = min(per_rank)
    quotas: list[list[int]] = []
    for c, tot in zip(counts, per_rank, strict=True):
        q = [(limit * x) // tot if tot else 0 for x in c]
        rest = limit - sum(q)
        for w in range(len(c)):
            if rest == 0:
                break
            if q[w] < c[w]:
                q[w] += 1
                rest -= 1
        quotas.append(q)
    return quotas


class ShardDataset(IterableDataset[dict[str, Any]]):
    """Stream clips from tar shards, yielding the same dicts as :class:`ManifestDataset`.

    Shards are split over DDP ranks and DataLoader workers (slot ``rank * workers + worker``
    reads shards ``slot, slot + slots, ...``). With an ``index.json`` the number of samples every
    rank yields per epoch is equalised (so no rank waits for another at the end of an epoch); a
    worker that loses samples to unreadable audio re-reads its shards from the start to fill its
    quota. With fewer shards than slots every slot reads all shards and keeps every ``slots``-th
    sample.

    Args:
        source: a shard directory (with ``index.json``), one ``.tar`` file, or a list of them.
        crop_seconds, sample_rate, crop_mode, seed, text_field, on_error: as for
            :class:`~entanglecodec.data.dataset.ManifestDataset`.
        split: yield only clips of this split.
        domains: yield only clips of these domains.
        shuffle: shuffle shard order per epoch and samples in a buffer (seeded by seed/epoch/slot).
        shuffle_buffer: size of the sample shuffle buffer (0 or 1: no sample shuffling).
        num_replicas, rank: DDP world size and rank (default from ``torch.distributed``).

    Lightning does not call ``set_epoch`` on iterable datasets: call :meth:`set_epoch` yourself
    (e.g. in ``on_train_epoch_start``) to get new shard orders and crops each epoch. The epoch
    lives in shared memory, so persistent DataLoader workers see it. Domain weighting is not
    available when streaming shards; use :class:`~entanglecodec.data.dataset.ManifestDataset` with
    :class:`~entanglecodec.data.dataset.DomainWeightedSampler` for that.
    """

    def __init__(
        self,
        source: str | Path | Sequence[str | Path],
        crop_seconds: float | None = 10.0,
        sample_rate: int = 24000,
        crop_mode: Literal["random", "center", "start"] = "random",
        seed: int = 0,
        text_field: str = "caption",
        on_error: Literal["skip", "raise"] = "skip",
        split: str | None = None,
        domains: Sequence[str] | None = None,
        shuffle: bool = True,
        shuffle_buffer: int = 256,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__()
        self.index: dict[str, Any] | None = None
        srcs = [source] if isinstance(source, str | Path) else list(source)
        if not srcs:
            raise ShardError("no shard source given")
        if len(srcs) == 1 and Path(srcs[0]).is_dir():
            d = Path(srcs[0])
            self.index = read_index(d)
            self.shards = [d / s["file"] for s in self.index["shards"]]
        else:
            self.shards = [Path(s) for s in srcs]
            for s in self.shards:
                if not s.is_file():
                    raise ShardError(f"{s}: shard not found")
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
        if domains is not None and set(domains) - set(DOMAINS):
            raise ValueError(f"unknown domains {sorted(set(domains) - set(DOMAINS))}")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.sample_rate = int(sample_rate)
        self.crop_samples = crop_length(crop_seconds, self.sample_rate)
        self.crop_mode: str = crop_mode
        self.seed = int(seed)
        self.text_field = check_text_field(text_field)
        self.on_error = on_error
        self.split = split
        self.domains = set(domains) if domains is not None else None
        self.shuffle = shuffle
        self.shuffle_buffer = int(shuffle_buffer)
        world, r = dist_world()
        self.num_replicas = world if num_replicas is None else int(num_replicas)
        self.rank = r if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"invalid rank {self.rank} for num_replicas {self.num_replicas}")
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()
        self._skipped = torch.zeros(1, dtype=torch.long).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (shard order, shuffle buffer and random crops depend on it)."""
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    @property
    def skipped(self) -> int:
        """Samples skipped because their audio could not be decoded (approximate across workers)."""
        return int(self._skipped.item())

    def _shard_count(self, i: int) -> int | None:
        """Samples of shard ``i`` that pass the split/domain filters (None without an index)."""
        if self.index is None:
            return None
        groups: dict[str, int] = self.index["shards"][i].get("groups", {})
        n = 0
        for g, c in groups.items():
            sp, dom = g.split("/", 1)
            if (self.split is None or sp == self.split) and (self.domains is None or dom in self.domains):
                n += int(c)
        return n

    def _wanted(self, meta: Mapping[str, Any]) -> bool:
        if self.split is not None and meta.get("split", "train") != self.split:
            return False
        return self.domains is None or meta.get("domain") in self.domains

    def _plan(self, n_workers: int) -> tuple[list[list[int]], int, list[int] | None]:
        """Shards of every reader slot, the sample stride, and per-slot quotas (None: no index)."""
        ep = self.epoch
        order = list(range(len(self.shards)))
        if self.shuffle:
            g = np.random.default_rng([self.seed & 0xFFFFFFFF, ep & 0xFFFFFFFF, 0x7D1])
            order = g.permutation(len(order)).tolist()
        slots = self.num_replicas * n_workers
        if len(order) >= slots:
            assign = [order[s::slots] for s in range(slots)]
            stride = 1
        else:
            assign = [order for _ in range(slots)]
            stride = slots
        counts = [self._shard_count(i) for i in range(len(self.shards))]
        if any(c is None for c in counts):
            if self.num_replicas > 1:
                logger.warning("shards without index.json: ranks may yield different numbers of samples")
            return assign, stride, None
        if stride == 1:
            per = [
                [sum(counts[i] or 0 for i in assign[r * n_workers + w]) for w in range(n_workers)]
                for r in range(self.num_replicas)
            ]
        else:
            total = sum(c or 0 for c in counts)
            per = [
                [len(range(r * n_workers + w, total, slots)) for w in range(n_workers)] for r in range(self.num_replicas)
            ]
        quotas = _equal_quotas(per)
        return assign, stride, [q for rq in quotas for q in rq]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        n_workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        slot = self.rank * n_workers + wid
        assign, stride, quotas = self._plan(n_workers)
        my_shards = assign[slot]
        quota = quotas[slot] if quotas is not None else None
        ep = self.epoch
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, ep & 0xFFFFFFFF, slot, 0xB0F])
        stream = self._decoded(my_shards, stride, slot, quota)
        if not self.shuffle or self.shuffle_buffer <= 1:
            yield from stream
            return
        buf: list[dict[str, Any]] = []
        for item in stream:
            buf.append(item)
            if len(buf) >= self.shuffle_buffer:
                j = int(rng.integers(len(buf)))
                buf[j], buf[-1] = buf[-1], buf[j]
                yield buf.pop()
        while buf:
            j = int(rng.integers(len(buf)))
            buf[j], buf[-1] = buf[-1], buf[j]
            yield buf.pop()

    def _decoded(self, shards: list[int], stride: int, slot: int, quota: int | None) -> Iterator[dict[str, Any]]:
        produced = 0
        for rep in range(2 if quota is not None else 1):
            if quota is not None and produced >= quota:
                return
            if rep == 1:
                if produced == 0:
                    raise AudioError(f"no readable sample in shards {[str(self.shards[i]) for i in shards]}")
                logger.warning("re-reading shards to replace %d unreadable samples", (quota or 0) - produced)
            pos = 0
            for i in shards:
                for key, group in iter_tar_samples(self.shards[i]):
                    if "json" not in group:
                        raise ShardError(f"{self.shards[i]}: sample {key!r} has no .json member")
                    meta = json.loads(group["json"].decode("utf-8"))
                    if not self._wanted(meta):
                        continue
                    pos += 1
                    if (pos - 1) % stride != slot % stride:
                        continue
                    item = self._item(meta, group, f"{self.shards[i]}:{key}")
                    if item is None:
                        continue
                    yield item
                    produced += 1
                    if quota is not None and produced >= quota:
                        return

    def _item(self, meta: Mapping[str, Any], group: Mapping[str, bytes], where: str) -> dict[str, Any] | None:
        audio_ext = next((e for e in ("flac", "wav", "ogg", "mp3") if e in group), None)
        try:
            if audio_ext is None:
                raise AudioError(f"{where}: no audio member (flac/wav/ogg/mp3)")
            rng = crop_rng(self.seed, self.epoch, str(meta["id"])) if self.crop_mode == "random" else None
            wav, offset = load_clip(
                group[audio_ext], self.sample_rate, self.crop_samples, self.crop_mode, rng, name=where
            )
        except LOAD_ERRORS as e:
            if self.on_error == "raise":
                raise
            self._skipped += 1
            logger.warning("skipping unreadable sample %s (source %s): %s [%d skipped so far]",
                           where, meta.get("source_audio"), e, self.skipped)
            return None
        return make_item(meta, wav, offset, self.text_field)


__all__ = [
    "ShardDataset",
    "ShardError",
    "encode_flac",
    "iter_tar_samples",
    "read_index",
    "write_shards",
]
