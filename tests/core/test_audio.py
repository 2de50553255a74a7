import math

import numpy as np
import pytest
import soundfile as sf
import torch

from entanglecodec.audio import (
    AudioError,
    MelFrontend,
    as_batch,
    compute_mel_stats,
    load_audio,
    mel_filterbank,
    num_frames,
    resample_tensor,
)
from entanglecodec.config import MelConfig


@pytest.mark.parametrize("s", [1, 479, 480, 481, 960, 24000, 24001, 12345])
def test_frame_arithmetic(s):
    fe = MelFrontend(MelConfig())
    mel = fe(torch.randn(1, s) * 0.1)
    assert mel.shape == (1, 128, math.ceil(s / 480))
    assert num_frames(s) == math.ceil(s / 480)


def test_padded_batch_mel_equals_single():
    fe = MelFrontend(MelConfig())
    torch.manual_seed(0)
    a, b = torch.randn(24000) * 0.1, torch.randn(13001) * 0.1
    batch = torch.zeros(2, 24000)
    batch[0], batch[1, :13001] = a, b
    batch[1, 13001:] = 0.7  # garbage padding must not leak in
    lens = torch.tensor([24000, 13001])
    mb = fe(batch, lens)
    mb_b = fe(b[None])
    f_b = math.ceil(13001 / 480)
    torch.testing.assert_close(mb[1, :, :f_b], mb_b[0], atol=1e-5, rtol=1e-5)
    assert torch.all(mb[1, :, f_b:] == 0)


def test_filterbank_shape_and_coverage():
    fb = mel_filterbank(24000, 1024, 128)
    assert fb.shape == (128, 513)
    assert (fb >= 0).all() and (fb.sum(1) > 0).all()


def test_mel_is_log_power():
    cfg = MelConfig()
    fe = MelFrontend(cfg)
    t = torch.arange(24000) / 24000
    x = 0.5 * torch.sin(2 * math.pi * 1000 * t)
    lm1 = fe.log_mel(x[None])
    lm2 = fe.log_mel(2 * x[None])  # power doubles amplitude -> +log(4)
    peak = lm1[0, :, 10:40].mean(1).argmax()
    assert float((lm2 - lm1)[0, peak, 10:40].mean()) == pytest.approx(math.log(4), abs=1e-3)


def test_load_audio_downmix_resample(tmp_path):
    sr = 16000
    st = np.stack([np.ones(sr) * 0.2, np.ones(sr) * 0.4], axis=1).astype(np.float32)
    sf.write(tmp_path / "st.flac", st, sr)
    wav, out_sr = load_audio(tmp_path / "st.flac", 24000)
    assert out_sr == 24000 and abs(wav.size - 24000) <= 1
    assert abs(float(np.median(wav)) - 0.3) < 1e-2


def test_load_audio_errors(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "text.wav").write_text("this is not audio")
    with pytest.raises(AudioError, match="cannot be read as audio"):
        load_audio(tmp_path / "text.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 24000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)


def test_as_batch_validation():
    with pytest.raises(AudioError, match="empty"):
        as_batch(torch.zeros(0))
    with pytest.raises(AudioError, match="NaN or Inf"):
        as_batch(torch.tensor([0.0, float("nan")]))
    with pytest.raises(AudioError, match="exceed"):
        as_batch(torch.zeros(2, 10), [10, 11])
    with pytest.raises(AudioError, match=">= 1"):
        as_batch(torch.zeros(2, 10), [10, 0])
    with pytest.raises(AudioError, match=r"\[S\] or \[B, S\]"):
        as_batch(torch.zeros(1, 2, 3))
    x = torch.zeros(2, 4)
    x[1, 3] = float("inf")  # inf in padding is ignored and zeroed
    w, lens = as_batch(x, [4, 3])
    assert torch.isfinite(w).all() and lens.tolist() == [4, 3]


def test_resample_tensor_lengths():
    x = torch.randn(2, 16000)
    y, lens = resample_tensor(x, 16000, 24000, torch.tensor([16000, 8000]))
    assert lens.tolist() == [24000, 12000]
    assert y.shape == (2, 24000)
    with pytest.raises(AudioError, match="positive"):
        resample_tensor(x, 0, 24000)


def test_mel_stats(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", (rng.standard_normal(24000) * 0.1).astype(np.float32), 24000)
    mean, std, n = compute_mel_stats(sorted(tmp_path.glob("*.wav")))
    assert mean.shape == (128,) and std.shape == (128,) and n == 3 * 50
    fe = MelFrontend(MelConfig())
    fe.set_stats(mean, std)
    mel = fe(torch.from_numpy(load_audio(tmp_path / "0.wav")[0])[None])
    assert abs(float(mel.mean())) < 0.5 and 0.5 < float(mel.std()) < 1.5


@pytest.mark.parametrize("n_samples", [480 * 7, 480 * 7 + 123])
def test_centered_stft_frames_and_inverse_match_torch(n_samples: int) -> None:
    """``CenteredSTFT`` has MelFrontend's frames (plus one on the end) and inverts like ``torch.istft``."""
    from entanglecodec.audio import CenteredSTFT

    cfg = MelConfig()
    st = CenteredSTFT(cfg)
    wav = torch.randn(2, n_samples, generator=torch.Generator().manual_seed(0)) * 0.1
    spec = st.stft(wav)
    fe = MelFrontend(cfg)
    n_frames = fe.log_mel(wav).shape[-1]
    assert spec.shape == (2, cfg.n_fft // 2 + 1, n_samples // cfg.hop_length + 1)
    torch.testing.assert_close(spec.abs().square()[..., :n_frames], fe.power_spectrogram(wav)[..., :n_frames])
    torch.testing.assert_close(st.istft(spec, n_samples), wav, atol=1e-5, rtol=0)
    # an arbitrary (inconsistent) spectrum is inverted exactly as torch.istft does
    g = torch.Generator().manual_seed(1)
    other = torch.polar(torch.rand(spec.shape, generator=g), 6.28 * torch.rand(spec.shape, generator=g))
    ref = torch.istft(
        other, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window=torch.hann_window(cfg.win_length), center=True, length=n_samples,
    )
    torch.testing.assert_close(st.istft(other, n_samples), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("n", "hop"), [(8, 4), (10, 4), (5, 5), (3, 4)])
def test_overlap_add_matches_fold(n: int, hop: int) -> None:
    """The slice-addition overlap-add equals ``F.fold`` with the window and per-frame gains applied,
    also when the frame length is not a multiple of the hop (or shorter than it)."""
    from entanglecodec.audio import overlap_add

    g = torch.Generator().manual_seed(0)
    frames = torch.randn(2, 7, n, generator=g)
    window = torch.rand(n, generator=g)
    gain = (torch.rand(2, 7, 1, generator=g) > 0.3).float()
    total = 6 * hop + n

    def fold(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.fold(x.transpose(1, 2), output_size=(1, total), kernel_size=(1, n), stride=(1, hop)).reshape(2, total)

    torch.testing.assert_close(overlap_add(frames, hop), fold(frames))
    torch.testing.assert_close(overlap_add(frames, hop, window), fold(frames * window))
    torch.testing.assert_close(overlap_add(frames, hop, window, gain), fold(frames * window * gain))
    torch.testing.assert_close(overlap_add(frames, hop, frame_gain=gain), fold(frames * gain))
