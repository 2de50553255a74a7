"""Training recipe for the Vocos-style vocoder (:mod:`entanglecodec.vocoder.model`).

The vocoder learns to invert the codec's un-normalised log-mel (:meth:`MelFrontend.log_mel`):
random ~1 s crops from corpus manifests are analysed, re-synthesised and compared with the
original. Losses: multi-resolution mel L1 (+ optional multi-resolution STFT loss) from step 0;
from ``gan_start_step`` on, hinge adversarial + feature-matching losses from a multi-period and a
multi-resolution discriminator (:mod:`entanglecodec.training.discriminators`).

Everything is driven by a YAML recipe (``configs/vocoder-small.yaml``) with four sections,
``model`` (a :class:`VocoderConfig`, optionally ``preset: small`` plus overrides), ``data``,
``train`` and ``discriminator``; see the dataclasses below for every key.

Run layout (``run_dir``)::

    config.yaml              the resolved recipe
    checkpoints/last.ckpt    Lightning checkpoint (every ``steps_per_epoch`` steps and at exit)
    checkpoints/best.ckpt    lowest validation log-mel L1
    best/                    the best vocoder as config.json + model.safetensors
    logs/                    CSV metrics; tb/ TensorBoard events
    samples/step-XXXXXXX/    reference / generated WAVs and a mel comparison PNG

Resuming: every checkpoint is taken at the end of a (short) epoch of ``steps_per_epoch`` steps, and
the sampler and crops are functions of ``(seed, epoch)``, so ``--resume`` continues exactly (model,
both optimisers, LR schedules, step counter, data stream). A checkpoint written when training is
interrupted mid-epoch resumes the model and optimisers exactly but replays that epoch's data.
The data section may change between runs (e.g. a bigger manifest): only model/optimiser state is
taken from the checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ..audio import MelFrontend, lengths_to_mask, num_frames, save_audio
from ..config import ConfigError, _from_dict
from ..vocoder.config import VocoderConfig, nest_legacy_mel_keys
from ..vocoder.model import Vocoder
from .discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator
from .losses import (
    MultiResolutionMelLoss,
    MultiResolutionSTFTLoss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from .recipe import read_recipe_dict

logger = logging.getLogger(__name__)


def lightning() -> Any:
    """The Lightning package (``lightning.pytorch`` or the standalone ``pytorch_lightning``)."""
    import importlib

    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("vocoder training needs Lightning: pip install 'entanglecodec[train]'")


pl = lightning()


# ---------------------------------------------------------------------------------------------
# Recipe
# ---------------------------------------------------------------------------------------------
@dataclass
class VocoderDataConfig:
    """Where the audio comes from and how it is cropped.

    Attributes:
        manifest: training manifest (``manifest.jsonl``); relative paths are taken from the CWD.
        valid_manifest: manifest for validation (``None``: the ``valid_split`` rows of ``manifest``).
        train_split: split used for training.
        valid_split: split used for validation.
        crop_seconds: training crop length (rounded to whole mel frames).
        valid_crop_seconds: centre crop of validation clips.
        batch_size: crops per step (per device).
        num_workers: DataLoader worker processes.
        domain_weights: e.g. ``{speech: 0.5, music: 0.25, sound: 0.25}``; ``None``: uniform over clips.
        seed: seed of the sampler and of the crops.
    """

    manifest: str = ""
    valid_manifest: str | None = None
    train_split: str = "train"
    valid_split: str = "valid"
    crop_seconds: float = 1.0
    valid_crop_seconds: float = 3.0
    batch_size: int = 16
    num_workers: int = 1
    domain_weights: dict[str, float] | None = None
    seed: int = 0

    def validate(self) -> None:
        if self.batch_size < 1 or self.num_workers < 0:
            raise ConfigError("data: batch_size must be >= 1 and num_workers >= 0")
        if not self.crop_seconds > 0 or not self.valid_crop_seconds > 0:
            raise ConfigError("data: crop_seconds and valid_crop_seconds must be positive")


@dataclass
class VocoderTrainConfig:
    """Optimisation, losses, schedule, logging and hardware.

    Attributes:
        max_steps: total generator steps.
        lr: peak AdamW learning rate of the generator (``lr_disc`` for the discriminators).
        betas: AdamW betas.
        weight_decay: AdamW weight decay.
        warmup_steps: linear LR warm-up.
        schedule: ``cosine`` (to ``min_lr_ratio * lr`` at ``max_steps``) or ``constant`` after warm-up.
        init_from: warm start (not resume): a trained vocoder (run directory, ``.ckpt`` or exported
            directory) whose tensors with matching names and shapes initialise this model; the
            others (e.g. the head after an ``n_fft`` change) keep their fresh initialisation.
        gan_start_step: steps of mel-loss-only training before the discriminators join.
        lambda_mel, lambda_stft, lambda_adv, lambda_fm: loss weights (``lambda_stft = 0`` disables it).
        mrd_weight: weight of the multi-resolution discriminator relative to the multi-period one.
        gan_batch_size: items of each batch the discriminators see (``None``: all); a CPU saving,
            since the discriminators cost far more than the generator.
        grad_clip: gradient-norm clip for both optimisers (0 disables).
        steps_per_epoch: an "epoch" is this many steps; checkpoints (and validation, every
            ``val_every_epochs``) happen at epoch ends.
        val_batches: validation batches per validation.
        sample_every_steps: write sample WAVs + a mel PNG at the first validation after this many steps.
        num_samples: validation clips written as samples.
        log_every_steps: logging interval.
        precision: Lightning precision (``32-true`` or ``bf16-mixed``).
        threads: ``torch.set_num_threads`` (``None``: leave PyTorch's default).
        accelerator, devices, strategy, num_nodes: passed to the Lightning ``Trainer``.
        keep_checkpoints: periodic checkpoints kept besides ``last`` and ``best``.
    """

    max_steps: int = 200_000
    lr: float = 5e-4
    lr_disc: float = 2e-4
    betas: tuple[float, float] = (0.8, 0.9)
    weight_decay: float = 0.01
    warmup_steps: int = 500
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.1
    gan_start_step: int = 5000
    lambda_mel: float = 45.0
    lambda_stft: float = 0.0
    lambda_adv: float = 1.0
    lambda_fm: float = 2.0
    mrd_weight: float = 1.0
    gan_batch_size: int | None = None
    grad_clip: float = 10.0
    steps_per_epoch: int = 250
    val_every_epochs: int = 1
    val_batches: int = 2
    sample_every_steps: int = 1000
    num_samples: int = 3
    init_from: str | None = None
    log_every_steps: int = 10
    precision: str = "32-true"
    threads: int | None = None
    accelerator: str = "auto"
    devices: str | int = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    keep_checkpoints: int = 2

    def validate(self) -> None:
        if self.max_steps < 1 or self.steps_per_epoch < 1 or self.val_every_epochs < 1:
            raise ConfigError("train: max_steps, steps_per_epoch and val_every_epochs must be >= 1")
        if self.lr <= 0 or self.lr_disc <= 0:
            raise ConfigError("train: learning rates must be positive")
        if self.gan_batch_size is not None and self.gan_batch_size < 1:
            raise ConfigError("train: gan_batch_size must be >= 1 (or null for the whole batch)")
        if self.precision not in ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true"):
            raise ConfigError(f"train: unsupported precision {self.precision!r} (use 32-true or bf16-mixed)")


@dataclass
class DiscriminatorWaveConfig:
    """Sizes of the waveform discriminators."""

    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    mpd_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    mrd_resolutions: list[list[int]] = field(default_factory=lambda: [[2048, 512], [1024, 256], [512, 128]])
    mrd_channels: int = 32


@dataclass
class VocoderRecipe:
    """The whole recipe (one YAML file)."""

    name: str = "vocoder"
    model: VocoderConfig = field(default_factory=lambda: VocoderConfig.preset("small"))
    data: VocoderDataConfig = field(default_factory=VocoderDataConfig)
    train: VocoderTrainConfig = field(default_factory=VocoderTrainConfig)
    discriminator: DiscriminatorWaveConfig = field(default_factory=DiscriminatorWaveConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VocoderRecipe:
        """Build from a mapping. ``model`` may hold ``preset: <name>`` plus field overrides."""
        if not isinstance(data, dict):
            raise ConfigError("a vocoder recipe must be a mapping with sections model/data/train/discriminator")
        data = dict(data)
        if "trainer" in data:  # the codec recipes' name of the section
            if "train" in data:
                raise ConfigError("give the training section once: 'train' or its alias 'trainer'")
            data["train"] = data.pop("trainer")
        model = data.pop("model", None) or {}
        if not isinstance(model, dict):
            raise ConfigError("recipe section 'model' must be a mapping")
        model = dict(model)
        preset = model.pop("preset", None)
        base = VocoderConfig.preset(preset).to_dict() if preset is not None else {"mel": {}}
        model = nest_legacy_mel_keys(model)
        merged = {**base, **model, "mel": {**base["mel"], **model.get("mel", {})}}
        recipe = _from_dict(cls, data)
        recipe.model = VocoderConfig.from_dict(merged)
        return recipe

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary (YAML/JSON-serialisable)."""
        d = asdict(self)
        d["train"]["betas"] = list(self.train.betas)
        return d

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> VocoderRecipe:
        """Read a recipe file with the codec recipes' loader (``base:`` chains, ``key=value``
        overrides); errors name the file."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: recipe file not found")
        raw = read_recipe_dict(p, overrides)
        try:
            return cls.from_dict(raw)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from e


def lr_lambda(step: int, cfg: VocoderTrainConfig) -> float:
    """LR multiplier at ``step``: linear warm-up, then cosine decay (or constant)."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def validation_set_key(data: dict[str, Any]) -> dict[str, Any]:
    """What defines the validation set of a recipe's ``data`` section (a plain dict).

    Validation losses are comparable across a resume only when this is unchanged; ``best`` is
    reset when it changes (e.g. ``--manifest`` points at another corpus).
    """
    manifest = data.get("valid_manifest") or data.get("manifest")
    return {
        "manifest": str(Path(str(manifest)).expanduser().resolve()) if manifest else None,
        "split": data.get("valid_split"),
        "crop_seconds": data.get("valid_crop_seconds"),
    }


# ---------------------------------------------------------------------------------------------
# Lightning module
# ---------------------------------------------------------------------------------------------
class VocoderModule(pl.LightningModule):  # type: ignore[misc, name-defined]
    """GAN training of :class:`Vocoder` with manual optimisation (generator + discriminators).

    Args:
        recipe: the full recipe (saved in the checkpoint's hyper-parameters as a dict).
        run_dir: where samples and the best exported vocoder are written (``None``: nowhere).
    """

    def __init__(self, recipe: VocoderRecipe | dict[str, Any], run_dir: str | None = None) -> None:
        super().__init__()
        if isinstance(recipe, dict):
            recipe = VocoderRecipe.from_dict(recipe)
        self.recipe = recipe
        self.save_hyperparameters({"recipe": recipe.to_dict(), "run_dir": run_dir})
        self.automatic_optimization = False
        self.run_dir = Path(run_dir) if run_dir else None
        mc = recipe.model
        self.vocoder = Vocoder(mc)
        self.mel = MelFrontend(mc.mel)
        dc = recipe.discriminator
        self.mpd = MultiPeriodDiscriminator(dc.periods, dc.mpd_channels)
        self.mrd = MultiResolutionDiscriminator([(int(a), int(b)) for a, b in dc.mrd_resolutions], dc.mrd_channels)
        self.mel_loss = MultiResolutionMelLoss(mc.sample_rate, floor=mc.mel.log_floor)
        self.stft_loss = MultiResolutionSTFTLoss()
        self.step_count = 0
        self.best_val = math.inf
        self.validation_set_changed = False  # set on resume when the validation set differs
        self._last_sample_step = -1
        self._t_last: float | None = None
        self._sec_per_step: float | None = None

    # ------------------------------------------------------------------ optimisers
    def configure_optimizers(self) -> Any:
        tc = self.recipe.train
        opt_g = torch.optim.AdamW(self.vocoder.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
        d_params = list(self.mpd.parameters()) + list(self.mrd.parameters())
        opt_d = torch.optim.AdamW(d_params, lr=tc.lr_disc, betas=tc.betas, weight_decay=tc.weight_decay)
        sch_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda s: lr_lambda(s, tc))
        sch_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lambda s: lr_lambda(s, tc))
        return [opt_g, opt_d], [{"scheduler": sch_g, "interval": "step"}, {"scheduler": sch_d, "interval": "step"}]

    # ------------------------------------------------------------------ checkpoint state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vocoder_step"] = self.step_count
        checkpoint["vocoder_best_val"] = self.best_val
        checkpoint["vocoder_last_sample_step"] = self._last_sample_step

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.step_count = int(checkpoint.get("vocoder_step", 0))
        self.best_val = float(checkpoint.get("vocoder_best_val", math.inf))
        self._last_sample_step = int(checkpoint.get("vocoder_last_sample_step", -1))
        saved = checkpoint.get("hyper_parameters", {}).get("recipe", {}).get("data")
        if isinstance(saved, dict):
            before, now = validation_set_key(saved), validation_set_key(asdict(self.recipe.data))
            if before != now:
                logger.warning(
                    "validation set changed since the checkpoint (%s -> %s): the best validation loss "
                    "(%.4f) is forgotten, and best/ and best.ckpt restart from the next validation",
                    before, now, self.best_val,
                )
                self.best_val = math.inf
                self.validation_set_changed = True

    # ------------------------------------------------------------------ losses
    def _disc(self, wav: Tensor) -> tuple[list[Tensor], list[list[Tensor]], list[Tensor], list[list[Tensor]]]:
        lp, fp = self.mpd(wav)
        lr, fr = self.mrd(wav)
        return lp, fp, lr, fr

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        tc = self.recipe.train
        opt_g, opt_d = self.optimizers()
        sch_g, sch_d = self.lr_schedulers()
        wav: Tensor = batch["wav"]
        lengths: Tensor = batch["lengths"]
        with torch.no_grad():
            log_mel = self.mel.log_mel(wav, lengths)
        wav = wav[:, : log_mel.shape[-1] * self.vocoder.hop_length]
        y_hat = self.vocoder(log_mel, consistency_passes=0)  # the network alone is trained
        gan = self.step_count >= tc.gan_start_step
        logs: dict[str, Tensor | float] = {}

        nd = wav.shape[0] if tc.gan_batch_size is None else min(tc.gan_batch_size, wav.shape[0])
        if gan:
            rp, _, rr, _ = self._disc(wav[:nd])
            fp, _, fr, _ = self._disc(y_hat[:nd].detach())
            d_mpd = hinge_discriminator_loss(rp, fp)
            d_mrd = hinge_discriminator_loss(rr, fr)
            d_loss = d_mpd + tc.mrd_weight * d_mrd
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            if tc.grad_clip > 0:
                self.clip_gradients(opt_d, gradient_clip_val=tc.grad_clip, gradient_clip_algorithm="norm")
            opt_d.step()
            logs.update({"train/d_loss": d_loss.detach(), "train/d_mpd": d_mpd.detach(), "train/d_mrd": d_mrd.detach()})

        mel_loss = self.mel_loss(y_hat, wav)
        g_loss = tc.lambda_mel * mel_loss
        logs["train/mel_loss"] = mel_loss.detach()
        if tc.lambda_stft > 0:
            stft_loss = self.stft_loss(y_hat, wav)
            g_loss = g_loss + tc.lambda_stft * stft_loss
            logs["train/stft_loss"] = stft_loss.detach()
        if gan:
            with torch.no_grad():
                _, rfp, _, rfr = self._disc(wav[:nd])
            fp, ffp, fr, ffr = self._disc(y_hat[:nd])
            adv = hinge_generator_loss(fp) + tc.mrd_weight * hinge_generator_loss(fr)
            fm = feature_matching_loss(rfp, ffp) + tc.mrd_weight * feature_matching_loss(rfr, ffr)
            g_loss = g_loss + tc.lambda_adv * adv + tc.lambda_fm * fm
            logs.update({"train/g_adv": adv.detach(), "train/g_fm": fm.detach()})
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        if tc.grad_clip > 0:
            self.clip_gradients(opt_g, gradient_clip_val=tc.grad_clip, gradient_clip_algorithm="norm")
        opt_g.step()
        sch_g.step()
        with warnings.catch_warnings():
            # before the GAN starts the discriminator schedule advances without optimiser steps
            warnings.filterwarnings("ignore", message="Detected call of")
            sch_d.step()
        self.step_count += 1

        logs["train/g_loss"] = g_loss.detach()
        logs["train/lr"] = float(sch_g.get_last_lr()[0])
        logs["train/step"] = float(self.step_count)
        if self.step_count % tc.log_every_steps == 0:  # Lightning writes every log_every_steps batches
            now = time.perf_counter()
            if self._t_last is not None:
                self._sec_per_step = (now - self._t_last) / tc.log_every_steps
            self._t_last = now
        if self._sec_per_step is not None:
            logs["train/sec_per_step"] = self._sec_per_step
        self.log_dict(logs, on_step=True, on_epoch=False, prog_bar=False, batch_size=wav.shape[0])

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        wav: Tensor = batch["wav"]
        lengths: Tensor = batch["lengths"]
        hop = self.vocoder.hop_length
        frames: Tensor = num_frames(lengths, hop)  # type: ignore[assignment]
        log_mel = self.mel.log_mel(wav, lengths)
        y_hat = self.vocoder(log_mel, frames, consistency_passes=0)[:, : wav.shape[1]]  # the network alone
        y_hat = y_hat * lengths_to_mask(lengths, y_hat.shape[1]).to(y_hat.dtype)
        rebuilt = self.mel.log_mel(y_hat, lengths)
        fmask = lengths_to_mask(frames, log_mel.shape[-1])[:, None, :].to(log_mel.dtype)
        per_item = ((rebuilt - log_mel).abs() * fmask).sum(dim=(1, 2)) / (fmask.sum(dim=(1, 2)) * log_mel.shape[1])
        self.log("val/mel_l1", per_item.mean(), on_epoch=True, sync_dist=True, batch_size=wav.shape[0])
        if batch_idx == 0 and self.trainer.is_global_zero and self._want_samples():
            self._write_samples(wav, y_hat, lengths, log_mel, rebuilt, frames)

    def on_validation_epoch_end(self) -> None:
        metric = self.trainer.callback_metrics.get("val/mel_l1")
        if metric is None or self.trainer.sanity_checking:
            return
        value = float(metric)
        if value < self.best_val:
            self.best_val = value
            if self.run_dir is not None and self.trainer.is_global_zero:
                self.vocoder.save_pretrained(self.run_dir / "best")
                (self.run_dir / "best" / "TRAINING_STATE.txt").write_text(
                    f"step {self.step_count}\nval/mel_l1 {value:.5f}\n"
                )
        self.log("val/best_mel_l1", self.best_val, sync_dist=False)

    # ------------------------------------------------------------------ samples
    def _want_samples(self) -> bool:
        if self.run_dir is None or self.trainer.sanity_checking:
            return False
        every = self.recipe.train.sample_every_steps
        return self._last_sample_step < 0 or self.step_count - self._last_sample_step >= every

    def _write_samples(
        self, wav: Tensor, y_hat: Tensor, lengths: Tensor, log_mel: Tensor, rebuilt: Tensor, frames: Tensor
    ) -> None:
        assert self.run_dir is not None
        self._last_sample_step = self.step_count
        out = self.run_dir / "samples" / f"step-{self.step_count:07d}"
        out.mkdir(parents=True, exist_ok=True)
        n = min(self.recipe.train.num_samples, wav.shape[0])
        sr = self.vocoder.sample_rate
        tb = None
        for lg in self.loggers:
            if hasattr(lg.experiment, "add_audio"):
                tb = lg.experiment
        for i in range(n):
            ln = int(lengths[i])
            save_audio(out / f"{i}_ref.wav", wav[i, :ln].float().cpu(), sr)
            save_audio(out / f"{i}_gen.wav", y_hat[i, :ln].float().cpu(), sr)
            if tb is not None:
                tb.add_audio(f"samples/{i}_gen", y_hat[i, :ln].float().cpu().clamp(-1, 1)[None], self.step_count, sr)
        try:
            save_mel_comparison(
                out / "mels.png",
                [log_mel[i, :, : int(frames[i])].float().cpu() for i in range(n)],
                [rebuilt[i, :, : int(frames[i])].float().cpu() for i in range(n)],
                title=f"step {self.step_count}: reference (top) vs vocoder (bottom)",
            )
        except ImportError:  # matplotlib is optional
            logger.warning("matplotlib not installed: skipping the mel plot")


