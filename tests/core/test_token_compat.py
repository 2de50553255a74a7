"""Files written before the layout change still load: token files of release 0.1.0, the bundled
checkpoints (flat vocoder config, training-only tensors), and the public API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
LEGACY_TOKENS = Path(__file__).parent / "data" / "tokens-v0.1-ae9bc1b.npz"
"""Written by ``entanglecodec encode`` at commit ae9bc1b (release 0.1.0 fingerprint: config +
codebook) from a 1 s, 220 Hz tone with a 2 Hz tremolo (:func:`_legacy_clip`), bundled checkpoint."""


def _legacy_clip() -> np.ndarray:
    t = np.arange(24000) / 24000
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def bundled():  # noqa: ANN201
    from entanglecodec import EntangleCodec

    return EntangleCodec.from_pretrained(build_text_encoder=False)


def test_public_api_unchanged() -> None:
    import entanglecodec

    for name in ["EntangleCodec", "EntangleCodecConfig", "Tokens", "Audio", "AudioError", "CheckpointError",
                 "ConfigError", "TokenError", "MelConfig", "load_audio", "save_audio", "default_checkpoint_dir"]:
        assert hasattr(entanglecodec, name), name


def test_legacy_fingerprint_token_file_decodes(tmp_path: Path) -> None:
    """A token file stamped with a model's 0.1.0 fingerprint (config + codebook) decodes with that model."""
    from entanglecodec import EntangleCodec, EntangleCodecConfig
    from entanglecodec.cli import app
    from entanglecodec.codec.tokens import TokenFile, load_tokens, save_tokens

    torch.manual_seed(0)
    model = EntangleCodec(EntangleCodecConfig.preset("tiny"), build_text_encoder=False).eval()
    legacy = model.legacy_fingerprint()
    assert legacy is not None and legacy != model.fingerprint() and model.accepts_fingerprint(legacy)
    ckpt = model.save_pretrained(tmp_path / "tiny")
    codes = model.encode(_legacy_clip(), 24000).codes[0].numpy()
    path = tmp_path / "legacy.npz"
    save_tokens(path, TokenFile(codes=codes, sample_rate=24000, num_samples=24000, frame_rate=50.0,
                                codebook_size=model.codebook_size, fingerprint=legacy))
    assert load_tokens(path).fingerprint == legacy
    out = tmp_path / "legacy.wav"
    res = CliRunner().invoke(app, ["decode", str(path), "-o", str(out), "-c", str(ckpt), "--vocoder", "griffin-lim"])
    assert res.exit_code == 0, res.output
    from entanglecodec.audio import load_audio

    wav, sr = load_audio(out, None)
    assert sr == 24000 and wav.shape[-1] == 24000


def test_release_0_1_token_file_names_its_model(bundled, tmp_path: Path) -> None:  # noqa: ANN001
    """The committed 0.1.0 file was made by the bundled model of that release (fingerprint
    58d4508c18952c0b, replaced in session 6): today's bundled model refuses it in one line that says
    which checkpoint made it, and writes nothing."""
    from entanglecodec.cli import app
    from entanglecodec.codec.tokens import load_tokens

    tf = load_tokens(LEGACY_TOKENS)
    assert not bundled.accepts_fingerprint(tf.fingerprint)
    out = tmp_path / "legacy.wav"
    res = CliRunner().invoke(app, ["decode", str(LEGACY_TOKENS), "-o", str(out), "--vocoder", "griffin-lim"])
    assert res.exit_code != 0 and "another checkpoint" in res.output and tf.fingerprint in res.output
    assert "Traceback" not in res.output and not out.exists()


def test_token_file_of_another_model_is_refused(bundled) -> None:  # noqa: ANN001
    from entanglecodec.codec.tokens import TokenFileError, load_tokens

    tf = load_tokens(LEGACY_TOKENS)
    with pytest.raises(TokenFileError, match="another checkpoint"):
        tf.check_compatible(["0123456789abcdef"], bundled.codebook_size)


def test_bundled_checkpoint_round_trips_training_tensors(bundled, tmp_path: Path) -> None:  # noqa: ANN001
    from entanglecodec import EntangleCodec

    assert set(bundled.training_tensors) == {"logit_scale"}
    fp = bundled.fingerprint()
    again = EntangleCodec.from_pretrained(bundled.save_pretrained(tmp_path / "c"), build_text_encoder=False)
    assert again.fingerprint() == fp
    assert torch.equal(again.training_tensors["logit_scale"], bundled.training_tensors["logit_scale"])


def test_flat_vocoder_configs_of_old_releases_load(tmp_path: Path) -> None:
    """Vocoder configs written before the mel analysis was nested (flat ``mel_n_fft``, ``n_mels``,
    ``sample_rate``, ...; the bundled vocoder's until session 9) still load, to the same model."""
    import json
    import shutil

    from entanglecodec.vocoder.model import Vocoder

    src = REPO / "checkpoints" / "vocoder-small"
    raw = json.loads((src / "config.json").read_text())
    mel = raw.pop("mel")
    flat = {**raw, "hop_length": mel["hop_length"], "n_mels": mel["n_mels"], "sample_rate": mel["sample_rate"],
            **{f"mel_{k}": mel[k] for k in ("n_fft", "win_length", "f_min", "f_max", "log_floor")}}
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(src / "model.safetensors", old / "model.safetensors")
    (old / "config.json").write_text(json.dumps(flat))
    voc = Vocoder.from_pretrained(old)
    assert voc.config.to_dict() == Vocoder.from_pretrained(src).config.to_dict()
    assert voc.config.mel.n_fft == 1024 and voc.config.hop_length == 480 and "mel" in voc.config.to_dict()
