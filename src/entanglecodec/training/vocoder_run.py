"""Run a vocoder recipe: the Lightning Trainer, resume, warm start and export.

Uses the codec runs' helpers (:mod:`entanglecodec.training.run`: the resume policy, checkpoint
reading, export checks, recipe saving) and callbacks (:mod:`entanglecodec.training.callbacks`).

Run folder (``--run-dir``, default ``runs/<recipe name>``; keep it outside the repository)::

    recipe.yaml                  the recipe of the first segment (recipe.resumed.yaml: of the last resume)
    checkpoints/last.ckpt        full state, every ``trainer.ckpt_every`` steps and when stopped
    checkpoints/epochNNNNN.ckpt  the ``trainer.keep_checkpoints`` latest periodic checkpoints
    checkpoints/best.ckpt        lowest validation log-mel L1
    best/                        the best vocoder as config.json + model.safetensors
    logs/metrics.csv             CSV metrics (resumed segments: logs/resume-N/); tb/ TensorBoard
    samples/step-XXXXXXX/        reference / generated WAVs and a mel comparison PNG

Resuming: a Lightning epoch is ``trainer.ckpt_every`` steps and the sampler and crops are
functions of ``(trainer.seed, epoch)``, so ``--resume`` continues exactly (model, both optimisers,
LR schedules, step counter, data stream). A checkpoint written when training is stopped mid-epoch
resumes the model and optimisers exactly but replays that epoch's data. The data section may
change between segments (e.g. a bigger manifest): only model/optimiser state is taken from the
checkpoint. Run folders of the pre-layout recipes resume unchanged once the recipe file uses the
current key names (the loader names each old key's new name).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from ..config import ConfigError
from ..vocoder.model import Vocoder
from .callbacks import BestCheckpoint, SaveOnInterrupt, log_version, run_loggers
from .data import ManifestDataModule
from .run import (
    check_export_dir,
    copy_matching_tensors,
    read_training_checkpoint,
    resume_checkpoint,
    save_recipe_dict,
)
from .vocoder_module import VocoderModule
from .vocoder_recipe import VocoderRecipe, migrate_legacy_recipe

logger = logging.getLogger(__name__)


def data_module(recipe: VocoderRecipe, world_size: int) -> ManifestDataModule:
    """The recipe's data module: one sampler epoch per Lightning epoch (``trainer.ckpt_every`` steps)."""
    dc, tc = recipe.data, recipe.trainer
    if not dc.train_manifest:
        raise ConfigError("data.train_manifest is not set: give it in the recipe or with --manifest")
    for m in dc.train_manifest:
        if not Path(m).is_file():
            raise ConfigError(f"data.train_manifest {m}: manifest file not found")
    mc = recipe.model_config
    return ManifestDataModule(
        train_manifest=dc.train_manifest,
        valid_manifest=dc.valid_manifest or None,
        batch_size=dc.batch_size,
        num_workers=dc.num_workers,
        crop_seconds=dc.crop_seconds,
        domain_weights=dc.domain_weights,
        seed=tc.seed,
        train_split=dc.train_split,
        valid_split=dc.valid_split,
        epoch_size=dc.batch_size * world_size * tc.ckpt_every,
        valid_crop_seconds=dc.valid_crop_seconds,
        on_error=dc.on_error,
        sample_rate=mc.sample_rate,
        pad_to_multiple=mc.hop_length,
    )


def build_vocoder_trainer(recipe: VocoderRecipe, module: VocoderModule, run_dir: Path, version: str) -> pl.Trainer:
    """The Lightning Trainer of a vocoder run (epochs of ``trainer.ckpt_every`` generator steps)."""
    tc = recipe.trainer
    ckpt_dir = run_dir / "checkpoints"
    periodic = ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename="epoch{epoch:05d}",
        auto_insert_metric_name=False,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        save_last=True,
        save_top_k=tc.keep_checkpoints,
        monitor="train/step",
        mode="max",
        # A resumed run must overwrite last.ckpt, never write last-v1.ckpt beside it (resume reads last.ckpt).
        enable_version_counter=False,
    )
    best = BestCheckpoint(
        module, dirpath=str(ckpt_dir), filename="best", monitor="val/mel_l1", mode="min", save_top_k=1,
        auto_insert_metric_name=False,
    )
    return pl.Trainer(
        accelerator=tc.accelerator,
        devices=tc.devices,
        strategy=tc.strategy,
        num_nodes=tc.num_nodes,
        precision=tc.precision,
        max_epochs=int(math.ceil(tc.max_steps / tc.ckpt_every)),
        max_time=tc.max_time,  # a wall-clock training budget (DD:HH:MM:SS), as in the codec's runs
        limit_train_batches=tc.ckpt_every,
        limit_val_batches=recipe.data.valid_batches,
        check_val_every_n_epoch=tc.val_every // tc.ckpt_every,
        num_sanity_val_steps=0,
        log_every_n_steps=tc.log_every,
        callbacks=[periodic, best, SaveOnInterrupt(ckpt_dir / "last.ckpt")],
        logger=run_loggers(run_dir, version, tc.log_every),
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=str(run_dir),
    )


