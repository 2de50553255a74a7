"""Token shards: a manifest tokenised once by an audio tokenizer, read back memory-mapped.

Layout of a token directory (``entanglecodec tokenize MANIFEST -o DIR``)::

    DIR/meta.json            the plan: manifest (+ SHA-256), tokenizer name / fingerprint /
                             codebook size / frame rate, shard size, number of rows and shards
    DIR/shards/NNNNN.bin     the token ids of rows [N*S, (N+1)*S) of the manifest, concatenated
                             (raw little-endian uint16, or int32 for codebooks above 65536)
    DIR/shards/NNNNN.json    that shard's index: id, split, offset, length (frames), num_samples
                             per row, and the rows that failed with their error; written *after*
                             the .bin, atomically: its presence marks the shard as done
    DIR/index.json           written once every shard is done (row count, failures)

* **Deterministic**: the shard plan depends only on the manifest and the shard size, and the codec
  gives the same codes for a clip alone or inside a padded batch, so the files are identical
  whatever the batch size or the number of processes.
* **Resumable**: a re-run with the same manifest and tokenizer skips finished shards (a killed run
  loses at most the shards in progress); another manifest or tokenizer in the same directory is
  refused.
* **Multi-process**: under ``torchrun`` (``WORLD_SIZE`` > 1), rank ``r`` writes shards
  ``r, r + W, ...`` (gloo process group for the final barrier); rank 0 writes ``index.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import file_sha256
from ..fileio import atomic_write, atomic_write_text
from .audio_tokenizer import AudioTokenizer

FORMAT = "entanglecodec-lm-tokens"
VERSION = 1
META = "meta.json"
INDEX = "index.json"
SHARDS = "shards"
OWNED = (META, INDEX, SHARDS)
"""Entries of a token directory that ``--overwrite`` may remove (nothing else of the user's)."""


class ShardError(ValueError):
    """A token directory is missing, incomplete, or made by another tokenizer / manifest."""


def _dtype(codebook_size: int) -> str:
    return "<u2" if codebook_size <= 65536 else "<i4"


def tokenizer_meta(tok: AudioTokenizer) -> dict[str, Any]:
    return {"name": tok.name, "fingerprint": tok.fingerprint(), "codebook_size": tok.codebook_size,
            "frame_rate": tok.frame_rate, "sample_rate": tok.sample_rate}  # fmt: skip


def _world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def barrier(world: int) -> None:
    """Wait for every rank (gloo process group, created on first use); no-op for one process."""
    if world <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


def _check_meta(found: dict[str, Any], want: dict[str, Any], out: Path) -> None:
    for key in ("format", "manifest_sha256", "shard_size", "num_rows"):
        if found.get(key) != want[key]:
            raise ShardError(
                f"{out}: holds tokens of another plan ({key}: {found.get(key)!r} vs {want[key]!r}); "
                "use another output directory or pass --overwrite"
            )
    ft, wt = found.get("tokenizer", {}), want["tokenizer"]
    if ft.get("fingerprint") != wt["fingerprint"] or ft.get("codebook_size") != wt["codebook_size"]:
        raise ShardError(
            f"{out}: holds tokens of another tokenizer (fingerprint {ft.get('fingerprint')}, codebook "
            f"{ft.get('codebook_size')}) than {wt['name']} ({wt['fingerprint']}, {wt['codebook_size']}); "
            "use another output directory or pass --overwrite"
        )


def tokenize_manifest(
    manifest: str | Path,
    out: str | Path,
    tokenizer: AudioTokenizer,
    batch_size: int = 8,
    shard_size: int = 256,
    max_seconds: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Tokenise every row of ``manifest`` into ``out`` (resuming finished shards); returns the index.

    Args:
        manifest: a JSON-lines manifest (every split; rows keep their ``split``).
        out: the token directory (created; an existing one must hold the same plan).
        tokenizer: the audio tokenizer.
        batch_size: clips per padded encoder batch.
        shard_size: rows per shard (the unit of resumption).
        max_seconds: clips longer than this are recorded as failures (``None``: no limit).
        progress: called with ``(rows done on this rank, rows of this rank)``.

    Raises:
        ShardError: ``out`` holds another plan. ManifestError / FileNotFoundError: bad manifest.
    """
    from ..audio import load_audio
    from ..data.manifest import read_manifest

    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size}, {shard_size}")
    mpath, d = Path(manifest), Path(out)
    rows = read_manifest(mpath)
    rank, world = _world()
    n_shards = (len(rows) + shard_size - 1) // shard_size
    want = {"format": FORMAT, "version": VERSION, "manifest": str(mpath.resolve()),
            "manifest_sha256": file_sha256(mpath), "shard_size": shard_size, "num_rows": len(rows),
            "num_shards": n_shards, "dtype": _dtype(tokenizer.codebook_size), "tokenizer": tokenizer_meta(tokenizer)}  # fmt: skip
    if (d / META).is_file():  # every rank checks (the same files: all fail alike, none waits alone)
        _check_meta(json.loads((d / META).read_text()), want, d)
        if rank == 0:  # temporary files of a killed run; nobody writes before the barrier below
            for tmp in (d / SHARDS).glob(".*.tmp*"):
                tmp.unlink(missing_ok=True)
    elif rank == 0:
        (d / SHARDS).mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / META, json.dumps(want, indent=2) + "\n")
    barrier(world)
    mine = [j for j in range(n_shards) if j % world == rank]
    total = sum(min(shard_size, len(rows) - j * shard_size) for j in mine)
    done = 0
    sr = tokenizer.sample_rate
    for j in mine:
        part = rows[j * shard_size : (j + 1) * shard_size]
        stem = d / SHARDS / f"{j:05d}"
        if stem.with_suffix(".json").is_file():
            done += len(part)
            if progress:
                progress(done, total)
            continue
        codes: list[np.ndarray | None] = [None] * len(part)
        failed: list[dict[str, str]] = []
        wavs: dict[int, np.ndarray] = {}
        for i, row in enumerate(part):
            try:
                wav, _ = load_audio(row["audio"], sr)
                if wav.size == 0:
                    raise ValueError(f"{row['audio']}: empty audio")
                if max_seconds is not None and wav.size > max_seconds * sr:
                    raise ValueError(f"{row['audio']}: {wav.size / sr:.1f} s is longer than --max-seconds {max_seconds:g}")
                wavs[i] = wav
            except (ValueError, OSError) as e:
                failed.append({"id": row["id"], "error": " ".join(str(e).split())})
        order = sorted(wavs, key=lambda i: wavs[i].size)
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            for i, c in zip(idx, tokenizer.encode([wavs[i] for i in idx]), strict=True):
                codes[i] = c
            done += len(idx)
            if progress:
                progress(done, total)
        done += len(part) - len(wavs)
        items, offset, chunks = [], 0, []
        dt = np.dtype(_dtype(tokenizer.codebook_size))
        for i, (row, got) in enumerate(zip(part, codes, strict=True)):
            if got is None:
                continue
            items.append({"id": row["id"], "split": row["split"], "offset": offset, "length": int(got.size),
                          "num_samples": int(wavs[i].size)})  # fmt: skip
            chunks.append(got.astype(dt))
            offset += int(got.size)
        blob = np.concatenate(chunks) if chunks else np.zeros(0, dtype=dt)

        def write_bin(tmp: Path, blob: np.ndarray = blob) -> None:
            blob.tofile(str(tmp))

        atomic_write(stem.with_suffix(".bin"), write_bin)
        atomic_write_text(stem.with_suffix(".json"), json.dumps({"items": items, "failed": failed}) + "\n")
    barrier(world)
    if rank == 0:
        return write_index(d)
    return {}


def write_index(d: Path) -> dict[str, Any]:
    """Check that every shard of ``d`` is done and write ``index.json`` (the completion mark)."""
    meta = json.loads((d / META).read_text())
    missing = [j for j in range(meta["num_shards"]) if not (d / SHARDS / f"{j:05d}.json").is_file()]
    if missing:
        raise ShardError(f"{d}: {len(missing)} shard(s) not done yet (e.g. {missing[:3]}); run tokenize again to finish")
    n, failed = 0, []
    for j in range(meta["num_shards"]):
        part = json.loads((d / SHARDS / f"{j:05d}.json").read_text())
        n += len(part["items"])
        failed += part["failed"]
    index = {"complete": True, "items": n, "failed": failed, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(d / INDEX, json.dumps(index, indent=2) + "\n")
    return index


@dataclass
class _Item:
    shard: int
    offset: int
    length: int
    num_samples: int
    split: str


class TokenShards:
    """Read a finished token directory: ``codes(id) -> int64 [F]`` from memory-mapped shards.

    Raises:
        ShardError: no such directory, unfinished tokenisation, or a malformed shard.
    """

    def __init__(self, directory: str | Path) -> None:
        d = Path(directory)
        if not (d / META).is_file():
            raise ShardError(f"{d}: not a token directory (no {META}; make one with `entanglecodec tokenize`)")
        if not (d / INDEX).is_file():
            raise ShardError(f"{d}: tokenisation is not finished (no {INDEX}); run `entanglecodec tokenize` again")
        self.directory = d
        self.meta: dict[str, Any] = json.loads((d / META).read_text())
        if self.meta.get("format") != FORMAT or int(self.meta.get("version", 0)) > VERSION:
            raise ShardError(f"{d / META}: not a supported token directory (format {self.meta.get('format')!r})")
        self.items: dict[str, _Item] = {}
        for j in range(int(self.meta["num_shards"])):
            part = json.loads((d / SHARDS / f"{j:05d}.json").read_text())
            for it in part["items"]:
                self.items[it["id"]] = _Item(j, it["offset"], it["length"], it["num_samples"], it["split"])
        self._maps: dict[int, np.ndarray] = {}

    @property
    def tokenizer(self) -> dict[str, Any]:
        """``{name, fingerprint, codebook_size, frame_rate, sample_rate}`` of the tokenizer used."""
        return dict(self.meta["tokenizer"])

    def check_tokenizer(self, fingerprint: str, codebook_size: int) -> None:
        """Raise :class:`ShardError` unless the shards were made by a tokenizer with this fingerprint."""
        t = self.tokenizer
        if t["fingerprint"] != fingerprint or int(t["codebook_size"]) != codebook_size:
            raise ShardError(
                f"{self.directory}: tokens were made by another codec checkpoint (fingerprint {t['fingerprint']}, "
                f"codebook {t['codebook_size']}) than the LM's (fingerprint {fingerprint}, codebook {codebook_size}); "
                "re-tokenise the manifest with the LM's codec"
            )

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.items

    def __len__(self) -> int:
        return len(self.items)

    def ids(self, splits: Sequence[str] | None = None) -> list[str]:
        return [k for k, v in self.items.items() if splits is None or v.split in splits]

    def num_samples(self, item_id: str) -> int:
        return self.items[item_id].num_samples

    def codes(self, item_id: str) -> np.ndarray:
        """Token ids ``int64 [F]`` of one row (``KeyError`` when the row was not tokenised)."""
        it = self.items[item_id]
        m = self._maps.get(it.shard)
        if m is None:
            path = self.directory / SHARDS / f"{it.shard:05d}.bin"
            m = np.memmap(path, dtype=np.dtype(self.meta["dtype"]), mode="r") if path.stat().st_size else np.zeros(0)
            self._maps[it.shard] = m
        out = np.asarray(m[it.offset : it.offset + it.length], dtype=np.int64)
        if out.size != it.length:
            raise ShardError(f"{self.directory}: shard {it.shard:05d}.bin is truncated (row {item_id!r})")
        return out
