"""Pre-computed feature shards (``entanglecodec data features``) and training from them (``data.features``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from entanglecodec import EntangleCodec, EntangleCodecConfig
from entanglecodec.audio import MelFrontend, load_audio, save_mel_stats
from entanglecodec.cli import app
from entanglecodec.codec.text import CaptionEncoder
from entanglecodec.data.features import (
    FeatureDataset,
    FeatureError,
    collate_features,
    read_index,
    write_features,
)
from entanglecodec.data.manifest import read_manifest
from entanglecodec.training.aux_losses import frame_f0
from entanglecodec.training.recipe import load_recipe
from entanglecodec.training.run import export_run, run_training

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
runner = CliRunner()


@pytest.fixture(scope="module")
def stats_file(corpus, tmp_path_factory) -> Path:
    """Mel statistics of the tiny corpus (so that normalised mels are not the identity)."""
    from entanglecodec.audio import compute_mel_stats

    cfg = EntangleCodecConfig.preset("tiny").mel
    mean, std, n = compute_mel_stats([r["audio"] for r in read_manifest(corpus)][:8], cfg)
    p = tmp_path_factory.mktemp("stats") / "mel_stats.json"
    save_mel_stats(p, mean, std, n, cfg)
    return p


@pytest.fixture(scope="module")
def features(corpus, stats_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("feat") / "f"
    write_features([corpus], out, EntangleCodecConfig.preset("tiny"), mel_stats=stats_file, shard_mib=0.05)
    return out


def _frontend(stats: Path) -> MelFrontend:
    from entanglecodec.audio import load_mel_stats

    fe = MelFrontend(EntangleCodecConfig.preset("tiny").mel)
    fe.set_stats(*load_mel_stats(stats))
    return fe


def test_feature_crops_equal_the_waveform_path(corpus, features, stats_file):
    index = read_index(features)
    assert index["splits"]["train"]["clips"] == 24 and index["splits"]["valid"]["clips"] == 4
    assert len(index["splits"]["train"]["shards"]) > 1  # several shards of at most ~0.05 MiB of mel
    fe = _frontend(stats_file)
    hop = fe.cfg.hop_length
    rows = {r["id"]: r for r in read_manifest(corpus)}
    # the largest normalised error the uint8 grid allows, per bin: half a step over the bin's std
    tol = float((torch.tensor(index["quant"]["scale"]) / fe.mel_std).max()) / 2 + 1e-4
    ds = FeatureDataset(features, "train", crop_seconds=0.5, crop_mode="random", seed=3)
    batch = collate_features([ds[i] for i in range(6)])
    assert batch["log_mel"].shape == (6, 128, 25) and batch["f0"].shape == (6, 25)
    for i in range(6):
        item = ds[i]
        off, n = item["offset"], item["mel_length"]
        wav, _ = load_audio(rows[item["id"]]["audio"], 24000)
        crop = torch.from_numpy(wav[off * hop : (off + n) * hop])[None]
        with torch.no_grad():
            ref = fe(crop)[0]
        got = fe.normalize(item["log_mel"])
        # interior frames are identical up to quantisation; the crop's two edge frames see real audio here
        assert float((got[:, 2:-2] - ref[:, 2:-2]).abs().max()) <= tol
        whole_f0 = frame_f0(wav, 24000, hop, int(np.ceil(wav.size / hop)))
        assert np.allclose(item["f0"].numpy(), whole_f0[off : off + n].astype(np.float16), rtol=0, atol=0)
    assert len({ds[i]["offset"] for i in range(len(ds))}) > 1  # random crops move
    ds.set_epoch(1)
    assert [ds[i]["offset"] for i in range(6)] != [d["offset"] for d in [FeatureDataset(features, "train", 0.5, seed=3)[i] for i in range(6)]]


def test_stage1_trains_from_features_without_audio(features, tmp_path, monkeypatch):
    run = tmp_path / "run"
    r = load_recipe(TINY, [f"data.features={features}", "data.train_manifest=/nonexistent/manifest.jsonl",
                           "trainer.max_steps=4", "loss.primitives=1.0", "trainer.val_every=2"])
    run_training(r, run, enable_progress_bar=False)
    stats = json.loads((run / "mel_stats.json").read_text())
    assert stats["mean"] == pytest.approx(read_index(features)["mel_stats"]["mean"], abs=1e-6)
    rows = (run / "logs" / "metrics.csv").read_text().splitlines()
    head = rows[0].split(",")
    losses = [float(x.split(",")[head.index("train/loss")]) for x in rows[1:] if x.split(",")[head.index("train/loss")]]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert any(x.split(",")[head.index("val/loss")] for x in rows[1:])
    full = export_run(run, tmp_path / "export")
    model = EntangleCodec.from_pretrained(full)
    assert float(model.frontend.mel_mean[0]) == pytest.approx(stats["mean"][0], abs=1e-5)
    # 16-bit export for transport: about half the bytes, loads into the float32 model, statistics kept exact
    half = export_run(run, tmp_path / "half", dtype=torch.float16)
    size = (half / "model.safetensors").stat().st_size
    assert size < 0.6 * (full / "model.safetensors").stat().st_size
    small = EntangleCodec.from_pretrained(half)
    assert torch.equal(small.frontend.mel_mean, model.frontend.mel_mean)
    # rounding changed the fingerprint: the header and the card state the stored weights' one
    assert small.fingerprint() != model.fingerprint()
    with safe_open(str(half / "model.safetensors"), framework="pt") as fh:
        assert fh.metadata()["fingerprint"] == small.fingerprint()
    assert f"| fingerprint | {small.fingerprint()} |" in (half / "README.md").read_text()
    # once the module is loaded, restating the fingerprint builds no caption tower (a GPU machine that
    # trained from caption embeddings may lack its package; session 22's export failed there)
    import entanglecodec.codec.model as codec_model
    import entanglecodec.training.run as training_run

    def no_tower(*args, **kwargs):
        raise RuntimeError("the caption tower's package is missing")

    loaded = training_run.load_run(run)
    monkeypatch.setattr(codec_model, "CaptionEncoder", no_tower)
    monkeypatch.setattr(training_run, "load_run", lambda path: loaded)
    again = export_run(run, tmp_path / "half-no-tower", dtype=torch.float16)
    with safe_open(str(again / "model.safetensors"), framework="pt") as fh:
        assert fh.metadata()["fingerprint"] == small.fingerprint()
    assert f"| fingerprint | {small.fingerprint()} |" in (again / "README.md").read_text()
    monkeypatch.undo()
    w, w16 = model.state_dict(), small.state_dict()
    assert max(float((w[k] - w16[k]).abs().max()) for k in w if w[k].is_floating_point()) < 1e-2
    # the discriminator and stage 2 read the same features (frozen front end: the checkpoint's statistics)
    feats = [f"data.features={features}", "trainer.max_steps=2", "trainer.val_every=100"]
    run_training(load_recipe(REPO / "configs" / "tiny-disc.yaml", [*feats, f"init_from={full}"]), tmp_path / "d")
    disc = export_run(tmp_path / "d", tmp_path / "disc")
    run_training(load_recipe(REPO / "configs" / "tiny-stage2.yaml", [*feats, f"init_from={full}", f"discriminator={disc}"]),
                 tmp_path / "s2", enable_progress_bar=False)
    assert "train/adv" in (tmp_path / "s2" / "logs" / "metrics.csv").read_text().splitlines()[0]


def test_other_mel_config_is_a_one_line_error(features, tmp_path):
    res = runner.invoke(app, ["train", "stage1", "-c", str(TINY), "--run-dir", str(tmp_path / "r"), "--no-progress",
                              "--set", f"data.features={features}", "--set", "model.overrides={mel: {hop_length: 240}}"])
    assert res.exit_code == 1
    assert "mel config" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["train", "stage1", "-c", str(TINY), "--run-dir", str(tmp_path / "r2"), "--no-progress",
                              "--set", f"data.features={tmp_path / 'none'}"])
    assert res.exit_code == 1 and "not a feature directory" in res.output


def test_write_is_deterministic_resumable_and_refuses_a_non_empty_dir(corpus, features, stats_file, tmp_path):
    out = tmp_path / "f"
    cfg = EntangleCodecConfig.preset("tiny")
    write_features([corpus], out, cfg, mel_stats=stats_file, shard_mib=0.05)
    names = sorted(p.name for p in features.iterdir())
    assert names == sorted(p.name for p in out.iterdir())
    for n in names:
        assert (out / n).read_bytes() == (features / n).read_bytes(), n
    # interrupted: the last shard's record (written last) and the index are missing
    last = read_index(out)["splits"]["valid"]["shards"][-1]
    (out / f"{last}.json").unlink()
    (out / "index.json").unlink()
    (out / f"{last}.mel.npy").write_bytes(b"partial")
    first = out / "train-00000.mel.npy"
    t0 = first.stat().st_mtime_ns
    with pytest.raises(FeatureError, match="--resume"):
        write_features([corpus], out, cfg, mel_stats=stats_file, shard_mib=0.05)
    with pytest.raises(FeatureError, match="other manifests"):
        write_features([corpus], out, cfg, mel_stats=stats_file, shard_mib=0.05, resume=True, max_hours=0.001)
    with pytest.raises(FeatureError, match="--resume"):
        read_index(out)
    write_features([corpus], out, cfg, mel_stats=stats_file, shard_mib=0.05, resume=True)
    assert first.stat().st_mtime_ns == t0  # complete shards are kept
    for n in names:
        assert (out / n).read_bytes() == (features / n).read_bytes(), n
    capped = write_features([corpus], tmp_path / "cap", cfg, max_hours=0.003, overwrite=True)
    assert 0 < capped["splits"]["train"]["clips"] < 24


def test_reuse_copies_the_clips_a_finished_directory_holds(corpus, features, stats_file, tmp_path, monkeypatch):
    import entanglecodec.training.aux_losses as aux

    cfg = EntangleCodecConfig.preset("tiny")
    lender = tmp_path / "lender"
    write_features([corpus], lender, cfg, splits=["valid"], mel_stats=stats_file, shard_mib=0.05)
    computed: list[int] = []
    real = aux.frame_f0
    monkeypatch.setattr(aux, "frame_f0", lambda *a, **k: computed.append(1) or real(*a, **k))
    out = tmp_path / "grown"
    write_features([corpus], out, cfg, mel_stats=stats_file, shard_mib=0.05, reuse=[lender])
    assert len(computed) == 24  # the 24 train clips; the 4 valid ones were copied
    for n in sorted(p.name for p in features.iterdir()):  # the same bytes as computing everything
        assert (out / n).read_bytes() == (features / n).read_bytes(), n
    computed.clear()
    res = runner.invoke(app, ["data", "features", str(corpus), "-o", str(tmp_path / "cli"), "--codec-config", "tiny",
                              "--split", "valid", "--reuse", str(lender), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert computed == [] and "valid: 4 clips" in res.output
    # a clip of the same id whose audio is another file is computed, not copied
    moved = tmp_path / "moved.jsonl"
    rows = [json.loads(line) for line in corpus.read_text().splitlines() if line.strip()]
    for r in rows:
        if r["split"] == "valid":
            copy = tmp_path / Path(r["audio"]).name
            copy.write_bytes((corpus.parent / r["audio"]).read_bytes())
            r["audio"] = str(copy)
    moved.write_text("".join(json.dumps(r) + "\n" for r in rows))
    computed.clear()
    write_features([moved], tmp_path / "m", cfg, splits=["valid"], mel_stats=stats_file, shard_mib=0.05, reuse=[lender])
    assert len(computed) == 4
    other = EntangleCodecConfig.preset("tiny")
    other.mel.hop_length = 240
    with pytest.raises(FeatureError, match="--reuse .*mel front end"):
        write_features([corpus], tmp_path / "x", other, splits=["valid"], reuse=[lender])
    with pytest.raises(FeatureError, match="not a feature directory"):
        write_features([corpus], tmp_path / "y", cfg, splits=["valid"], reuse=[tmp_path / "none"])


def test_reuse_copies_caption_embeddings_of_the_same_tower(corpus, tmp_path, monkeypatch):
    from entanglecodec.codec.text import PretrainedTextBackbone

    cfg = load_recipe(TINY, ["model.overrides={text: {kind: pretrained}}"]).model.build()
    lender = tmp_path / "lender"
    write_features([corpus], lender, cfg, splits=["valid"])
    seen: list[str] = []
    real = PretrainedTextBackbone.forward
    monkeypatch.setattr(PretrainedTextBackbone, "forward", lambda self, texts: seen.extend(texts) or real(self, texts))
    out = tmp_path / "grown"
    index = write_features([corpus], out, cfg, reuse=[lender])
    assert len(seen) == 24  # only the 24 train captions were embedded, not the 4 valid ones
    name = index["splits"]["valid"]["shards"][0]
    assert (out / f"{name}.emb.npy").read_bytes() == (lender / f"{name}.emb.npy").read_bytes()


def test_cli_features_bad_input_is_one_line(corpus, tmp_path):
    res = runner.invoke(app, ["data", "features", str(corpus), "-o", str(tmp_path / "o"), "--codec-config", "tiny",
                              "--split", "nope", "--no-progress"])
    assert res.exit_code == 1 and "unknown split" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["data", "features", str(corpus), "-o", str(tmp_path / "o"), "--codec-config", "tiny",
                              "--split", "valid", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "valid: 4 clips" in res.output and "MiB per hour" in res.output


def test_pretrained_caption_embeddings_are_stored_and_used(corpus, tmp_path):
    sets = ["model.overrides={text: {kind: pretrained}}", "trainer.max_steps=2", "trainer.val_every=100"]
    cfg = load_recipe(TINY, sets).model.build()
    out = tmp_path / "f"
    index = write_features([corpus], out, cfg)
    dim = index["captions"]["embedding"]["dim"]
    ds = FeatureDataset(out, "valid", None, embeddings=True)
    full = CaptionEncoder(cfg.text, cfg.align_dim)
    with torch.no_grad():
        pooled = full.backbone([ds[i]["caption"] for i in range(4)])  # type: ignore[misc]
    stored = torch.stack([ds[i]["caption_emb"] for i in range(4)])
    assert stored.shape == (4, dim)
    assert float((stored - pooled).abs().max()) < 2e-3  # float16 storage
    head = CaptionEncoder(cfg.text, cfg.align_dim, pooled_dim=dim)
    head.load_state_dict(full.saved_state_dict())
    assert torch.allclose(head.project(pooled), full([ds[i]["caption"] for i in range(4)]), atol=1e-5)
    with pytest.raises(RuntimeError, match="pre-computed"):
        head(["a caption"])
    with pytest.raises(ValueError, match="frozen pretrained"):
        CaptionEncoder(EntangleCodecConfig.preset("tiny").text, 16, pooled_dim=dim)
    # stage 1 from the stored embeddings: no backbone is built, the contrastive term still trains
    module = run_training(load_recipe(TINY, [*sets, f"data.features={out}"]), tmp_path / "run", enable_progress_bar=False)
    assert module.model.text_encoder is not None and module.model.text_encoder.backbone is None
    assert "train/contrast" in (tmp_path / "run" / "logs" / "metrics.csv").read_text().splitlines()[0]
    # exported where the features are gone: the tower is rebuilt with its backbone, same saved weights
    a = export_run(tmp_path / "run", tmp_path / "a")
    for f in out.iterdir():
        f.unlink()
    b = export_run(tmp_path / "run", tmp_path / "b")
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
