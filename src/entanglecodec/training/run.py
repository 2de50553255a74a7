"""Run folders: start, resume and export a training run (codec recipes; the vocoder recipes
use the same helpers from :mod:`entanglecodec.training.vocoder_run`).

Shared by both: :func:`resume_checkpoint` (the one resume policy: ``--resume`` needs a
``last.ckpt``, a fresh start never overwrites one), :func:`read_training_checkpoint` (a run folder
or ``.ckpt`` -> its state and recipe), :func:`check_export_dir` (exports never overwrite unless
asked), :func:`save_recipe_dict` and the callbacks of :mod:`entanglecodec.training.callbacks`.

Codec run folder layout (keep it outside the repository)::

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from ..fileio import atomic_write_text
from .callbacks import SaveOnInterrupt, log_version, run_loggers
from .codec_module import CodecModule
from .data import CodecDataModule
from .recipe import Recipe

log = logging.getLogger(__name__)

# The frozen pretrained caption backbone inside a training module's state dict: never trained, so
# never worth storing or restoring (it reloads from its own package).
FROZEN_BACKBONE = "model.text_encoder.backbone."


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


def copy_matching_tensors(model: torch.nn.Module, theirs: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Warm start: load the tensors of ``theirs`` whose names and shapes match ``model``'s.

    Returns:
        ``(copied, kept)``: names taken from ``theirs`` and names of ``model`` left as initialised.
    """
    mine = model.state_dict()
    take = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
    model.load_state_dict(take, strict=False)
    return sorted(take), sorted(set(mine) - set(take))


def grow_codebook(model: torch.nn.Module, theirs: Mapping[str, torch.Tensor], names: list[str]) -> list[str]:
    """Warm start into a larger codebook: the source's codes fill the first entries.

    For each of ``names`` (tensors :func:`copy_matching_tensors` left as initialised) that is a
    codebook tensor (``..._codebook.{embed, embed_avg, cluster_size}``) and whose source shape
    differs only by fewer entries along the codebook axis, the source is copied into the leading
    entries. The new entries start with zero usage, so the dead-code rule re-seeds them from the
    batches' ``h~`` in the first steps; at the library's initial usage of 1 they would stay above a
    large codebook's per-code threshold for hundreds of steps, unused. Used by the 'larger codebook'
    control of ``reports/codec-diagnosis.md`` §16.

    Returns:
        The names filled this way.
    """
    mine = model.state_dict()
    grown = []
    for k in names:
        if k not in theirs or k.rsplit(".", 1)[-1] not in ("embed", "embed_avg", "cluster_size") or "_codebook." not in k:
            continue
        a, b = mine[k], theirs[k]
        if a.dim() != b.dim() or a.dim() < 2 or a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:] or a.shape[1] <= b.shape[1]:
            continue
        fresh = a.clone()
        fresh[:, : b.shape[1]] = b.to(a.dtype)
        if k.endswith("cluster_size"):
            fresh[:, b.shape[1] :] = 0  # unused: dead at the first step, whatever the threshold
        model.load_state_dict({k: fresh}, strict=False)
        grown.append(k)
    return grown


def warm_start_stage1(module: CodecModule, source: str | Path, run_dir: Path) -> None:
    """Stage-1 ``init_from``: copy the matching tensors of another stage-1 run into ``module``.

    ``source`` is a Lightning ``.ckpt`` (the codec, its mel statistics, the CLIP temperature and the
    training-only auxiliary heads) or an exported checkpoint directory (the codec and temperature;
    auxiliary heads start fresh). Tensors without a match (e.g. modules a switch added) keep their
    initialisation and are logged. The copied mel statistics are written to ``RUN_DIR/mel_stats.json``.

    Raises:
        ConfigError: ``source`` is neither, or no tensor matches (another architecture).
    """
    from ..audio import save_mel_stats
    from ..checkpoint import WEIGHTS_NAME
    from ..config import ConfigError
    from .codec_losses import LOGIT_SCALE

    src = Path(source)
    if src.is_file() and src.suffix == ".ckpt":
        _, state, _ = read_training_checkpoint(src, "EntangleCodec")
        target: torch.nn.Module = module
        theirs = CodecModule.migrate_state_dict(state["state_dict"])
        frozen = FROZEN_BACKBONE
    elif (src / WEIGHTS_NAME).is_file():
        from safetensors.torch import load_file

        target, theirs, frozen = module.model, load_file(str(src / WEIGHTS_NAME)), FROZEN_BACKBONE.removeprefix("model.")
        if LOGIT_SCALE in theirs:
            with torch.no_grad():
                module.logit_scale.copy_(theirs[LOGIT_SCALE].reshape(()))
    else:
        raise ConfigError(f"init_from {source}: neither a training .ckpt nor an exported checkpoint directory")
    copied, kept = copy_matching_tensors(target, theirs)
    if not copied:
        raise ConfigError(f"init_from {source}: no tensor matches this model (different architecture?)")
    grown = grow_codebook(target, theirs, kept)
    if grown:
        log.info("warm start from %s: a larger codebook; the source's codes fill its first entries (%s)", source, grown)
        kept = [k for k in kept if k not in grown]
    kept = [k for k in kept if not k.startswith(frozen)]  # the caption backbone loads from its own files
    fe = module.model.frontend
    save_mel_stats(run_dir / "mel_stats.json", fe.mel_mean, fe.mel_std, 0, module.model.config.mel)
    log.info("warm start from %s: %d tensors copied, %d initialised fresh %s", source, len(copied), len(kept), kept)


