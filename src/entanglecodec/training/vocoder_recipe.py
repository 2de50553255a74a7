"""Vocoder training recipes: the codec recipes' loader and key names, vocoder sections.

A vocoder recipe is read by :func:`entanglecodec.training.recipe.read_recipe_dict` (``base:``
chains, ``--set key.sub=value``) and has the codec recipes' sections with the same key names
where the meaning is the same::

    name: vocoder-small
    init_from: null            # warm start from a trained vocoder (not a resume)
    model: {preset: small, overrides: {n_fft: 960}}
    data: {train_manifest: data/synth/manifest.jsonl, batch_size: 16, crop_seconds: 1.0}
    optim: {lr: 5.0e-4, discriminator_lr: 2.0e-4, warmup_steps: 500, schedule: cosine}
    loss: {mel: 45.0, stft: 10.0, adv: 1.0, fm: 2.0, gan_start_step: 10000}
    trainer: {max_steps: 200000, ckpt_every: 250, val_every: 250, plot_every: 1000}
    discriminator: {periods: [2, 3, 5, 7, 11], mrd_channels: 16}

Recipes written before this layout (a ``train:`` section, ``data.manifest``, ``lambda_*``, flat
``model`` fields) are refused with one line naming the new key; recipes stored in old training
checkpoints are migrated by :func:`migrate_legacy_recipe`, so old runs still resume and export.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError, _from_dict
from ..vocoder.config import VocoderConfig, nest_legacy_mel_keys
from .recipe import TrainerBase, merge_overrides, read_recipe_dict


@dataclass
class VocoderModelSection:
    """``preset`` (a :class:`VocoderConfig` preset, ``None``: its defaults) deep-merged with ``overrides``."""

    preset: str | None = "small"
    overrides: dict[str, Any] = field(default_factory=dict)

    def build(self) -> VocoderConfig:
        base = VocoderConfig.preset(self.preset) if self.preset is not None else VocoderConfig()
        return VocoderConfig.from_dict(merge_overrides(base.to_dict(), nest_legacy_mel_keys(dict(self.overrides))))


@dataclass
class VocoderDataSection:
    """Where the audio comes from and how it is cropped (key names as in the codec's ``data``).

    Attributes:
        train_manifest: training manifest(s); relative paths are taken from the CWD.
        valid_manifest: manifest(s) for validation (empty: the ``valid_split`` rows of ``train_manifest``).
        train_split, valid_split: splits used for training / validation.
        crop_seconds: training crop length (rounded to whole mel frames).
        valid_crop_seconds: centre crop of validation clips.
        batch_size: crops per step (per device).
        num_workers: DataLoader worker processes.
        domain_weights: e.g. ``{speech: 0.5, music: 0.25, sound: 0.25}``; ``None``: uniform over clips.
        valid_batches: validation batches per validation.
        on_error: ``skip`` or ``raise`` for unreadable files.
        input_codec: a codec checkpoint (directory or Hub id) whose decoded mels the vocoder learns
            to render (not in the paper): for a share ``input_codec_fraction`` of the training crops,
            and for every validation clip, the input log-mel is that frozen codec's one-step
            reconstruction of the audio (encode, then the flow decoder; no gradients) instead of the
            audio's own log-mel, while every loss still compares with the original audio. ``None``:
            copy-synthesis only (the general vocoder).
        input_codec_fraction: share of the training crops given the codec's mel (the rest keep their
            own, so the vocoder stays a general mel inverter).
    """

    train_manifest: list[str] = field(default_factory=list)
    valid_manifest: list[str] = field(default_factory=list)
    train_split: str = "train"
    valid_split: str = "valid"
    crop_seconds: float = 1.0
    valid_crop_seconds: float = 3.0
    batch_size: int = 16
    num_workers: int = 1
    domain_weights: dict[str, float] | None = None
    valid_batches: int = 2
    on_error: Literal["skip", "raise"] = "skip"
    input_codec: str | None = None
    input_codec_fraction: float = 0.75

    def validate(self) -> None:
        if self.batch_size < 1 or self.num_workers < 0 or self.valid_batches < 1:
            raise ConfigError("data: batch_size >= 1, num_workers >= 0 and valid_batches >= 1 are required")
        if not 0.0 < self.input_codec_fraction <= 1.0:
            raise ConfigError(f"data.input_codec_fraction must lie in (0, 1], got {self.input_codec_fraction}")
        if not self.crop_seconds > 0 or not self.valid_crop_seconds > 0:
            raise ConfigError("data: crop_seconds and valid_crop_seconds must be positive")


@dataclass
class VocoderOptimSection:
    """AdamW for the generator and the discriminators, warm-up then cosine (or constant) LR.

    ``schedule: cosine`` decays to ``min_lr_ratio * lr`` at ``trainer.max_steps``; ``grad_clip``
    clips both optimisers' gradient norms (0 disables).
    """

    lr: float = 5e-4
    discriminator_lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.9])
    weight_decay: float = 0.01
    grad_clip: float = 10.0
    warmup_steps: int = 500
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.1

    def validate(self) -> None:
        if len(self.betas) != 2:
            raise ConfigError("optim.betas must have two values")
        if self.lr <= 0 or self.discriminator_lr <= 0:
            raise ConfigError("optim: lr and discriminator_lr must be positive")


@dataclass
class VocoderLossSection:
    """Loss weights: multi-resolution mel L1 (``mel``) and STFT (``stft``, 0 = off) from step 0;
    hinge adversarial (``adv``) and feature matching (``fm``) from ``gan_start_step`` on.

    ``mrd_weight`` weighs the multi-resolution critic against the multi-period one;
    ``gan_batch_size`` is how many items of each batch the critics see (``None``: all), a CPU
    saving since the critics cost far more than the generator.
    """

    mel: float = 45.0
    stft: float = 0.0
    adv: float = 1.0
    fm: float = 2.0
    mrd_weight: float = 1.0
    gan_start_step: int = 5000
    gan_batch_size: int | None = None

    def validate(self) -> None:
        if self.gan_batch_size is not None and self.gan_batch_size < 1:
            raise ConfigError("loss.gan_batch_size must be >= 1 (or null for the whole batch)")


@dataclass
class VocoderTrainerSection(TrainerBase):
    """Vocoder ``trainer`` keys: :class:`TrainerBase` (steps are generator steps) plus samples and retention.

    A checkpoint (``last.ckpt`` + a periodic one) is written every ``ckpt_every`` steps, validation
    runs every ``val_every`` steps (a multiple of ``ckpt_every``), sample WAVs + a mel PNG are
    written at the first validation ``plot_every`` steps after the previous ones.
    """

    max_steps: int = 200_000
    devices: int | str = "auto"
    val_every: int = 250
    ckpt_every: int = 250
    plot_every: int = 1000
    num_samples: int = 3
    keep_checkpoints: int = 2

    def validate(self) -> None:
        super().validate()
        if self.val_every % self.ckpt_every:
            raise ConfigError(
                f"trainer.val_every ({self.val_every}) must be a multiple of trainer.ckpt_every ({self.ckpt_every})"
            )


@dataclass
class DiscriminatorWaveConfig:
    """Sizes of the waveform critics (:mod:`entanglecodec.training.discriminators`)."""

    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    mpd_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    mrd_resolutions: list[list[int]] = field(default_factory=lambda: [[2048, 512], [1024, 256], [512, 128]])
    mrd_channels: int = 32


@dataclass
class VocoderRecipe:
    """The whole vocoder recipe (one YAML file)."""

    name: str = "vocoder"
    init_from: str | None = None  # warm start: run folder, .ckpt or exported vocoder (not a resume)
    model: VocoderModelSection = field(default_factory=VocoderModelSection)
    data: VocoderDataSection = field(default_factory=VocoderDataSection)
    optim: VocoderOptimSection = field(default_factory=VocoderOptimSection)
    loss: VocoderLossSection = field(default_factory=VocoderLossSection)
    trainer: VocoderTrainerSection = field(default_factory=VocoderTrainerSection)
    discriminator: DiscriminatorWaveConfig = field(default_factory=DiscriminatorWaveConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VocoderRecipe:
        """Build from a mapping in the current key names (see :func:`migrate_legacy_recipe`)."""
        if not isinstance(data, dict):
            raise ConfigError("a vocoder recipe must be a mapping with sections model/data/optim/loss/trainer")
        data = dict(data)
        d = dict(data.get("data") or {})
        for k in ("train_manifest", "valid_manifest"):  # accept a single path, or null for none
            if d.get(k) is None:
                d.pop(k, None)
            elif isinstance(d[k], str):
                d[k] = [d[k]] if d[k] else []
        if d:
            data["data"] = d
        recipe = _from_dict(cls, data)
        recipe.model.build()  # the model keys are checked now, not at the first step
        return recipe

    @property
    def model_config(self) -> VocoderConfig:
        """The :class:`VocoderConfig` this recipe trains."""
        return self.model.build()

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary (YAML/JSON-serialisable), in the current key names."""
        return asdict(self)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> VocoderRecipe:
        """Read a recipe file with the codec recipes' loader (``base:`` chains, ``key=value``
        overrides). Errors (old key names included) are one line naming the file."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: recipe file not found")
        raw = read_recipe_dict(p, overrides)
        try:
            _, renamed = migrate_legacy_recipe(raw)
            if renamed:
                old, new = renamed[0]
                raise ConfigError(f"'{old}' is now '{new}' (vocoder recipes use the codec recipes' key names)")
            return cls.from_dict(raw)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from e


# Old ``train.*`` key -> its section and name now.
_LEGACY_TRAIN_KEYS: dict[str, str] = {
    "max_steps": "trainer.max_steps",
    "lr": "optim.lr",
    "lr_disc": "optim.discriminator_lr",
    "betas": "optim.betas",
    "weight_decay": "optim.weight_decay",
    "warmup_steps": "optim.warmup_steps",
    "schedule": "optim.schedule",
    "min_lr_ratio": "optim.min_lr_ratio",
    "grad_clip": "optim.grad_clip",
    "gan_start_step": "loss.gan_start_step",
    "lambda_mel": "loss.mel",
    "lambda_stft": "loss.stft",
    "lambda_adv": "loss.adv",
    "lambda_fm": "loss.fm",
    "mrd_weight": "loss.mrd_weight",
    "gan_batch_size": "loss.gan_batch_size",
    "steps_per_epoch": "trainer.ckpt_every",
    "val_every_epochs": "trainer.val_every",  # in steps now: val_every_epochs * steps_per_epoch
    "val_batches": "data.valid_batches",
    "sample_every_steps": "trainer.plot_every",
    "num_samples": "trainer.num_samples",
    "init_from": "init_from",
    "log_every_steps": "trainer.log_every",
    "precision": "trainer.precision",
    "threads": "trainer.threads",
    "accelerator": "trainer.accelerator",
    "devices": "trainer.devices",
    "strategy": "trainer.strategy",
    "num_nodes": "trainer.num_nodes",
    "keep_checkpoints": "trainer.keep_checkpoints",
}
_LEGACY_DATA_KEYS: dict[str, str] = {"manifest": "data.train_manifest", "seed": "trainer.seed"}


def migrate_legacy_recipe(data: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Translate a vocoder recipe written before the shared key names into the current ones.

    Returns:
        ``(migrated, renamed)``: the recipe in current key names and the ``(old key, new key)``
        pairs that were translated (empty for a current recipe, which is returned as is).
    """
    out: dict[str, Any] = {k: v for k, v in data.items() if k != "train"}
    renamed: list[tuple[str, str]] = []

    def put(dotted: str, value: Any) -> None:
        node = out
        *parents, last = dotted.split(".")
        for part in parents:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[last] = value

    data_sec = data.get("data")
    if isinstance(data_sec, dict):
        out["data"] = {k: v for k, v in data_sec.items() if k not in _LEGACY_DATA_KEYS}
        for k, new in _LEGACY_DATA_KEYS.items():
            if k in data_sec:
                put(new, data_sec[k])
                renamed.append((f"data.{k}", new))
    train = data.get("train")
    if isinstance(train, dict):
        steps_per_epoch = int(train.get("steps_per_epoch", 250))
        for k, v in train.items():
            new = _LEGACY_TRAIN_KEYS.get(k, f"trainer.{k}")
            value = v * steps_per_epoch if k == "val_every_epochs" else v
            put(new, value)
            renamed.append((f"train.{k}", new))
        if "val_every_epochs" not in train and "steps_per_epoch" in train:
            put("trainer.val_every", steps_per_epoch)  # validation came with every checkpoint
    model = data.get("model")
    if isinstance(model, dict):
        flat = {k: v for k, v in model.items() if k not in ("preset", "overrides")}
        if flat:
            preset = model.get("preset")
            overrides = dict(model.get("overrides") or {})
            overrides.update(flat)
            out["model"] = {"preset": preset, "overrides": overrides}
            renamed.append((f"model.{next(iter(flat))}", f"model.overrides.{next(iter(flat))}"))
    return out, renamed


def lr_lambda(step: int, cfg: VocoderOptimSection, max_steps: int) -> float:
    """LR multiplier at ``step``: linear warm-up, then cosine decay to ``min_lr_ratio`` (or constant)."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def validation_set_key(data: dict[str, Any]) -> dict[str, Any]:
    """What defines the validation set of a recipe's ``data`` section (a plain dict, current keys).

    Validation losses are comparable across a resume only when this is unchanged; ``best`` is
    reset when it changes (e.g. ``--manifest`` points at another corpus).
    """
    manifests = data.get("valid_manifest") or data.get("train_manifest") or []
    if isinstance(manifests, str):
        manifests = [manifests]
    return {
        "manifest": [str(Path(str(m)).expanduser().resolve()) for m in manifests],
        "split": data.get("valid_split"),
        "crop_seconds": data.get("valid_crop_seconds"),
        "input_codec": data.get("input_codec"),
    }


__all__ = [
    "DiscriminatorWaveConfig",
    "VocoderDataSection",
    "VocoderLossSection",
    "VocoderModelSection",
    "VocoderOptimSection",
    "VocoderRecipe",
    "VocoderTrainerSection",
    "lr_lambda",
    "migrate_legacy_recipe",
    "validation_set_key",
]
