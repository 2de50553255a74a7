"""Weights for people who ``pip install``: directories, ``$ENTANGLECODEC_CHECKPOINT`` and Hugging Face
repo ids read offline from a cache laid out as ``huggingface_hub`` lays it out; the model card."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import ModelCard, scan_cache_dir, try_to_load_from_cache
from huggingface_hub.file_download import repo_folder_name

from entanglecodec import EntangleCodec, EntangleCodecConfig
from entanglecodec.checkpoint import CheckpointError, split_repo_id
from entanglecodec.vocoder.config import VocoderConfig
from entanglecodec.vocoder.load import load_vocoder
from entanglecodec.vocoder.model import Vocoder, VocoderLoadError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put_in_hub_cache(cache: Path, repo_id: str, files_from: Path, commit: str = COMMIT) -> Path:
    """Lay ``files_from``'s files out as a download by ``huggingface_hub`` would: content-addressed
    blobs, a snapshot of relative symlinks per commit, and ``refs/main`` naming the commit."""
    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    for f in sorted(files_from.iterdir()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, repo / "blobs" / digest)
        os.symlink(os.path.relpath(repo / "blobs" / digest, snap), snap / f.name)
    (repo / "refs" / "main").write_text(commit)
    return snap


@pytest.fixture
def offline(monkeypatch):
    """huggingface_hub reads HF_HUB_OFFLINE when imported (the test session sets it first); make sure."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def tiny(tmp_path):
    torch.manual_seed(0)
    model = EntangleCodec(EntangleCodecConfig.preset("tiny")).eval()
    return model, model.save_pretrained(tmp_path / "export")


def test_cache_layout_is_the_one_huggingface_hub_reads(tiny, tmp_path):
    _, d = tiny
    cache = tmp_path / "hub"
    put_in_hub_cache(cache, "someone/tiny-codec", d)
    info = scan_cache_dir(cache)
    assert [r.repo_id for r in info.repos] == ["someone/tiny-codec"] and not info.warnings
    cached = try_to_load_from_cache("someone/tiny-codec", "config.json", cache_dir=cache)
    assert isinstance(cached, str) and Path(cached).read_bytes() == (d / "config.json").read_bytes()


def test_from_pretrained_reads_a_repo_id_from_the_cache_offline(tiny, tmp_path, offline):
    model, d = tiny
    cache = tmp_path / "hub"
    put_in_hub_cache(cache, "someone/tiny-codec", d)
    for spec in ("someone/tiny-codec", f"someone/tiny-codec@{COMMIT}", Path("someone/tiny-codec")):
        loaded = EntangleCodec.from_pretrained(spec, cache_dir=cache)
        assert loaded.fingerprint() == model.fingerprint()


def test_default_cache_and_environment_variable(tiny, tmp_path, offline, monkeypatch):
    model, d = tiny
    cache = tmp_path / "hub"
    put_in_hub_cache(cache, "someone/tiny-codec", d)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # what $HF_HUB_CACHE sets
    monkeypatch.setenv("ENTANGLECODEC_CHECKPOINT", "someone/tiny-codec")
    assert EntangleCodec.from_pretrained().fingerprint() == model.fingerprint()
    monkeypatch.setenv("ENTANGLECODEC_CHECKPOINT", str(d))  # a directory works as before
    assert EntangleCodec.from_pretrained().fingerprint() == model.fingerprint()


def test_uncached_repo_offline_is_one_clear_error(tmp_path, offline, monkeypatch):
    with pytest.raises(CheckpointError, match=r"someone/missing: .*HF_HUB_OFFLINE"):
        EntangleCodec.from_pretrained("someone/missing", cache_dir=tmp_path / "empty")
    monkeypatch.setenv("ENTANGLECODEC_CHECKPOINT", "someone/missing")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="ENTANGLECODEC_CHECKPOINT=someone/missing"):
        EntangleCodec.from_pretrained()
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        EntangleCodec.from_pretrained(tmp_path / "a" / "b" / "c")


def test_repo_id_shapes():
    assert split_repo_id("owner/name") == ("owner/name", None)
    assert split_repo_id("owner/name@v1.0") == ("owner/name", "v1.0")
    for not_an_id in ("./owner/name", "/abs/path", "a/b/c", "name", "owner/bad name"):
        assert split_repo_id(not_an_id) is None, not_an_id


def test_vocoder_from_a_repo_id(tmp_path, offline, monkeypatch):
    torch.manual_seed(0)
    voc = Vocoder(VocoderConfig.preset("tiny"))
    d = voc.save_pretrained(tmp_path / "voc")
    cache = tmp_path / "hub"
    put_in_hub_cache(cache, "someone/tiny-vocoder", d)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    mel = torch.randn(1, 128, 20)
    expected = voc.eval()(mel)
    assert torch.allclose(Vocoder.from_pretrained("someone/tiny-vocoder")(mel), expected)
    assert torch.allclose(load_vocoder("someone/tiny-vocoder")(mel), expected)  # type: ignore[operator]
    monkeypatch.setenv("ENTANGLECODEC_VOCODER", "someone/tiny-vocoder")
    assert torch.allclose(load_vocoder("default")(mel), expected)  # type: ignore[operator]
    with pytest.raises(VocoderLoadError, match="someone/nothing"):
        load_vocoder("someone/nothing")


def test_save_pretrained_writes_a_hub_model_card(tiny):
    model, d = tiny
    card = ModelCard.load(d / "README.md")
    assert card.data.library_name == "entanglecodec" and "audio" in card.data.tags
    assert card.data.license == "mit"
    assert model.fingerprint() in card.text and "from_pretrained" in card.text
    assert "300 bit/s" in card.text  # tiny: 64 codes at 50 Hz
