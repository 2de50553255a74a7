"""Fixtures for the vocoder tests: a tiny generated corpus (tones, chirps, noise bursts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def _clip(rng: np.random.Generator, seconds: float, sr: int = 24000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(120, 400)
    wav = sum(0.15 / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) for k in range(1, 6))
    wav = wav * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
    wav = wav + 0.01 * rng.standard_normal(t.size)
    return np.asarray(wav, dtype=np.float32)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``manifest.jsonl`` with 8 train, 2 valid and 2 test clips of 0.6-1.2 s at 24 kHz."""
    root = tmp_path_factory.mktemp("vocoder-corpus")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        split = "train" if i < 8 else ("valid" if i < 10 else "test")
        dur = float(rng.uniform(0.6, 1.2))
        name = f"audio/clip{i:02d}.wav"
        sf.write(root / name, _clip(rng, dur), 24000, subtype="FLOAT")
        rows.append({"id": f"clip{i:02d}", "audio": name, "domain": "speech" if i % 2 else "music",
                     "caption": "a test tone", "split": split, "duration": dur})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "manifest.jsonl"


@pytest.fixture
def tiny_recipe(tmp_path: Path, tiny_corpus: Path) -> Path:
    """The repository's tiny recipe pointed at the generated corpus."""
    import yaml

    repo = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((repo / "configs" / "vocoder-tiny.yaml").read_text())
    data["data"]["train_manifest"] = str(tiny_corpus)
    out = tmp_path / "vocoder-tiny.yaml"
    out.write_text(yaml.safe_dump(data))
    return out
