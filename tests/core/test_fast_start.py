"""Fast start: what importing the package, the CLI and encode/decode load, and the lazy parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from entanglecodec import EntangleCodec, EntangleCodecConfig
from entanglecodec.codec.quantizer import StoredCodebook

SRC = str(Path(__file__).resolve().parents[2] / "src")
BUNDLED = Path(__file__).resolve().parents[2] / "checkpoints" / "entanglecodec-small"
HEAVY = ("vector_quantize_pytorch", "einx", "transformers", "sentence_transformers", "lightning", "torch._dynamo")
"""Modules that encoding and decoding must not import (training / caption stack, JIT tracing)."""


def _loaded_after(code: str) -> set[str]:
    """Top-level modules and ``entanglecodec`` subpackages loaded after running ``code`` in a fresh interpreter."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _heavy(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if m in HEAVY or m.startswith(("entanglecodec.training", "entanglecodec.eval")))


def test_import_and_cli_help_do_not_load_torch():
    mods = _loaded_after("import entanglecodec\nimport entanglecodec.cli\nfrom entanglecodec import EntangleCodecConfig")
    assert "torch" not in mods
    assert _heavy(mods) == []


@pytest.mark.skipif(not BUNDLED.is_dir(), reason="the bundled checkpoint is not in this checkout")
def test_encode_decode_of_the_bundled_model_load_no_training_or_text_stack():
    mods = _loaded_after(
        "import torch\nfrom entanglecodec import EntangleCodec\n"
        f"m = EntangleCodec.from_pretrained({str(BUNDLED)!r})\n"
        "t = m.encode(torch.randn(12000) * 0.1, 24000)\nm.decode(t)\n"
        "assert m._modules['text_encoder'] is None, 'caption tower built'\n"
    )
    assert "torch" in mods and "entanglecodec.codec.model" in mods
    assert _heavy(mods) == []


def test_cli_reconstruct_loads_no_training_or_text_stack(tmp_path):
    torch.manual_seed(0)
    ck = EntangleCodec(EntangleCodecConfig.preset("tiny")).save_pretrained(tmp_path / "ck")
    import soundfile as sf

    sf.write(tmp_path / "a.wav", torch.randn(24000).numpy() * 0.1, 24000)
    mods = _loaded_after(
        "import sys\nfrom entanglecodec.cli import app\n"
        f"sys.argv = ['entanglecodec', 'reconstruct', {str(tmp_path / 'a.wav')!r}, '-o', {str(tmp_path / 'b.wav')!r}, "
        f"'-c', {str(ck)!r}, '--vocoder', 'griffin-lim']\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
    )
    assert (tmp_path / "b.wav").is_file()
    assert _heavy(mods) == []


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = EntangleCodec(EntangleCodecConfig.preset("tiny")).eval()
    return model, model.save_pretrained(tmp_path / "ck")


def test_loaded_model_holds_a_stored_codebook_with_the_same_tokens(saved):
    model, ck = saved
    loaded = EntangleCodec.from_pretrained(ck)
    assert isinstance(loaded.quantizer.vq, StoredCodebook)
    assert loaded.fingerprint() == model.fingerprint()
    x = torch.randn(2, 9000) * 0.1
    assert torch.equal(loaded.encode(x, 24000).codes, model.encode(x, 24000).codes)
    assert torch.equal(loaded.quantizer.codebook, model.quantizer.codebook)


def test_training_mode_builds_vector_quantize_around_the_same_tensors(saved):
    model, ck = saved
    loaded = EntangleCodec.from_pretrained(ck)
    embed = loaded.quantizer.vq._codebook.embed
    loaded.train()
    from vector_quantize_pytorch import VectorQuantize

    assert isinstance(loaded.quantizer.vq, VectorQuantize)
    assert loaded.quantizer.vq._codebook.embed is embed  # an optimiser holding it keeps working
    out = loaded.quantizer(torch.randn(2, 7, loaded.config.encoder.dim))  # a training step runs
    assert out.codes.shape == (2, 7)
    assert set(loaded.state_dict_for_saving()) == set(model.state_dict_for_saving())  # checkpoint layout unchanged


def test_caption_tower_is_built_on_first_use_with_the_saved_weights(saved, tmp_path):
    model, ck = saved
    loaded = EntangleCodec.from_pretrained(ck)
    assert loaded._modules["text_encoder"] is None and loaded.has_text_encoder
    # saving before first use keeps the tower's weights
    again = EntangleCodec.from_pretrained(loaded.save_pretrained(tmp_path / "again"))
    captions = ["a dog barks", "rain on a roof"]
    assert torch.allclose(again.embed_text(captions), model.embed_text(captions))
    assert torch.allclose(loaded.embed_text(captions), model.embed_text(captions))
    assert loaded._modules["text_encoder"] is not None
    dropped = EntangleCodec.from_pretrained(ck, build_text_encoder=False)
    assert not dropped.has_text_encoder
    with pytest.raises(RuntimeError, match="without its caption encoder"):
        dropped.embed_text(captions)