def save_mel_comparison(path: str | Path, refs: list[Tensor], gens: list[Tensor], title: str = "") -> None:
    """Plot reference / generated log-mels ``[n_mels, F]`` as a 2 x N image grid PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(refs)
    fig, axes = plt.subplots(2, n, figsize=(4 * n, 5), squeeze=False)
    for i in range(n):
        lo = float(refs[i].min())
        hi = float(refs[i].max())
        for row, m in enumerate((refs[i], gens[i])):
            ax = axes[row][i]
            ax.imshow(m.numpy(), origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
            ax.set_xlabel("frame (20 ms)")
            ax.set_ylabel("mel bin")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(str(path), dpi=80)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------------
class _SaveOnException(pl.Callback):  # type: ignore[misc, name-defined]
    """Write ``last.ckpt`` when training stops on an exception (Ctrl-C, SIGTERM, crash)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if trainer.global_rank == 0 and getattr(pl_module, "step_count", 0) > 0:
            try:
                trainer.save_checkpoint(str(self.path))
                logger.warning("training stopped (%s): checkpoint written to %s", type(exception).__name__, self.path)
            except Exception as e:  # noqa: BLE001 - best effort while already failing
                logger.error("could not write the exit checkpoint %s: %s", self.path, e)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def _data_module(recipe: VocoderRecipe, world_size: int) -> Any:
    from ..data.dataset import ManifestDataModule

    dc, tc = recipe.data, recipe.train
    if not dc.manifest:
        raise ConfigError("data.manifest is not set: give it in the recipe or with --manifest")
    manifest = Path(dc.manifest)
    if not manifest.is_file():
        raise ConfigError(f"data.manifest {manifest}: manifest file not found")
    return ManifestDataModule(
        train_manifest=str(manifest),
        valid_manifest=dc.valid_manifest,
        batch_size=dc.batch_size,
        num_workers=dc.num_workers,
        crop_seconds=dc.crop_seconds,
        domain_weights=dc.domain_weights,
        seed=dc.seed,
        train_split=dc.train_split,
        valid_split=dc.valid_split,
        epoch_size=dc.batch_size * world_size * tc.steps_per_epoch,
        valid_crop_seconds=dc.valid_crop_seconds,
        sample_rate=recipe.model.sample_rate,
        pad_to_multiple=recipe.model.hop_length,
    )


