#!/usr/bin/env python3
"""How much voicing and F0 can a pitch predictor read from a codec's frozen tokens? (issue 12 diagnosis)

Caches ``Z_q`` (the codebook vectors of the codec's own tokens) of whole clips of a feature
directory's train split (targets: the stored WORLD DIO F0) and of the real-speech dev set (targets:
the same tracker run on the audio). Then trains predictor architectures from scratch on the cache
with the codec's pitch loss (voicing BCE + 5 x L1 on log-F0, the weight of ``loss.pitch=5``) and
scores each on dev beside the codec's shipped predictor: voicing accuracy and F1, mean and median
absolute F0 error on the tracker's voiced frames (cents). The codec's weights do not change.

Arms: the shipped architecture (two 5-tap convolutions, +-4 frames), and residual stacks of dilated
3-tap convolutions (dilations 1, 2, 4, 8 twice: +-31 frames, 0.6 s each side).
Usage: scripts/pitch_predictor_probe.py CODEC FEATURES [--clips 3000] [--steps 3000] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from entanglecodec import EntangleCodec
from entanglecodec.audio_io import load_audio
from entanglecodec.codec.pitch import hz_to_octaves, pitch_loss
from entanglecodec.data.features import FeatureDataset
from entanglecodec.data.manifest import read_manifest
from entanglecodec.training.aux_losses import frame_f0

Clip = tuple[Tensor, Tensor]  # Z_q [F, D_quant], F0 [F] in Hz (0 = unvoiced)
Predict = Callable[[Tensor], tuple[Tensor, Tensor]]  # Z_q [1, F, D] -> (voicing logits [1, F], octaves [1, F])


class _Dilated(nn.Module):
    """Residual block: dilated 3-tap convolution, GroupNorm(1), GELU."""

    def __init__(self, ch: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(ch, ch, 3, padding=dilation, dilation=dilation)
        self.norm = nn.GroupNorm(1, ch)

    def forward(self, x: Tensor) -> Tensor:
        return x + nn.functional.gelu(self.norm(self.conv(x)))


def arms(dim: int) -> dict[str, nn.Module]:
    """The predictors compared, each mapping ``[B, D_quant, F]`` to ``[B, 2, F]`` (voicing logit, octaves)."""
    conv = nn.Sequential(
        nn.Conv1d(dim, 256, 5, padding=2), nn.GELU(), nn.Conv1d(256, 256, 5, padding=2), nn.GELU(), nn.Conv1d(256, 2, 1)
    )
    out: dict[str, nn.Module] = {"shipped architecture, retrained (+-4 frames)": conv}
    for h in (128, 256):
        blocks = [_Dilated(h, d) for d in (1, 2, 4, 8, 1, 2, 4, 8)]
        out[f"dilated x8, {h} channels (+-31 frames)"] = nn.Sequential(
            nn.Conv1d(dim, h, 3, padding=1), *blocks, nn.Conv1d(h, 2, 1)
        )
    return out


@torch.no_grad()
def cache_train(model: EntangleCodec, features: str, clips: int) -> list[Clip]:
    """``Z_q`` and stored F0 of up to ``clips`` random whole train clips (40 frames to one encoder window)."""
    ds = FeatureDataset(features, "train", crop_seconds=None)
    out = []
    q = model.quantizer
    for i in np.random.default_rng(0).permutation(len(ds))[:clips]:
        it = ds[int(i)]
        if not 40 <= it["mel_length"] <= model.config.max_frames:
            continue
        mel = model.frontend.normalize(it["log_mel"][None].float())
        frames = model.encoder(mel, torch.ones(1, mel.shape[-1], dtype=torch.bool)).frames
        out.append((q.embed_codes(q.nearest(q.project(frames)))[0], it["f0"]))
    return out


@torch.no_grad()
def cache_dev(model: EntangleCodec, manifest: str, split: str) -> list[Clip]:
    """``Z_q`` of the codec's tokens and the DIO F0 of every clip of the manifest's split."""
    out = []
    for row in read_manifest(manifest, split=split):
        wav, sr = load_audio(row["audio"], model.sample_rate)
        zq = model.codes_to_embeddings(model.encode(torch.from_numpy(wav)[None], sr).codes)[0]
        out.append((zq, torch.from_numpy(frame_f0(wav, sr, model.hop_length, zq.shape[0]))))
    return out


@torch.no_grad()
def score(predict: Predict, dev: list[Clip]) -> dict[str, float]:
    """Voicing accuracy and F1, and the absolute F0 error on the tracker's voiced frames (cents)."""
    errs, hits, n, tp, fp, fn = [], 0, 0, 0, 0, 0
    for zq, f0 in dev:
        logit, octaves = predict(zq[None])
        v, pv = f0 > 0, logit[0] > 0
        hits += int((pv == v).sum())
        n += v.numel()
        tp, fp, fn = tp + int((pv & v).sum()), fp + int((pv & ~v).sum()), fn + int((~pv & v).sum())
        errs.append((1200.0 * (octaves[0][v] - hz_to_octaves(f0[v])).abs()).numpy())
    e = np.concatenate(errs)
    return {"vuv_acc": hits / n, "vuv_f1": 2 * tp / max(1, 2 * tp + fp + fn),
            "f0_cents_mean": float(e.mean()), "f0_cents_median": float(np.median(e))}  # fmt: skip


