#!/usr/bin/env python3
"""Where decoded-mel bursts and over-full-scale peaks come from (intelligible-tokens diagnosis).

For each checkpoint and classifier-free guidance value, on the real-speech dev/test clips:
  * single-frame broadband bursts in the decoded log-mel (a frame above both neighbours in >= 80 %
    of the bins, median margin > 1 nat), with a second noise seed (sampler?) and at the clip edges
    (window seams?), and the codes under them (particular codes?);
  * how far the decoded log-mel's maximum exceeds the original's (nats), and the decoded waveform's
    peak over the original's.
Usage: scripts/codec_bursts.py CKPT [CKPT ...] [--clips 20] [--guidance 1 0 0.5]
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from entanglecodec import EntangleCodec


def burst_frames(log_mel: np.ndarray, margin: float = 1.0) -> set[int]:
    """Frames of ``log_mel [n_mels, F]`` (nats) that stand above both neighbours across the band."""
    d = log_mel[:, 1:-1] - np.maximum(log_mel[:, :-2], log_mel[:, 2:])
    return set((np.nonzero((np.median(d, axis=0) > margin) & ((d > 0).mean(axis=0) > 0.8))[0] + 1).tolist())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--manifest", default="data/real-speech/manifest.jsonl")
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 0.0, 0.5])
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.manifest).parent
    rows = [json.loads(line) for line in open(args.manifest)]
    rows = [r for r in rows if r["split"] in ("valid", "test")][: args.clips]
    for ck in args.checkpoints:
        m = EntangleCodec.from_pretrained(ck)
        for g in args.guidance:
            c: collections.Counter[str] = collections.Counter()
            over, peak, codes_at = [], [], collections.Counter()
            for r in rows:
                wav, sr = sf.read(root / r["audio"], dtype="float32")
                w24 = soxr.resample(wav, sr, 24000)
                tok = m.encode(torch.from_numpy(wav), sr)
                a0 = m.decode(tok, guidance=g, seed=0, return_mel=True)
                a1 = m.decode(tok, guidance=g, seed=1, return_mel=True)
                ref = m.frontend.log_mel(torch.from_numpy(w24)[None])[0].numpy()
                d0, d1 = a0.mel[0].numpy(), a1.mel[0].numpy()
                b0, b1 = burst_frames(d0), burst_frames(d1)
                f = d0.shape[-1]
                c["frames"] += f
                c["bursts"] += len(b0)
                c["same_frames_other_seed"] += len(b0 & b1)
                c["at_edges"] += sum(1 for i in b0 if i < 3 or i > f - 4)
                c["original_bursts"] += len(burst_frames(ref))
                codes = tok.codes[0, : int(tok.lengths[0])].numpy()
                codes_at.update(codes[sorted(b0)].tolist())
                over.append(float(d0.max() - ref.max()))
                peak.append(float(a0.wav.abs().max()) / max(float(np.abs(w24).max()), 1e-3))
            per_k = {k: round(1000 * c[k] / c["frames"], 2) for k in ("bursts", "same_frames_other_seed", "original_bursts")}
            print(json.dumps({
                "checkpoint": ck, "guidance": g, "clips": len(rows), "frames": c["frames"],
                "per_1000_frames": per_k, "bursts_at_clip_edges": c["at_edges"],
                "distinct_codes_under_bursts": len(codes_at), "bursts": c["bursts"],
                "decoded_max_minus_original_max_nats": {"median": round(float(np.median(over)), 2), "max": round(max(over), 2)},
                "peak_ratio_decoded_over_original": {"median": round(float(np.median(peak)), 2), "max": round(max(peak), 2)},
            }), flush=True)


if __name__ == "__main__":
    main()
