"""Training data: the Lightning data modules and loaders of the codec and vocoder recipes.

:class:`CodecDataModule` (codec recipes) and :class:`ManifestDataModule` (vocoder recipes, and any
caller that wants crops from manifests) are the only Lightning data modules of the package; the
datasets and samplers they use live in :mod:`entanglecodec.data.dataset`, which has no Lightning
dependency.

Codec loaders resume exactly at any step: the training sampler is the corpus' :class:`~entanglecodec.data.dataset.DomainWeightedSampler`
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

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Sampler

from ..data.dataset import (
    DomainWeightedSampler,
    ManifestDataset,
    check_text_field,
    collate_audio,
    dist_world,
    ignore_termination,
)
from ..data.features import FeatureDataset, collate_features, read_index
from ..data.manifest import read_manifests
from .aux_losses import PitchCollate
from .recipe import DataSection, Recipe


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
    semantic: bool = False,
) -> DataLoader[Any]:
    """Random-crop training loader for this rank, positioned after ``batches_consumed`` batches.

    ``batches_done`` (optional) is re-read at every epoch's iterator, see :class:`ResumableSampler`.
    ``collate`` batches the items (default :func:`collate_audio`; auxiliary losses may add targets).
    ``semantic``: feature batches carry the directory's teacher frames (``loss.semantic``).
    """
    ds: ManifestDataset | FeatureDataset
    if cfg.features:
        ds, collate = feature_dataset(cfg, cfg.train_split or "train", "random", seed, semantic), collate_features
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


def feature_dataset(
    cfg: DataSection, split: str, crop_mode: Literal["random", "center"], seed: int, semantic: bool = False
) -> FeatureDataset:
    """The ``data.features`` directory's ``split`` (caption embeddings included when it holds them;
    semantic teacher frames when ``semantic``)."""
    assert cfg.features is not None
    index = read_index(cfg.features)
    has_emb = index["captions"]["embedding"] is not None
    return FeatureDataset(cfg.features, split, cfg.crop_seconds, crop_mode, seed, embeddings=has_emb, index=index,
                          semantic=semantic)


def build_valid_loader(
    cfg: DataSection, rank: int, world: int, collate: Collate = collate_audio, semantic: bool = False
) -> DataLoader[Any] | None:
    """Deterministic (centre-crop) validation loader over ``valid_batches`` batches, or None."""
    manifests = cfg.valid_manifest or cfg.train_manifest
    ds: ManifestDataset | FeatureDataset
    if cfg.features:
        if (cfg.valid_split or "valid") not in read_index(cfg.features)["splits"]:
            return None
        ds, collate = feature_dataset(cfg, cfg.valid_split or "valid", "center", 0, semantic), collate_features
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


class CodecDataModule(pl.LightningDataModule):
    """Train/validation loaders of a codec recipe; the train loader resumes at the restored step."""

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        self.recipe = recipe

    def _collate(self) -> Any:
        """Batches carry per-frame F0 targets when the primitive loss is on or the model's decoder
        is pitch-conditioned (stage 1 and stage 2; the discriminator stage decodes with predicted F0)."""
        config = self.recipe.model_config()
        r = self.recipe
        if (r.stage == "stage1" and r.loss.primitives > 0) or (r.stage != "disc" and config.decoder.pitch_cond):
            return PitchCollate(config.mel.sample_rate, config.mel.hop_length)
        return collate_audio

    def _semantic(self) -> bool:
        """Feature batches carry teacher frames for the stage-1 ``loss.semantic`` term."""
        return self.recipe.stage == "stage1" and self.recipe.loss.semantic > 0

    def train_dataloader(self) -> Any:
        t = self.trainer
        assert t is not None
        consumed = int(t.global_step) * self.recipe.optim.accumulate
        return build_train_loader(
            self.recipe.data, self.recipe.trainer.seed, t.global_rank, t.world_size, consumed,
            lambda: batches_done(t), self._collate(), self._semantic(),
        )

    def val_dataloader(self) -> Any:
        t = self.trainer
        assert t is not None
        loader = build_valid_loader(self.recipe.data, t.global_rank, t.world_size, self._collate(), self._semantic())
        return loader if loader is not None else []


def batches_done(trainer: pl.Trainer) -> int:
    """Training batches this rank has completed since the run began (restored on resume)."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.total.completed)


