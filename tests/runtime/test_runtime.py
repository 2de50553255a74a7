"""The ONNX runtime: NumPy DSP equals the torch DSP; a compiled tiny codec gives the torch model's
tokens and audio (float32); the cache key follows the weights; the CLI picks, builds and refuses
backends as documented, and its ONNX path never imports torch."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from entanglecodec import EntangleCodec, EntangleCodecConfig
from entanglecodec.audio import CenteredSTFT, MelFrontend
from entanglecodec.cli import app
from entanglecodec.codec.sampling import TokenError
from entanglecodec.config import MelConfig
from entanglecodec.runtime import (
    OnnxCodec,
    RuntimeFolderError,
    build_runtime,
    dsp,
    find_runtime,
    onnx_codec,
    resolve_pair,
    runtime_key,
)
from entanglecodec.vocoder.config import VocoderConfig
from entanglecodec.vocoder.mel_consistency import MelConsistencyFilter
from entanglecodec.vocoder.model import Vocoder

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
runner = CliRunner()


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 24000)) / 24000
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    x = sum(0.2 / k * np.sin(2 * np.pi * k * np.cumsum(f0) / 24000) for k in range(1, 8))
    return (x * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- DSP
def test_numpy_dsp_equals_the_torch_dsp() -> None:
    cfg = MelConfig()
    wav = _signal(1.3)
    front = MelFrontend(cfg)
    for start, n in ((0, 66), (7, 20), (60, 6)):  # interior ranges and the clip's end (zero padding)
        want = front.power_spectrogram(torch.from_numpy(wav)[None], start, n)[0].numpy()
        got = dsp.power_frames(wav, start, n, cfg.n_fft, cfg.hop_length, dsp.hann(cfg.n_fft))
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5 * float(want.max()))
    stft = CenteredSTFT(cfg)
    spec_t = stft.stft(torch.from_numpy(wav)[None])
    spec_n = dsp.stft(wav, cfg.n_fft, cfg.hop_length, dsp.hann(cfg.n_fft))
    np.testing.assert_allclose(spec_n.T, spec_t[0].numpy(), atol=1e-3)
    inv_t = stft.istft(spec_t, wav.shape[0])[0].numpy()
    np.testing.assert_allclose(dsp.istft(spec_n, cfg.hop_length, dsp.hann(cfg.n_fft), wav.shape[0]), inv_t, atol=1e-5)
    np.testing.assert_allclose(inv_t, wav, atol=1e-4)  # and it really inverts
    # the vocoder head's inverse STFT (n_fft 1920, a multiple of the hop) and the consistency filter
    voc = Vocoder(VocoderConfig.preset("tiny")).eval()
    log_mel = front.log_mel(torch.from_numpy(wav)[None])
    with torch.no_grad():
        mag, phase = voc.spectrum(log_mel)
        head = voc.head.istft(mag, phase)[0].numpy()
        filtered = MelConsistencyFilter(cfg)(torch.from_numpy(head)[None], log_mel, None, 4, 1.5)[0].numpy()
    spec = (mag * torch.exp(1j * phase))[0].numpy()
    got = dsp.istft(spec, voc.config.hop_length, dsp.hann(voc.config.n_fft), head.shape[0])
    np.testing.assert_allclose(got, head, atol=1e-5 * max(1.0, float(np.abs(head).max())))
    ours = dsp.consistency_filter(head, log_mel[0].numpy(), front.fb.numpy(), 4, 1.5, cfg.n_fft, cfg.hop_length, cfg.log_floor)
    np.testing.assert_allclose(ours, filtered, atol=2e-4 * max(1.0, float(np.abs(filtered).max())))


def test_numpy_pulse_phase_equals_the_torch_one() -> None:
    from entanglecodec.codec.pitch import F0_CEIL_HZ, F0_FLOOR_HZ, pulse_excitation

    cfg = MelConfig()
    g = torch.Generator().manual_seed(0)
    f0, voiced = torch.rand(1, 66, generator=g) * 300 + 70, torch.rand(1, 66, generator=g) > 0.4
    for (start, n), interp in itertools.product(((0, 66 * 480), (1234, 9000)), (False, True)):
        want = pulse_excitation(f0, voiced, 480, 24000, start, n, interpolate=interp)[0].numpy()
        got = dsp.pulse_excitation(
            f0[0].numpy(), voiced[0].numpy(), 480, 24000, start, n, F0_FLOOR_HZ, F0_CEIL_HZ, interp
        )
        assert (got != want).sum() <= 2  # float64 cycle sums may put a pulse one sample apart
    wav = _signal(1.32)
    exc = pulse_excitation(f0, voiced, 480, 24000)[0].numpy()
    for max_hz in (0.0, 3000.0):
        want = MelConsistencyFilter(cfg).adopt_phase(torch.from_numpy(wav)[None], torch.from_numpy(exc)[None], max_hz)[0]
        got = dsp.adopt_phase(wav, exc, cfg.n_fft, cfg.hop_length, cfg.sample_rate, max_hz)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4 * max(1.0, float(want.abs().max())))


# ---------------------------------------------------------------------------------------------- model
def _tiny_pair(root: Path, pulse_phase: bool = False, **decoder: Any) -> tuple[Path, Path]:
    torch.manual_seed(0)
    voc_dir = Vocoder(VocoderConfig.preset("tiny")).save_pretrained(root / "voc")
    cfg = EntangleCodecConfig.preset("tiny")
    cfg.max_frames, cfg.window_context = 40, 6
    cfg.decoder.pitch_cond, cfg.decoder.guidance = True, 1.0
    cfg.decoder.pulse_phase, cfg.decoder.pulse_phase_max_hz = pulse_phase, 3000.0 if pulse_phase else 0.0
    for key, value in decoder.items():
        setattr(cfg.decoder, key, value)
    cfg.vocoder = str(voc_dir)
    model = EntangleCodec(cfg, build_text_encoder=False)
    with torch.no_grad():  # a decoder that does something: non-zero output layers
        for p in (model.decoder.out.weight, model.decoder.harmonic_depth.weight):
            p.normal_(0, 0.05)
    return model.save_pretrained(root / "codec"), Path(voc_dir)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny pitch-conditioned codec with guidance 1 (two flow passes) and windows of 40 frames,
    and a tiny neural vocoder; both saved as checkpoint folders (the codec names the vocoder)."""
    return _tiny_pair(tmp_path_factory.mktemp("rt"))