def resolve_resume(resume: bool | str | Path | None, run_dir: Path) -> str | None:
    """``True``: ``run_dir/checkpoints/last.ckpt`` (must exist); a path: that file; falsy: ``None``."""
    if not resume:
        return None
    if resume is True:
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt} (start without --resume first)")
        return str(ckpt)
    p = Path(resume)
    if p.is_dir():
        p = p / "checkpoints" / "last.ckpt"
    if not p.is_file():
        raise FileNotFoundError(f"--resume: checkpoint {p} not found")
    return str(p)


class _BestCheckpoint(pl.callbacks.ModelCheckpoint):  # type: ignore[misc, name-defined]
    """``best.ckpt`` whose score follows the module's own ``best_val`` across resumes.

    Lightning's restored top-k state can predate the last validation (then the next improvement
    would be written beside the old file as ``best-v1.ckpt``), and it knows nothing of a changed
    validation set. The module is restored before the callbacks, so this callback re-seeds its
    state from the module's persisted ``best_val`` (``inf`` after a validation-set change) and
    always writes ``best.ckpt`` itself.
    """

    def __init__(self, module: VocoderModule, **kwargs: Any) -> None:
        super().__init__(enable_version_counter=False, **kwargs)
        self._module = module

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        path = str(Path(self.dirpath or ".") / f"{self.filename}{self.FILE_EXTENSION}")
        if not Path(path).is_file():
            return
        score = torch.tensor(self._module.best_val)
        self.best_k_models = {path: score}
        self.kth_best_model_path = self.best_model_path = path
        self.kth_value = self.best_model_score = score


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
        manifest: override ``data.manifest`` (e.g. continue on a bigger corpus).
        max_steps: override ``train.max_steps``.
        init_from: override ``train.init_from`` (warm start; ignored when resuming).
        overrides: ``dotted.key=value`` overrides (``--set``), as for the codec recipes.

    Returns:
        The run directory.
    """
    import yaml

    recipe = VocoderRecipe.from_yaml(config_path, overrides)
    if manifest is not None:
        recipe.data.manifest = str(manifest)
    if init_from is not None:
        recipe.train.init_from = str(init_from)
    if max_steps is not None:
        if max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {max_steps}")
        recipe.train.max_steps = int(max_steps)
    tc = recipe.train
    out = Path(run_dir) if run_dir is not None else Path("runs") / recipe.name
    ckpt_path = resolve_resume(resume, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    if tc.threads is not None:
        torch.set_num_threads(int(tc.threads))
    pl.seed_everything(recipe.data.seed, workers=True)

    ckpt_dir = out / "checkpoints"
    periodic = pl.callbacks.ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename="epoch{epoch:05d}",
        auto_insert_metric_name=False,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        save_last=True,
        save_top_k=tc.keep_checkpoints,
        monitor="train/step",
        mode="max",
    )
    module = VocoderModule(recipe, run_dir=str(out))
    best = _BestCheckpoint(
        module, dirpath=str(ckpt_dir), filename="best", monitor="val/mel_l1", mode="min", save_top_k=1,
        auto_insert_metric_name=False,
    )
    loggers = [pl.loggers.CSVLogger(str(out), name="logs")]  # version_N per (re)start
    try:
        loggers.append(pl.loggers.TensorBoardLogger(str(out), name="tb"))
    except ModuleNotFoundError:
        logger.warning("tensorboard not installed: CSV logs only")
    max_epochs = int(math.ceil(tc.max_steps / tc.steps_per_epoch))
    trainer = pl.Trainer(
        accelerator=tc.accelerator,
        devices=tc.devices,
        strategy=tc.strategy,
        num_nodes=tc.num_nodes,
        precision=tc.precision,
        max_epochs=max_epochs,
        limit_train_batches=tc.steps_per_epoch,
        limit_val_batches=tc.val_batches,
        check_val_every_n_epoch=tc.val_every_epochs,
        num_sanity_val_steps=0,
        log_every_n_steps=tc.log_every_steps,
        callbacks=[periodic, best, _SaveOnException(ckpt_dir / "last.ckpt")],
        logger=loggers,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=str(out),
    )
    if tc.init_from and ckpt_path is None:
        copied, kept = warm_start(module.vocoder, tc.init_from)
        if not copied:
            raise ConfigError(f"train.init_from {tc.init_from}: no tensor matches this model (different architecture?)")
        logger.info("warm start from %s: %d tensors copied, %d initialised fresh %s", tc.init_from, len(copied), len(kept), kept)
    dm = _data_module(recipe, trainer.world_size)
    logger.info("vocoder %s: %.2f M parameters; run dir %s", recipe.name, module.vocoder.num_parameters / 1e6, out)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return out


def _load_vocoder_any(source: str | Path) -> Vocoder:
    """A :class:`Vocoder` from a Lightning ``.ckpt``, a run directory or an exported directory."""
    src = Path(source)
    if src.is_dir() and (src / "best" / "model.safetensors").is_file():
        src = src / "best"
    elif src.is_dir() and (src / "checkpoints" / "last.ckpt").is_file():
        src = src / "checkpoints" / "last.ckpt"
    if src.is_dir():
        return Vocoder.from_pretrained(src)
    if src.is_file():
        state = torch.load(str(src), map_location="cpu", weights_only=True)
        hp = state.get("hyper_parameters", {})
        if "recipe" not in hp:
            raise ConfigError(f"{src}: not a vocoder training checkpoint (no recipe in its hyper-parameters)")
        recipe = VocoderRecipe.from_dict(hp["recipe"])
        voc = Vocoder(recipe.model)
        prefix = "vocoder."
        voc.load_state_dict({k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)})
        return voc
    raise FileNotFoundError(f"{src}: no checkpoint, run directory or exported vocoder here")


def warm_start(model: Vocoder, source: str | Path) -> tuple[list[str], list[str]]:
    """Copy the tensors of the vocoder at ``source`` whose names and shapes match into ``model``.

    Returns:
        ``(copied, kept)``: parameter/buffer names taken from ``source`` and names left as initialised.
    """
    theirs = _load_vocoder_any(source).state_dict()
    mine = model.state_dict()
    take = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
    model.load_state_dict(take, strict=False)
    return sorted(take), sorted(set(mine) - set(take))


def export_vocoder(source: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the vocoder of a training run as ``config.json`` + ``model.safetensors``.

    Args:
        source: a Lightning ``.ckpt`` file, a run directory (its ``best/`` export, else
            ``checkpoints/last.ckpt``), or an exported vocoder directory.
        out_dir: destination directory (e.g. ``checkpoints/vocoder-small``).
        overwrite: replace existing weights in ``out_dir``.
    """
    dst = Path(out_dir)
    if (dst / "model.safetensors").exists() and not overwrite:
        raise FileExistsError(f"{dst / 'model.safetensors'} exists; pass overwrite=True (--overwrite) to replace it")
    return _load_vocoder_any(source).save_pretrained(dst)


__all__ = [
    "DiscriminatorWaveConfig",
    "VocoderDataConfig",
    "VocoderModule",
    "VocoderRecipe",
    "VocoderTrainConfig",
    "export_vocoder",
    "lr_lambda",
    "train_vocoder",
    "warm_start",
]

