"""Llama-style Transformer used by the encoder, the flow decoder and the scratch text encoder.

Pre-norm blocks with RMSNorm, SwiGLU feed-forward, rotary position embeddings on queries/keys and
PyTorch's scaled-dot-product attention (bidirectional). Padding is handled with a key-padding
mask, so valid positions never attend to padding and their outputs do not depend on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TransformerConfig


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned gain; normalises the last dim."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return out.to(x.dtype) * self.weight


class SwiGLU(nn.Module):
    """``W2(silu(W1 x) * W3 x)`` feed-forward."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.dropout(F.silu(self.w1(x)) * self.w3(x)))


def rotary_cos_sin(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """Rotary tables for integer ``positions [B, T]`` (or ``[T]``) -> ``cos, sin [B, 1, T, head_dim]``."""
    if positions.dim() == 1:
        positions = positions[None]
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    angles = positions.float()[..., None] * inv_freq  # [B, T, head_dim/2]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos()[:, None], angles.sin()[:, None]


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x [B, H, T, Dh]`` by the tables from :func:`rotary_cos_sin`."""
    return (x.float() * cos + _rotate_half(x.float()) * sin).to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with rotary embeddings and a key-padding mask (SDPA)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.dropout = dropout

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, attn_mask: Tensor | None) -> Tensor:
        """``x [B, T, D]``; ``attn_mask [B, 1, 1, T]`` bool (True = may attend) or None."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if q.dtype == torch.bfloat16 and q.device.type == "cpu" and not torch.is_grad_enabled():
            # CPU inference under bfloat16 autocast: PyTorch's bfloat16 attention kernel on CPU is
            # ~1.5x slower than its float32 one at these sizes (reports/decode-profile.md), and
            # float32 is the more exact of the two.
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask).to(q.dtype)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
            )
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + Attn(RMSNorm(x))`` then ``x + SwiGLU(RMSNorm(x))``."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.dropout)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = SwiGLU(cfg.dim, cfg.ffn_hidden, cfg.dropout)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, attn_mask: Tensor | None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, attn_mask)
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    """A stack of :class:`TransformerBlock` with a final RMSNorm.

    Args:
        cfg: sizes (``dim``, ``depth``, ``heads``, ...).
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.depth)])
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.gradient_checkpointing = False

    def forward(self, x: Tensor, mask: Tensor | None = None, positions: Tensor | None = None) -> Tensor:
        """Args:
            x: ``[B, T, D]`` input sequence.
            mask: ``[B, T]`` bool, True where valid (padding keys are never attended to).
            positions: ``[B, T]`` or ``[T]`` integer rotary positions (default ``0..T-1``).

        Returns:
            ``[B, T, D]``; outputs at padded positions are finite but meaningless.
        """
        b, t, _ = x.shape
        if positions is None:
            positions = torch.arange(t, device=x.device)
        cos, sin = rotary_cos_sin(positions, self.cfg.dim // self.cfg.heads, self.cfg.rope_base)
        attn_mask = None if mask is None else mask[:, None, None, :]
        for blk in self.blocks:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(blk, x, cos, sin, attn_mask, use_reentrant=False)  # type: ignore[assignment]
            else:
                x = blk(x, cos, sin, attn_mask)
        return self.norm(x)
