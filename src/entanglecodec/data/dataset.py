"""Loading a manifest for training: cropping, resampling, padding, domain-weighted sampling.

Public names (stable; the training code and the vocoder trainer use them; the Lightning data
modules built from them live in :mod:`entanglecodec.training.data`, so ``data/`` never imports
Lightning):

* :class:`ManifestDataset` -- map-style dataset over one or more manifests; items are dicts
  ``{id, wav, length, caption, rich_caption, asr_caption, text, domain, split, attributes, offset}``.
* :func:`collate_audio` -- pads a list of items into ``wav [B, S]``, ``lengths [B]``, ``mask [B, S]``.
* :class:`DomainWeightedSampler` -- seeded, epoch-aware, DDP-sharded sampler with per-domain weights.
* :func:`load_clip` / :func:`crop_rng` / :func:`make_item` -- the shared decoding path, also used by
  :mod:`entanglecodec.data.shards`.

Cropping follows the paper (App. B.1): random 10 s segments for training; clips shorter than the
crop are returned whole and padded with silence by :func:`collate_audio` (``lengths``/``mask`` mark
the real samples), so the end of a short clip is never dropped. The crop offset of a clip depends
only on ``(seed, epoch, clip id)``, so it is the same whichever worker, rank or storage (loose
files or tar shards) reads it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from ..audio import AudioError, resample
from .manifest import DOMAINS, ManifestRow, normalize_row, read_manifests, validate_row

logger = logging.getLogger(__name__)

CropMode = Literal["random", "center", "start"]
TEXT_FIELDS: tuple[str, ...] = ("caption", "asr_caption", "text")
"""Row fields that may be used as the alignment text (``text_field``)."""

#: Errors that mean "this file cannot be used"; anything else is a bug and propagates.
LOAD_ERRORS: tuple[type[BaseException], ...] = (AudioError, sf.LibsndfileError, RuntimeError, OSError, EOFError)

_RESAMPLE_MARGIN_S = 0.05  # extra context read on each side of a crop before resampling


# ---------------------------------------------------------------------------------------------
# Decoding one clip
# ---------------------------------------------------------------------------------------------
def stable_hash(text: str) -> int:
    """A 63-bit hash of ``text`` that is the same in every process and Python run."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 1


