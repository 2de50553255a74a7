"""Fixtures of the LM tests: a tiny captioned corpus with synth-style attributes, a tiny codec,
its token directory and a tiny trained LM (built once per session, seconds on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

SR = 24000


def make_lm_corpus(root: Path, n: int = 30, seconds: float = 0.5, seed: int = 0) -> Path:
    """``root/manifest.jsonl``: speech-like, music-like and sound-like clips with attributes.

    Splits: every 5th row is test, every 5th+1 valid, the others train.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    rows = []
    for i in range(n):
        kind = ("speech", "music", "sound")[i % 3]
        attrs: dict = {"environment": {"reverb": ("dry", "strong")[i % 2], "noise_type": ("pink noise", None)[(i // 2) % 2]}}
        text = None
        if kind == "speech":
            gender = ("male", "female")[(i // 3) % 2]
            f0 = 120.0 if gender == "male" else 220.0
            x = np.sin(2 * np.pi * f0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
            lang = ("en", "fr")[(i // 6) % 2]
            attrs["speaker"] = {"gender": gender, "language": lang, "rate": ("slow", "fast")[i % 2], "pitch": "normal"}
            text = f"hello number {i} from the {gender} voice"
            caption = f"A {gender} voice speaking {'English' if lang == 'en' else 'French'} says {text}."
        elif kind == "music":
            mode = ("major", "minor")[(i // 3) % 2]
            third = 1.25 if mode == "major" else 1.2
            x = sum(np.sin(2 * np.pi * 330.0 * r * t) for r in (1.0, third, 1.5)) / 3
            attrs["music"] = {"programs": [(0, 40)[i % 2]], "roles": ["melody"], "tempo_bpm": (90.0, 140.0)[(i // 2) % 2],
                              "key": ("C", "G")[i % 2], "mode": mode}
            caption = f"A short piece in {attrs['music']['key']} {mode}."
        else:
            k = 1 + (i // 3) % 3
            x = rng.standard_normal(t.size) * (np.mod(t * k * 2, 1.0) < 0.3)
            attrs["events"] = [{"label": ("door knock", "beep")[(i // 3) % 2], "level_dbfs": -10.0 - j} for j in range(k)]
            caption = f"{k} bursts of noise."
        x = (0.3 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)
        name = f"clip{i:03d}.wav"
        sf.write(root / name, x, SR)
        split = "test" if i % 5 == 0 else "valid" if i % 5 == 1 else "train"
        rows.append({"id": f"clip{i:03d}", "audio": name, "duration": seconds, "sample_rate": SR, "domain": kind,
                     "split": split, "caption": caption, "text": text, "attributes": attrs})
    m = root / "manifest.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return m


def make_tiny_codec(path: Path, seed: int = 0) -> Path:
    """A tiny random EntangleCodec with the Griffin-Lim vocoder, saved with save_pretrained."""
    from entanglecodec import EntangleCodec, EntangleCodecConfig

    cfg = EntangleCodecConfig.preset("tiny")
    cfg.vocoder = "griffin-lim"
    cfg.griffin_lim_iters = 2
    torch.manual_seed(seed)
    model = EntangleCodec(cfg, build_text_encoder=False).eval()
    return model.save_pretrained(path)


@pytest.fixture(scope="session")
def other_codec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny codec (other weights, same codebook size): a different token space."""
    return make_tiny_codec(tmp_path_factory.mktemp("codec") / "other", seed=1)


@pytest.fixture(scope="session")
def lm_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lm_corpus(tmp_path_factory.mktemp("lmcorpus"))


@pytest.fixture(scope="session")
def tiny_codec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_codec(tmp_path_factory.mktemp("codec") / "tiny")


@pytest.fixture(scope="session")
def tokens(lm_corpus: Path, tiny_codec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from entanglecodec.lm.audio_tokenizer import load_audio_tokenizer
    from entanglecodec.lm.shards import tokenize_manifest

    out = tmp_path_factory.mktemp("tokens") / "tok"
    tokenize_manifest(lm_corpus, out, load_audio_tokenizer(tiny_codec), batch_size=4, shard_size=8)
    return out


@pytest.fixture(scope="session")
def trained_lm(lm_corpus: Path, tiny_codec: Path, tokens: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``RUN`` of a tiny LM trained for a few steps through the CLI (returns the run folder)."""
    from typer.testing import CliRunner

    from entanglecodec.cli import app

    run = tmp_path_factory.mktemp("lmrun") / "run"
    repo = Path(__file__).resolve().parents[2]
    res = CliRunner().invoke(app, [
        "lm", "train", "-c", str(repo / "configs" / "lm-tiny.yaml"), "--run-dir", str(run), "--no-progress",
        "--set", f"codec={tiny_codec}", "--set", f"data.manifest={lm_corpus}", "--set", f"data.tokens={tokens}",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    return run
