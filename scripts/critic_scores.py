#!/usr/bin/env python3
"""Score real mels and a codec's one-step decoded mels with a mel discriminator (stage-2 diagnosis).

Prints, per dev clip, the critic's mean logit on the real log-mel and on the decoder's one-step
output (guidance 1, the inference default), and the generator hinge term. A frozen critic that
rates decoded mels far above real ones has been exploited by the decoder.
Usage: scripts/critic_scores.py CODEC_DIR CRITIC_DIR [--clips 8] [--split valid]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import soundfile as sf
import soxr
import torch

from entanglecodec import EntangleCodec
from entanglecodec.training.discriminators import MelDiscriminator
from entanglecodec.training.losses import hinge_generator_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("codec")
    ap.add_argument("critic")
    ap.add_argument("--manifest", default="data/real-speech/manifest.jsonl")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--clips", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    model, critic = EntangleCodec.from_pretrained(args.codec).eval(), MelDiscriminator.from_pretrained(args.critic).eval()
    root = Path(args.manifest).parent
    rows = [json.loads(line) for line in open(args.manifest)]
    for r in [r for r in rows if r["split"] == args.split][: args.clips]:
        wav, sr = sf.read(root / r["audio"], dtype="float32")
        x = torch.from_numpy(soxr.resample(wav, sr, model.sample_rate))[None]
        with torch.no_grad():
            mel = model.frontend(x)
            codes = model.quantizer.nearest(model.quantizer.project(model.encoder(mel).frames))
            fake = model.decoder.one_step(model.quantizer.embed_codes(codes), None, torch.randn_like(mel), 1.0)
            real_logits, _ = critic(mel)
            fake_logits, _ = critic(fake)
        mean = lambda ls: float(torch.cat([t.flatten() for t in ls]).mean())  # noqa: E731
        print(f"{r['id']}  D(real) {mean(real_logits):6.2f}  D(decoded) {mean(fake_logits):6.2f}  "
              f"generator hinge {float(hinge_generator_loss(fake_logits)):.3f}")


if __name__ == "__main__":
    main()
