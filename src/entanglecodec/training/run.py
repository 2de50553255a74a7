"""Build the Lightning Trainer for a recipe, run it, resume it, export it.

Run folder layout (keep it outside the repository)::

    RUN_DIR/recipe.yaml               the recipe this run uses
    RUN_DIR/checkpoints/last.ckpt     latest full state (model, optimiser, plateau scheduler, step)
    RUN_DIR/checkpoints/stepNNNNNNN.ckpt  the periodic checkpoint
    RUN_DIR/logs/metrics.csv          CSV log (resumed segments: logs/resume-N/)   RUN_DIR/tb/  TensorBoard
    RUN_DIR/plots/*.png               validation mel comparisons
    RUN_DIR/mel_stats.json            normalisation statistics computed for this run

Multi-GPU / multi-node: set ``trainer.devices``, ``trainer.num_nodes`` and ``trainer.strategy``
(``ddp``, ``fsdp``) and launch the same command under ``torchrun`` or SLURM ``srun``; Lightning
picks up the environment. The data sampler shards itself by rank.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..data.dataset import collate_audio
from .aux_losses import PitchCollate
from .codec_module import CodecModule
from .data import build_train_loader, build_valid_loader
from .recipe import Recipe, save_recipe

log = logging.getLogger(__name__)


class CodecDataModule(L.LightningDataModule):
    """Train/validation loaders of a recipe; the train loader resumes at the restored step."""

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        self.recipe = recipe

    def _collate(self) -> Any:
        """Batches carry per-frame F0 targets when the primitive loss is on."""
        if self.recipe.stage == "stage1" and self.recipe.loss.primitives > 0:
            mel = self.recipe.model.build().mel
            return PitchCollate(mel.sample_rate, mel.hop_length)
        return collate_audio

    def train_dataloader(self) -> Any:
        t = self.trainer
        assert t is not None
        consumed = int(t.global_step) * self.recipe.optim.accumulate
        return build_train_loader(
            self.recipe.data, self.recipe.trainer.seed, t.global_rank, t.world_size, consumed,
            lambda: batches_done(t), self._collate(),
        )

    def val_dataloader(self) -> Any:
        t = self.trainer
        assert t is not None
        loader = build_valid_loader(self.recipe.data, t.global_rank, t.world_size, self._collate())
        return loader if loader is not None else []


def batches_done(trainer: L.Trainer) -> int:
    """Training batches this rank has completed since the run began (restored on resume)."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.total.completed)


class SaveOnSigterm(Callback):
    """On SIGTERM (Lightning stops at the next batch) write ``last.ckpt`` before exiting."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning raises SIGTERMException at the next batch; any other exception after a SIGTERM
        # (e.g. a data worker killed by the same signal) must still leave the exit checkpoint.
        if isinstance(exception, SIGTERMException) or getattr(trainer, "received_sigterm", False):
            trainer.save_checkpoint(self.path)
            log.warning("SIGTERM: saved %s at step %d", self.path, trainer.global_step)


def prepare_mel_stats(module: CodecModule, recipe: Recipe, run_dir: Path) -> None:
    """Set the model's mel normalisation statistics (stage 1, fresh runs)."""
    from ..audio import compute_mel_stats, load_mel_stats, save_mel_stats
    from ..data.manifest import read_manifests

    spec = recipe.data.mel_stats
    if spec is None:
        return
    fe = module.model.frontend
    if spec != "compute":
        mean, std = load_mel_stats(spec)
        fe.set_stats(mean, std)
        return
    cache = run_dir / "mel_stats.json"
    if cache.is_file():
        mean, std = load_mel_stats(cache)
    elif recipe.data.features:  # the statistics the feature directory was built with
        from ..data.features import feature_stats, read_index

        mean, std = feature_stats(read_index(recipe.data.features))
        save_mel_stats(cache, mean, std, 0, module.model.config.mel)
    else:
        rows = read_manifests(recipe.data.train_manifest, recipe.data.train_split)
        step = max(1, len(rows) // max(1, recipe.data.mel_stats_files))
        files = [Path(r["audio"]) for r in rows[::step]]
        mean, std, n = compute_mel_stats(files, module.model.config.mel)
        save_mel_stats(cache, mean, std, n, module.model.config.mel)
    fe.set_stats(mean, std)


def build_trainer(recipe: Recipe, run_dir: Path, enable_progress_bar: bool = True, log_version: str = "") -> L.Trainer:
    t = recipe.trainer
    ckpt_dir = run_dir / "checkpoints"
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="step{step:07d}",
            every_n_train_steps=t.ckpt_every,
            save_last=True,
            save_top_k=1,
            auto_insert_metric_name=False,
        ),
        SaveOnSigterm(ckpt_dir / "last.ckpt"),
    ]
    loggers = [
        CSVLogger(str(run_dir), name="logs", version=log_version, flush_logs_every_n_steps=t.log_every),
        TensorBoardLogger(str(run_dir), name="tb", version=log_version),
    ]
    return L.Trainer(
        max_steps=t.max_steps,
        max_time=t.max_time,
        precision=t.precision,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        accumulate_grad_batches=recipe.optim.accumulate,
        gradient_clip_val=recipe.optim.grad_clip if recipe.optim.grad_clip > 0 else None,
        val_check_interval=t.val_every * recipe.optim.accumulate,
        check_val_every_n_epoch=None,
        limit_val_batches=recipe.data.valid_batches,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every,
        callbacks=callbacks,
        logger=loggers,
        use_distributed_sampler=False,
        enable_progress_bar=enable_progress_bar,
        default_root_dir=str(run_dir),
        deterministic=False,
    )


