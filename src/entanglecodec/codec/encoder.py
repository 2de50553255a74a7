"""Unified encoder (paper Sec. 3.2, Eq. 1-4): mel -> Linear -> [CLS] + Llama Transformer.

The frame outputs ``H`` feed the quantizer; the [CLS] output ``h_cls`` is projected to
``D_align`` for caption alignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TransformerConfig
from ..nn.transformer import Transformer


@dataclass
class EncoderOutput:
    """Encoder results.

    Attributes:
        frames: ``H`` ``[B, F, D_enc]`` frame-level features (CLS removed).
        cls: ``h_cls`` ``[B, D_enc]`` global audio feature.
        mask: ``[B, F]`` bool, True on valid frames.
    """

    frames: Tensor
    cls: Tensor
    mask: Tensor


class UnifiedEncoder(nn.Module):
    """``M [B, n_mels, F]`` -> ``(H [B, F, D_enc], h_cls [B, D_enc])``.

    Args:
        n_mels: mel bins of the input.
        cfg: Transformer sizes (``cfg.dim`` is ``D_enc``).
    """

    def __init__(self, n_mels: int, cfg: TransformerConfig) -> None:
        super().__init__()
        self.in_proj = nn.Linear(n_mels, cfg.dim)
        self.cls_token = nn.Parameter(torch.randn(cfg.dim) * 0.02)
        self.transformer = Transformer(cfg)

    def forward(self, mel: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """Args: ``mel [B, n_mels, F]`` normalised log-mel, ``mask [B, F]`` (True = valid)."""
        b, _, f = mel.shape
        x = self.in_proj(mel.transpose(1, 2))  # [B, F, D]
        x = torch.cat([self.cls_token.expand(b, 1, -1).to(x.dtype), x], dim=1)
        if mask is None:
            mask = torch.ones(b, f, dtype=torch.bool, device=mel.device)
        full_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mel.device), mask], dim=1)
        h = self.transformer(x, full_mask)
        return EncoderOutput(frames=h[:, 1:], cls=h[:, 0], mask=mask)


class AudioProjection(nn.Module):
    """``Proj_audio`` (Eq. 4): ``h_cls [B, D_enc]`` -> L2-normalised ``a [B, D_align]``."""

    def __init__(self, in_dim: int, align_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, align_dim))

    def forward(self, h_cls: Tensor) -> Tensor:
        return F.normalize(self.net(h_cls), dim=-1)
