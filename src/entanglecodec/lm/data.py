"""Batches of task sequences for the LM, with the codec training's resumable sampler.

:func:`collate` right-pads ``prompt | target`` sequences into ``input_ids [B, L]``,
``attention_mask [B, L]`` (1 on real tokens) and ``labels [B, L]`` (the target ids, ``-100`` on
prompt and padding: the loss is masked to answer/target tokens; see :meth:`Example.segments`). The training order comes from
:class:`~entanglecodec.data.dataset.DomainWeightedSampler` with the *task* as the domain (so
``data.task_weights`` balances tasks) inside :class:`~entanglecodec.training.data.ResumableSampler`
(seeded per epoch, sharded by rank, resumes exactly at the trainer's completed-batch count).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..data.dataset import DomainWeightedSampler
from ..training.data import ResumableSampler, loader_generator
from .tasks import Example

IGNORE = -100


class ExampleDataset(Dataset[Example]):
    """A list of :class:`Example`; ``domains`` are the task names (for the task-weighted sampler)."""

    def __init__(self, examples: Sequence[Example]) -> None:
        if not examples:
            raise ValueError("no training examples (check data.tasks, the manifest splits and data.max_len)")
        self.examples = list(examples)
        self.domains = [e.task for e in self.examples]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, Tensor]:
    """Right-pad examples: ``input_ids``, ``attention_mask``, ``labels`` (all ``LongTensor [B, L]``).

    Labels hold every segment's target (an AQA example with several turns has several)."""
    n = max(len(e) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        at = 0
        for prompt, target in e.segments():
            seq = torch.tensor(prompt + target, dtype=torch.long)
            ids[i, at : at + seq.numel()] = seq
            labels[i, at + len(prompt) : at + seq.numel()] = seq[len(prompt) :]
            at += seq.numel()
        mask[i, :at] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train_loader(
    examples: Sequence[Example], pad_id: int, batch_size: int, seed: int, rank: int, world: int,
    batches_consumed: int, batches_done: Callable[[], int] | None, task_weights: dict[str, float] | None,
) -> DataLoader[Any]:  # fmt: skip
    """Shuffled, task-weighted, rank-sharded loader positioned after ``batches_consumed`` batches."""
    ds = ExampleDataset(examples)
    if len(ds) < batch_size * world:
        raise ValueError(f"{len(ds)} training examples are fewer than one batch ({batch_size} x {world} ranks)")
    inner = DomainWeightedSampler(ds, weights=task_weights, seed=seed, num_replicas=world, rank=rank, drop_last=True)
    sampler = ResumableSampler(inner, batches_done, batch_size)
    sampler.set_position(batches_consumed, batch_size)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=lambda b: collate(b, pad_id),
                      drop_last=True, num_workers=0, generator=loader_generator(seed, 1 + rank))  # fmt: skip


def valid_loader(examples: Sequence[Example], pad_id: int, batch_size: int, batches: int, rank: int, world: int) -> DataLoader[Any] | None:
    """The first ``batches x batch_size x world`` validation examples, in order, split over ranks."""
    n = min(len(examples), batches * batch_size * world)
    idx = list(range(rank, n, world))
    if not idx:
        return None
    return DataLoader(ExampleDataset(examples), batch_size=batch_size, sampler=idx, collate_fn=lambda b: collate(b, pad_id))