def crop_rng(seed: int, epoch: int, clip_id: str) -> np.random.Generator:
    """The random generator that decides a clip's crop: a function of seed, epoch and clip id only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, stable_hash(clip_id)])


def _crop_offset(total: int, crop: int, mode: str, rng: np.random.Generator | None) -> int:
    span = total - crop
    if mode == "start":
        return 0
    if mode == "center":
        return span // 2
    if rng is None:
        raise ValueError("crop_mode='random' needs a random generator")
    return min(span, int(math.floor(float(rng.random()) * (span + 1))))


def load_clip(
    source: str | Path | bytes,
    sample_rate: int = 24000,
    crop_samples: int | None = None,
    crop_mode: str = "random",
    rng: np.random.Generator | None = None,
    name: str | None = None,
) -> tuple[np.ndarray, int]:
    """Decode an audio file (or its bytes), down-mix to mono, resample and crop.

    Only the frames needed for the crop are decoded (plus a small margin when resampling), so long
    files are cheap to crop. Resampling uses soxr (the same as :func:`entanglecodec.audio.resample`).

    Args:
        source: a file path, or the encoded file's bytes (e.g. a FLAC member of a tar shard).
        sample_rate: output rate in Hz.
        crop_samples: crop length in output samples, or ``None`` for the whole clip. A clip not
            longer than the crop is returned whole (never padded or cut here).
        crop_mode: ``"random"`` (uniform offset drawn from ``rng``), ``"center"`` or ``"start"``.
        rng: the generator for ``"random"`` crops (see :func:`crop_rng`).
        name: how to call the source in error messages (defaults to the path).

    Returns:
        ``(wav, offset)``: ``float32`` mono ``[S]`` at ``sample_rate`` with
        ``S = min(crop_samples, clip length)`` (about ``frames * sample_rate / file_rate`` for whole
        clips), and the crop start in output samples.

    Raises:
        AudioError: missing, unreadable, empty (zero-length) or NaN/Inf audio.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if crop_samples is not None and crop_samples <= 0:
        raise ValueError(f"crop_samples must be positive, got {crop_samples}")
    if crop_mode not in ("random", "center", "start"):
        raise ValueError(f"unknown crop_mode {crop_mode!r} (expected random, center or start)")
    if isinstance(source, bytes):
        handle: Any = io.BytesIO(source)
    else:
        p = Path(source)
        if not p.exists():
            raise AudioError(f"{label}: file not found")
        if p.is_dir():
            raise AudioError(f"{label}: is a directory, not an audio file")
        handle = str(p)
    try:
        with sf.SoundFile(handle) as f:
            n, sr = int(f.frames), int(f.samplerate)
            if n <= 0:
                raise AudioError(f"{label}: contains no samples (zero-length audio)")
            total = n if sr == sample_rate else (n * sample_rate) // sr
            offset = 0
            if crop_samples is None or total <= crop_samples:
                data = f.read(dtype="float32", always_2d=True)
                wav = _mono(data, label)
                if sr != sample_rate:
                    wav = resample(wav, sr, sample_rate)
                if crop_samples is not None:
                    wav = wav[:crop_samples]  # resampling may round one sample past the crop
            else:
                offset = _crop_offset(total, crop_samples, crop_mode, rng)
                if sr == sample_rate:
                    f.seek(offset)
                    wav = _mono(f.read(crop_samples, dtype="float32", always_2d=True), label)
                else:
                    start = offset * sr / sample_rate
                    stop = (offset + crop_samples) * sr / sample_rate
                    # Start the read on a native sample that falls exactly on the output grid
                    # (a multiple of sr/gcd), so the segment resamples onto the same sample
                    # times as the whole file would.
                    g = math.gcd(sr, sample_rate)
                    step_in, step_out = sr // g, sample_rate // g
                    margin = int(math.ceil(_RESAMPLE_MARGIN_S * sr))
                    a = max(0, int(math.floor(start)) - margin) // step_in * step_in
                    b = min(n, int(math.ceil(stop)) + margin)
                    f.seek(a)
                    seg = resample(_mono(f.read(b - a, dtype="float32", always_2d=True), label), sr, sample_rate)
                    j = offset - (a // step_in) * step_out
                    j = max(0, min(j, seg.shape[0] - crop_samples))
                    wav = seg[j : j + crop_samples]
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as e:
        raise AudioError(f"{label}: cannot be decoded as audio ({e})") from e
    if wav.shape[0] == 0:
        raise AudioError(f"{label}: decoded to zero samples")
    if not np.isfinite(wav).all():
        raise AudioError(f"{label}: contains NaN or Inf samples")
    return np.ascontiguousarray(wav, dtype=np.float32), offset


def _mono(data: np.ndarray, label: str) -> np.ndarray:
    if data.shape[0] == 0:
        raise AudioError(f"{label}: read returned no samples (truncated or empty file)")
    return data.mean(axis=1).astype(np.float32) if data.shape[1] > 1 else data[:, 0]


def make_item(row: Mapping[str, Any], wav: np.ndarray, offset: int, text_field: str = "caption") -> dict[str, Any]:
    """Build the dict a dataset yields for ``row`` and its decoded ``wav``.

    Keys: ``id`` (str), ``wav`` (float32 Tensor ``[S]`` at 24 kHz), ``length`` (int, ``S``),
    ``caption`` (the alignment text, i.e. ``row[text_field]``), ``rich_caption`` (always the row's
    rich caption), ``asr_caption``, ``text``, ``domain``, ``split``, ``attributes`` (dict) and
    ``offset`` (crop start in samples).
    """
    return {
        "id": str(row["id"]),
        "wav": torch.from_numpy(wav),
        "length": int(wav.shape[0]),
        "caption": str(row.get(text_field, "")),
        "rich_caption": str(row.get("caption", "")),
        "asr_caption": str(row.get("asr_caption", "")),
        "text": str(row.get("text", "")),
        "domain": str(row["domain"]),
        "split": str(row.get("split", "train")),
        "attributes": dict(row.get("attributes") or {}),
        "offset": int(offset),
    }


def check_text_field(text_field: str) -> str:
    if text_field not in TEXT_FIELDS:
        raise ValueError(f"text_field must be one of {', '.join(TEXT_FIELDS)}, got {text_field!r}")
    return text_field


def crop_length(crop_seconds: float | None, sample_rate: int) -> int | None:
    """Crop length in samples (``None`` keeps whole clips)."""
    if crop_seconds is None:
        return None
    if not crop_seconds > 0 or not math.isfinite(crop_seconds):
        raise ValueError(f"crop_seconds must be a positive number of seconds or None, got {crop_seconds!r}")
    return max(1, int(round(crop_seconds * sample_rate)))


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------
class ManifestDataset(Dataset[dict[str, Any]]):
    """Map-style dataset over manifest rows, decoding, resampling and cropping on the fly.

    Args:
        manifests: one manifest path or a list of them (ignored when ``rows`` is given).
        split: keep only rows of this split (``train``/``valid``/``test``), or ``None`` for all.
        crop_seconds: crop length in seconds (paper: 10 s), or ``None`` for whole clips.
        sample_rate: output rate in Hz (the codec's 24 kHz).
        crop_mode: ``"random"`` (training; seeded and epoch-aware), ``"center"`` or ``"start"``
            (deterministic, for validation).
        seed: seed of the random crops.
        text_field: row field returned as ``item["caption"]``: ``"caption"`` (rich caption),
            ``"asr_caption"`` (the paper's w/o-rich-caption ablation) or ``"text"``.
        on_error: ``"skip"``: a missing/corrupt/zero-length file is logged with its path, counted
            in :attr:`skipped`, and another clip of the same domain is returned instead (the next
            one in manifest order, deterministically); ``"raise"``: raise :class:`AudioError`.
        domains: keep only rows of these domains.
        rows: use these already-read rows instead of reading ``manifests``.

    The epoch (:meth:`set_epoch`) and the set of bad files live in shared memory, so they are seen
    by DataLoader worker processes, persistent ones included.
    """

    def __init__(
        self,
        manifests: str | Path | Sequence[str | Path] | None = None,
        split: str | None = None,
        crop_seconds: float | None = 10.0,
        sample_rate: int = 24000,
        crop_mode: CropMode = "random",
        seed: int = 0,
        text_field: str = "caption",
        on_error: Literal["skip", "raise"] = "skip",
        domains: Sequence[str] | None = None,
        rows: Sequence[ManifestRow] | None = None,
    ) -> None:
        if rows is None:
            if manifests is None:
                raise ValueError("give manifests (paths) or rows")
            rows = read_manifests(manifests, split)
        else:
            checked: list[ManifestRow] = []
            for i, r in enumerate(rows):
                validate_row(r, f"row {i}")
                checked.append(normalize_row(r, None))
            rows = [r for r in checked if split is None or r["split"] == split]
        if domains is not None:
            unknown = sorted(set(domains) - set(DOMAINS))
            if unknown:
                raise ValueError(f"unknown domains {unknown} (expected some of {', '.join(DOMAINS)})")
            rows = [r for r in rows if r["domain"] in set(domains)]
        if not rows:
            raise ValueError(f"no clips to load (split={split!r}, domains={domains!r})")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if crop_mode not in ("random", "center", "start"):
            raise ValueError(f"unknown crop_mode {crop_mode!r} (expected random, center or start)")
        self.rows: list[ManifestRow] = list(rows)
        self.sample_rate = int(sample_rate)
        self.crop_samples = crop_length(crop_seconds, self.sample_rate)
        self.crop_mode: str = crop_mode
        self.seed = int(seed)
        self.text_field = check_text_field(text_field)
        self.on_error = on_error
        self.domains: list[str] = [r["domain"] for r in self.rows]
        self._by_domain: dict[str, np.ndarray] = {
            d: np.flatnonzero(np.asarray(self.domains) == d) for d in sorted(set(self.domains))
        }
        self._pos_in_domain = np.zeros(len(self.rows), dtype=np.int64)
        for idx in self._by_domain.values():
            self._pos_in_domain[idx] = np.arange(idx.size)
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()
        self._bad = torch.zeros(len(self.rows), dtype=torch.uint8).share_memory_()
        empty = sum(1 for r in self.rows if not str(r.get(self.text_field, "")).strip())
        if empty:
            logger.warning("%d of %d clips have an empty %r field", empty, len(self.rows), self.text_field)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops are drawn (also done by :class:`DomainWeightedSampler`)."""
        self._epoch.fill_(int(epoch))

    @property
    def skipped(self) -> int:
        """Number of distinct files found unreadable so far (in this process and its workers)."""
        return int(self._bad.sum().item())

    @property
    def skipped_files(self) -> list[str]:
        """Paths of the files found unreadable so far."""
        return [self.rows[int(i)]["audio"] for i in torch.nonzero(self._bad).flatten().tolist()]

    def domain_counts(self) -> dict[str, int]:
        """Number of clips per domain."""
        return {d: int(idx.size) for d, idx in self._by_domain.items()}

    def load(self, index: int) -> dict[str, Any]:
        """Load clip ``index`` without any substitution (errors propagate)."""
        row = self.rows[index]
        rng = crop_rng(self.seed, self.epoch, row["id"]) if self.crop_mode == "random" else None
        wav, offset = load_clip(row["audio"], self.sample_rate, self.crop_samples, self.crop_mode, rng)
        return make_item(row, wav, offset, self.text_field)

    def _candidates(self, index: int) -> Iterator[int]:
        """``index``, then the following clips of the same domain, then every other clip."""
        same = self._by_domain[self.domains[index]]
        start = int(self._pos_in_domain[index])
        for k in range(same.size):
            yield int(same[(start + k) % same.size])
        n = len(self.rows)
        for k in range(1, n):
            j = (index + k) % n
            if self.domains[j] != self.domains[index]:
                yield j

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.rows):
            raise IndexError(f"index {index} out of range for {len(self.rows)} clips")
        if self.on_error == "raise":
            return self.load(index)
        for j in self._candidates(index):
            if self._bad[j]:
                continue
            try:
                return self.load(j)
            except LOAD_ERRORS as e:
                self._bad[j] = 1
                logger.warning(
                    "skipping unreadable clip %r (%s): %s [%d file(s) skipped so far]",
                    self.rows[j]["id"],
                    self.rows[j]["audio"],
                    e,
                    self.skipped,
                )
        raise AudioError(f"all {len(self.rows)} clips failed to load; first bad file: {self.skipped_files[:1]}")


# ---------------------------------------------------------------------------------------------
# Collation
# ---------------------------------------------------------------------------------------------
def collate_audio(batch: Sequence[Mapping[str, Any]], pad_to_multiple: int = 1) -> dict[str, Any]:
    """Pad a list of dataset items into a batch.

    Args:
        batch: items from :class:`ManifestDataset` / :class:`~entanglecodec.data.shards.ShardDataset`.
        pad_to_multiple: round the padded length up to a multiple of this (e.g. 480 for whole mel
            frames); 1 pads to the longest item.

    Returns:
        ``wav`` float32 ``[B, S]`` zero-padded, ``lengths`` long ``[B]`` (samples), ``mask`` bool
        ``[B, S]`` (``True`` on real samples), and, for every other key of the items
        (``id``, ``caption``, ``rich_caption``, ``asr_caption``, ``text``, ``domain``, ``split``,
        ``attributes``, ``offset``), the list of values in batch order.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    if pad_to_multiple < 1:
        raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
    wavs: list[Tensor] = [torch.as_tensor(b["wav"], dtype=torch.float32).reshape(-1) for b in batch]
    lengths = torch.tensor([w.numel() for w in wavs], dtype=torch.long)
    s = int(lengths.max())
    s = int(math.ceil(s / pad_to_multiple) * pad_to_multiple)
    out = torch.zeros(len(wavs), s, dtype=torch.float32)
    for i, w in enumerate(wavs):
        out[i, : w.numel()] = w
    mask = torch.arange(s)[None, :] < lengths[:, None]
    result: dict[str, Any] = {"wav": out, "lengths": lengths, "mask": mask}
    for key in batch[0]:
        if key in ("wav", "length"):
            continue
        result[key] = [b.get(key) for b in batch]
    return result


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------
class _Sized:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def ignore_termination(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers ignore SIGTERM and leave it to the main process.

    ``pkill -f``, SLURM's ``scancel`` and container stops signal every process of a job; a worker
    that died first would make the main process fail before it writes its exit checkpoint. Workers
    still exit with the main process (PyTorch's watchdog) and on SIGKILL.
    """
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def dist_world() -> tuple[int, int]:
    """``(world size, rank)`` of the initialised ``torch.distributed`` group, else ``(1, 0)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class DomainWeightedSampler(DistributedSampler):
    """Seeded, epoch-aware sampler drawing domains with given weights, sharded over DDP ranks.

    Each epoch, ``epoch_size`` draws are made from a generator seeded with ``(seed, epoch)``: every
    draw picks a domain with probability proportional to its weight, then the next clip of a
    shuffled pass over that domain (a domain is reshuffled only when its pass is used up, so clips
    do not repeat within an epoch unless the domain is over-sampled beyond its size). Every rank
    computes the same global list and takes positions ``rank, rank + world, ...``, so ranks see
    disjoint positions and the same number of items.

    It subclasses :class:`torch.utils.data.DistributedSampler` only so that Lightning/DDP see it as
    already distributed (no second sharding wrapper) and call :meth:`set_epoch`.

    Args:
        data: a :class:`ManifestDataset` (or anything with a ``domains`` list) or the list of
            per-index domain names itself.
        weights: ``{domain: weight}``; domains of the data that are missing get weight 0 (they are
            never drawn; a warning names them). ``None``: a plain shuffle of all clips.
        epoch_size: draws per epoch over all ranks (default: the number of clips).
        seed: base seed.
        num_replicas, rank: DDP world size and rank (default: from ``torch.distributed`` when it
            is initialised, else 1 and 0).
        drop_last: drop the tail that does not divide by ``num_replicas`` instead of padding it
            with draws from the start of the list.
    """

    def __init__(
        self,
        data: Any,
        weights: Mapping[str, float] | None = None,
        epoch_size: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        domains = list(data) if isinstance(data, Sequence) and not hasattr(data, "domains") else list(data.domains)
        if not domains:
            raise ValueError("cannot sample from an empty dataset")
        world, r = dist_world()
        num_replicas = world if num_replicas is None else int(num_replicas)
        rank = r if rank is None else int(rank)
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"invalid rank {rank} for num_replicas {num_replicas}")
        n = len(domains)
        size = n if epoch_size is None else int(epoch_size)
        if size < 1:
            raise ValueError(f"epoch_size must be >= 1, got {epoch_size}")
        super().__init__(_Sized(size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)  # type: ignore[arg-type]
        self.data = data if hasattr(data, "set_epoch") else None
        self.epoch_size = size
        self._domain_array = np.asarray(domains)
        self.domain_indices: dict[str, np.ndarray] = {
            d: np.flatnonzero(self._domain_array == d) for d in sorted(set(domains))
        }
        self.weights: dict[str, float] | None = None
        if weights is not None:
            self.weights = self._check_weights(weights)

    def _check_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        present = set(self.domain_indices)
        unknown = sorted(set(weights) - set(DOMAINS))
        if unknown:
            raise ValueError(f"domain weights name unknown domains {unknown} (expected some of {', '.join(DOMAINS)})")
        for d, w in weights.items():
            if not (isinstance(w, int | float) and math.isfinite(w) and w >= 0):
                raise ValueError(f"domain weight for {d!r} must be a finite number >= 0, got {w!r}")
        absent = sorted(d for d, w in weights.items() if w > 0 and d not in present)
        if absent:
            raise ValueError(
                f"domain weights give weight to {absent} but the data has no such clips "
                f"(domains present: {', '.join(sorted(present))})"
            )
        unweighted = sorted(present - {d for d, w in weights.items() if w > 0})
        if unweighted:
            logger.warning("domains %s get weight 0 and will never be sampled", unweighted)
        total = float(sum(w for d, w in weights.items() if d in present))
        if total <= 0:
            raise ValueError(f"domain weights {dict(weights)} give no positive weight to any present domain")
        return {d: float(weights.get(d, 0.0)) / total for d in sorted(present)}

    def global_indices(self, epoch: int | None = None) -> np.ndarray:
        """The full list of drawn indices for ``epoch`` (the same on every rank), length ``epoch_size``."""
        ep = self.epoch if epoch is None else int(epoch)
        g = np.random.default_rng([int(self.seed) & 0xFFFFFFFF, ep & 0xFFFFFFFF, 0x5A3])
        size = self.epoch_size
        if self.weights is None:
            n = self._domain_array.size
            reps = int(math.ceil(size / n))
            return np.concatenate([g.permutation(n) for _ in range(reps)])[:size]
        names = list(self.weights)
        probs = np.asarray([self.weights[d] for d in names], dtype=np.float64)
        choice = g.choice(len(names), size=size, p=probs / probs.sum())
        out = np.empty(size, dtype=np.int64)
        for k, d in enumerate(names):
            pos = np.flatnonzero(choice == k)
            if pos.size == 0:
                continue
            idx = self.domain_indices[d]
            passes = int(math.ceil(pos.size / idx.size))
            stream = np.concatenate([idx[g.permutation(idx.size)] for _ in range(passes)])
            out[pos] = stream[: pos.size]
        return out

    def __iter__(self) -> Iterator[int]:
        idx = self.global_indices()
        if self.drop_last:
            idx = idx[: self.total_size]
        elif idx.size < self.total_size:
            idx = np.concatenate([idx, idx[: self.total_size - idx.size]])
        return iter(idx[self.rank : self.total_size : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; also forwarded to the dataset (so random crops change per epoch)."""
        self.epoch = int(epoch)
        if self.data is not None:
            self.data.set_epoch(int(epoch))
