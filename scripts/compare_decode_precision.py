"""Quality of the flow decoder in float32 vs bfloat16 on real speech (the decode-speed report).

For each clip of a manifest split: encode once, decode with ``precision="float32"`` and with
``precision="bfloat16"`` (same tokens, same noise), and score both against the original: STOI,
wideband PESQ and log-mel L1 (nats, the codec's own mel); plus the SNR of the bfloat16 decode
against the float32 decode. Prints a markdown table (mean over clips).

``PYTHONPATH=src python scripts/compare_decode_precision.py MANIFEST [--split valid] [--max-clips 24]``
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from entanglecodec import EntangleCodec, load_audio
    from entanglecodec.eval.metrics import pesq_wb, stoi

    ap = argparse.ArgumentParser()
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--split", default="valid")
    ap.add_argument("--max-clips", type=int, default=24)
    ap.add_argument("--checkpoint", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [json.loads(line) for line in args.manifest.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("split") == args.split][: args.max_clips]
    model = EntangleCodec.from_pretrained(args.checkpoint, build_text_encoder=False)
    scores: dict[str, dict[str, list[float]]] = {p: {"STOI": [], "PESQ-WB": [], "log-mel L1": []} for p in ("float32", "bfloat16")}
    snr: list[float] = []
    for r in rows:
        wav, sr = load_audio(args.manifest.parent / r["audio"], sample_rate=24000)
        x = torch.from_numpy(np.asarray(wav, dtype=np.float32))
        with torch.inference_mode():
            tokens = model.encode(x, 24000)
            ref_mel = model.frontend.log_mel(x[None])
            outs = {}
            for p in scores:
                y = model.decode(tokens, precision=p).wav[0].numpy()
                outs[p] = y
                scores[p]["STOI"].append(stoi(wav, y, 24000))
                scores[p]["PESQ-WB"].append(pesq_wb(wav, y, 24000))
                mel = model.frontend.log_mel(torch.from_numpy(y)[None])
                scores[p]["log-mel L1"].append(float((mel - ref_mel).abs().mean()))
        d = outs["bfloat16"] - outs["float32"]
        snr.append(float(10 * np.log10(np.sum(outs["float32"] ** 2) / max(np.sum(d**2), 1e-20))))
    print(f"{len(rows)} clips of {args.manifest} (split {args.split}), {sum(float(r['duration']) for r in rows):.0f} s\n")
    print("| flow decoder | " + " | ".join(scores["float32"]) + " |")
    print("|---|" + "---:|" * len(scores["float32"]))
    for p, s in scores.items():
        print(f"| {p} | " + " | ".join(f"{statistics.mean(v):.4f}" for v in s.values()) + " |")
    print(f"\nbfloat16 vs float32 decode, SNR per clip (dB): median {statistics.median(snr):.1f}, min {min(snr):.1f}")
    for k in scores["float32"]:
        diffs = [b - a for a, b in zip(scores["float32"][k], scores["bfloat16"][k], strict=True)]
        print(f"{k}: bfloat16 - float32 per clip: mean {statistics.mean(diffs):+.4f}, "
              f"min {min(diffs):+.4f}, max {max(diffs):+.4f}")


if __name__ == "__main__":
    main()