@pytest.mark.parametrize(
    "options", [{}, {"pulse_f0": "linear", "pulse_voiced_prob": 0.3, "noise_scale": 0.6, "vocoder_passes": 1}]
)
def test_runtime_follows_the_pulse_phase_option(
    tmp_path: Path, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """decoder.pulse_phase (and its F0 shape and voicing threshold; and decoder.noise_scale / vocoder_passes): the runtime runs the pitch
    predictor's graph and builds the same pulse train window by window, so its audio stays the torch model's."""
    codec_dir, voc_dir = _tiny_pair(tmp_path, pulse_phase=True, **options)
    model = EntangleCodec.from_pretrained(codec_dir, build_text_encoder=False)
    rt = OnnxCodec(build_runtime(codec_dir, voc_dir), threads=2)
    assert rt.meta["pulse_phase"]["max_hz"] == 3000.0
    assert rt.meta["pulse_phase"]["interpolate"] == (options.get("pulse_f0") == "linear")
    assert rt.meta["noise_scale"] == options.get("noise_scale", 1.0)  # decoder.noise_scale: applied to the noise input
    own = model.vocoder.config.consistency_passes
    assert rt.meta["vocoder"]["consistency_passes"] == options.get("vocoder_passes", own)  # decoder.vocoder_passes
    codes = model.encode(torch.from_numpy(_signal(3.1, seed=5)), 24000).codes[0].numpy()
    audio = model.decode(torch.from_numpy(codes), seed=3, precision="float32").wav[0].numpy()
    got = rt.decode(codes, seed=3)
    np.testing.assert_allclose(got, audio, atol=1e-3 * max(1.0, float(np.abs(audio).max())))
    if "vocoder_passes" in options:  # the codec's setting reaches the torch vocoder too
        model.config.decoder.vocoder_passes = None
        assert not np.allclose(model.decode(torch.from_numpy(codes), seed=3, precision="float32").wav[0].numpy(), audio)
    model.config.decoder.pulse_phase = False
    assert not np.allclose(model.decode(torch.from_numpy(codes), seed=3, precision="float32").wav[0].numpy(), audio)
    whole = rt.pitch(codes)
    assert whole is not None
    monkeypatch.setattr(onnx_codec, "PREDICT_CHUNK_FRAMES", 37)  # long clips: chunks with context, same contour
    parts = rt.pitch(codes)
    assert parts is not None
    np.testing.assert_allclose(parts[0], whole[0], rtol=1e-4)
    assert (parts[1] == whole[1]).mean() > 0.99


@pytest.fixture(scope="module")
def compiled(pair: tuple[Path, Path]) -> Path:
    assert "entanglecodec-test-cache" in os.environ["ENTANGLECODEC_CACHE"]  # tests/conftest.py: never the user's cache
    return build_runtime(*pair)


def test_compiled_runtime_gives_the_torch_tokens_and_audio(pair: tuple[Path, Path], compiled: Path) -> None:
    model = EntangleCodec.from_pretrained(pair[0], build_text_encoder=False)
    rt = OnnxCodec(compiled, threads=2)
    assert rt.fingerprint() == model.fingerprint() and rt.codebook_size == model.codebook_size
    assert find_runtime(*pair) == compiled
    for seconds in (0.5, 3.1):  # one window, then 156 frames in windows of 40 (seams, batches of windows)
        wav = _signal(seconds, seed=int(seconds * 10))
        want = model.encode(torch.from_numpy(wav), 24000).codes[0].numpy()
        codes = rt.encode(wav, 24000)
        assert codes.shape == want.shape and (codes == want).mean() >= 0.99
        audio = model.decode(torch.from_numpy(want), seed=3, precision="float32").wav[0].numpy()
        got = rt.decode(want, seed=3)
        assert got.shape == audio.shape
        np.testing.assert_allclose(got, audio, atol=1e-4 * max(1.0, float(np.abs(audio).max())))
        assert not np.allclose(rt.decode(want, seed=4), got)  # the seed matters, as on torch
    resampled = rt.encode(_signal(1.0)[::3].copy(), 8000)  # other rates are resampled like torch's
    assert resampled.shape == (50,)


def test_runtime_refuses_bad_input(compiled: Path, pair: tuple[Path, Path], tmp_path: Path) -> None:
    from entanglecodec.audio_io import AudioError

    rt = OnnxCodec(compiled)
    with pytest.raises(TokenError, match=r"lie in \[0, 64\)"):
        rt.decode(np.array([1, 2, 64]))
    with pytest.raises(TokenError, match="integers"):
        rt.decode(np.array([1.0, 2.0]))
    with pytest.raises(TokenError, match="num_samples"):
        rt.decode(np.array([1, 2]), num_samples=5000)
    with pytest.raises(AudioError, match="NaN"):
        rt.encode(np.array([0.0, np.nan] * 100, dtype=np.float32), 24000)
    with pytest.raises(AudioError, match="mono"):
        rt.encode(np.zeros((2, 100), dtype=np.float32), 24000)
    with pytest.raises(RuntimeFolderError, match="not a readable runtime folder"):
        OnnxCodec(tmp_path)


def test_the_key_follows_the_weights_and_damaged_folders_are_rebuilt(
    pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    codec_dir, voc_dir = pair
    other = tmp_path / "voc2"
    shutil.copytree(voc_dir, other)
    torch.manual_seed(1)
    Vocoder(VocoderConfig.preset("tiny")).save_pretrained(other)
    assert runtime_key(codec_dir, other) != runtime_key(codec_dir, voc_dir)
    assert resolve_pair(codec_dir, None) == (codec_dir, voc_dir)  # the vocoder the checkpoint names
    folder = tmp_path / "damaged"
    monkeypatch.setenv("ENTANGLECODEC_CACHE", str(folder))
    built = build_runtime(codec_dir, voc_dir)
    assert find_runtime(codec_dir, voc_dir) == built
    data = (built / "decoder.onnx").read_bytes()
    (built / "decoder.onnx").write_bytes(data[: len(data) // 2])  # an interrupted copy, a full disk
    assert find_runtime(codec_dir, voc_dir) is None
    assert build_runtime(codec_dir, voc_dir) == built and find_runtime(codec_dir, voc_dir) == built
    assert resolve_pair(codec_dir, "griffin-lim") == (codec_dir, None)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_backends(pair: tuple[Path, Path], compiled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    codec_dir = str(pair[0])
    clip = tmp_path / "in.wav"
    sf.write(clip, _signal(2.2), 24000)
    monkeypatch.setenv("ENTANGLECODEC_DECODE_PRECISION", "float32")
    outs = {}
    for backend in ("onnx", "torch"):
        outs[backend] = tmp_path / f"{backend}.wav"
        r = runner.invoke(app, ["reconstruct", str(clip), "-o", str(outs[backend]), "-c", codec_dir, "--backend", backend])
        assert r.exit_code == 0, r.output
    a, b = sf.read(outs["onnx"])[0], sf.read(outs["torch"])[0]
    assert a.shape == b.shape and np.abs(a - b).max() < 2e-3  # 16-bit files of the same audio
    tok = tmp_path / "t.npz"
    assert runner.invoke(app, ["encode", str(clip), "-o", str(tok), "-c", codec_dir, "--backend", "onnx"]).exit_code == 0
    r = runner.invoke(app, ["decode", str(tok), "-o", str(tmp_path / "d.wav"), "-c", codec_dir, "--backend", "onnx"])
    assert r.exit_code == 0, r.output
    # settings the compiled graph does not hold: auto falls back to torch, onnx says why in one line
    r = runner.invoke(app, ["decode", str(tok), "-o", str(tmp_path / "d2.wav"), "-c", codec_dir, "--steps", "2", "--backend", "onnx"])
    assert r.exit_code == 1 and "cannot run 2 Euler steps" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["decode", str(tok), "-o", str(tmp_path / "d3.wav"), "-c", codec_dir, "--guidance", "0.5"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["reconstruct", str(clip), "-o", str(tmp_path / "x.wav"), "-c", codec_dir, "--backend", "gpu"])
    assert r.exit_code == 2 and "auto, torch, onnx" in r.output
    from entanglecodec.cli.common import ONNX_AUTO_MAX_SECONDS, onnx_runtime

    assert onnx_runtime("auto", pair[0], audio_seconds=ONNX_AUTO_MAX_SECONDS) is not None
    assert onnx_runtime("auto", pair[0], audio_seconds=ONNX_AUTO_MAX_SECONDS + 1) is None  # long audio: torch
    assert onnx_runtime("onnx", pair[0], audio_seconds=ONNX_AUTO_MAX_SECONDS + 1) is not None


def test_cli_onnx_path_never_imports_torch(pair: tuple[Path, Path], compiled: Path, tmp_path: Path) -> None:
    clip = tmp_path / "in.wav"
    sf.write(clip, _signal(1.0), 24000)
    code = (
        "import sys\nfrom entanglecodec.cli import main\nsys.argv = ['entanglecodec'] + sys.argv[1:]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'lightning', 'vector_quantize_pytorch') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    for args in (["reconstruct", str(clip), "-o", str(tmp_path / "o.wav")], ["encode", str(clip), "-o", str(tmp_path / "o.npz")]):
        r = subprocess.run([sys.executable, "-c", code, *args, "-c", str(pair[0])], capture_output=True, text=True,
                           env={**os.environ}, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    meta = json.loads((compiled / "runtime.json").read_text())
    assert meta["guidance"] == 1.0 and meta["max_frames"] == 40
