"""Data loaders for the codec recipes, with exact resume.

The training sampler is the corpus' :class:`~entanglecodec.data.dataset.DomainWeightedSampler`
(seeded per epoch, domain weights, sharded over ranks) wrapped in :class:`ResumableSampler`,
which starts at any position of any epoch. On ``--resume`` the position is derived from the
restored global step (``step * accumulate`` batches per rank), so a resumed run sees
exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, Sampler

from ..data.dataset import DomainWeightedSampler, ManifestDataset, collate_audio, ignore_termination
from .recipe import DataSection


class ResumableSampler(Sampler[int]):
    """Iterate ``inner`` epoch after epoch from a settable ``(epoch, offset)`` position.

    Each ``__iter__`` yields the rest of the current epoch and then advances to the next one.
    """

    def __init__(self, inner: DomainWeightedSampler) -> None:
        self.inner = inner
        self.epoch = 0
        self.offset = 0

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
        self.inner.set_epoch(self.epoch)
        indices = list(iter(self.inner))[self.offset :]
        self.epoch += 1
        self.offset = 0
        return iter(indices)


Collate = Callable[[Any], dict[str, Any]]


def build_train_loader(
    cfg: DataSection, seed: int, rank: int, world: int, batches_consumed: int, collate: Collate = collate_audio
) -> DataLoader[Any]:
    """Random-crop training loader for this rank, positioned after ``batches_consumed`` batches.

    ``collate`` batches the items (default :func:`collate_audio`; auxiliary losses may add targets)."""
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
    sampler = ResumableSampler(inner)
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
    )


def build_valid_loader(cfg: DataSection, rank: int, world: int, collate: Collate = collate_audio) -> DataLoader[Any] | None:
    """Deterministic (centre-crop) validation loader over ``valid_batches`` batches, or None."""
    manifests = cfg.valid_manifest or cfg.train_manifest
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
    )
