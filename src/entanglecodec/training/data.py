"""Data loaders for the codec recipes, with exact resume.

The training sampler is the corpus' :class:`~entanglecodec.data.dataset.DomainWeightedSampler`
(seeded per epoch, domain weights, sharded over ranks) wrapped in :class:`ResumableSampler`,
which starts at any position of any epoch. The position is read from the trainer's count of
completed batches each time an epoch's iterator is created (not counted by the sampler itself),
so a resumed run sees exactly the batches the uninterrupted run would have seen, also when the
trainer builds and discards an iterator on resume (a checkpoint taken at an epoch's last batch).

With ``data.features`` set, both loaders read a pre-computed feature directory
(:class:`~entanglecodec.data.features.FeatureDataset`: crops in frames, batched by
:func:`~entanglecodec.data.features.collate_features`) through the same samplers, so domain weights,
rank sharding and exact resume work the same way.

Both loaders draw their worker base seeds from their own seeded generator, never from torch's
global RNG: creating an iterator (each epoch, each validation) must not shift the training RNG
stream, which is saved in the checkpoint and restored on resume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Sampler

from ..data.dataset import DomainWeightedSampler, ManifestDataset, collate_audio, ignore_termination
from ..data.features import FeatureDataset, collate_features, read_index
from .recipe import DataSection


class ResumableSampler(Sampler[int]):
    """Iterate ``inner`` epoch after epoch from a settable ``(epoch, offset)`` position.

    Each ``__iter__`` yields the rest of the current epoch and then advances to the next one.
    With ``batches_done`` (a callable returning the batches consumed so far on this rank, e.g.
    the trainer's completed-batch count), every ``__iter__`` first re-derives its position from
    it, so iterators created and thrown away do not move the data order.
    """

    def __init__(
        self, inner: DomainWeightedSampler, batches_done: Callable[[], int] | None = None, batch_size: int = 1
    ) -> None:
        self.inner = inner
        self.epoch = 0
        self.offset = 0
        self.batches_done = batches_done
        self.batch_size = int(batch_size)

    def __len__(self) -> int:
        # The full epoch length: after a mid-epoch resume Lightning restores its batch counter within
        # the epoch and expects the epoch's remaining batches, which is what __iter__ yields.
        return len(self.inner)

    def set_position(self, batches_consumed: int, batch_size: int) -> None:
        """Jump to the position after ``batches_consumed`` full batches (per rank) since the start.

        Epochs hold ``len(inner) // batch_size`` batches (the loader drops the incomplete last one).
        """
        per_epoch = len(self.inner) // batch_size
        if per_epoch < 1:
            raise ValueError(f"an epoch of {len(self.inner)} clips per rank is smaller than one batch of {batch_size}")
        self.epoch, b = divmod(int(batches_consumed), per_epoch)
        self.offset = b * batch_size

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this with its own epoch counter
        pass

    def __iter__(self) -> Iterator[int]:
        if self.batches_done is not None:
            self.set_position(self.batches_done(), self.batch_size)
        self.inner.set_epoch(self.epoch)
        indices = list(iter(self.inner))[self.offset :]
        self.epoch += 1
        self.offset = 0
        return iter(indices)


Collate = Callable[[Any], dict[str, Any]]


def loader_generator(seed: int, salt: int) -> torch.Generator:
    """A private generator for a DataLoader's worker seeds (keeps torch's global RNG untouched)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + salt) & 0x7FFFFFFFFFFFFFFF)


def build_train_loader(
    cfg: DataSection,
    seed: int,
    rank: int,
    world: int,
    batches_consumed: int,
    batches_done: Callable[[], int] | None = None,
    collate: Collate = collate_audio,
) -> DataLoader[Any]:
    """Random-crop training loader for this rank, positioned after ``batches_consumed`` batches.

    ``batches_done`` (optional) is re-read at every epoch's iterator, see :class:`ResumableSampler`.
    ``collate`` batches the items (default :func:`collate_audio`; auxiliary losses may add targets).
    """
    ds: ManifestDataset | FeatureDataset
    if cfg.features:
        ds, collate = feature_dataset(cfg, cfg.train_split or "train", "random", seed), collate_features
    else:
        ds = ManifestDataset(
            cfg.train_manifest,
            split=cfg.train_split,
            crop_seconds=cfg.crop_seconds,
            crop_mode="random",
            seed=seed,
            text_field=cfg.text_field,
            on_error=cfg.on_error,
        )
    inner = DomainWeightedSampler(ds, weights=cfg.domain_weights, seed=seed, num_replicas=world, rank=rank, drop_last=True)
    sampler = ResumableSampler(inner, batches_done, cfg.batch_size)
    sampler.set_position(batches_consumed, cfg.batch_size)
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.num_workers,
        drop_last=True,
        persistent_workers=False,
        worker_init_fn=ignore_termination,
        generator=loader_generator(seed, 1 + rank),
    )


def feature_dataset(cfg: DataSection, split: str, crop_mode: Literal["random", "center"], seed: int) -> FeatureDataset:
    """The ``data.features`` directory's ``split`` (caption embeddings included when it holds them)."""
    assert cfg.features is not None
    index = read_index(cfg.features)
    has_emb = index["captions"]["embedding"] is not None
    return FeatureDataset(cfg.features, split, cfg.crop_seconds, crop_mode, seed, embeddings=has_emb, index=index)


def build_valid_loader(cfg: DataSection, rank: int, world: int, collate: Collate = collate_audio) -> DataLoader[Any] | None:
    """Deterministic (centre-crop) validation loader over ``valid_batches`` batches, or None."""
    manifests = cfg.valid_manifest or cfg.train_manifest
    ds: ManifestDataset | FeatureDataset
    if cfg.features:
        if (cfg.valid_split or "valid") not in read_index(cfg.features)["splits"]:
            return None
        ds, collate = feature_dataset(cfg, cfg.valid_split or "valid", "center", 0), collate_features
    else:
        try:
            ds = ManifestDataset(
                manifests,
                split=cfg.valid_split,
                crop_seconds=cfg.crop_seconds,
                crop_mode="center",
                text_field=cfg.text_field,
                on_error=cfg.on_error,
            )
        except ValueError:
            return None
    n = min(len(ds), cfg.valid_batches * cfg.batch_size * world)
    indices = list(range(rank, n, world))
    if not indices:
        return None
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        sampler=indices,
        collate_fn=collate,
        num_workers=min(cfg.num_workers, 1),
        worker_init_fn=ignore_termination,
        generator=loader_generator(0, 0x5EED + rank),
    )
