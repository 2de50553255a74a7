"""What a training step does when its loss is NaN/Inf (``trainer.nan_policy``), for every module.

``stop`` (default) raises :class:`NonFiniteLossError` with the run's checkpoint folder named (the last
good checkpoint there is intact); ``skip`` drops the batch, at most ``trainer.max_nan_skips`` times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class NonFiniteLossError(RuntimeError):
    """Raised when the loss becomes NaN/Inf and ``trainer.nan_policy`` is ``stop``."""


def skip_or_stop(
    trainer_cfg: Any, skips_so_far: int, step: int, run_dir: Path, what: str = "loss", detail: str = ""
) -> bool:
    """Apply the NaN policy to a non-finite loss at ``step``.

    Args:
        trainer_cfg: the recipe's ``trainer`` section (``nan_policy``, ``max_nan_skips``).
        skips_so_far: batches already skipped in this run.
        what: how the message names the loss (``"loss"``, ``"LM loss"``); detail: appended after the step
            (e.g. the loss components).

    Returns: True when the batch is to be skipped (the caller counts it).

    Raises: :class:`NonFiniteLossError` under ``stop`` or once the skip budget is spent.
    """
    if trainer_cfg.nan_policy == "skip" and skips_so_far < trainer_cfg.max_nan_skips:
        return True
    raise NonFiniteLossError(
        f"non-finite {what} at step {step}{detail}; training stopped. The last good checkpoint in "
        f"{run_dir / 'checkpoints'} is intact: lower the learning rate, check the data, or set "
        f"trainer.nan_policy: skip (skipped so far: {skips_so_far})."
    )
