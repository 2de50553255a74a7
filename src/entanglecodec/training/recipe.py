"""Training recipes: YAML files under ``configs/`` parsed into typed dataclasses.

Unknown keys and wrong types are rejected with the key named (``ConfigError``). A recipe holds
the model (a preset plus overrides), the data, the optimiser, the loss weights and the trainer.

Example::

    stage: stage1
    model: {preset: small, overrides: {quantizer: {codebook_size: 4096}}}
    data: {train_manifest: /data/corpus/manifest.jsonl, batch_size: 8}
    trainer: {max_steps: 20000, precision: bf16-mixed}
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..config import ConfigError, EntangleCodecConfig, _from_dict

Stage = Literal["stage1", "stage2", "disc"]


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any], where: str = "model.overrides") -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``; a key that ``base`` lacks is a ``ConfigError``
    naming it (``where.key``). Used by the codec and the vocoder recipes' ``model`` sections."""
    out = copy.deepcopy(base)

    def merge(dst: dict[str, Any], src: dict[str, Any], prefix: str) -> None:
        for k, v in src.items():
            if k not in dst:
                raise ConfigError(f"unknown config key {where}.{prefix}{k}")
            if isinstance(v, dict) and isinstance(dst[k], dict):
                merge(dst[k], v, f"{prefix}{k}.")
            else:
                dst[k] = v

    merge(out, copy.deepcopy(overrides), "")
    return out


@dataclass
class ModelSection:
    """``preset`` (paper/small/tiny) deep-merged with ``overrides`` (any EntangleCodecConfig keys)."""

    preset: str = "small"
    overrides: dict[str, Any] = field(default_factory=dict)

    def build(self) -> EntangleCodecConfig:
        return EntangleCodecConfig.from_dict(merge_overrides(EntangleCodecConfig.preset(self.preset).to_dict(), self.overrides))


@dataclass
class DataSection:
    """Where clips come from and how they are batched."""

    train_manifest: list[str] = field(default_factory=list)
    valid_manifest: list[str] = field(default_factory=list)  # empty: the train manifests' valid split
    train_split: str | None = "train"
    valid_split: str | None = "valid"
    crop_seconds: float = 10.0
    batch_size: int = 8
    num_workers: int = 2
    domain_weights: dict[str, float] | None = None
    text_field: Literal["caption", "asr_caption", "text"] = "caption"
    valid_batches: int = 4
    mel_stats: str | None = "compute"  # "compute" (from train data), a JSON path, or null (keep model's)
    mel_stats_files: int = 500
    on_error: Literal["skip", "raise"] = "skip"
    # A pre-computed feature directory (``entanglecodec data features``): when set, every stage trains
    # from its uint8 log-mels, F0 targets and caption embeddings instead of decoding the manifests.
    features: str | None = None

    def validate(self) -> None:
        if self.batch_size < 1 or self.crop_seconds <= 0 or self.num_workers < 0:
            raise ConfigError("data: batch_size >= 1, crop_seconds > 0 and num_workers >= 0 are required")


@dataclass
class OptimSection:
    """AdamW + ReduceLROnPlateau on the validation loss (paper Table 5 defaults)."""

    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    accumulate: int = 1
    warmup_steps: int = 0
    plateau_patience: int = 5  # validations without improvement
    plateau_factor: float = 0.5
    min_lr: float = 1e-6
    discriminator_lr: float = 2e-4  # discriminator pre-training
    # Learning rate of the pitch-conditioning parameters (decoder.pitch_cond: the predictor and the
    # decoder's pitch input and harmonic-depth layers); None: ``lr``. They join a trained model from
    # zero, and Adam moves a weight by about lr per step, so at 2e-4 they would need thousands of steps
    # to reach useful sizes.
    pitch_lr: float | None = None
    # Cosine decay of every group's learning rate over the last ``anneal_fraction`` of the run (0 = off;
    # not in the paper): the progress is trainer.max_time's elapsed share when a time budget is set,
    # else global_step / trainer.max_steps. It starts from the rate in force then (plateau cuts
    # included) and ends at ``min_lr``; a budgeted GPU run thus ends on a low rate, not mid-plateau.
    anneal_fraction: float = 0.0
    # Stage 1 warm started from an export: the auxiliary heads (loss.primitives, loss.mel_regression)
    # start fresh, and for their first ``aux_detach_steps`` steps they read detached encoder features,
    # so their random early gradients do not reach the encoder (reports/codec-diagnosis.md §10).
    aux_detach_steps: int = 0

    def validate(self) -> None:
        if len(self.betas) != 2:
            raise ConfigError("optim.betas must have two values")
        if self.accumulate < 1:
            raise ConfigError("optim.accumulate must be >= 1")
        if not 0.0 <= self.anneal_fraction <= 1.0:
            raise ConfigError(f"optim.anneal_fraction must be in [0, 1], got {self.anneal_fraction}")
        if self.aux_detach_steps < 0:
            raise ConfigError(f"optim.aux_detach_steps must be >= 0, got {self.aux_detach_steps}")


