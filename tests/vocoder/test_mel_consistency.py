"""Mel-consistency filter: identity, gain recovery, convergence on a phase-scrambled signal,
padding invariance, errors; and how the vocoder applies it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from entanglecodec.audio import MelFrontend
from entanglecodec.config import ConfigError, MelConfig
from entanglecodec.vocoder.config import VocoderConfig
from entanglecodec.vocoder.load import load_vocoder
from entanglecodec.vocoder.mel_consistency import MelConsistencyFilter
from entanglecodec.vocoder.model import Vocoder

CFG = MelConfig()
HOP = CFG.hop_length


def _voiced(seconds: float, f0: float = 140.0, seed: int = 0) -> torch.Tensor:
    """Harmonic tone with a syllable-like envelope, ``[1, S]`` with ``S`` a multiple of the hop."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * CFG.sample_rate) // HOP * HOP
    t = torch.arange(n) / CFG.sample_rate
    wav = sum(0.2 / k * torch.sin(2 * torch.pi * f0 * k * t + 6.28 * torch.rand(1, generator=g)) for k in range(1, 12))
    env = 0.5 + 0.5 * torch.sin(2 * torch.pi * 3.0 * t)
    return (wav * env + 0.003 * torch.randn(n, generator=g))[None].float()


def _mel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    fe = MelFrontend(CFG)
    return float((fe.log_mel(a) - fe.log_mel(b)).abs().mean())


def test_a_signal_with_the_target_mel_is_left_alone() -> None:
    wav = _voiced(1.0)
    target = MelFrontend(CFG).log_mel(wav)
    out = MelConsistencyFilter(CFG)(wav, target, passes=3)
    torch.testing.assert_close(out, wav, atol=1e-4, rtol=0)


def test_a_gain_error_is_undone() -> None:
    wav = _voiced(1.0)
    target = MelFrontend(CFG).log_mel(wav)
    quiet = 0.3 * wav
    assert _mel_l1(quiet, wav) > 2.0
    f = MelConsistencyFilter(CFG)
    out = f(quiet, target, passes=1, step=1.0)
    torch.testing.assert_close(out, wav, atol=5e-3, rtol=0)
    # a quarter of the quiet copy's cells sit on the log floor, where one pass under-corrects
    assert _mel_l1(out, wav) < 0.1
    assert _mel_l1(f(quiet, target, passes=3, step=1.0), wav) < 0.02


def test_a_phase_scrambled_copy_moves_towards_the_target_mel() -> None:
    """Random STFT phases (an inconsistent spectrogram) blur the mel; the passes undo most of it."""
    wav = _voiced(1.5)
    f = MelConsistencyFilter(CFG)
    spec = f.stft.stft(wav)
    g = torch.Generator().manual_seed(1)
    phase = 2 * torch.pi * torch.rand(spec.shape, generator=g)
    scrambled = f.stft.istft(torch.polar(spec.abs(), phase), wav.shape[1])
    target = MelFrontend(CFG).log_mel(wav)
    before = _mel_l1(scrambled, wav)
    errors = [_mel_l1(f(scrambled, target, passes=k), wav) for k in (1, 2, 4)]
    assert errors[0] < before and errors[1] < errors[0] and errors[2] < errors[1]
    assert errors[2] < 0.5 * before


def test_padded_batch_equals_each_item_alone() -> None:
    f = MelConsistencyFilter(CFG)
    items = [_voiced(0.6, 120.0, 0), _voiced(0.3, 200.0, 1), _voiced(0.9, 90.0, 2)]
    frames = torch.tensor([x.shape[1] // HOP for x in items])
    wav = torch.zeros(3, int(frames.max()) * HOP)
    for i, x in enumerate(items):
        wav[i, : x.shape[1]] = 0.5 * x[0]  # a gain error for the filter to fix
    target = torch.full((3, CFG.n_mels, int(frames.max())), 50.0)  # garbage past each item's end
    fe = MelFrontend(CFG)
    for i, x in enumerate(items):
        target[i, :, : frames[i]] = fe.log_mel(x)[0]
    out = f(wav, target, frames, passes=2)
    for i, x in enumerate(items):
        n = int(frames[i])
        alone = f(0.5 * x, target[i : i + 1, :, :n], passes=2)[0]
        torch.testing.assert_close(out[i, : n * HOP], alone, atol=1e-5, rtol=0)
        if n < int(frames.max()):
            assert out[i, n * HOP :].abs().max().item() == 0.0


def test_bad_arguments_are_named() -> None:
    f = MelConsistencyFilter(CFG)
    wav, mel = torch.zeros(1, 10 * HOP), torch.zeros(1, CFG.n_mels, 10)
    with pytest.raises(ValueError, match="passes"):
        f(wav, mel, passes=-1)
    with pytest.raises(ValueError, match="step"):
        f(wav, mel, step=0.0)
    with pytest.raises(ValueError, match="samples but 10 mel frames"):
        f(torch.zeros(1, 9 * HOP), mel)
    assert f(wav, mel, passes=0) is wav


def test_vocoder_applies_the_configured_passes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    voc = Vocoder(VocoderConfig.preset("tiny")).eval()
    assert voc.config.consistency_passes == 6
    mel = MelFrontend(CFG).log_mel(_voiced(0.5))
    with torch.no_grad():
        raw = voc(mel, consistency_passes=0)
        filtered = voc(mel)
        by_hand = voc.consistency(raw, mel, None, 6, voc.config.consistency_step)
    torch.testing.assert_close(filtered, by_hand)
    assert _mel_l1(filtered, _voiced(0.5)) < _mel_l1(raw, _voiced(0.5))
    # the filter has no weights: checkpoints are unchanged, and a config.json without the fields
    # (written before they existed) loads with the default
    d = voc.save_pretrained(tmp_path / "voc")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["consistency_passes"] == 6
    del cfg["consistency_passes"], cfg["consistency_step"]
    (d / "config.json").write_text(json.dumps(cfg))
    loaded = load_vocoder(d)
    assert isinstance(loaded, Vocoder) and loaded.config.consistency_passes == 6
    raw_loaded = load_vocoder(d, consistency_passes=0)
    assert isinstance(raw_loaded, Vocoder)
    with torch.no_grad():
        torch.testing.assert_close(raw_loaded(mel), raw)
    with pytest.raises(ValueError, match="consistency_passes"):
        load_vocoder(d, consistency_passes=-2)
    with pytest.raises(ConfigError, match="consistency_passes"):
        VocoderConfig(consistency_passes=-1).validate()