class ManifestDataModule(pl.LightningDataModule):
    """Lightning data module over manifests (train: random crops + domain weights; valid: centre crops).

    The training sampler is a :class:`DomainWeightedSampler` whose epoch (``epoch_size`` draws) is
    a function of ``(seed, epoch)``: with one Lightning epoch per sampler epoch (the vocoder
    recipes), a run resumed at an epoch end continues with exactly the data it would have seen.

    Args:
        train_manifest: manifest path(s) for training.
        valid_manifest: manifest path(s) for validation, filtered by ``valid_split`` (``None``:
            all their rows); ``None`` uses the ``valid_split`` rows of ``train_manifest`` when
            there are any (else no validation loader).
        batch_size: clips per batch (per rank).
        num_workers: DataLoader worker processes (persistent when > 0).
        crop_seconds: crop length (paper: 10 s); ``None`` loads whole clips.
        domain_weights: e.g. ``{"speech": 0.5, "music": 0.25, "sound": 0.25}``; ``None`` shuffles
            all clips uniformly.
        text_field: ``"caption"`` or ``"asr_caption"`` (w/o-rich-caption ablation), see
            :class:`ManifestDataset`.
        seed: seed of sampling and crops.
        train_split, valid_split: manifest splits used for training / validation.
        epoch_size: training draws per epoch over all ranks (default: number of clips).
        valid_crop_seconds: crop for validation (centre crop); defaults to ``crop_seconds``.
        on_error: ``"skip"`` or ``"raise"`` for unreadable files.
        sample_rate: output rate in Hz.
        pad_to_multiple: see :func:`collate_audio`.
    """

    def __init__(
        self,
        train_manifest: str | Path | Sequence[str | Path],
        valid_manifest: str | Path | Sequence[str | Path] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        crop_seconds: float | None = 10.0,
        domain_weights: Mapping[str, float] | None = None,
        text_field: str = "caption",
        seed: int = 0,
        train_split: str | None = "train",
        valid_split: str | None = "valid",
        epoch_size: int | None = None,
        valid_crop_seconds: float | None = None,
        on_error: Literal["skip", "raise"] = "skip",
        sample_rate: int = 24000,
        pad_to_multiple: int = 1,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.train_manifest = train_manifest
        self.valid_manifest = valid_manifest
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.crop_seconds = crop_seconds
        self.domain_weights = dict(domain_weights) if domain_weights is not None else None
        self.text_field = check_text_field(text_field)
        self.seed = int(seed)
        self.train_split = train_split
        self.valid_split = valid_split
        self.epoch_size = epoch_size
        self.valid_crop_seconds = crop_seconds if valid_crop_seconds is None else valid_crop_seconds
        self.on_error: Literal["skip", "raise"] = on_error
        self.sample_rate = int(sample_rate)
        self.pad_to_multiple = int(pad_to_multiple)
        self.train_dataset: ManifestDataset | None = None
        self.valid_dataset: ManifestDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is None:
            self.train_dataset = ManifestDataset(
                self.train_manifest,
                split=self.train_split,
                crop_seconds=self.crop_seconds,
                sample_rate=self.sample_rate,
                crop_mode="random",
                seed=self.seed,
                text_field=self.text_field,
                on_error=self.on_error,
            )
        if self.valid_dataset is None:
            rows = None
            if self.valid_manifest is not None:
                rows = read_manifests(self.valid_manifest, self.valid_split)
            elif self.valid_split is not None:
                rows = read_manifests(self.train_manifest, None)
                rows = [r for r in rows if r["split"] == self.valid_split] or None
            if rows:
                self.valid_dataset = ManifestDataset(
                    rows=rows,
                    crop_seconds=self.valid_crop_seconds,
                    sample_rate=self.sample_rate,
                    crop_mode="center",
                    seed=self.seed,
                    text_field=self.text_field,
                    on_error=self.on_error,
                )

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.world_size), int(trainer.global_rank)
        return dist_world()

    def _collate(self, batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return collate_audio(batch, self.pad_to_multiple)

    def train_dataloader(self) -> DataLoader[Any]:
        self.setup("fit")
        assert self.train_dataset is not None
        world, rank = self._world()
        sampler = DomainWeightedSampler(
            self.train_dataset,
            self.domain_weights,
            epoch_size=self.epoch_size,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
        )
        return DataLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self._collate,
            drop_last=True,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=ignore_termination,
        )

    def val_dataloader(self) -> Any:
        self.setup("validate")
        if self.valid_dataset is None:
            return []
        return DataLoader(
            self.valid_dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=self._collate,
            drop_last=False,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=ignore_termination,
        )
