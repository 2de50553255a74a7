"""Rectified-flow mel decoder (paper Sec. 3.3-3.4, Eq. 7, 9 and 12).

Interpolation (Eq. 9): ``x_t = (1 - (1 - sigma_min) t) z + t x`` with ``z ~ N(0, I)``, ``x`` the
normalised target mel, ``t ~ U(0, 1)``; target velocity ``u = x - (1 - sigma_min) z``; loss
``|| v_theta(x_t, t, Z_q) - u ||_1``.

The flow predictor is a non-causal Llama-style Transformer. With ``cond_mode="prefix"`` (the
paper) it runs over ``[time token; Z_q frames (conditioning prefix); x_t frames]``: condition frame
``i`` and noisy frame ``i`` share rotary position ``i`` (the time token has position -1), and a
learned segment embedding tells the two apart. With ``cond_mode="add"`` the projected ``Z_q`` frame
``i`` is added to noisy frame ``i`` and the sequence is ``[time token; x_t frames]`` (half the length,
alignment given); ``"both"`` keeps the prefix and adds. The time embedding is also added to every
noisy frame. A learned null condition replaces ``Z_q``
with probability ``cond_dropout`` in training for classifier-free guidance (Eq. 12).

With ``pitch_cond`` (not in the paper, see ``codec/pitch.py``) the decoder also reads per-frame pitch
features ``[B, F, n_mels + 2]`` (harmonic comb ``c`` in [0, 1] times voicing ``u``, voicing, log-F0):
they are projected and added to each noisy frame, and the comb also enters the output directly,
``v += (1 - t) (a + A h_f) * (c_f - u_f / 2)`` per mel band, with ``a [n_mels]`` a learned per-band
harmonic depth and ``A h_f`` its frame-wise correction from the Transformer's last hidden state. In
the log-mel domain a voiced frame is its envelope plus a harmonic ripple whose depth depends on the
band, so this path only has to learn how deep the ripple is, not to rebuild its shape through the
whole network. The factor ``1 - t`` leaves late flow times, where ``x_t`` already shows the ripple,
to the network, so the path's gradient is not cancelled there; one-step decoding runs at ``t = 0``.
``a`` starts at :data:`HARMONIC_DEPTH_INIT` (a least-squares fit of the ripple to training speech gives
0.4-1.1 in the resolved bands; unresolved bands have no ripple whatever ``a`` is); the input
projection and ``A`` start at zero. Where the null condition replaces ``Z_q``, the pitch features
are zeroed too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import DecoderConfig
from ..nn.transformer import Transformer

HARMONIC_DEPTH_INIT = 0.5
"""Initial per-band depth ``a`` of the harmonic ripple (normalised log-mel units per unit of ripple)."""


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of flow times ``t [B]`` in ``[0, 1]`` -> ``[B, dim]`` (t scaled by 1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def flow_interpolate(x: Tensor, z: Tensor, t: Tensor, sigma_min: float) -> tuple[Tensor, Tensor]:
    """Eq. 9: ``x_t = (1 - (1 - sigma_min) t) z + t x`` and target ``u = x - (1 - sigma_min) z``.

    Args:
        x: data ``[B, ...]``; z: noise of the same shape; t: ``[B]`` times in ``[0, 1]``.
    """
    tt = t.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    xt = (1 - (1 - sigma_min) * tt) * z + tt * x
    return xt, x - (1 - sigma_min) * z


def masked_l1(v: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean ``|v - target|`` over the valid frames (``mask [B, F]``) and every bin of ``[B, n_mels, F]``."""
    m = mask[:, None, :].to(v.dtype)
    return ((v - target).abs() * m).sum() / (m.sum() * v.shape[1]).clamp_min(1.0)


