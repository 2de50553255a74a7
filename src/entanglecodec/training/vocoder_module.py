"""GAN training of the Vocos-style vocoder (:mod:`entanglecodec.vocoder.model`) as a LightningModule.

The vocoder learns to invert the codec's un-normalised log-mel (:meth:`MelFrontend.log_mel`):
random ~1 s crops are analysed, re-synthesised and compared with the original. With
``data.input_codec`` a share of the crops is given a frozen codec's decoded mel of the same audio
instead, so the vocoder learns to render what the codec's decoder draws (compared with the original). Losses
(:mod:`entanglecodec.training.losses`): multi-resolution mel L1 (+ optional multi-resolution STFT
loss) from step 0; from ``loss.gan_start_step`` on, hinge adversarial + feature-matching losses of
a multi-period and a multi-resolution critic (:mod:`entanglecodec.training.discriminators`).
Optimisation is manual (one generator and one critic optimiser), so the module counts its own
generator steps (``step_count``); Lightning's ``global_step`` counts every optimiser step.
The recipe is :class:`~entanglecodec.training.vocoder_recipe.VocoderRecipe`; the run
(trainer, callbacks, resume, export) is :mod:`entanglecodec.training.vocoder_run`.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import torch
from torch import Tensor

from ..audio import MelFrontend, lengths_to_mask, num_frames, save_audio
from ..config import ConfigError
from ..fileio import atomic_write_text
from ..vocoder.model import Vocoder
from .discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator
from .losses import (
    MultiResolutionMelLoss,
    MultiResolutionSTFTLoss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from .plots import save_mel_grid
from .vocoder_recipe import VocoderRecipe, lr_lambda, migrate_legacy_recipe, validation_set_key

logger = logging.getLogger(__name__)


class VocoderModule(pl.LightningModule):
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
        mc = recipe.model_config
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
        oc, max_steps = self.recipe.optim, self.recipe.trainer.max_steps
        betas = (float(oc.betas[0]), float(oc.betas[1]))
        opt_g = torch.optim.AdamW(self.vocoder.parameters(), lr=oc.lr, betas=betas, weight_decay=oc.weight_decay)
        d_params = list(self.mpd.parameters()) + list(self.mrd.parameters())
        opt_d = torch.optim.AdamW(d_params, lr=oc.discriminator_lr, betas=betas, weight_decay=oc.weight_decay)
        sch_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda s: lr_lambda(s, oc, max_steps))
        sch_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lambda s: lr_lambda(s, oc, max_steps))
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
        saved_recipe = checkpoint.get("hyper_parameters", {}).get("recipe")
        saved = migrate_legacy_recipe(saved_recipe)[0].get("data") if isinstance(saved_recipe, dict) else None
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

    # ------------------------------------------------------------------ codec-decoded input mels
    def _input_codec(self) -> Any:
        """The frozen codec of ``data.input_codec`` (loaded on first use, kept out of the checkpoints), or None."""
        spec = self.recipe.data.input_codec
        if spec is None:
            return None
        codec = self.__dict__.get("_codec")
        if codec is None:
            from ..codec.model import EntangleCodec

            codec = EntangleCodec.from_pretrained(spec, map_location=self.device, build_text_encoder=False)
            if codec.config.mel != self.recipe.model_config.mel:
                raise ConfigError(
                    f"data.input_codec {spec}: its mel analysis {codec.config.mel} differs from the vocoder's "
                    f"{self.recipe.model_config.mel}"
                )
            codec.requires_grad_(False)
            self.__dict__["_codec"] = codec
        return codec

    def _input_mel(self, wav: Tensor, lengths: Tensor, log_mel: Tensor, share: float, seed: int) -> Tensor:
        """The vocoder's input ``[B, n_mels, F]``: ``log_mel`` with its first ``round(share * B)`` items
        replaced by the input codec's reconstruction of the same audio (see ``data.input_codec``)."""
        codec = self._input_codec()
        if codec is None:
            return log_mel
        n = max(1, round(share * wav.shape[0]))
        tokens = codec.encode(wav[:n], self.recipe.model_config.sample_rate, lengths[:n])
        decoded, _ = codec.decode_log_mel(tokens, seed=seed, precision="float32")
        f = min(decoded.shape[-1], log_mel.shape[-1])
        out = log_mel.clone()
        out[:n, :, :f] = decoded[:, :, :f].to(out.dtype)
        return out

    # ------------------------------------------------------------------ losses
    def _disc(self, wav: Tensor) -> tuple[list[Tensor], list[list[Tensor]], list[Tensor], list[list[Tensor]]]:
        lp, fp = self.mpd(wav)
        lr, fr = self.mrd(wav)
        return lp, fp, lr, fr

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        lc, grad_clip = self.recipe.loss, self.recipe.optim.grad_clip
        opt_g, opt_d = cast(list[Any], self.optimizers())
        sch_g, sch_d = cast(list[Any], self.lr_schedulers())
        wav: Tensor = batch["wav"]
        lengths: Tensor = batch["lengths"]
        with torch.no_grad():
            log_mel = self.mel.log_mel(wav, lengths)
            log_mel = self._input_mel(wav, lengths, log_mel, self.recipe.data.input_codec_fraction, self.step_count)
        wav = wav[:, : log_mel.shape[-1] * self.vocoder.hop_length]
        y_hat = self.vocoder(log_mel, consistency_passes=0)  # the network alone is trained
        gan = self.step_count >= lc.gan_start_step
        logs: dict[str, Tensor | float] = {}

        nd = wav.shape[0] if lc.gan_batch_size is None else min(lc.gan_batch_size, wav.shape[0])
        if gan:
            rp, _, rr, _ = self._disc(wav[:nd])
            fp, _, fr, _ = self._disc(y_hat[:nd].detach())
            d_mpd = hinge_discriminator_loss(rp, fp)
            d_mrd = hinge_discriminator_loss(rr, fr)
            d_loss = d_mpd + lc.mrd_weight * d_mrd
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            if grad_clip > 0:
                self.clip_gradients(opt_d, gradient_clip_val=grad_clip, gradient_clip_algorithm="norm")
            opt_d.step()
            logs.update({"train/d_loss": d_loss.detach(), "train/d_mpd": d_mpd.detach(), "train/d_mrd": d_mrd.detach()})

        mel_loss = self.mel_loss(y_hat, wav)
        g_loss = lc.mel * mel_loss
        logs["train/mel_loss"] = mel_loss.detach()
        if lc.stft > 0:
            stft_loss = self.stft_loss(y_hat, wav)
            g_loss = g_loss + lc.stft * stft_loss
            logs["train/stft_loss"] = stft_loss.detach()
        if gan:
            with torch.no_grad():
                _, rfp, _, rfr = self._disc(wav[:nd])
            fp, ffp, fr, ffr = self._disc(y_hat[:nd])
            adv = hinge_generator_loss(fp) + lc.mrd_weight * hinge_generator_loss(fr)
            fm = feature_matching_loss(rfp, ffp) + lc.mrd_weight * feature_matching_loss(rfr, ffr)
            g_loss = g_loss + lc.adv * adv + lc.fm * fm
            logs.update({"train/g_adv": adv.detach(), "train/g_fm": fm.detach()})
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        if grad_clip > 0:
            self.clip_gradients(opt_g, gradient_clip_val=grad_clip, gradient_clip_algorithm="norm")
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
        log_every = self.recipe.trainer.log_every
        if self.step_count % log_every == 0:  # Lightning writes every log_every batches
            now = time.perf_counter()
            if self._t_last is not None:
                self._sec_per_step = (now - self._t_last) / log_every
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
        given = self._input_mel(wav, lengths, log_mel, 1.0, seed=batch_idx)  # the target stays the original's
        y_hat = self.vocoder(given, frames, consistency_passes=0)[:, : wav.shape[1]]  # the network alone
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
                atomic_write_text(
                    self.run_dir / "best" / "TRAINING_STATE.txt", f"step {self.step_count}\nval/mel_l1 {value:.5f}\n"
                )
        self.log("val/best_mel_l1", self.best_val, sync_dist=False)

    # ------------------------------------------------------------------ samples
    def _want_samples(self) -> bool:
        if self.run_dir is None or self.trainer.sanity_checking:
            return False
        every = self.recipe.trainer.plot_every
        return self._last_sample_step < 0 or self.step_count - self._last_sample_step >= every

    def _write_samples(
        self, wav: Tensor, y_hat: Tensor, lengths: Tensor, log_mel: Tensor, rebuilt: Tensor, frames: Tensor
    ) -> None:
        assert self.run_dir is not None
        self._last_sample_step = self.step_count
        out = self.run_dir / "samples" / f"step-{self.step_count:07d}"
        out.mkdir(parents=True, exist_ok=True)
        n = min(self.recipe.trainer.num_samples, wav.shape[0])
        sr = self.vocoder.sample_rate
        tb = None
        for lg in self.loggers:
            experiment = getattr(lg, "experiment", None)
            if hasattr(experiment, "add_audio"):
                tb = experiment
        for i in range(n):
            ln = int(lengths[i])
            save_audio(out / f"{i}_ref.wav", wav[i, :ln].float().cpu(), sr)
            save_audio(out / f"{i}_gen.wav", y_hat[i, :ln].float().cpu(), sr)
            if tb is not None:
                tb.add_audio(f"samples/{i}_gen", y_hat[i, :ln].float().cpu().clamp(-1, 1)[None], self.step_count, sr)
        try:
            save_mel_grid(
                out / "mels.png",
                [log_mel[i, :, : int(frames[i])].float().cpu() for i in range(n)],
                [rebuilt[i, :, : int(frames[i])].float().cpu() for i in range(n)],
                title=f"step {self.step_count}: reference (top) vs vocoder (bottom)",
                labels=("reference", "vocoder"),
            )
        except ImportError:  # matplotlib is optional
            logger.warning("matplotlib not installed: skipping the mel plot")
