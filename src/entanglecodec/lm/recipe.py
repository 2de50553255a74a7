"""LM training recipes (``configs/lm-*.yaml``), read by the one recipe reader of the codec.

The file is read by :func:`entanglecodec.training.recipe.read_recipe_dict` (``base:`` chains,
``--set key=value`` overrides) and parsed here into typed sections; the optimiser and trainer
sections are the codec's own (:class:`~entanglecodec.training.recipe.OptimSection`,
:class:`~entanglecodec.training.recipe.TrainerSection`: NaN policy, logging cadence, DDP
strategy, threads...). Example::

    kind: lm
    codec: checkpoints/entanglecodec-small        # or a k-means-of-mel tokenizer directory
    model: {preset: small}                        # or {pretrained: /models/Qwen3-0.6B}
    data: {manifest: corpus/manifest.jsonl, tokens: tokens/small, tasks: [tts, tta, aqa, caption]}
    phases:                                       # run in order, each from the previous one's weights
      - {name: pretrain, tasks: [caption, asr], max_steps: 50000, lr: 3.0e-5}
      - {name: sft, tasks: [aqa], max_steps: 10000, lr: 1.0e-5}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, _from_dict
from ..training.recipe import DataSection, OptimSection, Recipe, TrainerSection, read_recipe_dict
from .model import LMModelConfig
from .tasks import TASKS, TaskConfig


@dataclass
class LMDataSection:
    """Corpus, token directory, tasks and batching.

    ``task_weights`` (``None``: uniform over examples) weights the sampler per task, the way
    ``domain_weights`` does for the codec.
    """

    manifest: str = ""
    tokens: str = ""
    tasks: list[str] = field(default_factory=lambda: ["tts", "tta", "aqa", "caption"])
    tta_domains: list[str] = field(default_factory=lambda: ["sound", "music", "mixture"])
    train_split: str = "train"
    valid_split: str = "valid"
    batch_size: int = 8
    max_len: int = 1024
    valid_batches: int = 4
    task_weights: dict[str, float] | None = None
    tts_style_prob: float = 0.3
    cond_dropout: float = 0.1
    mc_fraction: float = 0.75
    question_types: list[str] | None = None
    aqa_per_row: int = 1
    aqa_turns: int = 1

    def validate(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ConfigError(f"data.tasks: unknown task(s) {bad} (known: {', '.join(TASKS)})")
        if self.batch_size < 1 or self.max_len < 8 or self.aqa_per_row < 1 or self.aqa_turns < 1:
            raise ConfigError("data: batch_size >= 1, max_len >= 8, aqa_per_row >= 1 and aqa_turns >= 1 are required")
        for k in ("tts_style_prob", "cond_dropout", "mc_fraction"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ConfigError(f"data.{k} must lie in [0, 1]")

    def task_config(self, tasks: list[str] | None = None) -> TaskConfig:
        return TaskConfig(
            tasks=list(tasks or self.tasks), tta_domains=list(self.tta_domains), tts_style_prob=self.tts_style_prob,
            cond_dropout=self.cond_dropout, mc_fraction=self.mc_fraction,
            question_types=self.question_types, aqa_per_row=self.aqa_per_row, aqa_turns=self.aqa_turns,
        )  # fmt: skip


@dataclass
class PhaseSection:
    """One training phase: its tasks, length (``max_steps`` or ``epochs``) and learning rate.

    Unset values fall back to ``data.tasks``, ``trainer.max_steps`` and ``optim.lr``.
    """

    name: str = "train"
    tasks: list[str] | None = None
    max_steps: int | None = None
    epochs: float | None = None
    lr: float | None = None

    def validate(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"phases: invalid phase name {self.name!r}")
        if self.max_steps is not None and self.epochs is not None:
            raise ConfigError(f"phase {self.name}: give max_steps or epochs, not both")
        bad = [t for t in self.tasks or [] if t not in TASKS]
        if bad:
            raise ConfigError(f"phase {self.name}: unknown task(s) {bad} (known: {', '.join(TASKS)})")


@dataclass
class LMRecipe:
    """A full LM recipe (see the module docstring)."""

    kind: str = "lm"
    codec: str | None = None
    model: LMModelConfig = field(default_factory=LMModelConfig)
    data: LMDataSection = field(default_factory=LMDataSection)
    optim: OptimSection = field(default_factory=lambda: OptimSection(lr=3e-5, warmup_steps=100))
    trainer: TrainerSection = field(default_factory=TrainerSection)
    phases: list[PhaseSection] = field(default_factory=list)

    def validate(self) -> None:
        if self.kind != "lm":
            raise ConfigError(f"not an LM recipe (kind: {self.kind!r}; LM recipes say kind: lm)")
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ConfigError(f"phases: duplicate names {names}")

    def all_phases(self) -> list[PhaseSection]:
        return self.phases or [PhaseSection()]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMRecipe:
        data = dict(data)
        phases = data.pop("phases", []) or []
        if not isinstance(phases, list):
            raise ConfigError("phases must be a list of {name, tasks, max_steps | epochs, lr}")
        recipe = _from_dict(cls, data)
        recipe.phases = [_from_dict(PhaseSection, p, prefix=f"phases[{i}].") for i, p in enumerate(phases)]
        recipe.validate()
        return recipe

    def engine_recipe(self) -> Recipe:
        """The codec :class:`Recipe` view the shared trainer builder reads (optimiser + trainer)."""
        return Recipe(optim=self.optim, trainer=self.trainer,
                      data=DataSection(batch_size=self.data.batch_size, valid_batches=self.data.valid_batches))  # fmt: skip


def load_lm_recipe(path: str | Path, overrides: list[str] | None = None) -> LMRecipe:
    """Read ``configs/lm-*.yaml`` (``base:`` and ``--set`` as every recipe); paths stay as written."""
    p = Path(path)
    try:
        return LMRecipe.from_dict(read_recipe_dict(p, overrides))
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from e
