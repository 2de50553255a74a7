"""Pre-quantisation MLP, L2 normalisation and the single-codebook VQ (paper Eq. 6 and 11).

The codebook itself is ``vector_quantize_pytorch.VectorQuantize``. A model loaded for inference
(``Quantizer(..., codebook_only=True)``, what :meth:`EntangleCodec.from_pretrained` builds) holds
the same tensors under the same names in a :class:`StoredCodebook` instead, so encoding and
decoding never import that library (nor ``einx`` / ``torch._dynamo``, which it pulls in); the
library's module replaces it, keeping the very same tensor objects, as soon as anything trains
(``train(True)``, codebook sync, dead-code bookkeeping). Two codebook-update modes:

* ``ema`` (default): the codebook follows exponential moving averages of its assigned vectors
  (the usual replacement of Eq. 11's codebook term), cosine-similarity codebook so codes live on
  the unit sphere like ``h~``; the loss is ``beta * ||h~ - sg(z_q)||^2``.
* ``loss``: the codebook is a learnable parameter trained by Eq. 11 exactly,
  ``||sg(h~) - z_q||^2 + beta * ||h~ - sg(z_q)||^2``.

Dead codes (EMA usage below ``dead_code_fraction`` of the mean code's usage — a threshold that
scales with the batch, unlike an absolute count) are re-seeded from the batch; optional k-means
initialisation on the first batch; usage / perplexity statistics for logging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import QuantizerConfig


@dataclass
class QuantizerOutput:
    """Quantizer results.

    Attributes:
        quantized: ``Z_q [B, F, D_quant]`` (straight-through / rotation-trick gradients to ``h~``).
        codes: ``[B, F]`` token ids in ``[0, codebook_size)``; padding frames hold 0.
        pre_quant: ``h~ [B, F, D_quant]`` L2-normalised features before quantisation.
        loss: scalar VQ loss (Eq. 11), averaged over valid frames.
        usage: fraction of codes used in this batch.
        perplexity: ``exp(entropy)`` of the batch code histogram.
        dead_codes: in training, the codes re-seeded from this batch because their EMA usage fell
            below the dead-code threshold; in eval, the codes currently below it.
        active: fraction of the codebook used at least once in the last ``activity_window``
            training batches (a batch-size-independent usage measure).
    """

    quantized: Tensor
    codes: Tensor
    pre_quant: Tensor
    loss: Tensor
    usage: Tensor
    perplexity: Tensor
    dead_codes: Tensor
    active: Tensor


def code_statistics(codes: Tensor, mask: Tensor | None, codebook_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Histogram-based usage fraction, perplexity and the histogram ``[codebook_size]``."""
    flat = codes[mask] if mask is not None else codes.reshape(-1)
    hist = torch.bincount(flat.reshape(-1), minlength=codebook_size).float()
    total = hist.sum().clamp_min(1.0)
    p = hist / total
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return (hist > 0).float().mean(), entropy.exp(), hist


class _StoredCodebookTensors(nn.Module):
    """The tensors of ``VectorQuantize._codebook`` (same names, shapes and dtypes) without its logic."""

    embed: Tensor

    def __init__(self, cfg: QuantizerConfig) -> None:
        super().__init__()
        k, d = cfg.codebook_size, cfg.dim
        self.register_buffer("initted", torch.tensor(True))
        self.register_buffer("cluster_size", torch.zeros(1, k))
        self.register_buffer("embed_avg", torch.zeros(1, k, d))
        if cfg.codebook_update == "loss":
            self.embed = nn.Parameter(torch.zeros(1, k, d))
        else:
            self.register_buffer("embed", torch.zeros(1, k, d))
        self.threshold_ema_dead_code = 1.0 if cfg.dead_code_fraction > 0 else 0.0


class StoredCodebook(nn.Module):
    """Inference stand-in of ``VectorQuantize``: the state-dict layout (``_codebook.embed [1, K, D]``,
    ``cluster_size [1, K]``, ``embed_avg [1, K, D]``, ``initted``) and the ``codebook [K, D]`` view,
    filled by ``load_state_dict``. Nearest-code search lives in :meth:`Quantizer.nearest`."""

    def __init__(self, cfg: QuantizerConfig) -> None:
        super().__init__()
        self._codebook = _StoredCodebookTensors(cfg)

    @property
    def codebook(self) -> Tensor:
        """``[K, D_quant]`` code vectors as stored."""
        return self._codebook.embed[0]


