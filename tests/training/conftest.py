"""Tiny generated corpus for the training tests (tones, chords and noise with matching captions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]


def make_corpus(root: Path, n_train: int = 24, n_valid: int = 4, seconds: float = 1.2, seed: int = 0) -> Path:
    """Write ``root/manifest.jsonl`` with sine tones / chords / noise bursts and captions naming them."""
    rng = np.random.default_rng(seed)
    sr = 24000
    t = np.arange(int(seconds * sr)) / sr
    rows = []
    notes = {"low": 110.0, "middle": 220.0, "high": 880.0}
    for i in range(n_train + n_valid):
        kind = ["tone", "chord", "noise"][i % 3]
        pitch = list(notes)[(i // 3) % 3]
        f0 = notes[pitch]
        if kind == "tone":
            x = np.sin(2 * np.pi * f0 * t)
            domain, label = "music", f"a steady {pitch} sine tone"
        elif kind == "chord":
            x = sum(np.sin(2 * np.pi * f0 * r * t) for r in (1.0, 1.25, 1.5)) / 3
            domain, label = "music", f"a {pitch} major chord"
        else:
            x = rng.standard_normal(t.size) * (np.mod(t, 0.3) < 0.1)
            domain, label = "sound", "bursts of white noise"
        x = (0.3 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)
        name = f"clip{i:03d}.flac"
        sf.write(root / name, x, sr)
        rows.append(
            {
                "id": f"clip{i:03d}",
                "audio": name,
                "duration": seconds,
                "sample_rate": sr,
                "domain": domain,
                "split": "train" if i < n_train else "valid",
                "caption": f"{label}, recorded clean and {'loud' if i % 2 else 'soft'}.",
                "asr_caption": label,
                "text": None,
                "attributes": {"kind": kind, "pitch": pitch},
            }
        )
    m = root / "manifest.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return m


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def corpus_maker():  # noqa: ANN201
    """:func:`make_corpus` itself, for tests that need a corpus of another shape."""
    return make_corpus