@dataclass
class LossSection:
    """Loss weights: stage 1 uses flow + contrast + vq; stage 2 flow + vq + adv (all 1.0 in the paper)."""

    flow: float = 1.0
    contrast: float = 1.0
    vq: float = 1.0
    adv: float = 1.0
    # What the mel discriminator judges as "fake" (disc pre-training and the stage-2 term):
    # "one_step": the decoder's inference output from noise (t = 0, guidance ``adv_guidance``), the
    # reconstruction users hear; "flow_estimate": the one-step estimate x_t + (1 - t) v at the flow
    # loss's random t (closer to real mels as t -> 1, so a weaker signal for one-step decoding).
    adv_on: Literal["one_step", "flow_estimate"] = "one_step"
    adv_guidance: float = 1.0
    # Stage 2's critic. "frozen" (the paper, App. B.3): the pre-trained discriminator is a fixed
    # judge. "joint" (ours): it keeps learning real vs decoded mels at optim.discriminator_lr in the
    # same step (its hinge loss on detached decoder output; the decoder's terms see it with detached
    # weights), so it cannot be fooled once and then give no gradient (see reports/codec-diagnosis.md).
    adv_critic: Literal["frozen", "joint"] = "frozen"
    # L1 between the critic's feature maps of real and decoded mels (0 = off; not in the paper).
    feature_matching: float = 0.0
    # Not in the paper (0 = off): training-only signals that reach the encoder directly, see
    # ``training/aux_losses.py``: F0/voicing/energy read from h~, and a frame-wise mel from Z_q.
    primitives: float = 0.0
    mel_regression: float = 0.0
    # Not in the paper (0 = off): semantic distillation, stage 1. A head reads a speech recogniser's
    # encoder frames (Whisper, 50 Hz, data/semantic.py) from Z_q; loss 1 - cosine on speech frames.
    # It tells the tokens *what is said*, which captions cannot. Needs data.features with teacher
    # frames ('entanglecodec data semantic DIR').
    semantic: float = 0.0
    # Pitch-conditioned models (model decoder.pitch_cond, codec/pitch.py): weight of the voicing/F0
    # predictor's loss on Z_q (stage 1; the predictor is frozen with the tokenizer after it).
    pitch: float = 1.0
    # Guidance distillation (stage 2, not in the paper; 0 = off): the decoder learns to give in ONE
    # pass the guided velocity (1 + g) v(x, t, Z_q) - g v(x, t, null) of a frozen copy of itself,
    # g = ``distill_guidance``, so the distilled model decodes with guidance 0 (half the flow-decoder
    # work). L1 on the velocity at the flow loss's times, with the pitch contour decoding reads.
    # ``distill_guidance: 0`` holds the decoder to its own starting velocity: the anchor of a stage 2
    # with the critic on an already distilled model (the flow loss would pull it back to guidance 0).
    distill: float = 0.0
    distill_guidance: float = 0.25


Precision = Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true"]


@dataclass
class TrainerBase:
    """The ``trainer`` keys of every recipe (codec and vocoder): Lightning Trainer settings,
    checkpointing, validation, plotting and logging cadence, all counted in (generator) steps."""

    max_steps: int = 1000
    # Training-time budget "DD:HH:MM:SS" (Lightning's Trainer max_time): the run stops cleanly (last.ckpt)
    # when it is spent. It counts the whole run: Lightning checkpoints its timer, so resumed segments add up.
    max_time: str | None = None
    precision: Precision = "32-true"
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | fsdp | deepspeed ... (any Lightning strategy name)
    seed: int = 0
    log_every: int = 10
    val_every: int = 200
    ckpt_every: int = 200
    plot_every: int = 500
    threads: int | None = None  # torch.set_num_threads for CPU runs

    def validate(self) -> None:
        for k in ("max_steps", "log_every", "val_every", "ckpt_every", "plot_every"):
            if getattr(self, k) < 1:
                raise ConfigError(f"trainer.{k} must be >= 1")
        if self.max_time is not None and not re.fullmatch(r"\d+:\d+:\d+:\d+", str(self.max_time)):
            raise ConfigError(f"trainer.max_time must look like DD:HH:MM:SS, got {self.max_time!r}")