class FlowDecoder(nn.Module):
    """Velocity predictor ``v_theta(x_t, t, Z_q) [B, n_mels, F]`` (Eq. 7).

    Args:
        n_mels: mel bins.
        cond_dim: ``D_quant`` (dimension of the code vectors ``Z_q``).
        cfg: decoder configuration.
    """

    def __init__(self, n_mels: int, cond_dim: int, cfg: DecoderConfig) -> None:
        super().__init__()
        self.pitch_proj: nn.Linear | None = None
        self.cfg = cfg
        d = cfg.transformer.dim
        self.n_mels = n_mels
        self.cond_proj = nn.Sequential(nn.Linear(cond_dim, d), nn.GELU(), nn.Linear(d, d))
        self.null_cond = nn.Parameter(torch.randn(cond_dim) * 0.02)
        self.x_proj = nn.Linear(n_mels, d)
        self.time_mlp = nn.Sequential(nn.Linear(cfg.time_embed_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.segment = nn.Parameter(torch.randn(2, d) * 0.02)  # 0: condition, 1: noisy mel
        self.transformer = Transformer(cfg.transformer)
        self.out = nn.Linear(d, n_mels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.harmonic_depth: nn.Linear | None = None
        if cfg.pitch_cond:
            self.pitch_proj = nn.Linear(n_mels + 2, d)
            self.harmonic_depth = nn.Linear(d, n_mels)  # frame-wise correction A h_f (its bias: a)
            for layer in (self.pitch_proj, self.harmonic_depth):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
            nn.init.constant_(self.harmonic_depth.bias, HARMONIC_DEPTH_INIT)

    def null_condition(self, like: Tensor) -> Tensor:
        """The learned null condition expanded to ``like``'s shape ``[B, F, D_quant]``."""
        return self.null_cond.to(like.dtype).expand_as(like)

    def forward(
        self, xt: Tensor, t: Tensor, cond: Tensor, mask: Tensor | None = None, pitch: Tensor | None = None
    ) -> Tensor:
        """Args:
            xt: noisy mel ``[B, n_mels, F]``.
            t: flow time ``[B]`` in ``[0, 1]``.
            cond: ``Z_q [B, F, D_quant]`` (or the null condition).
            mask: ``[B, F]`` True on valid frames.
            pitch: pitch features ``[B, F, n_mels + 2]`` (``pitch_cond`` models; zeros = unconditional).

        Returns: velocity ``[B, n_mels, F]``.
        """
        b, _, f = xt.shape
        if cond.shape[:2] != (b, f):
            raise ValueError(f"condition frames {tuple(cond.shape[:2])} do not match mel frames {(b, f)}")
        temb = self.time_mlp(timestep_embedding(t, self.cfg.time_embed_dim).to(xt.dtype))  # [B, D]
        c = self.cond_proj(cond)  # [B, F, D]
        x = self.x_proj(xt.transpose(1, 2)) + self.segment[1] + temb[:, None]
        if self.pitch_proj is not None:
            if pitch is None:
                raise ValueError("this decoder is pitch-conditioned (decoder.pitch_cond): pitch features are required")
            x = x + self.pitch_proj(pitch.to(x.dtype))
        mode = self.cfg.cond_mode
        if mode != "prefix":
            x = x + c
        parts = [temb[:, None], x] if mode == "add" else [temb[:, None], c + self.segment[0], x]
        seq = torch.cat(parts, dim=1)  # [B, 1 + F, D] ("add") or [B, 1 + 2F, D]
        pos_frames = torch.arange(f, device=xt.device)
        start = torch.tensor([-1], device=xt.device)
        positions = torch.cat([start] + [pos_frames] * (len(parts) - 1))
        if mask is None:
            full_mask = None
        else:
            ones = torch.ones(b, 1, dtype=torch.bool, device=xt.device)
            full_mask = torch.cat([ones] + [mask] * (len(parts) - 1), dim=1)
        h = self.transformer(seq, full_mask, positions)[:, -f:]
        v = self.out(h)  # [B, F, n_mels]
        if self.harmonic_depth is not None and pitch is not None:
            n = self.n_mels
            ripple = pitch[..., :n] - 0.5 * pitch[..., n : n + 1]  # comb centred on voiced frames, 0 elsewhere
            v = v + (1 - t.to(v.dtype))[:, None, None] * self.harmonic_depth(h) * ripple.to(v.dtype)
        return v.transpose(1, 2)

    def draw_noise_and_time(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Training draws for a target ``x [B, n_mels, F]``: noise ``z`` like ``x`` and flow times
        ``t [B]``, uniform in ``[0, 1)`` except a ``t_zero_fraction`` share at 0 (the one-step sampler's time)."""
        b = x.shape[0]
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        t = torch.rand(b, generator=generator, device=x.device, dtype=x.dtype)
        if self.cfg.t_zero_fraction > 0:
            at_zero = torch.rand(b, generator=generator, device=x.device) < self.cfg.t_zero_fraction
            t = t.masked_fill(at_zero, 0.0)
        return z, t

    def loss(
        self,
        x: Tensor,
        cond: Tensor,
        mask: Tensor,
        generator: torch.Generator | None = None,
        pitch: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Flow-matching L1 loss (Eq. 9) with condition dropout.

        Args:
            x: target normalised mel ``[B, n_mels, F]``; cond: ``Z_q [B, F, D_quant]``; mask ``[B, F]``;
            pitch: pitch features ``[B, F, n_mels + 2]`` (``pitch_cond`` models, dropped with ``Z_q``).

        Returns: ``(loss, one_step_estimate)`` where the estimate ``x_t + (1 - t) v`` ``[B, n_mels, F]``
        is the decoder's one-step sample from the same noise (used for stage-2 adversarial loss).
        """
        b = x.shape[0]
        z, t = self.draw_noise_and_time(x, generator)
        if self.training and self.cfg.cond_dropout > 0:
            drop = torch.rand(b, device=x.device) < self.cfg.cond_dropout
            cond = torch.where(drop[:, None, None], self.null_condition(cond), cond)
            if pitch is not None:
                pitch = pitch.masked_fill(drop[:, None, None], 0.0)
        xt, target = flow_interpolate(x, z, t, self.cfg.sigma_min)
        v = self(xt, t, cond, mask, pitch)
        loss = masked_l1(v, target, mask)
        est = xt + (1 - t)[:, None, None] * v
        return loss, est

    def one_step(
        self, cond: Tensor, mask: Tensor | None, noise: Tensor, guidance: float = 1.0, pitch: Tensor | None = None
    ) -> Tensor:
        """The one-step sample of :meth:`sample` (``steps=1``) with gradients kept (stage-2 adversarial term).

        Args:
            cond: ``Z_q [B, F, D_quant]``; mask: ``[B, F]`` or None; noise: ``z [B, n_mels, F]``.
            guidance: ``gamma`` of Eq. 12 (0: no guidance, one forward pass).
            pitch: pitch features ``[B, F, n_mels + 2]`` (``pitch_cond`` models).

        Returns: normalised mel ``[B, n_mels, F]``, ``z + v_gamma(z, 0)``.
        """
        return noise + self.guided_velocity(noise, torch.zeros(noise.shape[0], device=noise.device, dtype=noise.dtype),
                                      cond, mask, guidance, pitch)

    def guided_velocity(
        self, x: Tensor, t: Tensor, cond: Tensor, mask: Tensor | None, guidance: float, pitch: Tensor | None = None
    ) -> Tensor:
        """Guided velocity ``(1 + gamma) v(x, t, c) - gamma v(x, t, null)`` ``[B, n_mels, F]`` (Eq. 12);
        the unconditional pass gets zero pitch features."""
        if guidance == 0.0:
            return self(x, t, cond, mask, pitch)
        null = self.null_condition(cond)
        both = self(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null]),
                    None if mask is None else torch.cat([mask, mask]),
                    None if pitch is None else torch.cat([pitch, torch.zeros_like(pitch)]))
        v_c, v_u = both.chunk(2)
        return (1 + guidance) * v_c - guidance * v_u

    @torch.no_grad()
    def sample(
        self,
        cond: Tensor,
        mask: Tensor | None = None,
        steps: int = 1,
        guidance: float = 1.0,
        noise: Tensor | None = None,
        pitch: Tensor | None = None,
    ) -> Tensor:
        """Euler integration from ``t = 0`` (noise) to ``t = 1`` with optional CFG (Eq. 12).

        Args:
            cond: ``Z_q [B, F, D_quant]``; mask: ``[B, F]``.
            steps: Euler steps (the paper uses 1).
            guidance: ``gamma`` in Eq. 12; ``0`` disables guidance (one forward pass per step).
            noise: initial ``z [B, n_mels, F]`` (standard normal when omitted).
            pitch: pitch features ``[B, F, n_mels + 2]`` (``pitch_cond`` models).

        Returns: normalised mel ``[B, n_mels, F]``.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        b, f, _ = cond.shape
        x = noise if noise is not None else torch.randn(b, self.n_mels, f, device=cond.device, dtype=cond.dtype)
        dt = 1.0 / steps
        for i in range(steps):
            t = torch.full((b,), i * dt, device=cond.device, dtype=x.dtype)
            x = x + dt * self.guided_velocity(x, t, cond, mask, guidance, pitch)
        return x