def train_arm(net: nn.Module, train: list[Clip], steps: int, crop: int = 150, batch: int = 16) -> None:
    """AdamW, one-cycle lr 1e-3, random ``crop``-frame crops (zero-padded: padding reads as unvoiced)."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    g = np.random.default_rng(1)
    net.train()
    for _ in range(steps):
        zs, fs = [], []
        for j in g.integers(0, len(train), batch):
            zq, f0 = train[int(j)]
            a = int(g.integers(0, max(1, zq.shape[0] - crop)))
            pad = crop - zq[a : a + crop].shape[0]
            zs.append(nn.functional.pad(zq[a : a + crop], (0, 0, 0, pad)))
            fs.append(nn.functional.pad(f0[a : a + crop], (0, pad)))
        f = torch.stack(fs)
        y = net(torch.stack(zs).transpose(1, 2))
        terms = pitch_loss(y[:, 0], y[:, 1], f, torch.ones_like(f, dtype=torch.bool))
        opt.zero_grad()
        (terms["vuv"] + 5.0 * terms["f0"]).backward()
        opt.step()
        sched.step()
    net.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("codec")
    ap.add_argument("features")
    ap.add_argument("--manifest", default="data/real-speech/manifest.jsonl")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--clips", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = EntangleCodec.from_pretrained(a.codec).eval()
    if model.pitch is None:
        raise SystemExit(f"{a.codec}: this codec has no pitch predictor (decoder.pitch_cond is off)")
    t0 = time.time()
    train, dev = cache_train(model, a.features, a.clips), cache_dev(model, a.manifest, a.split)
    print(f"cached {len(train)} train and {len(dev)} dev clips in {time.time() - t0:.0f} s", flush=True)
    pitch = model.pitch
    res: dict[str, dict[str, float]] = {"shipped predictor": score(pitch.predict, dev)}
    print("shipped predictor", res["shipped predictor"], flush=True)
    for name, net in arms(model.config.quantizer.dim).items():
        t1 = time.time()
        train_arm(net, train, a.steps)

        def predict(zq: Tensor, net: nn.Module = net) -> tuple[Tensor, Tensor]:
            y = net(zq.transpose(1, 2))
            return y[:, 0], y[:, 1]

        res[name] = score(predict, dev) | {"params": float(sum(p.numel() for p in net.parameters())),
                                           "train_s": time.time() - t1}  # fmt: skip
        print(name, res[name], flush=True)
        if a.out:
            a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
