"""Stage-1 objective of the codec (paper Sec. 3.4): flow (Eq. 9) + VQ (Eq. 11) + contrastive (Eq. 10).

The inference model (:class:`~entanglecodec.codec.model.EntangleCodec`) carries no loss and no
training-only parameter: the CLIP temperature ``logit_scale`` lives in the training module
(:func:`logit_scale_parameter` starts it from the checkpoint's stored value when there is one),
and :func:`stage1_losses` computes every term from the model's parts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..codec.model import EntangleCodec
from ..codec.quantizer import QuantizerOutput
from .losses import contrastive_loss

LOGIT_SCALE = "logit_scale"
INITIAL_TEMPERATURE = 0.07
"""CLIP's initial temperature: ``logit_scale = log(1 / 0.07)``."""


def logit_scale_parameter(model: EntangleCodec) -> nn.Parameter:
    """A learnable ``log`` inverse temperature: the checkpoint's stored value, else ``log(1/0.07)``."""
    stored = model.training_tensors.get(LOGIT_SCALE)
    value = stored.detach().clone().float() if stored is not None else torch.tensor(math.log(1 / INITIAL_TEMPERATURE))
    return nn.Parameter(value.reshape(()))


def stage1_losses(
    model: EntangleCodec,
    logit_scale: Tensor,
    mel: Tensor,
    mask: Tensor,
    captions: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
    caption_emb: Tensor | None = None,
    f0_hz: Tensor | None = None,
    flow: bool = True,
) -> dict[str, Tensor]:
    """Stage-1 losses on a batch of normalised mels ``[B, n_mels, F]`` with ``mask [B, F]``.

    Returns a dict with ``flow`` (Eq. 9), ``vq`` (Eq. 11), ``contrast`` (Eq. 10, when captions
    are given), ``retrieval_acc``, codebook statistics (``usage`` and ``perplexity`` of this
    batch, ``dead_codes`` re-seeded this step, ``active_codes`` = fraction used in the last 100
    batches), ``mel_est`` (one-step decoder estimate ``[B, n_mels, F]``), ``codes``, and the
    quantizer's ``pre_quant`` (h~) and ``quantized`` (Z_q), both ``[B, F, D_quant]``.

    ``caption_emb [B, hidden]``: pooled outputs of the frozen caption backbone computed beforehand
    (a feature directory's); used instead of running the backbone on ``captions``.

    ``flow=False`` skips the decoder (a term with weight 0): ``flow`` is then 0 and ``mel_est`` absent.

    ``f0_hz [B, F']`` (Hz, 0 = unvoiced, ``F' >= F``): the tracked F0 of the batch, required by a
    pitch-conditioned model (``decoder.pitch_cond``). Its decoder is then trained on the comb of this
    contour (teacher forcing), and the output also holds ``pitch`` (the predictor's voicing + F0
    loss on ``Z_q``), ``pitch_vuv_acc`` and ``pitch_f0_cents``.
    """
    enc = model.encoder(mel, mask)
    q: QuantizerOutput = model.quantizer(enc.frames, mask)
    pitch_feats = None
    pitch_out: dict[str, Tensor] = {}
    if model.pitch is not None:
        if f0_hz is None:
            raise ValueError("a pitch-conditioned model (decoder.pitch_cond) needs the batch's F0 (f0_hz)")
        f = mel.shape[-1]
        f0 = F.pad(f0_hz, (0, max(0, f - f0_hz.shape[1])))[:, :f].to(mel.dtype)
        pitch_feats = model.pitch.features(f0, f0 > 0)
        p = model.pitch.loss(q.quantized, f0, mask)
        pitch_out = {"pitch": p["vuv"] + p["f0"], "pitch_vuv_acc": p["vuv_acc"], "pitch_f0_cents": p["f0_cents"]}
    out: dict[str, Tensor] = {}
    if flow:
        out["flow"], out["mel_est"] = model.decoder.loss(mel, q.quantized, mask, generator, pitch_feats)
    else:
        out["flow"] = mel.new_zeros(())
    out.update({
        "vq": q.loss,
        "usage": q.usage,
        "perplexity": q.perplexity,
        "dead_codes": q.dead_codes.float(),
        "active_codes": q.active,
        "codes": q.codes,
        "pre_quant": q.pre_quant,
        "quantized": q.quantized,
        **pitch_out,
    })
    if captions is not None:
        if model.text_encoder is None:
            raise RuntimeError("captions given but the model has no caption encoder")
        a = model.audio_proj(enc.cls)
        t = model.text_encoder.project(caption_emb) if caption_emb is not None else model.text_encoder(captions)
        out["contrast"], out["retrieval_acc"] = contrastive_loss(a, t, logit_scale)
    return out