def train_vocoder(
    config_path: str | Path,
    resume: bool | str | Path | None = False,
    run_dir: str | Path | None = None,
    manifest: str | None = None,
    max_steps: int | None = None,
    init_from: str | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """Train (or resume training) a vocoder from a YAML recipe.

    Args:
        config_path: recipe file (e.g. ``configs/vocoder-small.yaml``).
        resume: ``True`` to continue from ``run_dir/checkpoints/last.ckpt``, or a checkpoint path.
        run_dir: output directory (default ``runs/<recipe name>``).
        manifest: override ``data.train_manifest`` (e.g. continue on a bigger corpus).
        max_steps: override ``trainer.max_steps``.
        init_from: override ``init_from`` (warm start; ignored when resuming).
        overrides: ``dotted.key=value`` overrides (``--set``), as for the codec recipes.

    Returns:
        The run directory.

    Raises:
        ConfigError: a bad recipe or override.
        FileNotFoundError / FileExistsError: see :func:`~entanglecodec.training.run.resume_checkpoint`.
    """
    recipe = VocoderRecipe.from_yaml(config_path, overrides)
    if manifest is not None:
        recipe.data.train_manifest = [str(manifest)]
    if init_from is not None:
        recipe.init_from = str(init_from)
    if max_steps is not None:
        if max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {max_steps}")
        recipe.trainer.max_steps = int(max_steps)
    tc = recipe.trainer
    out = Path(run_dir) if run_dir is not None else Path("runs") / recipe.name
    ckpt_path = resume_checkpoint(out, resume)
    out.mkdir(parents=True, exist_ok=True)
    save_recipe_dict(recipe.to_dict(), out / ("recipe.resumed.yaml" if ckpt_path else "recipe.yaml"))
    if tc.threads is not None:
        torch.set_num_threads(int(tc.threads))
    pl.seed_everything(tc.seed, workers=True, verbose=False)

    module = VocoderModule(recipe, run_dir=str(out))
    trainer = build_vocoder_trainer(recipe, module, out, log_version(out, ckpt_path is not None))
    if recipe.init_from and ckpt_path is None:
        copied, kept = warm_start(module.vocoder, recipe.init_from)
        if not copied:
            raise ConfigError(f"init_from {recipe.init_from}: no tensor matches this model (different architecture?)")
        logger.info("warm start from %s: %d tensors copied, %d initialised fresh %s", recipe.init_from, len(copied), len(kept), kept)
    dm = data_module(recipe, trainer.world_size)
    logger.info("vocoder %s: %.2f M parameters; run dir %s", recipe.name, module.vocoder.num_parameters / 1e6, out)
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
    return out


def load_trained_vocoder(source: str | Path) -> Vocoder:
    """A :class:`Vocoder` from a run folder (its ``best/`` export, else ``checkpoints/last.ckpt``),
    a Lightning ``.ckpt`` (current or pre-layout recipe) or an exported directory."""
    src = Path(source)
    if src.is_dir() and (src / "best" / "model.safetensors").is_file():
        return Vocoder.from_pretrained(src / "best")
    if src.is_dir() and not (src / "checkpoints" / "last.ckpt").is_file():
        if not (src / "model.safetensors").is_file():
            raise FileNotFoundError(f"{src}: no checkpoint, run directory or exported vocoder here")
        return Vocoder.from_pretrained(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no checkpoint, run directory or exported vocoder here")
    try:
        _, state, raw = read_training_checkpoint(src, "vocoder")
    except ValueError as e:
        raise ConfigError(str(e)) from e
    recipe = VocoderRecipe.from_dict(migrate_legacy_recipe(raw)[0])
    voc = Vocoder(recipe.model_config)
    prefix = "vocoder."
    voc.load_state_dict({k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)})
    return voc


def warm_start(model: Vocoder, source: str | Path) -> tuple[list[str], list[str]]:
    """Copy the tensors of the vocoder at ``source`` whose names and shapes match into ``model``.

    Returns:
        ``(copied, kept)``: parameter/buffer names taken from ``source`` and names left as initialised.
    """
    return copy_matching_tensors(model, load_trained_vocoder(source).state_dict())


def export_vocoder(
    source: str | Path, out_dir: str | Path, overwrite: bool = False, dtype: torch.dtype | None = None
) -> Path:
    """Write the vocoder of a training run as ``config.json`` + ``model.safetensors``.

    Args:
        source: a Lightning ``.ckpt`` file, a run directory (its ``best/`` export, else
            ``checkpoints/last.ckpt``), or an exported vocoder directory.
        out_dir: destination directory (e.g. ``checkpoints/vocoder-small``).
        overwrite: replace a non-empty ``out_dir``.
        dtype: store the weight matrices in this dtype (``torch.float16``: half the size; loading
            casts back to float32; see :func:`~entanglecodec.checkpoint.convert_weights`).
    """
    dst = Path(out_dir)
    check_export_dir(dst, overwrite)
    path = load_trained_vocoder(source).save_pretrained(dst)
    if dtype is not None:
        from ..checkpoint import convert_weights

        convert_weights(dst, dtype)
    return path


__all__ = ["build_vocoder_trainer", "data_module", "export_vocoder", "load_trained_vocoder", "train_vocoder", "warm_start"]
