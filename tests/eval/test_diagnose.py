"""`entanglecodec eval diagnose`: gradient norms, pitch probes and decode F0 accuracy on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from entanglecodec import EntangleCodec, EntangleCodecConfig
from entanglecodec.eval.metrics import compare_f0


def _speech_like(path: Path, f0: float, seed: int) -> None:
    sr, rng = 24000, np.random.default_rng(seed)
    t = np.arange(int(1.6 * sr)) / sr
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6)) * (t < 1.0)
    noise = rng.standard_normal(t.size) * 0.05 * (t >= 1.0)
    sf.write(path, (0.3 * voiced + noise).astype(np.float32), sr)


def test_f0_comparison_known_cases():
    ref = np.array([0, 100, 110, 120, 0, 130.0])
    same = compare_f0(ref, ref)
    assert same.vuv_f1 == 1.0 and same.rmse_cents == 0.0 and abs(same.correlation - 1) < 1e-9 and same.frames == 4
    up = compare_f0(ref, ref * 2 ** (1 / 12))
    assert abs(up.rmse_cents - 100) < 1e-6
    none = compare_f0(ref, np.zeros(6))
    assert none.vuv_f1 == 0.0 and none.frames == 0 and np.isnan(none.rmse_cents)
    assert compare_f0(np.zeros(4), np.zeros(4)).vuv_f1 == 1.0  # both unvoiced everywhere: they agree


@pytest.mark.parametrize("variant", ["paper", "pitch-cond-bypass"])
def test_diagnose_cli_writes_report(tmp_path, variant):
    """Also for pitch-conditioned decoders (the bundled model) and the VQ-bypass control."""
    torch.manual_seed(0)
    cfg = EntangleCodecConfig.preset("tiny")
    extra = []
    if variant == "pitch-cond-bypass":  # also the Whisper teacher's probes (tiny.en: fast)
        extra = ["--teacher", "tiny.en"]
        cfg.decoder.pitch_cond = True
        cfg.quantizer.bypass = True
    ckpt = EntangleCodec(cfg).save_pretrained(tmp_path / "ckpt")
    rows = []
    for i in range(4):
        _speech_like(tmp_path / f"c{i}.flac", 110 + 40 * i, i)
        rows.append({"id": f"c{i}", "audio": f"c{i}.flac", "duration": 1.6, "domain": "speech", "split": "valid",
                     "text": "a", "caption": "a voice"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rep" / "diag"
    cmd = [sys.executable, "-m", "entanglecodec.cli", "eval", "diagnose", str(ckpt), "-m", str(manifest),
           "-o", str(out), "--threads", "1", "--decode", "1:1", "--decode", "2:0", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(out.with_suffix(".json").read_text())
    # a fresh decoder has a zero output layer, so only the commitment term reaches the encoder yet
    assert set(doc["gradients"]) >= {"flow", "vq"} and doc["gradients"]["vq"]["encoder_grad_norm"] > 0
    assert set(doc["probes"]) == {"chance", "mel", "H", "h~", "Z_q"}
    assert set(doc["decode"]) == {"steps=1 guidance=1", "steps=2 guidance=0"}
    if variant == "paper":
        assert doc["predictor"] is None and doc["semantic"] is None
    else:  # the pitch-conditioned model's own predictor is scored against the tracker's voicing and F0
        pred = doc["predictor"]
        assert 0.0 <= pred["vuv_acc"] <= 1.0 and 0.0 <= pred["vuv_f1"] <= 1.0 and pred["voiced_frames"] > 0
        assert "own pitch predictor" in out.with_suffix(".md").read_text()
        assert set(doc["semantic"]) == {"chance", "mel", "h~", "Z_q"} and "Whisper-tiny.en" in out.with_suffix(".md").read_text()
    assert "Pitch probes" in out.with_suffix(".md").read_text()
    bad = subprocess.run(cmd[:5] + [str(tmp_path / "nope"), "-m", str(manifest), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a codec checkpoint" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run(cmd[:-4 - len(extra)] + ["--decode", "eight"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--decode 'eight'" in bad.stderr and "Traceback" not in bad.stderr


def test_predictor_pitch_scores_the_predictor_against_the_tracker(tmp_path):
    """A predictor that returns the tracker's contour scores 0 cents and full voicing; one an octave
    high scores 1 200 cents; models without a predictor give None."""
    from entanglecodec.eval import codec_diagnosis as cd

    torch.manual_seed(0)
    cfg = EntangleCodecConfig.preset("tiny")
    assert cd.predictor_pitch(EntangleCodec(cfg), []) is None
    cfg.decoder.pitch_cond = True
    model = EntangleCodec(cfg)
    clips = []
    for i in range(2):
        _speech_like(tmp_path / f"c{i}.wav", 120 + 60 * i, i)
        wav, _ = sf.read(tmp_path / f"c{i}.wav", dtype="float32")
        clips.append(cd.Clip(id=f"c{i}", wav=wav, speaker=f"s{i}"))
    n = [x.shape[0] for x in cd.features(model, clips)["Z_q"]]
    targets = iter(cd._frame_targets(clips, n))
    shift = {"octaves": 0.0}

    def oracle(zq):
        f0 = torch.from_numpy(next(targets))[None]
        octaves = torch.log2(f0.clamp_min(1.0) / cd.F0_REFERENCE_HZ) + shift["octaves"]
        return torch.where(f0 > 0, 5.0, -5.0), octaves

    assert model.pitch is not None
    model.pitch.predict = oracle  # type: ignore[method-assign]
    exact = cd.predictor_pitch(model, clips)
    assert exact is not None and exact["voiced_frames"] > 20
    assert exact["vuv_acc"] == 1.0 and exact["vuv_f1"] == 1.0 and exact["f0_cents_mean"] < 1e-3
    targets = iter(cd._frame_targets(clips, n))
    shift["octaves"] = 1.0
    high = cd.predictor_pitch(model, clips)
    assert high is not None and abs(high["f0_cents_median"] - 1200.0) < 1e-2


def test_semantic_probes_read_a_teacher_the_mel_determines(tmp_path):
    """A teacher whose frames are the 20 ms energy of the clip: the mel's probe explains most of it, the
    mean frame (chance) none; every feature gets a cosine and an R^2."""
    from entanglecodec.eval import codec_diagnosis as cd

    def energy(wav16k: np.ndarray) -> np.ndarray:
        n = -(-wav16k.size // 320)
        pad = np.zeros(n * 320, dtype=np.float32)
        pad[: wav16k.size] = wav16k
        rms = np.sqrt((pad.reshape(n, 320) ** 2).mean(axis=1))
        return np.stack([rms, np.log(rms + 1e-3)], axis=1)

    torch.manual_seed(0)
    model = EntangleCodec(EntangleCodecConfig.preset("tiny"))
    clips = []
    for i in range(6):
        _speech_like(tmp_path / f"c{i}.wav", 100 + 30 * i, i)
        wav, _ = sf.read(tmp_path / f"c{i}.wav", dtype="float32")
        clips.append(cd.Clip(id=f"c{i}", wav=wav, speaker=f"s{i}"))
    res = cd.semantic_probes(model, clips, encode=energy)
    assert set(res) == {"chance", "mel", "h~", "Z_q"}
    assert res["mel"]["r2"] > 0.5 and abs(res["chance"]["r2"]) < 0.05 and res["mel"]["cosine"] > res["chance"]["cosine"]
