"""``entanglecodec lm train``: build the LM, then run the recipe's phases on the codec's engine.

Run folder (keep it outside the repository)::

    RUN/recipe.yaml                 the recipe (recipe.resumed.yaml on --resume)
    RUN/init/                       the freshly built LM (extended vocabulary, initialised rows)
    RUN/phase-NAME/checkpoints/     Lightning checkpoints of that phase (last.ckpt, stepNNNNNNN.ckpt)
    RUN/phase-NAME/logs/            CSV metrics (resumed segments: logs/resume-N/), tb/ TensorBoard
    RUN/phase-NAME/lm/              the phase's exported LM (start of the next phase)
    RUN/lm/                         the final LM (``lm tts --lm RUN/lm`` ...)

The trainer is :func:`entanglecodec.training.run.build_trainer` (checkpoint cadence, CSV +
TensorBoard logs, SIGTERM checkpoint, DDP strategy from the recipe), so ``--resume`` continues the
unfinished phase from its ``last.ckpt`` exactly (finished phases are skipped). The token directory
must come from the recipe's codec: its fingerprint is checked before anything is built.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import yaml

from ..data.manifest import read_manifest
from .aqa import label_sets, make_questions
from .audio_tokenizer import load_audio_tokenizer
from .model import build_lm, load_lm, num_parameters, save_lm
from .recipe import LMRecipe, PhaseSection
from .shards import ShardError, TokenShards
from .tasks import build_examples
from .vocab import META_NAME

log = logging.getLogger(__name__)
DONE = META_NAME
"""A phase (or the init) is finished when its ``lm/`` directory holds the vocabulary file, written last."""


def corpus_texts(rows: list[dict[str, Any]], seed: int = 0) -> list[str]:
    """Text the BPE of a from-scratch LM is trained on: captions, transcripts, AQA questions and answers."""
    texts = [str(r.get(k) or "") for r in rows for k in ("caption", "text")]
    for q in make_questions(rows, label_sets(rows), test=False, seed=seed, mc_fraction=1.0):
        texts += [q.prompt, q.answer]
    return [t for t in texts if t.strip()]


def _wait_for(path: Path, timeout_s: float = 1800.0) -> None:
    t0 = time.monotonic()
    while not path.is_file():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{path}: rank 0 did not finish building the LM within {timeout_s:.0f} s")
        time.sleep(2.0)


def phase_steps(phase: PhaseSection, recipe: LMRecipe, n_train: int, world: int) -> int:
    """Optimiser steps of a phase: ``max_steps``, or ``ceil(epochs * examples / global batch)``."""
    if phase.epochs is not None:
        per_step = recipe.data.batch_size * recipe.optim.accumulate * world
        return max(1, math.ceil(phase.epochs * n_train / per_step))
    return int(phase.max_steps or recipe.trainer.max_steps)


def run_lm_training(recipe: LMRecipe, run_dir: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train (or resume) every phase of ``recipe``; returns the final LM directory ``RUN/lm``.

    Raises:
        FileExistsError: ``run_dir`` holds a run and ``resume`` is False.
        FileNotFoundError: ``resume`` without a run. ShardError / VocabError: tokens or LM of another codec.
    """
    import lightning as L

    from ..training.run import build_trainer

    run = Path(run_dir)
    if resume and not (run / "recipe.yaml").is_file():
        raise FileNotFoundError(f"{run}: nothing to resume (no recipe.yaml in the run folder)")
    if not resume and run.exists() and any(run.iterdir()):
        raise FileExistsError(f"{run} already holds a run; pass --resume to continue it or choose another --run-dir")
    rank = int(os.environ.get("RANK", "0"))
    if recipe.trainer.threads:
        import torch

        torch.set_num_threads(recipe.trainer.threads)
    tok = load_audio_tokenizer(recipe.codec)
    shards = TokenShards(recipe.data.tokens)
    if not tok.accepts_fingerprint(shards.tokenizer["fingerprint"]):
        shards.check_tokenizer(tok.fingerprint(), tok.codebook_size)
    rows: list[dict[str, Any]] = [dict(r) for r in read_manifest(recipe.data.manifest)]
    train_rows = [r for r in rows if r["split"] == recipe.data.train_split]
    valid_rows = [r for r in rows if r["split"] == recipe.data.valid_split]
    if not train_rows:
        raise ShardError(f"{recipe.data.manifest}: no rows of split {recipe.data.train_split!r} to train on")
    run.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        (run / ("recipe.resumed.yaml" if resume else "recipe.yaml")).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    init = run / "init"
    if not (init / DONE).is_file():
        if rank == 0:
            L.seed_everything(recipe.model.seed, verbose=False)
            model, tokenizer, vocab = build_lm(recipe.model, tok.fingerprint(), tok.codebook(),
                                               corpus_texts(train_rows, recipe.trainer.seed), tok.name, tok.frame_rate)  # fmt: skip
            save_lm(init, model, tokenizer, vocab)
            log.info("built LM: %d parameters, vocabulary %d (%d audio tokens)", num_parameters(model), vocab.size, vocab.codebook_size)
        else:
            _wait_for(init / DONE)
    _, tokenizer, vocab = load_lm(init)
    vocab.check_tokenizer(tok.fingerprint(), tok.codebook_size, tok.accepts_fingerprint, str(init))
    start = init
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    for phase in recipe.all_phases():
        pdir = run / f"phase-{phase.name}"
        if (pdir / "lm" / DONE).is_file():
            start = pdir / "lm"
            continue
        task_cfg = recipe.data.task_config(phase.tasks)
        seed = recipe.trainer.seed
        train, skipped = build_examples(train_rows, rows, shards, tokenizer, vocab, task_cfg, False, recipe.data.max_len, seed)
        valid, _ = build_examples(valid_rows, rows, shards, tokenizer, vocab, task_cfg, False, recipe.data.max_len, seed + 1)
        if skipped["too_long"] or skipped["no_tokens"]:
            log.warning("phase %s: skipped %d examples longer than data.max_len=%d and %d rows without tokens",
                        phase.name, skipped["too_long"], recipe.data.max_len, skipped["no_tokens"])  # fmt: skip
        steps = phase_steps(phase, recipe, len(train), world)
        phase_recipe = LMRecipe.from_dict(recipe.to_dict())
        phase_recipe.trainer.max_steps = steps
        lr = phase.lr if phase.lr is not None else recipe.optim.lr
        last = pdir / "checkpoints" / "last.ckpt"
        resuming = last.is_file()
        version = ""
        if resuming:
            k = 1
            while (pdir / "logs" / f"resume-{k}").exists():
                k += 1
            version = f"resume-{k}"
        L.seed_everything(seed, workers=True, verbose=False)
        from .module import LMDataModule, LMModule

        module = LMModule(phase_recipe.to_dict(), str(start), lr, str(pdir))
        trainer = build_trainer(phase_recipe.engine_recipe(), pdir, progress, version)
        dm = LMDataModule(phase_recipe, train, valid, vocab.pad_id)
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resuming else None)
        if trainer.interrupted:
            raise KeyboardInterrupt
        trainer.save_checkpoint(last)
        if rank == 0:
            save_lm(pdir / "lm", module.lm, tokenizer, vocab)
        else:
            _wait_for(pdir / "lm" / DONE)
        start = pdir / "lm"
    final = run / "lm"
    if rank == 0:
        model, _, _ = load_lm(start)
        save_lm(final, model, tokenizer, vocab)
    return final