@dataclass
class TrainerSection(TrainerBase):
    """Codec ``trainer`` keys: :class:`TrainerBase` plus codebook sync, NaN policy, checkpointing."""

    sync_codebook: bool | None = None  # None: on when world size > 1
    nan_policy: Literal["stop", "skip"] = "stop"
    max_nan_skips: int = 10
    gradient_checkpointing: bool = False
    # Not in the paper: also keep checkpoints/best.ckpt, the step with the lowest (or, "max:METRIC",
    # highest) logged validation METRIC, e.g. "val/loss" or "max:val/sem_cos" (None: last.ckpt only).
    # A short run on a small corpus can over-fit within hundreds of steps (reports/codec-diagnosis.md §21).
    keep_best: str | None = None

    def best_monitor(self) -> tuple[str, Literal["min", "max"]] | None:
        """``(metric, mode)`` of ``keep_best``, or ``None``."""
        if not self.keep_best:
            return None
        mode, _, name = self.keep_best.rpartition(":")
        if mode not in ("", "min", "max") or not name.startswith("val/"):
            raise ConfigError(f"trainer.keep_best must be [min:|max:]val/METRIC, got {self.keep_best!r}")
        return name, "max" if mode == "max" else "min"

    def validate(self) -> None:
        super().validate()
        self.best_monitor()


@dataclass
class Recipe:
    """A full training recipe."""

    stage: Stage = "stage1"
    model: ModelSection = field(default_factory=ModelSection)
    # stage2/disc: the exported stage-1 checkpoint directory they start from. stage1: optional warm
    # start (not a resume): the tensors of that export whose names and shapes match are copied, the
    # rest (e.g. modules a switch added) keep their initialisation; the recipe's model config rules.
    init_from: str | None = None
    discriminator: str | None = None  # stage2: pre-trained discriminator directory
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    discriminator_config: dict[str, Any] = field(default_factory=dict)  # MelDiscriminatorConfig keys

    def validate(self) -> None:
        if self.stage in ("stage2", "disc") and not self.init_from:
            raise ConfigError(f"{self.stage} needs init_from: an exported stage-1 checkpoint directory")
        if self.stage == "stage2" and self.loss.adv > 0 and not self.discriminator:
            raise ConfigError("stage2 with loss.adv > 0 needs discriminator: a pre-trained discriminator directory")
        if self.loss.semantic > 0 and (self.stage != "stage1" or not self.data.features):
            raise ConfigError("loss.semantic is a stage1 term that reads teacher frames from a feature directory: "
                              "set data.features to one prepared with 'entanglecodec data semantic DIR'")
        if self.loss.distill > 0 and self.stage != "stage2":
            raise ConfigError(f"loss.distill (guidance distillation) is a stage2 term, not {self.stage}")
        if self.loss.distill_guidance < 0:
            raise ConfigError(f"loss.distill_guidance must be >= 0, got {self.loss.distill_guidance}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def model_config(self) -> EntangleCodecConfig:
        """The codec configuration this recipe trains: ``model`` for stage 1, the ``init_from``
        checkpoint's own ``config.json`` for stage 2 and the discriminator stage."""
        if self.stage == "stage1" or not self.init_from:
            return self.model.build()
        return EntangleCodecConfig.from_json(Path(self.init_from) / "config.json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        data = dict(data)
        d = dict(data.get("data", {}))
        for k in ("train_manifest", "valid_manifest"):  # accept a single path
            if isinstance(d.get(k), str):
                d[k] = [d[k]]
        if d:
            data["data"] = d
        return _from_dict(cls, data)


def _deep_merge(dst: dict[str, Any], src: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dst)
    for k, v in src.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(p: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError(f"{p}: recipe not found")
    if p.resolve() in seen:
        raise ConfigError(f"{p}: circular 'base:' chain")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a recipe must be a mapping at the top level")
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{p}: 'base' must be a path to another recipe")
        data = _deep_merge(_read_yaml(p.parent / base, (*seen, p.resolve())), data)
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe; ``overrides`` are ``dotted.key=value`` strings (values parsed as YAML).

    A recipe may start from another one with ``base: other.yaml`` (path relative to the recipe);
    its own keys are deep-merged over the base.
    """
    p = Path(path)
    data = read_recipe_dict(p, overrides)
    try:
        return Recipe.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from e


def read_recipe_dict(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The one recipe reader (codec and vocoder recipes): YAML with ``base:`` chains, then
    ``dotted.key=value`` overrides (values parsed as YAML; ``5e-4`` is a number), as a plain dict."""
    data = _read_yaml(Path(path))
    for ov in overrides or []:
        key, val = parse_assignment(ov)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r}: {part} is not a section")
        node[parts[-1]] = val
    return data


def parse_assignment(text: str, what: str = "override") -> tuple[str, Any]:
    """``"key.sub=value"`` -> ``("key.sub", value)``, the value parsed as YAML (``5e-4`` is a number).

    Raises:
        ConfigError: no ``=``, or an empty key (the message names ``what``, e.g. ``--decode``).
    """
    key, eq, val = text.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"{what} {text!r} must look like key.sub=value")
    return key.strip(), _override_value(val)


_EXP_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _override_value(text: str) -> Any:
    """An override's value as YAML, except that ``5e-4``-style numbers (YAML 1.1 reads them as
    strings when they lack a dot) are numbers."""
    value = yaml.safe_load(text)
    if isinstance(value, str) and _EXP_NUMBER.fullmatch(value.strip()):
        return float(value)
    return value
