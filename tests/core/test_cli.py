import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from entanglecodec import EntangleCodec, EntangleCodecConfig
from entanglecodec.cli import app
from entanglecodec.codec.tokens import load_tokens

runner = CliRunner()


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    return EntangleCodec(EntangleCodecConfig.preset("tiny")).save_pretrained(tmp_path / "ck")


@pytest.fixture
def wavs(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "in"
    d.mkdir()
    sf.write(d / "a.wav", (rng.standard_normal(16000) * 0.1).astype(np.float32), 16000)
    sf.write(d / "b.flac", (rng.standard_normal((30001, 2)) * 0.1).astype(np.float32), 24000)
    return d


def test_encode_decode_roundtrip(ckpt, wavs, tmp_path):
    r = runner.invoke(app, ["encode", str(wavs), "-o", str(tmp_path / "tok"), "-c", str(ckpt)])
    assert r.exit_code == 0, r.output
    ta = load_tokens(tmp_path / "tok" / "a.npz")
    tb = load_tokens(tmp_path / "tok" / "b.npz")
    assert ta.codes.shape == (50,) and ta.num_samples == 24000 and ta.codebook_size == 64
    assert tb.codes.shape == (63,) and tb.num_samples == 30001
    model = EntangleCodec.from_pretrained(ckpt)
    assert ta.fingerprint == model.fingerprint()
    r = runner.invoke(app, ["decode", str(tmp_path / "tok" / "b.npz"), "-o", str(tmp_path / "b.wav"), "-c", str(ckpt)])
    assert r.exit_code == 0, r.output
    out, sr = sf.read(tmp_path / "b.wav")
    assert sr == 24000 and out.shape == (30001,)
    # refuses to overwrite
    r = runner.invoke(app, ["decode", str(tmp_path / "tok" / "b.npz"), "-o", str(tmp_path / "b.wav"), "-c", str(ckpt)])
    assert r.exit_code != 0 and "already exists" in r.output
    r = runner.invoke(
        app, ["decode", str(tmp_path / "tok" / "b.npz"), "-o", str(tmp_path / "b.wav"), "-c", str(ckpt), "--overwrite"]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["reconstruct", str(wavs / "a.wav"), "-o", str(tmp_path / "r.wav"), "-c", str(ckpt)])
    assert r.exit_code == 0, r.output
    assert sf.info(str(tmp_path / "r.wav")).frames == 24000


def test_tokens_from_other_checkpoint_rejected(ckpt, wavs, tmp_path):
    runner.invoke(app, ["encode", str(wavs / "a.wav"), "-o", str(tmp_path / "a.npz"), "-c", str(ckpt)])
    torch.manual_seed(123)
    other = EntangleCodec(EntangleCodecConfig.preset("tiny")).save_pretrained(tmp_path / "other")
    r = runner.invoke(app, ["decode", str(tmp_path / "a.npz"), "-o", str(tmp_path / "x.wav"), "-c", str(other)])
    assert r.exit_code != 0 and "another checkpoint" in r.output
    assert not (tmp_path / "x.wav").exists()


def test_cli_bad_inputs(ckpt, tmp_path):
    (tmp_path / "junk.wav").write_text("not audio")
    r = runner.invoke(app, ["encode", str(tmp_path / "junk.wav"), "-o", str(tmp_path / "j.npz"), "-c", str(ckpt)])
    assert r.exit_code == 1 and "cannot be read as audio" in r.output
    r = runner.invoke(app, ["encode", str(tmp_path / "missing.wav"), "-o", str(tmp_path / "m.npz"), "-c", str(ckpt)])
    assert r.exit_code == 1 and "no such file" in r.output
    (tmp_path / "bad.npz").write_bytes(b"nope")
    r = runner.invoke(app, ["decode", str(tmp_path / "bad.npz"), "-o", str(tmp_path / "b.wav"), "-c", str(ckpt)])
    assert r.exit_code == 1 and "token file" in r.output
    r = runner.invoke(app, ["info", str(tmp_path / "nockpt")])
    assert r.exit_code == 1 and "not found" in r.output


def test_cli_never_overwrites_input(ckpt, wavs, tmp_path):
    before = (wavs / "a.wav").read_bytes()
    r = runner.invoke(app, ["reconstruct", str(wavs / "a.wav"), "-o", str(wavs / "a.wav"), "-c", str(ckpt), "--overwrite"])
    assert r.exit_code == 1 and "overwrite an input" in r.output
    assert (wavs / "a.wav").read_bytes() == before


def test_info(ckpt):
    r = runner.invoke(app, ["info", str(ckpt), "--json"])
    assert r.exit_code == 0, r.output
    assert '"bitrate_bps": 300.0' in r.output and '"paper"' in r.output