def resume_checkpoint(run_dir: Path, resume: bool | str | Path | None) -> Path | None:
    """The checkpoint a run starts from (``None``: a fresh run), after the one resume policy.

    ``resume`` is ``True`` (``run_dir/checkpoints/last.ckpt``), a ``.ckpt`` file or a run folder
    (its ``last.ckpt``), or falsy for a fresh run.

    Raises:
        FileNotFoundError: there is nothing to resume from.
        FileExistsError: a fresh run is asked for in a folder that already holds one.
    """
    last = run_dir / "checkpoints" / "last.ckpt"
    if not resume:
        if last.is_file():
            raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
        return None
    ckpt = last if resume is True else Path(resume)
    if ckpt.is_dir():
        ckpt = ckpt / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: nothing to resume (no checkpoint there; start without --resume first)")
    return ckpt


def read_training_checkpoint(path: str | Path, what: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """``(ckpt, state, recipe)`` of a Lightning checkpoint: a ``.ckpt`` file or a run folder's ``last.ckpt``.

    ``what`` names the expected kind in the error (``"EntangleCodec"``, ``"vocoder"``).

    Raises:
        FileNotFoundError: no checkpoint there.
        ValueError: the file holds no recipe (not a training checkpoint of this package).
    """
    p = Path(path)
    ckpt = p / "checkpoints" / "last.ckpt" if p.is_dir() else p
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: checkpoint not found")
    state = torch.load(str(ckpt), map_location="cpu", weights_only=False)
    recipe = state.get("hyper_parameters", {}).get("recipe") if isinstance(state, dict) else None
    if not isinstance(recipe, dict):
        raise ValueError(f"{ckpt}: not an {what} training checkpoint (no recipe in hyper-parameters)")
    return ckpt, state, recipe


def check_export_dir(out: Path, overwrite: bool) -> None:
    """Refuse to export into a non-empty folder unless ``overwrite`` (``--overwrite``)."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (pass --overwrite)")


def save_recipe_dict(recipe: dict[str, Any], path: Path) -> None:
    """Write the recipe a run uses (atomically) as YAML."""
    atomic_write_text(path, yaml.safe_dump(recipe, sort_keys=False))


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
            # A resumed run must overwrite last.ckpt, never write last-v1.ckpt beside it (resume reads last.ckpt).
            enable_version_counter=False,
        ),
        SaveOnInterrupt(ckpt_dir / "last.ckpt"),
    ]
    best = t.best_monitor()
    if best is not None:  # best.ckpt: written at the validations that improve the metric, resumes included
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=best[0], mode=best[1], save_top_k=1,
                                         auto_insert_metric_name=False, enable_version_counter=False))
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
        logger=run_loggers(run_dir, log_version, t.log_every),
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
    start = resume_checkpoint(run, resume)
    run.mkdir(parents=True, exist_ok=True)
    if recipe.trainer.threads:
        torch.set_num_threads(recipe.trainer.threads)
    L.seed_everything(recipe.trainer.seed, workers=True, verbose=False)
    save_recipe_dict(recipe.to_dict(), run / ("recipe.resumed.yaml" if resume else "recipe.yaml"))
    module = CodecModule(recipe.to_dict(), str(run))
    if recipe.stage == "stage1" and not resume:
        if recipe.init_from:
            warm_start_stage1(module, recipe.init_from, run)
        else:
            prepare_mel_stats(module, recipe, run)
    trainer = build_trainer(recipe, run, enable_progress_bar, log_version(run, resume))
    trainer.fit(module, datamodule=CodecDataModule(recipe), ckpt_path=str(start) if start else None)
    if not trainer.interrupted:
        trainer.save_checkpoint(last)
    return module


def load_run(path: str | Path) -> CodecModule:
    """Rebuild a module from a run folder (its ``last.ckpt``) or a ``.ckpt`` file."""
    ckpt, state, recipe = read_training_checkpoint(path, "EntangleCodec")
    module = CodecModule(recipe, state["hyper_parameters"].get("run_dir", str(ckpt.parent.parent)))
    sd = CodecModule.migrate_state_dict(state["state_dict"])
    # A run trained from a feature directory's caption embeddings holds no frozen text backbone; rebuilt
    # where that directory is absent, the module loads the backbone from its own path instead.
    saved_backbone = any(k.startswith(FROZEN_BACKBONE) for k in sd)
    missing, unexpected = module.load_state_dict(sd, strict=False)
    bad = [k for k in missing if saved_backbone or not k.startswith(FROZEN_BACKBONE)]
    if module.semantic_head is None:  # training-only, not rebuilt without its teacher's feature directory
        unexpected = [k for k in unexpected if not k.startswith("semantic_head.")]
    if bad or unexpected:
        raise ValueError(f"{ckpt}: weights do not match the recipe (missing {bad[:3]}, unexpected {unexpected[:3]})")
    return module


def slim_checkpoint(path: str | Path, out: str | Path, dtype: torch.dtype | None = torch.float16) -> Path:
    """Write a warm-start copy of a training checkpoint: its recipe and trained tensors only.

    Unlike an export (:func:`export_run`), it keeps the training-only auxiliary heads, so
    ``init_from=OUT`` continues a run without fresh heads disturbing the encoder. Dropped: optimiser
    and scheduler state, loop counters and the frozen caption backbone (reloaded from its package).
    Floating-point tensors are stored in ``dtype`` (``None`` keeps them), a quarter of a full
    ``.ckpt`` in float16: the size that travels to and from a GPU machine.

    Raises:
        FileNotFoundError / ValueError: as :func:`read_training_checkpoint`.
    """
    from ..fileio import atomic_write

    _, state, _ = read_training_checkpoint(path, "EntangleCodec")
    sd = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
        for k, v in state["state_dict"].items()
        if not k.startswith(FROZEN_BACKBONE)
    }
    slim = {"state_dict": sd, "hyper_parameters": state["hyper_parameters"], "global_step": state.get("global_step", 0)}
    return atomic_write(out, lambda tmp: torch.save(slim, str(tmp)))


def export_run(
    path: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    dtype: torch.dtype | None = None,
    decode: Mapping[str, Any] | None = None,
) -> Path:
    """Export a run's latest weights to a ``save_pretrained`` directory (no optimiser state).

    ``dtype`` (e.g. ``torch.float16``): store the weight matrices in it (see
    :func:`~entanglecodec.checkpoint.convert_weights`), half the size for transport.
    ``decode``: decode-time defaults to write into the export's config
    (:func:`~entanglecodec.codec.model.set_decode_defaults`; checked before the export starts).
    """
    from ..codec.model import apply_decode_settings, set_decode_defaults

    out = Path(out_dir)
    check_export_dir(out, overwrite)
    module = load_run(path)
    # checked against this model's config before anything is written
    vals = apply_decode_settings(module.model.config.to_dict(), decode) if decode else {}
    d = module.export(out)
    if dtype is not None:
        from ..checkpoint import CARD_NAME, convert_weights, set_weights_metadata
        from ..codec.model import EntangleCodec

        stated = module.model.fingerprint()
        convert_weights(d, dtype)
        # The rounded weights have another fingerprint: restate it where the export states it. The
        # caption tower is not hashed and is not built, so this also runs where its package is missing
        # (a GPU machine that trained from pre-computed caption embeddings).
        rounded = EntangleCodec.from_pretrained(d, build_text_encoder=False).fingerprint()
        set_weights_metadata(d, {"fingerprint": rounded})
        card = d / CARD_NAME
        if card.is_file():
            atomic_write_text(card, card.read_text(encoding="utf-8").replace(stated, rounded))
    if vals:
        set_decode_defaults(d, vals)
    return d