def build_vector_quantize(cfg: QuantizerConfig) -> Any:
    """The training codebook: ``vector_quantize_pytorch.VectorQuantize`` configured from ``cfg``."""
    from vector_quantize_pytorch import VectorQuantize

    learnable = cfg.codebook_update == "loss"
    return VectorQuantize(
            dim=cfg.dim,
            codebook_size=cfg.codebook_size,
            decay=cfg.ema_decay,
            kmeans_init=cfg.kmeans_init,
            kmeans_iters=cfg.kmeans_iters,
            use_cosine_sim=not learnable,
            threshold_ema_dead_code=1.0 if cfg.dead_code_fraction > 0 else 0.0,  # set per batch in forward
            commitment_weight=0.0,  # Eq. 11 is computed here
            ema_update=not learnable,
            learnable_codebook=learnable,
            sync_codebook=bool(cfg.sync_codebook) if cfg.sync_codebook is not None else False,
        )


class Quantizer(nn.Module):
    """``H [B, F, D_enc]`` -> ``MLP_VQ`` -> L2 norm -> VQ.

    Args:
        in_dim: ``D_enc``.
        cfg: quantizer configuration (``D_quant``, codebook size, update mode, ...).
        codebook_only: hold a :class:`StoredCodebook` (all zeros until a state dict is loaded)
            instead of building ``VectorQuantize``; for models whose weights are loaded next.
    """

    _last_used: Tensor
    _steps: Tensor
    vq: Any  # VectorQuantize or StoredCodebook (the library's module is untyped)

    def __init__(self, in_dim: int, cfg: QuantizerConfig, codebook_only: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        hidden = cfg.mlp_hidden or in_dim
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.dim))
        self.vq = StoredCodebook(cfg) if codebook_only else build_vector_quantize(cfg)
        self.activity_window = 100
        self.register_buffer("_last_used", torch.full((cfg.codebook_size,), -(10**9), dtype=torch.long), persistent=False)
        self.register_buffer("_steps", torch.zeros((), dtype=torch.long), persistent=False)

    # ------------------------------------------------------------------ training codebook
    def _trainable_vq(self) -> Any:
        """The ``VectorQuantize`` module, built now when a :class:`StoredCodebook` stands in for it.

        The stored tensors (the very same objects: an optimiser or a DDP wrapper holding them keeps
        working) are moved into the new module, and its training mode is this module's.
        """
        if isinstance(self.vq, StoredCodebook):
            stored: nn.Module = self.vq._codebook
            vq = build_vector_quantize(self.cfg).to(self.vq.codebook.device)
            target: Any = vq._codebook
            for name, t in list(stored.named_parameters(recurse=False)) + list(stored.named_buffers(recurse=False)):
                if isinstance(t, nn.Parameter):
                    setattr(target, name, t)
                else:
                    target.register_buffer(name, t)
            vq.train(self.training)
            self.vq = vq
        return self.vq

    def train(self, mode: bool = True) -> Quantizer:
        if mode:
            self._trainable_vq()
        return super().train(mode)

    # ------------------------------------------------------------------ distributed
    def set_codebook_sync(self, enabled: bool) -> None:
        """Explicitly turn all-reduce of codebook statistics (EMA, k-means, dead-code sampling) on/off.

        Call this once the process group exists (e.g. in a Lightning ``setup`` hook): every rank then
        holds the same codebook; with it off, ranks would drift apart under DDP.
        """
        from vector_quantize_pytorch import vector_quantize_pytorch as vqp

        cb = self._trainable_vq()._codebook
        cb.use_ddp = enabled
        sync_kmeans = True
        sampler = vqp.sample_vectors_distributed if enabled and sync_kmeans else vqp.batched_sample_vectors
        cb.sample_fn = sampler
        cb.replace_sample_fn = sampler
        cb.kmeans_all_reduce_fn = torch.distributed.all_reduce if enabled else vqp.noop
        cb.all_reduce_fn = torch.distributed.all_reduce if enabled else vqp.noop

    # ------------------------------------------------------------------ codebook access
    @property
    def codebook(self) -> Tensor:
        """``[codebook_size, D_quant]`` code vectors (unit-norm in ``ema`` mode)."""
        cb: Tensor = self.vq.codebook
        return F.normalize(cb, dim=-1) if self.cfg.codebook_update == "ema" else cb

    def dead_codes(self) -> Tensor:
        """Number of codes whose EMA cluster size is below the current dead-code threshold."""
        cb = self.vq._codebook
        size = cb.cluster_size.reshape(-1)
        return (size < float(cb.threshold_ema_dead_code)).sum() if self.cfg.dead_code_fraction > 0 else size.new_zeros((), dtype=torch.long)

    def reseeded_codes(self) -> Tensor:
        """Codes re-seeded by the last training step (their EMA count was just reset)."""
        cb = self._trainable_vq()._codebook
        if self.cfg.dead_code_fraction <= 0:
            return cb.cluster_size.new_zeros((), dtype=torch.long)
        reset = torch.tensor(float(cb.reset_cluster_size), dtype=cb.cluster_size.dtype)
        return (cb.cluster_size.reshape(-1) == reset).sum()

    def _update_dead_code_threshold(self, n_valid: int) -> None:
        """Scale the library's absolute dead-code threshold to this batch: a code is dead when its
        EMA count is below ``dead_code_fraction`` of the mean count ``frames / codebook_size``; a
        re-seeded code restarts at the mean count (so it has time to be picked)."""
        if self.cfg.dead_code_fraction <= 0:
            return
        cb = self._trainable_vq()._codebook
        world = torch.distributed.get_world_size() if cb.use_ddp and torch.distributed.is_initialized() else 1
        expected = max(n_valid * world / self.cfg.codebook_size, 1e-6)
        cb.threshold_ema_dead_code = self.cfg.dead_code_fraction * expected
        cb.reset_cluster_size = expected

    def active_fraction(self) -> Tensor:
        """Fraction of codes used in the last ``activity_window`` training batches."""
        return ((self._steps - self._last_used) < self.activity_window).float().mean()

    def embed_codes(self, codes: Tensor) -> Tensor:
        """Token ids ``[B, F]`` -> code vectors ``Z_q [B, F, D_quant]``."""
        return F.embedding(codes, self.codebook)

    def project(self, frames: Tensor) -> Tensor:
        """``H [B, F, D_enc]`` -> L2-normalised ``h~ [B, F, D_quant]`` (Eq. 6)."""
        return F.normalize(self.mlp(frames), dim=-1)

    @torch.no_grad()
    def nearest(self, pre_quant: Tensor, chunk: int = 2048) -> Tensor:
        """Deterministic nearest-code assignment of ``h~ [B, F, D_quant]`` -> ``[B, F]`` (no updates).

        Distances are computed ``chunk`` frames at a time, so memory does not grow with ``F``.
        """
        flat = pre_quant.reshape(-1, pre_quant.shape[-1])
        out = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
        for i in range(0, flat.shape[0], chunk):
            out[i : i + chunk] = self.assign(flat[i : i + chunk])
        return out.reshape(pre_quant.shape[:-1])

    def assign(self, x: Tensor) -> Tensor:
        """Nearest code of each row of ``x [..., D_quant]`` -> ``[...]`` (one pass, memory ``O(numel x K)``;
        :meth:`nearest` runs it chunk by chunk). With the EMA codebook, whose entries and inputs are
        unit vectors, the nearest code is the one of largest dot product."""
        cb = self.codebook.to(x.dtype)
        if self.cfg.codebook_update == "ema":
            return (x @ cb.t()).argmax(dim=-1)
        return (x.pow(2).sum(-1, keepdim=True) - 2 * x @ cb.t() + cb.pow(2).sum(-1)).argmin(dim=-1)

    def forward(self, frames: Tensor, mask: Tensor | None = None) -> QuantizerOutput:
        """Quantise ``H [B, F, D_enc]`` with ``mask [B, F]`` (True = valid).

        In training mode the codebook is updated (EMA / k-means / dead-code replacement) from
        valid frames only; in eval mode the assignment is a pure nearest-neighbour lookup.
        """
        h = self.project(frames)
        if mask is None:
            mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        dead = self.dead_codes()
        if self.training:
            self._update_dead_code_threshold(int(mask.sum()))
            quantized, codes, _ = self.vq(h, mask=mask)
            dead = self.reseeded_codes()
        else:
            codes = self.nearest(h)
            quantized = self.embed_codes(codes).to(h.dtype)
        codes = codes.masked_fill(~mask, 0)
        zq = self.embed_codes(codes).to(h.dtype)
        if self.cfg.bypass:
            quantized = h
        m = mask.unsqueeze(-1).to(h.dtype)
        denom = m.sum().clamp_min(1.0) * h.shape[-1]
        commit = (((h - zq.detach()) ** 2) * m).sum() / denom
        loss = self.cfg.commitment_weight * commit
        if self.cfg.codebook_update == "loss":
            loss = loss + (((h.detach() - zq) ** 2) * m).sum() / denom
        quantized = quantized * m
        usage, perplexity, hist = code_statistics(codes.detach(), mask, self.cfg.codebook_size)
        if self.training:
            with torch.no_grad():
                self._steps += 1
                self._last_used[hist > 0] = self._steps
        return QuantizerOutput(quantized, codes, h, loss, usage, perplexity, dead, self.active_fraction())

    @property
    def bits_per_token(self) -> float:
        return math.log2(self.cfg.codebook_size)
