"""Lightning module and data module of one LM training phase.

The module owns a ``Qwen3ForCausalLM`` loaded from the phase's initial directory (a
:func:`~.model.save_lm` directory) and trains it with the masked next-token loss of
``transformers`` (labels ``-100`` outside the targets). AdamW with the codec's optimiser section
(betas, weight decay, gradient clipping by the trainer), a linear warm-up to the phase's learning
rate then constant (paper Table 6 gives only the rates). The NaN policy is the codec's:
``trainer.nan_policy: stop`` raises :class:`~entanglecodec.training.nan_policy.NonFiniteLossError`
naming the last good checkpoint, ``skip`` drops up to ``trainer.max_nan_skips`` batches (decided on
every rank together, so DDP replicas never diverge).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from ..training.data import batches_done
from ..training.nan_policy import skip_or_stop
from .data import train_loader, valid_loader
from .model import load_lm
from .recipe import LMRecipe
from .tasks import Example


class LMModule(L.LightningModule):
    """One phase of LM training.

    Args:
        recipe: the LM recipe as a dict (saved as hyper-parameters).
        init_dir: directory the weights start from (model + tokenizer + vocabulary layout).
        lr: the phase's learning rate.
        run_dir: the phase's run folder (named in error messages).
    """

    def __init__(self, recipe: dict[str, Any], init_dir: str, lr: float, run_dir: str) -> None:
        super().__init__()
        self.save_hyperparameters({"recipe": recipe, "init_dir": init_dir, "lr": lr, "run_dir": run_dir})
        self.recipe = LMRecipe.from_dict(recipe)
        model, self.tokenizer, self.vocab = load_lm(init_dir)
        self.lm = model.train()
        if self.recipe.trainer.gradient_checkpointing:
            self.lm.gradient_checkpointing_enable()
        self.lr = lr
        self.run_dir = Path(run_dir)
        self.nan_skips = 0
        self._val: list[Tensor] = []

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        out = self.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        return out.loss  # type: ignore[no-any-return]

    def _nonfinite_everywhere(self, loss: Tensor) -> bool:
        bad = torch.tensor(float(not bool(torch.isfinite(loss.detach()))), device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        return bool(bad.item() > 0)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        loss = self(batch)
        if self._nonfinite_everywhere(loss):
            if skip_or_stop(self.recipe.trainer, self.nan_skips, self.global_step, self.run_dir, "LM loss"):
                self.nan_skips += 1
                self.log("train/nan_skips", float(self.nan_skips))
                return None
        bs = int(batch["input_ids"].shape[0])
        n_target = (batch["labels"] != -100).sum()
        self.log_dict({"train/loss": loss.detach(), "train/target_tokens": n_target.float()},
                      on_step=True, on_epoch=False, batch_size=bs)  # fmt: skip
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=bs, logger=False)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False)

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss = self(batch)
        self._val.append(loss.detach())
        self.log("val/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=int(batch["input_ids"].shape[0]),
                 sync_dist=True, prog_bar=True)  # fmt: skip

    def configure_optimizers(self) -> Any:
        o = self.recipe.optim
        params = [p for p in self.lm.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, betas=(o.betas[0], o.betas[1]), weight_decay=o.weight_decay)
        warm = max(0, o.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nan_skips"] = self.nan_skips

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.nan_skips = int(checkpoint.get("nan_skips", 0))


class LMDataModule(L.LightningDataModule):
    """Loaders over prepared examples; the training loader resumes at the restored step."""

    def __init__(self, recipe: LMRecipe, train: list[Example], valid: list[Example], pad_id: int) -> None:
        super().__init__()
        self.recipe, self.train, self.valid, self.pad_id = recipe, train, valid, pad_id

    def train_dataloader(self) -> Any:
        t = self.trainer
        assert t is not None
        d = self.recipe.data
        consumed = int(t.global_step) * self.recipe.optim.accumulate
        return train_loader(self.train, self.pad_id, d.batch_size, self.recipe.trainer.seed, t.global_rank,
                            t.world_size, consumed, lambda: batches_done(t), d.task_weights)  # fmt: skip

    def val_dataloader(self) -> Any:
        t = self.trainer
        assert t is not None
        d = self.recipe.data
        loader = valid_loader(self.valid, self.pad_id, d.batch_size, d.valid_batches, t.global_rank, t.world_size)
        return loader if loader is not None else []
