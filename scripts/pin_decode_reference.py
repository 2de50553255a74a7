"""Write ``tests/core/data/decode-reference.npz``: what the bundled model decodes for two fixed token
sequences (the reference that ``tests/core/test_decode_pinned.py`` compares decoding against).

Run it only when the bundled checkpoint (or the decoder's intended output) changes, with the code
whose output is the reference, in full float32:
``PYTHONPATH=src python scripts/pin_decode_reference.py``.

The two items, decoded in one padded batch: 1 s (one pass, padded and masked) and 10.5 s (longer
than the 10 s window: two flow-decoder windows and the windowed vocoder). Stored per item: the
RMS of every 480-sample frame (the whole waveform) and three exact 960-sample spans (start, the
seam of the first window's kept frames, end).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "core" / "data" / "decode-reference.npz"
FRAMES = (50, 525)
SPAN = 960


def reference_codes(codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes [2, 525], lengths [2])``: a fixed pseudo-random walk over the codebook per item."""
    g = torch.Generator().manual_seed(1234)
    f = max(FRAMES)
    codes = torch.randint(0, codebook_size, (len(FRAMES), f), generator=g)
    lengths = torch.tensor(FRAMES)
    return codes, lengths


def spans(n_samples: int) -> list[int]:
    """Start samples of the exact spans of an item of ``n_samples`` samples."""
    return [0, min(400 * 480 - SPAN // 2, n_samples - SPAN), n_samples - SPAN]


def summarise(wav: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(frame RMS [n // 480], spans [3, SPAN])`` of the first ``n`` samples of ``wav``."""
    w = wav[:n].astype(np.float64)
    rms = np.sqrt((w.reshape(-1, 480) ** 2).mean(1))
    return rms.astype(np.float32), np.stack([wav[s : s + SPAN] for s in spans(n)]).astype(np.float32)


def main() -> None:
    from entanglecodec import EntangleCodec

    torch.set_num_threads(1)
    model = EntangleCodec.from_pretrained(ROOT / "checkpoints" / "entanglecodec-small", build_text_encoder=False)
    codes, lengths = reference_codes(model.codebook_size)
    audio = model.decode(codes, lengths, seed=0, precision="float32")
    out: dict[str, np.ndarray] = {"codes": codes.numpy(), "lengths": lengths.numpy()}
    for i, n in enumerate((audio.lengths).tolist()):
        rms, sp = summarise(audio.wav[i].numpy(), n)
        out[f"rms{i}"], out[f"spans{i}"] = rms, sp
    out["fingerprint"] = np.array(model.fingerprint())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(OUT, {k: v.shape for k, v in out.items()}, file=sys.stderr)


if __name__ == "__main__":
    main()