def run_training(
    recipe: Recipe, run_dir: str | Path, resume: bool = False, enable_progress_bar: bool = True
) -> CodecModule:
    """Train (or resume) a codec stage. Returns the trained module.

    Raises:
        FileExistsError: ``run_dir`` already holds a run and ``resume`` is False.
        FileNotFoundError: ``resume`` is True but there is no ``last.ckpt`` to resume from.
    """
    run = Path(run_dir)
    last = run / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise FileNotFoundError(f"{last}: nothing to resume (no last.ckpt in the run folder)")
    if not resume and last.is_file():
        raise FileExistsError(f"{run} already holds a run; pass --resume to continue it or choose another --run-dir")
    run.mkdir(parents=True, exist_ok=True)
    if recipe.trainer.threads:
        torch.set_num_threads(recipe.trainer.threads)
    L.seed_everything(recipe.trainer.seed, workers=True, verbose=False)
    save_recipe(recipe, run / ("recipe.resumed.yaml" if resume else "recipe.yaml"))
    module = CodecModule(recipe.to_dict(), str(run))
    if recipe.stage == "stage1" and not resume:
        prepare_mel_stats(module, recipe, run)
    # Each resumed segment logs to its own folder (logs/resume-N/metrics.csv): nothing is overwritten.
    version = ""
    if resume:
        k = 1
        while (run / "logs" / f"resume-{k}").exists():
            k += 1
        version = f"resume-{k}"
    trainer = build_trainer(recipe, run, enable_progress_bar, version)
    trainer.fit(module, datamodule=CodecDataModule(recipe), ckpt_path=str(last) if resume else None)
    if not trainer.interrupted:
        trainer.save_checkpoint(last)
    return module


def load_run(path: str | Path) -> CodecModule:
    """Rebuild a module from a run folder (its ``last.ckpt``) or a ``.ckpt`` file."""
    p = Path(path)
    ckpt = p / "checkpoints" / "last.ckpt" if p.is_dir() else p
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: checkpoint not found")
    state = torch.load(str(ckpt), map_location="cpu", weights_only=False)
    hp = state.get("hyper_parameters", {})
    if "recipe" not in hp:
        raise ValueError(f"{ckpt}: not an EntangleCodec training checkpoint (no recipe in hyper-parameters)")
    module = CodecModule(hp["recipe"], hp.get("run_dir", str(ckpt.parent.parent)))
    sd = CodecModule.migrate_state_dict(state["state_dict"])
    # A run trained from a feature directory's caption embeddings holds no frozen text backbone; rebuilt
    # where that directory is absent, the module loads the backbone from its own path instead.
    frozen = "model.text_encoder.backbone."
    saved_backbone = any(k.startswith(frozen) for k in sd)
    missing, unexpected = module.load_state_dict(sd, strict=False)
    bad = [k for k in missing if saved_backbone or not k.startswith(frozen)]
    if bad or unexpected:
        raise ValueError(f"{ckpt}: weights do not match the recipe (missing {bad[:3]}, unexpected {unexpected[:3]})")
    return module


def export_run(path: str | Path, out_dir: str | Path, overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
    """Export a run's latest weights to a ``save_pretrained`` directory (no optimiser state).

    ``dtype`` (e.g. ``torch.float16``): store the weight matrices in it (see
    :func:`~entanglecodec.checkpoint.convert_weights`), half the size for transport.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (pass --overwrite)")
    d = load_run(path).export(out)
    if dtype is not None:
        from ..checkpoint import convert_weights

        convert_weights(d, dtype)
    return d
