"""ManifestDataset / collate_audio / DomainWeightedSampler / ManifestDataModule."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from entanglecodec.audio import AudioError, resample
from entanglecodec.data.dataset import (
    DomainWeightedSampler,
    ManifestDataset,
    collate_audio,
    load_clip,
)
from entanglecodec.data.manifest import write_manifest

SR = 24000


def tone(path: Path, seconds: float, sr: int = SR, freq: float = 440.0, channels: int = 1, amp: float = 0.5) -> Path:
    """Write a sine (FLAC/WAV by extension); channel c gets amplitude amp/(c+1)."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = np.sin(2 * np.pi * freq * t)
    data = np.stack([amp / (c + 1) * x for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype="PCM_16")
    return path


def manifest(tmp_path: Path, specs: list[tuple[str, str]], **row_kw: object) -> Path:
    rows = [
        {"audio": a, "domain": d, "caption": f"rich caption of {a}", "asr_caption": f"label {a}", **row_kw}
        for a, d in specs
    ]
    out = tmp_path / "manifest.jsonl"
    write_manifest(rows, out, overwrite=True)
    return out


def peak_hz(x: np.ndarray, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def test_short_clip_returned_whole_and_padded(tmp_path: Path) -> None:
    tone(tmp_path / "long.flac", 3.0)
    short = tone(tmp_path / "short.flac", 0.5, freq=1000.0)
    ds = ManifestDataset(manifest(tmp_path, [("long.flac", "speech"), ("short.flac", "music")]), crop_seconds=1.0)
    long_item, short_item = ds[0], ds[1]
    assert long_item["length"] == SR and long_item["wav"].dtype == torch.float32
    assert short_item["length"] == SR // 2 and short_item["offset"] == 0
    batch = collate_audio([long_item, short_item])
    assert batch["wav"].shape == (2, SR) and batch["lengths"].tolist() == [SR, SR // 2]
    assert batch["mask"].sum(1).tolist() == [SR, SR // 2] and batch["mask"].dtype == torch.bool
    ref, _ = sf.read(str(short), dtype="float32")
    assert torch.equal(batch["wav"][1, : SR // 2], torch.from_numpy(ref))  # the end is kept, bit-exact
    assert torch.all(batch["wav"][1, SR // 2 :] == 0)
    assert batch["id"] == ["long", "short"] and batch["domain"] == ["speech", "music"]
    assert batch["caption"] == ["rich caption of long.flac", "rich caption of short.flac"]
    padded = collate_audio([short_item], pad_to_multiple=7000)
    assert padded["wav"].shape[1] == 14000 and padded["lengths"].tolist() == [SR // 2]
    with pytest.raises(ValueError, match="empty batch"):
        collate_audio([])


@pytest.mark.parametrize(("sr", "channels"), [(16000, 1), (44100, 2)])
def test_resampling_and_downmix(tmp_path: Path, sr: int, channels: int) -> None:
    tone(tmp_path / "x.wav", 2.0, sr=sr, freq=1000.0, channels=channels)
    ds = ManifestDataset(manifest(tmp_path, [("x.wav", "sound")]), crop_seconds=None)
    item = ds[0]
    assert item["length"] == 2 * SR
    assert abs(peak_hz(item["wav"].numpy()) - 1000.0) < 2.0
    # down-mix is the channel mean: amplitudes 0.5 and 0.25 -> 0.375
    expected_amp = np.mean([0.5 / (c + 1) for c in range(channels)])
    assert float(item["wav"][SR // 2 : SR].abs().max()) == pytest.approx(expected_amp, abs=0.01)


@pytest.mark.parametrize("sr", [16000, 22050, 44100, 24000])
def test_partial_decode_matches_whole_file_resampling(tmp_path: Path, sr: int) -> None:
    path = tone(tmp_path / "x.flac", 3.0, sr=sr, freq=523.0)
    data, _ = sf.read(str(path), dtype="float32")
    whole = resample(data, sr, SR)
    for s in range(4):
        seg, off = load_clip(path, SR, SR // 2, "random", np.random.default_rng(s))
        assert seg.shape == (SR // 2,)
        np.testing.assert_allclose(seg, whole[off : off + SR // 2], atol=1e-6)


def test_random_crops_seeded_and_epoch_aware(tmp_path: Path) -> None:
    specs = [(f"c{i}.flac", "speech") for i in range(6)]
    for a, _ in specs:
        tone(tmp_path / a, 3.0)
    m = manifest(tmp_path, specs)
    a = ManifestDataset(m, crop_seconds=0.5, seed=3)
    b = ManifestDataset(m, crop_seconds=0.5, seed=3)
    offs = [a[i]["offset"] for i in range(6)]
    assert offs == [b[i]["offset"] for i in range(6)]
    assert len(set(offs)) > 1 and all(0 <= o <= 3 * SR - SR // 2 for o in offs)
    a.set_epoch(1)
    assert [a[i]["offset"] for i in range(6)] != offs
    assert [ManifestDataset(m, crop_seconds=0.5, seed=4)[i]["offset"] for i in range(6)] != offs
    center = ManifestDataset(m, crop_seconds=0.5, crop_mode="center")
    assert center[0]["offset"] == (3 * SR - SR // 2) // 2
    assert ManifestDataset(m, crop_seconds=0.5, crop_mode="start")[0]["offset"] == 0


def test_epoch_reaches_persistent_workers(tmp_path: Path) -> None:
    for i in range(4):
        tone(tmp_path / f"c{i}.flac", 2.0)
    ds = ManifestDataset(manifest(tmp_path, [(f"c{i}.flac", "speech") for i in range(4)]), crop_seconds=0.25, seed=1)
    expected = []
    for ep in range(2):
        ds.set_epoch(ep)
        expected.append([ds[i]["offset"] for i in range(4)])
    assert expected[0] != expected[1]
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, num_workers=1, persistent_workers=True, collate_fn=collate_audio
    )
    got = []
    for ep in range(2):
        ds.set_epoch(ep)
        got.append(next(iter(loader))["offset"])
    assert got == expected


def _bad_files(tmp_path: Path) -> Path:
    tone(tmp_path / "good0.flac", 1.0)
    tone(tmp_path / "good1.flac", 1.0)
    tone(tmp_path / "music.flac", 1.0)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4)
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, dtype=np.float32), SR)
    specs = [
        ("good0.flac", "speech"),
        ("missing.flac", "speech"),
        ("corrupt.wav", "speech"),
        ("empty.wav", "speech"),
        ("good1.flac", "speech"),
        ("music.flac", "music"),
    ]
    return manifest(tmp_path, specs)


def test_bad_files_are_skipped_logged_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = ManifestDataset(_bad_files(tmp_path), crop_seconds=0.5)
    with caplog.at_level(logging.WARNING, logger="entanglecodec.data.dataset"):
        items = [ds[i] for i in range(len(ds))]
    # each bad clip is replaced by the next readable clip of the same domain
    assert [it["id"] for it in items] == ["good0", "good1", "good1", "good1", "good1", "music"]
    assert ds.skipped == 3
    assert sorted(Path(p).name for p in ds.skipped_files) == ["corrupt.wav", "empty.wav", "missing.flac"]
    text = caplog.text
    for name in ("missing.flac", "corrupt.wav", "empty.wav"):
        assert name in text
    assert "3 file(s) skipped so far" in text
    assert "zero-length" in text and "file not found" in text


def test_bad_files_raise_in_strict_mode(tmp_path: Path) -> None:
    ds = ManifestDataset(_bad_files(tmp_path), crop_seconds=0.5, on_error="raise")
    assert ds[0]["id"] == "good0"
    with pytest.raises(AudioError, match=r"missing\.flac: file not found"):
        ds[1]
    with pytest.raises(AudioError, match=r"corrupt\.wav"):
        ds[2]
    with pytest.raises(AudioError, match=r"empty\.wav: contains no samples"):
        ds[3]


def test_all_files_bad_is_an_error(tmp_path: Path) -> None:
    ds = ManifestDataset(manifest(tmp_path, [("a.flac", "speech"), ("b.flac", "music")]))
    with pytest.raises(AudioError, match="all 2 clips failed"):
        ds[0]


def test_text_field_and_validation(tmp_path: Path) -> None:
    tone(tmp_path / "a.flac", 0.3)
    m = manifest(tmp_path, [("a.flac", "speech")], text="hello world")
    assert ManifestDataset(m)[0]["caption"] == "rich caption of a.flac"
    item = ManifestDataset(m, text_field="asr_caption")[0]
    assert item["caption"] == "label a.flac" and item["rich_caption"] == "rich caption of a.flac"
    assert ManifestDataset(m, text_field="text")[0]["caption"] == "hello world"
    with pytest.raises(ValueError, match="text_field"):
        ManifestDataset(m, text_field="title")
    with pytest.raises(ValueError, match="crop_seconds"):
        ManifestDataset(m, crop_seconds=0)
    with pytest.raises(ValueError, match="no clips"):
        ManifestDataset(m, domains=["music"])
    with pytest.raises(IndexError):
        ManifestDataset(m)[1]


def _domains(n_speech: int, n_music: int, n_sound: int) -> list[str]:
    return ["speech"] * n_speech + ["music"] * n_music + ["sound"] * n_sound


def test_domain_weights_are_respected() -> None:
    doms = _domains(60, 10, 30)
    weights = {"speech": 0.5, "music": 0.25, "sound": 0.25}
    s = DomainWeightedSampler(doms, weights, epoch_size=4000, seed=0)
    idx = list(s)
    assert len(idx) == 4000
    frac = {d: sum(doms[i] == d for i in idx) / len(idx) for d in weights}
    for d, w in weights.items():
        assert abs(frac[d] - w) < 0.03, frac
    # every music clip is used about equally (passes over the domain, not i.i.d. draws)
    music_counts = np.bincount([i for i in idx if doms[i] == "music"], minlength=70)[60:70]
    assert music_counts.max() - music_counts.min() <= 1
    assert list(DomainWeightedSampler(doms, weights, epoch_size=4000, seed=0)) == idx
    s.set_epoch(1)
    assert list(s) != idx
    # uniform (no weights) follows the data's own proportions: a permutation of all clips
    plain = list(DomainWeightedSampler(doms, None, seed=0))
    assert sorted(plain) == list(range(100))


def test_weight_validation(caplog: pytest.LogCaptureFixture) -> None:
    doms = _domains(5, 5, 0)
    with pytest.raises(ValueError, match="no such clips"):
        DomainWeightedSampler(doms, {"speech": 1.0, "sound": 1.0})
    with pytest.raises(ValueError, match="unknown domains"):
        DomainWeightedSampler(doms, {"speech": 1.0, "noise": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        DomainWeightedSampler(doms, {"speech": -1.0, "music": 1.0})
    with caplog.at_level(logging.WARNING):
        s = DomainWeightedSampler(doms, {"speech": 1.0}, epoch_size=50)
    assert "['music'] get weight 0" in caplog.text
    assert all(doms[i] == "speech" for i in s)


@pytest.mark.parametrize("weights", [None, {"speech": 0.5, "music": 0.25, "sound": 0.25}])
def test_ddp_ranks_get_disjoint_equal_shards(weights: dict | None) -> None:
    doms = _domains(100, 100, 100)
    world = 3
    samplers = [
        DomainWeightedSampler(doms, weights, epoch_size=100, seed=7, num_replicas=world, rank=r) for r in range(world)
    ]
    shards = [list(s) for s in samplers]
    assert all(len(sh) == len(samplers[0]) == 34 for sh in shards)  # ceil(100 / 3), padded
    glob = samplers[0].global_indices()
    assert sorted(i for sh in shards for i in sh[:33]) == sorted(glob[:99].tolist())
    assert len(set(glob.tolist())) == 100  # no domain exhausted -> no clip drawn twice
    for a in range(world):
        for b in range(a + 1, world):
            assert not set(shards[a][:33]) & set(shards[b][:33])
    dropped = [list(DomainWeightedSampler(doms, weights, 100, 7, world, r, drop_last=True)) for r in range(world)]
    assert all(len(d) == 33 for d in dropped)
    assert not set(dropped[0]) & set(dropped[1]) and not set(dropped[1]) & set(dropped[2])
    with pytest.raises(ValueError, match="invalid rank"):
        DomainWeightedSampler(doms, weights, num_replicas=2, rank=2)


def test_sampler_forwards_epoch_to_dataset(tmp_path: Path) -> None:
    tone(tmp_path / "a.flac", 1.0)
    ds = ManifestDataset(manifest(tmp_path, [("a.flac", "speech")]))
    s = DomainWeightedSampler(ds, seed=0)
    assert isinstance(s, torch.utils.data.DistributedSampler)  # Lightning will not wrap it again
    s.set_epoch(5)
    assert ds.epoch == 5 and s.epoch == 5


def test_datamodule_trains_with_lightning(tmp_path: Path) -> None:
    from entanglecodec.training.data import ManifestDataModule

    pl = pytest.importorskip("lightning.pytorch")
    specs = [(f"s{i}.flac", "speech") for i in range(6)] + [(f"m{i}.flac", "music") for i in range(2)]
    for a, _ in specs:
        tone(tmp_path / a, 0.6 if a.startswith("m") else 0.3)
    rows = [
        {"audio": a, "domain": d, "caption": f"c {a}", "split": "valid" if a in ("s5.flac", "m1.flac") else "train"}
        for a, d in specs
    ]
    write_manifest(rows, tmp_path / "m.jsonl")
    dm = ManifestDataModule(
        tmp_path / "m.jsonl", batch_size=2, crop_seconds=0.5, domain_weights={"speech": 0.5, "music": 0.5}, seed=1
    )
    assert isinstance(dm, pl.LightningDataModule)
    dm.setup("fit")
    assert dm.train_dataset is not None and dm.valid_dataset is not None
    assert len(dm.train_dataset) == 6 and len(dm.valid_dataset) == 2
    assert dm.valid_dataset.crop_mode == "center"

    class Probe(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[list[str]] = []
            self.val_lengths: list[list[int]] = []

        def training_step(self, batch: dict, _: int) -> torch.Tensor:
            self.seen.append(batch["domain"])
            assert batch["wav"].shape[0] == 2 and batch["mask"].shape == batch["wav"].shape
            return (self.w * batch["wav"].mean()).sum() + self.w.sum() ** 2

        def validation_step(self, batch: dict, _: int) -> None:
            self.val_lengths.append(batch["lengths"].tolist())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    probe = Probe()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(probe, datamodule=dm)
    assert len(probe.seen) == 6  # 2 epochs x (6 draws // batch 2)
    assert {d for b in probe.seen for d in b} == {"speech", "music"}
    assert dm.train_dataset.epoch == 1  # Lightning's set_epoch reached the dataset via the sampler
    assert {v for b in probe.val_lengths for v in b} == {7200, 12000}  # whole short clip, centre-cropped long one
