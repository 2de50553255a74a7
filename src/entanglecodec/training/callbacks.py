"""Lightning callbacks and loggers shared by the codec and the vocoder recipes.

* :class:`SaveOnInterrupt` -- ``last.ckpt`` is written when a run is stopped (SIGTERM from a
  scheduler or ``kill``, Ctrl-C), so ``--resume`` continues from the last completed step. A run
  that fails on an error (non-finite loss, unreadable data) does not overwrite ``last.ckpt``:
  the previous checkpoint is the one to resume from.
* :class:`BestCheckpoint` -- ``best.ckpt`` following a module's own ``best_val`` across resumes.
* :func:`run_loggers` -- CSV (+ TensorBoard) loggers; :func:`log_version` gives every resumed
  segment its own folder (``logs/resume-N/metrics.csv``), so no log is overwritten.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class SaveOnInterrupt(Callback):
    """On SIGTERM or Ctrl-C (Lightning stops at the next batch) write ``path`` before exiting."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Lightning raises SIGTERMException at the next batch; any other exception after a SIGTERM
        # (e.g. a data worker killed by the same signal) must still leave the exit checkpoint.
        stopped = isinstance(exception, SIGTERMException | KeyboardInterrupt) or getattr(trainer, "received_sigterm", False)
        if not stopped or trainer.global_step < 1:
            return
        trainer.save_checkpoint(self.path)
        log.warning("%s: saved %s at step %d", type(exception).__name__, self.path, trainer.global_step)


class BestCheckpoint(ModelCheckpoint):
    """``best.ckpt`` whose score follows the module's own ``best_val`` across resumes.

    Lightning's restored top-k state can predate the last validation (then the next improvement
    would be written beside the old file as ``best-v1.ckpt``), and it knows nothing of a changed
    validation set. The module is restored before the callbacks, so this callback re-seeds its
    state from the module's persisted ``best_val`` (``inf`` after a validation-set change) and
    always writes ``best.ckpt`` itself.
    """

    def __init__(self, module: pl.LightningModule, **kwargs: Any) -> None:
        super().__init__(enable_version_counter=False, **kwargs)
        self._module: Any = module  # any module with a float ``best_val`` (restored before the callbacks)

    @property
    def state_key(self) -> str:
        # The key of this callback's state in checkpoints (kept from the run folders written before
        # the training stack was shared, where the class was ``_BestCheckpoint``).
        return "_BestCheckpoint" + super().state_key[len(type(self).__qualname__) :]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        path = str(Path(self.dirpath or ".") / f"{self.filename}{self.FILE_EXTENSION}")
        if not Path(path).is_file():
            return
        score = torch.tensor(float(self._module.best_val))
        self.best_k_models = {path: score}
        self.kth_best_model_path = self.best_model_path = path
        self.kth_value = self.best_model_score = score


def log_version(run_dir: Path, resume: bool) -> str:
    """Logger version of a run segment: ``""`` for a fresh run, ``resume-N`` for the N-th resume."""
    if not resume:
        return ""
    k = 1
    while (run_dir / "logs" / f"resume-{k}").exists():
        k += 1
    return f"resume-{k}"


def run_loggers(run_dir: Path, version: str, flush_every: int) -> list[Logger]:
    """``run_dir/logs/[version/]metrics.csv`` and ``run_dir/tb/[version/]`` TensorBoard events."""
    return [
        CSVLogger(str(run_dir), name="logs", version=version, flush_logs_every_n_steps=flush_every),
        TensorBoardLogger(str(run_dir), name="tb", version=version),
    ]
