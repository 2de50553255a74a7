"""Streamed decoding (codec/streaming.py ``decode_stream``): the pieces join into the in-memory
decode, the noise is drawn piece by piece, and ``entanglecodec decode`` writes long files as they come."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from entanglecodec import EntangleCodec, EntangleCodecConfig
from entanglecodec.audio import AudioError, AudioWarning, save_audio
from entanglecodec.audio_io import save_audio_stream
from entanglecodec.cli import app
from entanglecodec.codec import model as model_module
from entanglecodec.codec import streaming
from entanglecodec.codec.sampling import NoiseStream, TokenError, decode_noise
from entanglecodec.codec.tokens import TokenFile, save_tokens
from entanglecodec.vocoder.model import Vocoder, VocoderConfig


def test_noise_stream_slices_are_the_whole_draw() -> None:
    whole = decode_noise(7, 16, 1234)
    noise = NoiseStream(7, 16, 1234, chunk=100)
    for a, b in ((0, 100), (37, 640), (99, 101), (1200, 1234), (500, 500)):
        assert np.array_equal(noise.slice(a, b), whole[:, a:b]), (a, b)
    with pytest.raises(ValueError, match="outside"):
        noise.slice(1200, 1300)


@pytest.fixture(scope="module")
def pulse_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pitch-conditioned codec with pulse phase, 40-frame windows and a tiny neural vocoder."""
    root = tmp_path_factory.mktemp("stream")
    torch.manual_seed(0)
    voc_dir = Vocoder(VocoderConfig.preset("tiny")).save_pretrained(root / "voc")
    cfg = EntangleCodecConfig.preset("tiny")
    cfg.max_frames, cfg.window_context = 40, 6
    cfg.decoder.pitch_cond, cfg.decoder.pulse_phase = True, True
    cfg.vocoder = str(voc_dir)
    m = EntangleCodec(cfg, build_text_encoder=False)
    with torch.no_grad():
        for p in (m.decoder.out.weight, m.decoder.harmonic_depth.weight):
            p.normal_(0, 0.05)
    return m.save_pretrained(root / "codec")


@pytest.fixture
def short_vocoder_windows(monkeypatch: pytest.MonkeyPatch) -> int:
    """Vocoder windows of 70 frames instead of 1 500, so a few seconds cross several of them."""
    for mod in (model_module, streaming):
        monkeypatch.setattr(mod, "VOCODER_WINDOW_FRAMES", 70)
    return 70


def test_streamed_decode_joins_into_the_in_memory_decode(pulse_model: Path, short_vocoder_windows: int) -> None:
    m = EntangleCodec.from_pretrained(pulse_model, build_text_encoder=False)
    codes = torch.from_numpy(np.random.default_rng(0).integers(0, m.codebook_size, 333))
    n = 333 * 480 - 100
    want = m.decode(codes, num_samples=[n], seed=5, precision="float32").wav[0].numpy()
    pieces = list(streaming.decode_stream(m, codes, n, seed=5, precision="float32"))
    assert len(pieces) > 4 and max(p.shape[0] for p in pieces) <= short_vocoder_windows * 480
    got = np.concatenate(pieces)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-6 * max(1.0, float(np.abs(want).max())))
    short = list(streaming.decode_stream(m, codes[:50], None, seed=5, precision="float32"))  # one window: one piece
    assert len(short) == 1 and short[0].shape == (50 * 480,)
    m.config.decoder.noise_scale = 0.7  # the checkpoint's noise temperature reaches the streamed windows too
    scaled = m.decode(codes, num_samples=[n], seed=5, precision="float32").wav[0].numpy()
    got = np.concatenate(list(streaming.decode_stream(m, codes, n, seed=5, precision="float32")))
    np.testing.assert_allclose(got, scaled, atol=1e-6 * max(1.0, float(np.abs(scaled).max())))
    assert not np.allclose(scaled, want)
    m.config.decoder.noise_scale = 1.0
    with pytest.raises(TokenError, match="num_samples"):
        next(streaming.decode_stream(m, codes, 333 * 480 + 1))
    with pytest.raises(TokenError):
        next(streaming.decode_stream(m, codes + m.codebook_size))


def test_save_audio_stream_spools_and_scales_like_save_audio(tmp_path: Path) -> None:
    x = np.sin(np.linspace(0, 300, 50_000)).astype(np.float32) * 1.5  # over full scale: scaled as a whole
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioWarning)
        save_audio(tmp_path / "a.wav", x, 24000)
        save_audio_stream(tmp_path / "b.wav", (x[i : i + 7000] for i in range(0, x.size, 7000)), 24000)
    assert sf.read(tmp_path / "a.wav")[0].tolist() == sf.read(tmp_path / "b.wav")[0].tolist()
    bad = (np.full(10, v, dtype=np.float32) for v in (0.1, np.nan))
    with pytest.raises(AudioError, match="1 NaN/Inf|10 NaN/Inf"):
        save_audio_stream(tmp_path / "c.wav", bad, 24000)
    with pytest.raises(AudioError, match="empty"):
        save_audio_stream(tmp_path / "c.wav", iter([]), 24000)
    assert not (tmp_path / "c.wav").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav"]


def test_cli_torch_decode_streams_long_token_files(pulse_model: Path, short_vocoder_windows: int, tmp_path: Path) -> None:
    m = EntangleCodec.from_pretrained(pulse_model, build_text_encoder=False)
    wav = (np.random.default_rng(1).standard_normal(24000 * 5) * 0.1).astype(np.float32)
    tokens = m.encode(torch.from_numpy(wav), 24000)
    tf = TokenFile(codes=tokens.codes[0].numpy(), sample_rate=24000, num_samples=wav.size, frame_rate=50.0,
                   codebook_size=m.codebook_size, fingerprint=m.fingerprint())  # fmt: skip
    save_tokens(tmp_path / "t.npz", tf)
    res = CliRunner().invoke(app, ["decode", str(tmp_path / "t.npz"), "-o", str(tmp_path / "t.wav"), "-c", str(pulse_model),
                                   "--backend", "torch"])  # fmt: skip
    assert res.exit_code == 0, res.output
    want = m.decode(tokens.codes, num_samples=[wav.size]).wav[0].numpy()
    ref = tmp_path / "ref.wav"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioWarning)  # random weights: loud output, scaled as a whole
        save_audio(ref, want, 24000)
    assert np.abs(sf.read(tmp_path / "t.wav")[0] - sf.read(ref)[0]).max() <= 2 / 32768  # 16-bit rounding
