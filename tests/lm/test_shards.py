"""Token shards: determinism, resumption, codec fingerprints, two torchrun processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from entanglecodec.lm.audio_tokenizer import load_audio_tokenizer
from entanglecodec.lm.shards import ShardError, TokenShards, tokenize_manifest


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((d / "shards").iterdir())}


class Crashing:
    """Wraps a tokenizer; raises after ``limit`` encode calls (a killed run), counts calls."""

    def __init__(self, inner: object, limit: int | None = None) -> None:
        self.inner, self.limit, self.calls = inner, limit, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def encode(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        if self.limit is not None and self.calls > self.limit:
            raise KeyboardInterrupt("killed")
        return self.inner.encode(wavs)  # type: ignore[attr-defined]


def test_deterministic_resumable_and_readable(lm_corpus: Path, tiny_codec: Path, tokens: Path, tmp_path: Path) -> None:
    tok = load_audio_tokenizer(tiny_codec)
    # another batch size gives byte-identical shards
    tokenize_manifest(lm_corpus, tmp_path / "b1", tok, batch_size=1, shard_size=8)
    assert _files(tmp_path / "b1") == _files(tokens)
    # killed during the third shard: the two finished shards are kept, the rest is redone
    crash = Crashing(tok, limit=5)
    with pytest.raises(KeyboardInterrupt):
        tokenize_manifest(lm_corpus, tmp_path / "r", crash, batch_size=4, shard_size=8)
    assert sorted(p.name for p in (tmp_path / "r" / "shards").glob("*.json")) == ["00000.json", "00001.json"]
    with pytest.raises(ShardError, match="not finished"):
        TokenShards(tmp_path / "r")
    again = Crashing(tok)
    index = tokenize_manifest(lm_corpus, tmp_path / "r", again, batch_size=4, shard_size=8)
    assert again.calls == 4 and index["items"] == 30 and not index["failed"]  # shards 2-3: 8 + 6 rows
    assert _files(tmp_path / "r") == _files(tokens)
    # reading: memory-mapped codes equal a fresh encoding
    sh = TokenShards(tokens)
    assert len(sh) == 30 and sh.tokenizer["fingerprint"] == tok.fingerprint()
    from entanglecodec.audio import load_audio

    wav, _ = load_audio(lm_corpus.parent / "clip004.wav", 24000)
    assert np.array_equal(sh.codes("clip004"), tok.encode([wav])[0])
    assert sh.num_samples("clip004") == wav.size and sh.ids(["test"]) == ["clip000", "clip005", "clip010", "clip015", "clip020", "clip025"]


def test_other_codec_is_refused(lm_corpus: Path, tiny_codec: Path, other_codec: Path, tokens: Path) -> None:
    tok2 = load_audio_tokenizer(other_codec)
    assert tok2.fingerprint() != load_audio_tokenizer(tiny_codec).fingerprint()
    with pytest.raises(ShardError, match="another tokenizer"):
        tokenize_manifest(lm_corpus, tokens, tok2, shard_size=8)
    with pytest.raises(ShardError, match="another codec checkpoint"):
        TokenShards(tokens).check_tokenizer(tok2.fingerprint(), tok2.codebook_size)
    with pytest.raises(ShardError, match="another plan"):
        tokenize_manifest(lm_corpus, tokens, load_audio_tokenizer(tiny_codec), shard_size=5)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(lm_corpus: Path, tiny_codec: Path, tokens: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to the interpreter")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    out = tmp_path / "ddp"
    res = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "entanglecodec.cli", "tokenize", str(lm_corpus),
         "-o", str(out), "--codec", str(tiny_codec), "--shard-size", "8", "--no-progress", "--threads", "1"],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    errors = [line for line in res.stderr.splitlines() if "Error" in line or "error:" in line]
    assert res.returncode == 0, "\n".join(errors[-20:]) + "\n" + res.stderr[-1500:]
    assert _files(out) == _files(tokens) and (out / "index.json").is_file()
    shutil.rmtree(out)


def _tokenize_child(manifest: Path, out: Path, codec: Path) -> None:
    import torch

    torch.set_num_threads(1)
    tokenize_manifest(manifest, out, load_audio_tokenizer(codec), batch_size=1, shard_size=1)


def test_resumes_after_a_real_kill(lm_corpus: Path, tiny_codec: Path, tmp_path: Path) -> None:
    """SIGKILL a tokenising process once a shard is done; tokenising again finishes the job."""
    import multiprocessing as mp
    import signal
    import time

    out = tmp_path / "killed"
    proc = mp.get_context("fork").Process(target=_tokenize_child, args=(lm_corpus, out, tiny_codec))
    proc.start()
    deadline = time.monotonic() + 120
    while proc.is_alive() and time.monotonic() < deadline and not list((out / "shards").glob("[0-9]*.json")):
        time.sleep(0.005)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=30)
    if proc.exitcode == -signal.SIGKILL:  # killed mid-way: unfinished; every finished index has its tokens
        assert not (out / "index.json").is_file()
        assert all(j.with_suffix(".bin").is_file() for j in (out / "shards").glob("[0-9]*.json"))
    tokenize_manifest(lm_corpus, out, load_audio_tokenizer(tiny_codec), batch_size=3, shard_size=1)
    fresh = tmp_path / "fresh"
    tokenize_manifest(lm_corpus, fresh, load_audio_tokenizer(tiny_codec), batch_size=3, shard_size=1)
    assert _files(out) == _files(fresh) and (out / "index.json").is_file()  # temporary files of the killed run removed
