"""Vocoder model: shapes, exact lengths, padding invariance, save/load, loading by name."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from entanglecodec.audio import MelFrontend
from entanglecodec.config import ConfigError, MelConfig
from entanglecodec.vocoder.config import VocoderConfig
from entanglecodec.vocoder.load import MelVocoder, load_vocoder
from entanglecodec.vocoder.model import Vocoder, VocoderLoadError


def _random_tiny(seed: int = 0) -> Vocoder:
    torch.manual_seed(seed)
    voc = Vocoder(VocoderConfig.preset("tiny")).eval()
    with torch.no_grad():  # larger weights than the init so that every path matters
        for p in voc.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return voc


@pytest.mark.parametrize("frames", [1, 2, 7, 50])
def test_output_length_is_frames_times_hop(frames: int) -> None:
    voc = _random_tiny()
    wav = voc(torch.randn(2, 128, frames) - 5)
    assert wav.shape == (2, frames * 480)
    assert wav.dtype == torch.float32 and torch.isfinite(wav).all()


def test_frame_alignment_matches_mel_frontend() -> None:
    """Identity check of the synthesis geometry: analysing and re-synthesising one impulse."""
    voc = _random_tiny()
    cfg = voc.config
    assert cfg.n_fft % cfg.hop_length == 0
    # an impulse at sample 960 has a flat spectrum with phase -2*pi*k*(960 - f*hop + n_fft/2)/n_fft in frame f
    frames = 6
    n_bins = cfg.n_fft // 2 + 1
    k = torch.arange(n_bins, dtype=torch.float32)
    mag = torch.zeros(1, frames, n_bins)
    phase = torch.zeros(1, frames, n_bins)
    for f in range(frames):
        offset = 960 - f * cfg.hop_length + cfg.n_fft // 2
        if 0 <= offset < cfg.n_fft:
            w = float(voc.head.window[offset])
            mag[0, f] = w
            phase[0, f] = -2 * torch.pi * k * offset / cfg.n_fft
    y = voc.head.istft(mag, phase)
    assert y.shape == (1, frames * cfg.hop_length)
    assert int(y.abs().argmax()) == 960
    assert float(y[0, 960]) == pytest.approx(1.0, abs=1e-4)


def test_lengths_trim_and_batch_equals_single() -> None:
    voc = _random_tiny()
    lens = torch.tensor([23, 9, 1, 16])
    mel = torch.randn(4, 128, 23) * 2 - 5
    wav, samples = voc.vocode(mel, lens)
    assert wav.shape == (4, 23 * 480)
    assert samples.tolist() == (lens * 480).tolist()
    for i, n in enumerate(lens.tolist()):
        alone = voc(mel[i : i + 1, :, :n])[0]
        torch.testing.assert_close(wav[i, : n * 480], alone, atol=1e-5, rtol=1e-4)
        if n < 23:
            assert wav[i, n * 480 :].abs().max().item() == 0.0
    # garbage past the end of an item must not change anything
    mel2 = mel.clone()
    mel2[1, :, 9:] = 100.0
    torch.testing.assert_close(voc.vocode(mel2, lens)[0], wav, atol=1e-5, rtol=1e-4)


def test_on_real_mel_and_input_errors() -> None:
    voc = _random_tiny()
    fe = MelFrontend(MelConfig())
    wav = torch.randn(1, 24000) * 0.1
    out = voc(fe.log_mel(wav))
    assert out.shape == (1, 24000)
    with pytest.raises(ValueError, match="mel bins"):
        voc(torch.zeros(1, 80, 10))
    with pytest.raises(ValueError, match=r"\[B, 128, F\]"):
        voc(torch.zeros(128, 10))
    with pytest.raises(ValueError, match="frame lengths"):
        voc(torch.zeros(2, 128, 10), torch.tensor([10, 11]))
    with pytest.raises(ValueError, match="entries"):
        voc(torch.zeros(2, 128, 10), torch.tensor([10]))


def test_config_validation_and_presets() -> None:
    assert set(VocoderConfig.presets()) == {"tiny", "small", "base"}
    with pytest.raises(ConfigError, match="n_fft"):
        Vocoder(VocoderConfig(n_fft=800))
    with pytest.raises(ConfigError, match="unknown vocoder preset"):
        VocoderConfig.preset("huge")
    with pytest.raises(ConfigError, match="unknown config key"):
        VocoderConfig.from_dict({"dim": 8, "bogus": 1})
    VocoderConfig().check_mel(MelConfig())
    with pytest.raises(ConfigError, match="n_fft"):
        VocoderConfig().check_mel(MelConfig(n_fft=2048, win_length=2048))


def test_save_load_roundtrip(tmp_path: Path) -> None:
    voc = _random_tiny()
    voc.save_pretrained(tmp_path / "v")
    assert (tmp_path / "v" / "config.json").is_file() and (tmp_path / "v" / "model.safetensors").is_file()
    back = Vocoder.from_pretrained(tmp_path / "v")
    assert back.config == voc.config
    mel = torch.randn(2, 128, 12) - 5
    torch.testing.assert_close(back(mel), voc(mel))


def test_load_errors(tmp_path: Path) -> None:
    _random_tiny().save_pretrained(tmp_path / "v")
    cfg = json.loads((tmp_path / "v" / "config.json").read_text())
    cfg["dim"] = 48
    (tmp_path / "v" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VocoderLoadError, match="shape mismatch"):
        Vocoder.from_pretrained(tmp_path / "v")
    cfg["depth"] = 3
    cfg["dim"] = 32
    (tmp_path / "v" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VocoderLoadError, match="missing"):
        Vocoder.from_pretrained(tmp_path / "v")
    with pytest.raises(VocoderLoadError, match="not found"):
        Vocoder.from_pretrained(tmp_path / "nope")
    (tmp_path / "v" / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(VocoderLoadError, match="safetensors"):
        Vocoder.from_pretrained(tmp_path / "v")


def test_load_vocoder_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    gl = load_vocoder("griffin-lim", MelConfig())
    assert isinstance(gl, MelVocoder)
    assert gl(torch.randn(1, 128, 5) - 5, None).shape == (1, 5 * 480)
    _random_tiny().save_pretrained(tmp_path / "v")
    voc = load_vocoder(str(tmp_path / "v"), MelConfig())
    assert isinstance(voc, Vocoder) and isinstance(voc, MelVocoder)
    assert not any(p.requires_grad for p in voc.parameters())
    with pytest.raises(ConfigError, match="different mel"):
        load_vocoder(str(tmp_path / "v"), MelConfig(n_mels=80))
    with pytest.raises(VocoderLoadError, match="neither"):
        load_vocoder(str(tmp_path / "missing"), MelConfig())
    # "default" uses $ENTANGLECODEC_VOCODER / the shipped weights, else warns and falls back to Griffin-Lim
    monkeypatch.setenv("ENTANGLECODEC_VOCODER", str(tmp_path / "v"))
    assert isinstance(load_vocoder("default", MelConfig()), Vocoder)
    import entanglecodec.vocoder.load as vmod

    monkeypatch.setattr(vmod, "default_vocoder_dir", lambda: None)
    with caplog.at_level(logging.WARNING, logger="entanglecodec.vocoder.model"):
        fallback = load_vocoder("default", MelConfig())
    assert not isinstance(fallback, Vocoder)
    assert "Griffin-Lim" in caplog.text
