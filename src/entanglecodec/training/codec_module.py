"""Lightning modules for the codec: stage 1, discriminator pre-training and stage 2 (paper Sec. 3.4).

* ``stage1``: encoder + caption encoder + quantizer + flow decoder trained jointly with
  ``w_flow L_flow + w_contrast L_contrast + w_vq L_vq`` (10 % condition dropout inside the decoder).
* ``disc``: the stage-1 codec is frozen; a mel discriminator learns real mels vs the decoder's
  one-step samples (hinge loss).
* ``stage2``: encoder and quantizer frozen (eval mode, so the codebook cannot move), text tower
  dropped; only the decoder trains with ``L_flow + L_vq + L_adv`` against the frozen discriminator,
  and/or (``loss.distill``) to give a frozen copy of itself's guided velocity in one pass.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Timer
from torch import Tensor, nn

from ..audio import lengths_to_mask, num_frames
from ..codec.decoder import FlowDecoder, flow_interpolate, masked_l1
from ..codec.model import EntangleCodec
from ..codec.text import CaptionEncoder
from ..config import EntangleCodecConfig, _from_dict
from ..data.features import INDEX_NAME, check_index, read_index
from .aux_losses import MelRegressionHead, PrimitiveHead, SemanticHead
from .codec_losses import LOGIT_SCALE, logit_scale_parameter, stage1_losses
from .discriminators import MelDiscriminator, MelDiscriminatorConfig, freeze, masked_mel
from .losses import feature_matching_loss, hinge_discriminator_loss, hinge_generator_loss
from .nan_policy import skip_or_stop
from .recipe import Recipe

log = logging.getLogger(__name__)


def _numpy_state_to_tensors() -> dict[str, Any]:
    """NumPy's global RNG state in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]  # noqa: NPY002
    return {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from_tensors(st: dict[str, Any]) -> None:
    keys = st["keys"].numpy().astype(np.uint32)
    np.random.set_state((st["name"], keys, st["pos"], st["has_gauss"], st["cached"]))  # noqa: NPY002


class CodecModule(L.LightningModule):
    """One Lightning module for the three codec stages; the recipe decides which.

    Args:
        recipe: the recipe as a plain dict (saved as hyper-parameters in every checkpoint).
        run_dir: where plots and checksums are written.
    """

    def __init__(self, recipe: dict[str, Any], run_dir: str = "runs/default") -> None:
        super().__init__()
        self.save_hyperparameters({"recipe": recipe, "run_dir": run_dir})
        self.recipe = Recipe.from_dict(recipe)
        self.run_dir = Path(run_dir)
        stage = self.recipe.stage
        self.disc: MelDiscriminator | None = None
        pooled_dim = self._feature_captions_dim() if stage == "stage1" else None
        if stage == "stage1":
            config = self.recipe.model.build()
            self.model = EntangleCodec(config, build_text_encoder=pooled_dim is None)
            if pooled_dim is not None:  # the frozen backbone's pooled outputs come with the batches
                self.model.text_encoder = CaptionEncoder(config.text, config.align_dim, pooled_dim=pooled_dim)
        else:
            assert self.recipe.init_from is not None
            self.model = EntangleCodec.from_pretrained(self.recipe.init_from, build_text_encoder=False)
            if stage == "disc":
                self.disc = MelDiscriminator(_from_dict(MelDiscriminatorConfig, self.recipe.discriminator_config))
            elif self.recipe.loss.adv > 0:
                assert self.recipe.discriminator is not None
                self.disc = MelDiscriminator.from_pretrained(self.recipe.discriminator)
            if self.recipe.data.features:
                self._feature_captions_dim(self.model.config)  # same mel config as the features, or a clear error
        # Guidance distillation: the teacher is the decoder as loaded, frozen; the student decodes
        # (and is exported) with guidance 0.
        self.teacher: FlowDecoder | None = None
        if stage == "stage2" and self.recipe.loss.distill > 0:
            if self.model.config.decoder.guidance == 0.0:
                log.warning("init_from %s decodes with guidance 0 (distilled already?): its guided velocity at "
                            "loss.distill_guidance %s is a new target", self.recipe.init_from,
                            self.recipe.loss.distill_guidance)
            self.teacher = copy.deepcopy(self.model.decoder)
            self.model.config.decoder.guidance = 0.0
        for part in self._frozen_parts():  # stages after stage 1: tokenizer, critic, teacher as listed there
            freeze(part)
        self.precomputed_captions = pooled_dim is not None
        # The CLIP temperature (Eq. 10) is training-only: learnable in stage 1, frozen after. As the
        # module's own parameter it comes first in parameters(), where EntangleCodec.logit_scale
        # stood before, so optimiser states of older runs line up (see on_load_checkpoint).
        self.logit_scale = logit_scale_parameter(self.model)
        self.logit_scale.requires_grad_(stage == "stage1")
        # Training-only auxiliary heads (stage 1, when their loss weight is on); never exported.
        self.primitive_head: PrimitiveHead | None = None
        self.mel_head: MelRegressionHead | None = None
        self.semantic_head: SemanticHead | None = None
        if stage == "stage1":
            qdim = self.model.config.quantizer.dim
            if self.recipe.loss.primitives > 0:
                self.primitive_head = PrimitiveHead(qdim)
            if self.recipe.loss.mel_regression > 0:
                self.mel_head = MelRegressionHead(qdim, self.model.config.mel.n_mels)
            if self.recipe.loss.semantic > 0:
                self.semantic_head = self._semantic_head(qdim)
        if self.recipe.trainer.gradient_checkpointing:
            for tr in (self.model.encoder.transformer, self.model.decoder.transformer):
                tr.gradient_checkpointing = True
        self.nan_skips = 0
        self._plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._plateau_state: dict[str, Any] | None = None
        self._t_last: float | None = None
        self._rng_state: dict[str, Any] | None = None
        self._val_losses: list[Tensor] = []
        self._val_plot_done = False

    def _feature_captions_dim(self, config: EntangleCodecConfig | None = None) -> int | None:
        """With ``data.features``: check the directory against the model's config (a one-line
        :class:`FeatureError` when the mel config or caption field differ) and return the pooled
        caption-embedding size when the caption tower can use the stored embeddings, else ``None``.
        A directory that is not there (a run rebuilt elsewhere, e.g. for export) builds the full tower."""
        root = self.recipe.data.features
        if not root or not (Path(root) / INDEX_NAME).is_file():
            return None
        index = read_index(root)
        usable = check_index(index, config or self.recipe.model.build(), self.recipe.data.text_field, root)
        return int(index["captions"]["embedding"]["dim"]) if usable else None

    def _semantic_head(self, qdim: int) -> SemanticHead | None:
        """The ``loss.semantic`` head, sized by the feature directory's ``semantic.json``. A run rebuilt
        where that directory is absent (e.g. for export) gets none: the head is training-only, and
        training itself cannot start without the teacher frames (the loader refuses)."""
        from ..data.semantic import SEMANTIC_NAME, read_semantic

        root = self.recipe.data.features
        if not root or not (Path(root) / SEMANTIC_NAME).is_file():
            log.warning("loss.semantic: no teacher frames in %s; the semantic head is not built", root)
            return None
        sem = read_semantic(root)
        red = sem.get("reduced")
        return SemanticHead(qdim, int(sem["dim"]), sem["mean"], sem["std"], basis=None if red is None else red["basis"])

    def _tokenizer_parts(self) -> list[nn.Module]:
        """What stage 2 and the discriminator stage keep frozen: everything that makes the tokens,
        and the pitch predictor that reads them (so the decoder trains on the contour it will get)."""
        m = self.model
        parts: list[nn.Module] = [m.encoder, m.audio_proj, m.quantizer, m.frontend]
        return parts + ([m.pitch] if m.pitch is not None else [])

    def _pitch_parameters(self) -> list[nn.Parameter]:
        """The pitch-conditioning parameters (``optim.pitch_lr``): predictor, decoder pitch input and
        harmonic depth; empty for a model without ``decoder.pitch_cond``."""
        m = self.model
        parts = [m.pitch, m.decoder.pitch_proj, m.decoder.harmonic_depth]
        return [p for part in parts if part is not None for p in part.parameters()]

    # ------------------------------------------------------------------ modes
    def _frozen_parts(self) -> list[nn.Module]:
        """The modules a stage after stage 1 keeps frozen (and in eval mode: no EMA/codebook updates)."""
        if self.recipe.stage == "stage1":
            return []
        parts = self._tokenizer_parts()
        if self.recipe.stage == "disc":
            parts.append(self.model.decoder)
        elif self.disc is not None and self.recipe.loss.adv_critic == "frozen":
            parts.append(self.disc)
        if self.teacher is not None:
            parts.append(self.teacher)
        return parts

    def train(self, mode: bool = True) -> CodecModule:
        frozen = self._frozen_parts()
        if not frozen:
            return super().train(mode)
        # Everything to eval first, then train mode for the trained parts only: a frozen module never
        # passes through train(True), whose side effects would touch it (the quantizer swaps in a
        # trainable codebook there).
        super().train(False)
        if mode:
            self.training = self.model.training = True
            children = list(self.model.children()) + [c for c in self.children() if c is not self.model]
            for child in children:
                if not any(child is f for f in frozen):
                    child.train(True)
        return self

    def on_fit_start(self) -> None:
        """Lightning (>= 2.2) keeps each module's mode as it finds it. A stage-2 or discriminator
        module is built from an export, which loads in eval mode; without this the trained parts
        would run in eval mode too (no condition dropout in the flow loss). :meth:`train` keeps the
        frozen parts in eval mode."""
        self.train()

    def setup(self, stage: str) -> None:
        sync = self.recipe.trainer.sync_codebook
        world = self.trainer.world_size if self._trainer is not None else 1
        if sync is None:
            sync = world > 1
        if sync and world > 1:
            self.model.quantizer.set_codebook_sync(True)

    # ------------------------------------------------------------------ batches
    @staticmethod
    def _batch_size(batch: dict[str, Any]) -> int:
        return int(batch["log_mel" if "log_mel" in batch else "wav"].shape[0])

    def _mel(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Normalised mel ``[B, n_mels, F]`` and frame mask ``[B, F]`` of a batch: from the waveform
        through the front end, or, for a feature batch (``log_mel`` + ``mel_lengths``), the stored
        log-mel through the front end's own normalisation (frames past each length set to 0, as the
        front end does)."""
        if "log_mel" in batch:
            mask = lengths_to_mask(batch["mel_lengths"], batch["log_mel"].shape[-1])
            with torch.no_grad():
                mel = self.model.frontend.normalize(batch["log_mel"].float()) * mask[:, None, :].float()
            return mel, mask
        wav, lengths = batch["wav"], batch["lengths"]
        with torch.no_grad():
            mel = self.model.frontend(wav.float(), lengths)
        flen = num_frames(lengths, self.model.hop_length)
        assert isinstance(flen, Tensor)
        return mel, lengths_to_mask(flen, mel.shape[-1])

    def _losses(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        mel, mask = self._mel(batch)
        w = self.recipe.loss
        stage = self.recipe.stage
        if stage == "disc":
            assert self.disc is not None
            with torch.no_grad():
                enc = self.model.encoder(mel, mask)
                q = self.model.quantizer(enc.frames, mask)
                fake = self._fake_mel(mel, q.quantized, mask, generator)
            real_logits, _ = self.disc(masked_mel(mel, mask))
            fake_logits, _ = self.disc(masked_mel(fake.detach(), mask))
            d_loss = hinge_discriminator_loss(real_logits, fake_logits)
            acc = 0.5 * (
                torch.stack([(r > 0).float().mean() for r in real_logits]).mean()
                + torch.stack([(f < 0).float().mean() for f in fake_logits]).mean()
            )
            return {"loss": d_loss, "disc": d_loss, "disc_acc": acc}
        captions = batch.get("caption") if (stage == "stage1" and w.contrast > 0) else None
        emb = batch.get("caption_emb") if (captions is not None and self.precomputed_captions) else None
        need_flow = not (stage == "stage2" and w.flow == 0 and not (w.adv > 0 and w.adv_on == "flow_estimate"))
        out = stage1_losses(self.model, self.logit_scale, mel, mask, captions, generator, caption_emb=emb,
                            f0_hz=batch.get("f0"), flow=need_flow)
        loss = w.flow * out["flow"] + w.vq * out["vq"]
        if "pitch" in out and stage == "stage1":
            loss = loss + w.pitch * out["pitch"]
        if "contrast" in out:
            loss = loss + w.contrast * out["contrast"]
        # Fresh auxiliary heads on a warm-started encoder read detached features at first (optim.aux_detach_steps).
        cut = self.training and self.global_step < self.recipe.optim.aux_detach_steps
        if self.primitive_head is not None:
            pre = out["pre_quant"].detach() if cut else out["pre_quant"]
            out.update(self.primitive_head.loss(pre, batch["f0"], mel, mask))
            loss = loss + w.primitives * out["prim"]
        if self.mel_head is not None:
            zq = out["quantized"].detach() if cut else out["quantized"]
            out["mel_reg"] = self.mel_head.loss(zq, mel, mask)
            loss = loss + w.mel_regression * out["mel_reg"]
        if self.semantic_head is not None:
            zq = out["quantized"].detach() if cut else out["quantized"]
            out.update(self.semantic_head.loss(zq, batch["semantic"], mask))
            loss = loss + w.semantic * out["sem"]
        if self.teacher is not None:
            out["distill"] = self._guidance_distillation(mel, out["quantized"], mask, generator)
            loss = loss + w.distill * out["distill"]
        if stage == "stage2" and self.disc is not None and w.adv > 0:
            fake = out["mel_est"] if w.adv_on == "flow_estimate" else self._fake_mel(mel, out["quantized"], mask, generator)
            out.update(self._adversarial(masked_mel(mel, mask), masked_mel(fake, mask)))
            loss = loss + w.adv * out["adv"] + w.feature_matching * out["fm"]
            if "disc" in out:
                loss = loss + out["disc"]
        out["loss"] = loss
        out["mel"] = mel
        out["mask"] = mask
        return out

    def _adversarial(self, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """Stage-2 critic terms for masked mels ``real``/``fake`` ``[B, n_mels, F]``.

        Returns ``adv`` (generator hinge), ``fm`` (feature matching) and, with ``loss.adv_critic:
        joint``, ``disc`` (the critic's hinge loss on the detached ``fake``; only the critic gets its
        gradient). The decoder's terms go through the critic with detached weights, so one backward
        pass updates each side with its own objective.
        """
        assert self.disc is not None
        out: dict[str, Tensor] = {}
        fm_on = self.recipe.loss.feature_matching > 0
        real_feats: list[list[Tensor]] | None = None
        if self.recipe.loss.adv_critic == "joint":
            real_logits, real_feats = self.disc(real)
            fake_d, _ = self.disc(fake.detach())
            out["disc"] = hinge_discriminator_loss(real_logits, fake_d)
            weights = {k: v.detach() for k, v in self.disc.named_parameters()}
            fake_logits, fake_feats = torch.func.functional_call(self.disc, weights, (fake,))
        else:
            if fm_on:  # the frozen critic sees real mels only for feature matching
                with torch.no_grad():
                    _, real_feats = self.disc(real)
            fake_logits, fake_feats = self.disc(fake)
        out["adv"] = hinge_generator_loss(fake_logits)
        out["fm"] = feature_matching_loss(real_feats, fake_feats) if real_feats is not None and fm_on else fake.new_zeros(())
        return out

    def _guidance_distillation(self, mel: Tensor, zq: Tensor, mask: Tensor, generator: torch.Generator | None) -> Tensor:
        """L1 between the decoder's one-pass velocity and the frozen teacher's guided one (``loss.distill``).

        Args:
            mel: target normalised mel ``[B, n_mels, F]`` (only to place ``x_t`` on the flow path);
            zq: ``Z_q [B, F, D_quant]``; mask: ``[B, F]``.

        Both see the same ``x_t`` at the flow loss's times (``t_zero_fraction`` at 0) and the pitch
        features decoding uses (predicted from the codes, not the tracked F0).
        """
        assert self.teacher is not None
        student = self.model.decoder
        z, t = student.draw_noise_and_time(mel, generator)
        xt, _ = flow_interpolate(mel, z, t, student.cfg.sigma_min)
        pitch = self.model.pitch_features(zq, None)
        with torch.no_grad():
            target = self.teacher.guided_velocity(xt, t, zq, mask, self.recipe.loss.distill_guidance, pitch)
        return masked_l1(student(xt, t, zq, mask, pitch), target, mask)

    def _fake_mel(self, mel: Tensor, zq: Tensor, mask: Tensor, generator: torch.Generator | None) -> Tensor:
        """The decoded mel the discriminator judges, ``[B, n_mels, F]`` (``loss.adv_on``).

        ``one_step``: the inference output ``z + v_gamma(z, 0)`` from fresh noise (differentiable);
        ``flow_estimate``: the flow loss's one-step estimate at a random ``t``.
        """
        w = self.recipe.loss
        pitch = self.model.pitch_features(zq, None)  # what decoding gives a pitch-conditioned decoder
        if w.adv_on == "flow_estimate":
            return self.model.decoder.loss(mel, zq, mask, generator, pitch)[1]
        noise = torch.randn(mel.shape, generator=generator, device=mel.device, dtype=mel.dtype)
        return self.model.decoder.one_step(zq, mask, noise, w.adv_guidance, pitch)

    def _all_ranks_flag(self, flag: bool) -> bool:
        t = torch.tensor(float(flag), device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:
            t = self.trainer.strategy.reduce(t, reduce_op="sum")
        return bool(t.item() > 0)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        out = self._losses(batch)
        loss = out["loss"]
        if self._all_ranks_flag(not bool(torch.isfinite(loss.detach()))):
            parts = {k: float(v.detach()) for k, v in out.items() if isinstance(v, Tensor) and v.dim() == 0}
            detail = f" (components {parts})"
            if skip_or_stop(self.recipe.trainer, self.nan_skips, self.global_step, self.run_dir, "loss", detail):
                self.nan_skips += 1
                self.log("train/nan_skips", float(self.nan_skips))
                return None
        now = time.perf_counter()
        bs = self._batch_size(batch)
        logs = {f"train/{k}": v.detach() for k, v in out.items() if isinstance(v, Tensor) and v.dim() == 0}
        if self._t_last is not None:
            dt = now - self._t_last
            logs["train/s_per_batch"] = torch.tensor(dt)
            logs["train/samples_per_s"] = torch.tensor(bs / max(dt, 1e-9))
        self._t_last = now
        if self.recipe.stage == "stage1":
            logs["train/logit_scale"] = self.logit_scale.detach().exp()
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=bs, prog_bar=False)
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=bs, logger=False)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad.detach().norm(2) for p in self.parameters() if p.grad is not None]
        if grads:
            self.log("train/grad_norm", torch.stack(grads).norm(2), on_step=True, on_epoch=False)
        warm = self.recipe.optim.warmup_steps
        if warm > 0 and self.global_step < warm:
            for g in optimizer.param_groups:  # each group's own base rate (the critic's differs)
                g["lr"] = g.get("base_lr", self.recipe.optim.lr) * (self.global_step + 1) / warm
        self._anneal(optimizer)
        self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False)

    def run_progress(self) -> float:
        """Share of the run done, in [0, 1]: trainer.max_time's elapsed share when the run has a time
        budget (Lightning's Timer, which counts resumed segments too), else global_step / max_steps."""
        trainer = self.trainer
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)  # type: ignore[attr-defined]
        if timer is not None and timer._duration:
            return min(1.0, timer.time_elapsed() / timer._duration)
        return min(1.0, self.global_step / max(1, trainer.max_steps))

    def _anneal(self, optimizer: torch.optim.Optimizer) -> None:
        """optim.anneal_fraction: cosine from the rate in force when the decay starts down to min_lr.

        A run resumed with a larger ``trainer.max_steps`` (or ``max_time``) than the one it had
        annealed for is before its new decay window again: its groups get back the rate they had
        when the old decay began, instead of staying at ``min_lr`` until the new window.
        """
        o = self.recipe.optim
        if o.anneal_fraction <= 0:
            return
        start = 1.0 - o.anneal_fraction
        p = self.run_progress()
        if p < start:
            restored = [g for g in optimizer.param_groups if "anneal_from" in g]
            for g in restored:
                g["lr"] = g.pop("anneal_from")
            if restored:
                log.warning("the run was extended past the horizon it had annealed for: learning rate back to %.3g, "
                            "the decay starts again at %.0f %% of the new horizon", restored[0]["lr"], 100 * start)  # fmt: skip
            return
        frac = (p - start) / o.anneal_fraction
        scale = 0.5 * (1.0 + math.cos(math.pi * frac))
        for g in optimizer.param_groups:
            top = g.setdefault("anneal_from", g["lr"])
            g["lr"] = o.min_lr + (top - o.min_lr) * scale if top > o.min_lr else top

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_losses = []
        self._val_plot_done = False

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        gen = torch.Generator(device=self.device).manual_seed(1000 + batch_idx)
        out = self._losses(batch, gen)
        bs = self._batch_size(batch)
        self._val_losses.append(out["loss"].detach())
        logs = {f"val/{k}": v.detach() for k, v in out.items() if isinstance(v, Tensor) and v.dim() == 0}
        self.log_dict(logs, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        step = self.global_step
        want_plot = step > 0 and (step % self.recipe.trainer.plot_every == 0 or step >= self.recipe.trainer.max_steps)
        if (
            self.recipe.stage != "disc"
            and not self._val_plot_done
            and want_plot
            and self.global_rank == 0
            and not self.trainer.sanity_checking
        ):
            self._val_plot_done = True
            self._plot(out["mel"], out["mask"], step)

    @torch.no_grad()
    def _plot(self, mel: Tensor, mask: Tensor, step: int) -> None:
        from .plots import save_mel_comparison

        n = int(mask[0].sum())
        enc = self.model.encoder(mel[:1, :, :n])
        codes = self.model.quantizer.nearest(self.model.quantizer.project(enc.frames))
        zq = self.model.quantizer.embed_codes(codes)
        g = torch.Generator(device=self.device).manual_seed(0)
        noise = torch.randn(1, mel.shape[1], n, generator=g, device=self.device)
        rec = self.model.decoder.sample(zq, None, steps=1, guidance=self.model.config.decoder.guidance, noise=noise,
                                        pitch=self.model.pitch_features(zq, None))
        path = self.run_dir / "plots" / f"val_mel_step{step:07d}.png"
        save_mel_comparison(mel[0, :, :n].float().cpu(), rec[0].float().cpu(), path, title=f"step {step}")
        for lg in self.loggers:
            exp = getattr(lg, "experiment", None)
            if exp is not None and hasattr(exp, "add_image"):
                import matplotlib.image as mpimg

                img = mpimg.imread(str(path))[..., :3]
                exp.add_image("val/mel", img, step, dataformats="HWC")

    def on_validation_epoch_end(self) -> None:
        if not self._val_losses:
            return
        val = torch.stack(self._val_losses).mean()
        if self.trainer.world_size > 1:
            val = self.trainer.strategy.reduce(val, reduce_op="mean")
        if self._plateau is not None and not self.trainer.sanity_checking:
            self._plateau.step(float(val))

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        o = self.recipe.optim
        critic = {id(p) for p in self.disc.parameters()} if self.disc is not None else set()
        params = [p for p in self.parameters() if p.requires_grad and id(p) not in critic]
        critic_params = [p for p in self.disc.parameters() if p.requires_grad] if self.disc is not None else []
        if self.recipe.stage == "disc":
            groups = [{"params": critic_params, "lr": o.discriminator_lr, "base_lr": o.discriminator_lr}]
        else:  # stage 2 with a joint critic: its own learning rate, in a second group
            pitch = {id(p) for p in self._pitch_parameters()} if o.pitch_lr is not None else set()
            groups = [{"params": [p for p in params if id(p) not in pitch], "lr": o.lr, "base_lr": o.lr}]
            if pitch:
                pitch_params = [p for p in params if id(p) in pitch]
                groups.append({"params": pitch_params, "lr": o.pitch_lr, "base_lr": o.pitch_lr})
            if critic_params:
                groups.append({"params": critic_params, "lr": o.discriminator_lr, "base_lr": o.discriminator_lr})
        opt = torch.optim.AdamW(groups, betas=(o.betas[0], o.betas[1]), weight_decay=o.weight_decay)
        self._plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=o.plateau_factor, patience=o.plateau_patience, min_lr=o.min_lr
        )
        if self._plateau_state is not None:
            self._plateau.load_state_dict(self._plateau_state)
        return opt

    def on_train_start(self) -> None:
        if self._plateau is not None and self._plateau_state is not None:
            self._plateau.load_state_dict(self._plateau_state)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._plateau is not None:
            checkpoint["plateau"] = self._plateau.state_dict()
        checkpoint["nan_skips"] = self.nan_skips
        # RNG streams (flow noise/time, condition dropout, dead-code sampling) for an exact resume.
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state_to_tensors(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    @staticmethod
    def migrate_state_dict(state: dict[str, Any]) -> dict[str, Any]:
        """In place: runs saved before the layout change kept the temperature inside the codec."""
        if f"model.{LOGIT_SCALE}" in state:
            state[LOGIT_SCALE] = state.pop(f"model.{LOGIT_SCALE}")
        return state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.migrate_state_dict(checkpoint.get("state_dict", {}))
        self._plateau_state = checkpoint.get("plateau")
        self.nan_skips = int(checkpoint.get("nan_skips", 0))
        self._rng_state = checkpoint.get("rng")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        rng, self._rng_state = self._rng_state, None
        if rng:  # restore once, right before the first step after a resume
            torch.set_rng_state(rng["torch"])
            _numpy_state_from_tensors(rng["numpy"])
            random.setstate(rng["python"])
            if rng.get("cuda") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def on_train_end(self) -> None:
        """Write a checksum of all parameters per rank (DDP replicas must agree)."""
        h = hashlib.sha256()
        for name, p in sorted(self.named_parameters()):
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / f"param_checksum_rank{self.global_rank}.txt").write_text(h.hexdigest() + "\n")

    # ------------------------------------------------------------------ export
    def export(self, out_dir: str | Path) -> Path:
        """Write the ``save_pretrained`` directory (stage 1/2) or the discriminator (disc stage)."""
        if self.recipe.stage == "disc":
            assert self.disc is not None
            return self.disc.save_pretrained(out_dir)
        self.model.set_training_tensors({LOGIT_SCALE: self.logit_scale})
        if self.recipe.stage == "stage1":
            return self.model.save_pretrained(out_dir)
        assert self.recipe.init_from is not None
        full = EntangleCodec.from_pretrained(self.recipe.init_from, build_text_encoder=True)
        own = {k: v for k, v in self.model.state_dict().items() if not k.startswith("text_encoder.")}
        full.load_state_dict(own, strict=False)
        full.config.decoder.guidance = self.model.config.decoder.guidance  # 0 after guidance distillation
        full.set_training_tensors({LOGIT_SCALE: self.logit_scale})
        return full.save_pretrained(out_dir)

