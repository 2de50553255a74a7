"""Semantic teacher frames (``entanglecodec data semantic``) and the ``loss.semantic`` term trained from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from entanglecodec import EntangleCodec, EntangleCodecConfig
from entanglecodec.cli import app
from entanglecodec.data.features import (
    FeatureDataset,
    FeatureError,
    collate_features,
    read_index,
    write_features,
)
from entanglecodec.data.semantic import (
    SEMANTIC_NAME,
    read_semantic,
    teacher_frames,
    whisper_encoder,
    write_semantic,
)
from entanglecodec.training.aux_losses import SemanticHead
from entanglecodec.training.recipe import load_recipe
from entanglecodec.training.run import export_run, run_training

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
runner = CliRunner()


class FakeTeacher:
    """A 16 kHz "encoder" whose frame ``i`` is [RMS of samples 320 i .. 320 (i + 1), 1, 2]; counts calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.longest = 0

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.longest = max(self.longest, wav.size)
        n = -(-wav.size // 320)
        pad = np.zeros(n * 320, dtype=np.float32)
        pad[: wav.size] = wav
        rms = np.sqrt((pad.reshape(n, 320) ** 2).mean(axis=1))
        return np.stack([rms, np.ones(n), np.full(n, 2.0)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def speech_features(corpus, tmp_path_factory) -> Path:
    """A tiny feature directory whose tone clips are labelled speech (the teacher reads only speech)."""
    root = tmp_path_factory.mktemp("semcorpus") / "corpus"
    shutil.copytree(corpus.parent, root)
    manifest = root / corpus.name
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    for r in rows:
        if r["attributes"]["kind"] == "tone":
            r["domain"], r["text"] = "speech", "a tone"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "features"
    write_features([manifest], out, EntangleCodecConfig.preset("tiny"), shard_mib=0.02)
    return out


def test_teacher_frames_line_up_with_the_codecs_frames():
    """Silence then a tone: the teacher's energy steps up at the mel frame where the tone starts; a clip
    longer than Whisper's 30 s window is encoded in windows of at most 30 s, one frame per mel frame."""
    sr = 24000
    wav = np.zeros(sr, dtype=np.float32)
    wav[sr // 2 :] = 0.5 * np.sin(2 * np.pi * 300 * np.arange(sr // 2) / sr)
    n = wav.size // 480 + 1
    teacher = FakeTeacher()
    frames = teacher_frames(wav, sr, n, teacher)
    assert frames.shape == (n, 3)
    assert np.all(frames[:24, 0] < 1e-3) and np.all(frames[26:-1, 0] > 0.2)  # the step is at frame 25 (0.5 s)
    long = np.tile(wav, 70)  # 70 s
    teacher = FakeTeacher()
    frames = teacher_frames(long, sr, long.size // 480 + 1, teacher)
    assert frames.shape[0] == long.size // 480 + 1 and teacher.calls == 3 and teacher.longest == 30 * 16000
    assert np.all(frames[-1] == frames[-2])  # the centred STFT's extra frame repeats the last teacher frame


def test_write_semantic_speech_only_resumable_and_refusals(speech_features, tmp_path):
    feats = tmp_path / "f"
    shutil.copytree(speech_features, feats)
    teacher = FakeTeacher()
    doc = write_semantic(feats, teacher, "fake")
    assert doc["dim"] == 3 and doc["teacher"] == "fake" and doc["mean"][1] == pytest.approx(1.0)
    ds = FeatureDataset(feats, "train", crop_seconds=None, crop_mode="start", semantic=True)
    for i in range(len(ds)):
        item = ds[i]
        assert item["semantic"].shape == (item["mel_length"], 3)
        speech = item["domain"] == "speech"
        assert bool(torch.all(item["semantic"][:, 1] == 1.0)) == speech and bool(item["semantic"].abs().sum() == 0) != speech
    batch = collate_features([ds[0], ds[1]])
    assert batch["semantic"].shape == (2, batch["log_mel"].shape[-1], 3)
    with pytest.raises(FeatureError, match="already holds semantic features"):
        write_semantic(feats, teacher, "fake")
    with pytest.raises(FeatureError, match="another teacher"):
        write_semantic(feats, teacher, "other", resume=True)
    # an interrupted run: one shard's record and the summary missing -> only that shard is redone
    shard = sorted(feats.glob("*.sem.json"))[0]
    shard.unlink()
    (feats / SEMANTIC_NAME).unlink()
    before = teacher.calls
    with pytest.raises(FeatureError, match="another teacher"):  # the shards say which teacher made them
        write_semantic(feats, teacher, "other", resume=True)
    again = write_semantic(feats, teacher, "fake", resume=True)
    assert again == doc and 0 < teacher.calls - before < before
    # a directory without teacher frames: one line that names the command
    with pytest.raises(FeatureError, match="entanglecodec data semantic"):
        FeatureDataset(speech_features, "train", crop_seconds=0.5, semantic=True)
    # another directory of the same clips borrows the frames instead of running the teacher again
    twin = tmp_path / "twin"
    shutil.copytree(speech_features, twin)
    with pytest.raises(FeatureError, match="another teacher"):
        write_semantic(twin, FakeTeacher(), "other", reuse=[feats])
    lazy = FakeTeacher()
    assert write_semantic(twin, lazy, "fake", reuse=[feats]) == doc
    assert lazy.calls == 0
    for name in sorted(p.name for p in feats.glob("*.sem.npy")):
        assert np.array_equal(np.load(twin / name), np.load(feats / name))


def test_write_semantic_in_parts_equals_one_run(speech_features, tmp_path):
    """``--part I/N``: two processes split the shards; the one that finishes last writes the summary,
    and the frames and statistics equal a single run's."""
    whole = tmp_path / "whole"
    shutil.copytree(speech_features, whole)
    doc = write_semantic(whole, FakeTeacher(), "fake")
    assert doc is not None
    split = tmp_path / "split"
    shutil.copytree(speech_features, split)
    shards = [n for s in read_index(split)["splits"].values() for n in s["shards"]]
    assert len(shards) >= 2
    first = FakeTeacher()
    assert write_semantic(split, first, "fake", part=(0, 2)) is None  # part 1 has not run: no summary yet
    assert not (split / SEMANTIC_NAME).exists()
    assert sorted(p.name for p in split.glob("*.sem.npy")) == sorted(f"{n}.sem.npy" for n in shards[0::2])
    second = FakeTeacher()
    assert write_semantic(split, second, "fake", part=(1, 2)) == doc
    assert first.calls > 0 and second.calls > 0
    for n in shards:
        assert np.array_equal(np.load(split / f"{n}.sem.npy"), np.load(whole / f"{n}.sem.npy"))
    again = FakeTeacher()  # a part rerun after the end finds its shards done and rewrites the same summary
    assert write_semantic(split, again, "fake", part=(0, 2)) == doc and again.calls == 0
    with pytest.raises(FeatureError, match="I/N"):
        write_semantic(split, FakeTeacher(), "fake", part=(2, 2))
    result = runner.invoke(app, ["data", "semantic", str(split), "--part", "3"])
    assert result.exit_code == 2 and "--part must be I/N" in result.output


def test_whisper_teacher_gives_50_frames_per_second():
    encode, name = whisper_encoder("tiny.en", threads=1)
    t = np.arange(16000) / 16000
    frames = encode((0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    assert frames.shape == (50, 384) and np.isfinite(frames).all() and "tiny.en" in name


def test_semantic_head_loss_is_zero_for_its_own_target_and_skips_silent_frames():
    head = SemanticHead(4, 3, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    zq = torch.randn(2, 10, 4)
    with torch.no_grad():
        target = head.net(zq.transpose(1, 2)).transpose(1, 2).clone()
    target[1] = 0.0  # a clip without speech
    mask = torch.ones(2, 10, dtype=torch.bool)
    out = head.loss(zq, target, mask)
    assert float(out["sem"].detach()) == pytest.approx(0.0, abs=1e-5) and float(out["sem_cos"]) == pytest.approx(1.0, abs=1e-5)
    flipped = head.loss(zq, -target, mask)
    assert float(flipped["sem"]) == pytest.approx(2.0, abs=1e-5)
    empty = head.loss(zq, torch.zeros_like(target), mask)
    assert float(empty["sem"]) == 0.0 and empty["sem"].requires_grad


def test_stage1_with_semantic_distillation_trains_and_exports(speech_features, tmp_path):
    feats = tmp_path / "f"
    shutil.copytree(speech_features, feats)
    write_semantic(feats, FakeTeacher(), "fake")
    run = tmp_path / "run"
    r = load_recipe(TINY, [f"data.features={feats}", "trainer.max_steps=3", "loss.semantic=1.0", "trainer.val_every=3"])
    module = run_training(r, run, enable_progress_bar=False)
    assert module.semantic_head is not None
    rows = (run / "logs" / "metrics.csv").read_text().splitlines()
    head = rows[0].split(",")
    sem = [float(x.split(",")[head.index("train/sem")]) for x in rows[1:] if x.split(",")[head.index("train/sem")]]
    assert len(sem) == 3 and all(0.0 <= v <= 2.0 for v in sem)
    # the term alone reaches the encoder (through the quantizer's straight-through path)
    ds = FeatureDataset(feats, "train", crop_seconds=0.5, semantic=True)
    speech = [ds[i] for i in range(len(ds)) if ds[i]["domain"] == "speech"][:2]
    module.zero_grad(set_to_none=True)
    module._losses(collate_features(speech))["sem"].backward()
    enc = module.model.encoder
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in enc.parameters())
    # the head is training-only: the export loads without it, also where the feature directory is gone
    shutil.move(str(feats), str(tmp_path / "moved"))
    model = EntangleCodec.from_pretrained(export_run(run, tmp_path / "export"))
    assert not any("semantic" in k for k in model.state_dict())


def test_semantic_needs_features_one_line(tmp_path):
    res = runner.invoke(app, ["train", "stage1", "-c", str(TINY), "--run-dir", str(tmp_path / "r"), "--no-progress",
                              "--set", "loss.semantic=1.0"])
    assert res.exit_code != 0 and "loss.semantic" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["data", "semantic", str(tmp_path / "none"), "--teacher", "tiny.en", "--no-progress"])
    assert res.exit_code == 1 and "not a feature directory" in res.output and "Traceback" not in res.output


class RichTeacher(FakeTeacher):
    """Four varying dimensions per 20 ms frame: RMS, mean magnitude, peak, and RMS times a ramp."""

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        n = -(-wav.size // 320)
        pad = np.zeros(n * 320, dtype=np.float32)
        pad[: wav.size] = wav
        x = pad.reshape(n, 320)
        rms = np.sqrt((x**2).mean(axis=1))
        return np.stack([rms, np.abs(x).mean(axis=1), np.abs(x).max(axis=1), rms * np.arange(n) % 1.7], axis=1).astype(np.float32)


def test_compact_features_keeps_the_teacher_signal_and_trains(speech_features, tmp_path):
    feats = tmp_path / "f"
    shutil.copytree(speech_features, feats)
    write_semantic(feats, RichTeacher(), "rich")
    src_index = read_index(feats)
    out = tmp_path / "small"
    res = runner.invoke(app, ["data", "compact", str(feats), "-o", str(out), "--dims", "4", "--train-shards", "2"])
    assert res.exit_code == 0, res.output
    red = read_semantic(out)["reduced"]
    basis = torch.tensor(red["basis"])
    assert basis.shape == (4, 4) and red["explained"] == pytest.approx(1.0, abs=1e-3)
    index = read_index(out)
    kept = index["splits"]["train"]["shards"]
    assert len(kept) == min(2, len(src_index["splits"]["train"]["shards"]))
    assert index["splits"]["valid"] == src_index["splits"]["valid"]
    assert index["mel_stats"] == src_index["mel_stats"]
    # every kept clip: the coefficients map back onto the standardised teacher frames; no-speech frames stay zero
    sem = read_semantic(feats)
    mean, std = torch.tensor(sem["mean"]), torch.tensor(sem["std"]).clamp_min(1e-4)
    full = FeatureDataset(feats, "train", None, "start", semantic=True)
    small = FeatureDataset(out, "train", None, "start", semantic=True)
    by_id = {full[i]["id"]: full[i] for i in range(len(full))}
    assert len(small) > 0 and all(small[i]["semantic"].shape[1] == 4 for i in range(len(small)))
    n_speech = 0
    for i in range(len(small)):
        a, b = small[i], by_id[small[i]["id"]]
        assert torch.equal(a["log_mel"], b["log_mel"])
        if a["domain"] != "speech":
            assert not a["semantic"].any()
            continue
        n_speech += 1
        back = a["semantic"] @ basis
        cos = torch.nn.functional.cosine_similarity(back, (b["semantic"] - mean) / std, dim=-1)
        assert float(cos.min()) > 0.99
    assert n_speech > 0
    # the head scores reduced targets as it scores the full ones
    head = SemanticHead(4, 4, sem["mean"], sem["std"])
    head_r = SemanticHead(4, 4, sem["mean"], sem["std"], basis=red["basis"])
    head_r.load_state_dict(head.state_dict())
    item = next(small[i] for i in range(len(small)) if small[i]["domain"] == "speech")
    zq = torch.randn(1, item["mel_length"], 4)
    mask = torch.ones(1, item["mel_length"], dtype=torch.bool)
    lf = head.loss(zq, by_id[item["id"]]["semantic"][None], mask)["sem"]
    lr = head_r.loss(zq, item["semantic"][None], mask)["sem"]
    assert float(lr.detach()) == pytest.approx(float(lf.detach()), abs=0.02)
    # a run trains from the smaller copy, its head mapping back through the basis
    r = load_recipe(TINY, [f"data.features={out}", "trainer.max_steps=2", "loss.semantic=1.0", "trainer.val_every=2"])
    module = run_training(r, tmp_path / "run", enable_progress_bar=False)
    assert module.semantic_head is not None and module.semantic_head.basis is not None
    # refusals, one line each; the source is left as it was
    for args, msg in (([str(feats), "-o", str(out), "--dims", "4"], "not empty"),
                      ([str(feats), "-o", str(tmp_path / "x"), "--dims", "5"], "--dims"),
                      ([str(out), "-o", str(tmp_path / "y")], "reduced already"),
                      ([str(tmp_path / "none"), "-o", str(tmp_path / "z")], "not a feature directory")):
        res = runner.invoke(app, ["data", "compact", *args])
        assert res.exit_code == 1 and msg in res.output and "Traceback" not in res.output, res.output
    assert read_index(feats) == src_index and "reduced" not in read_semantic(feats)
    with pytest.raises(FeatureError, match="reduced copy"):
        write_semantic(out, RichTeacher(), "rich", resume=True)
