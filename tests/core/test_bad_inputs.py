"""Bad inputs and faults through the CLI and the Python API.

Every case asserts the exit code (1: the command failed; 2: the command line is wrong), a
one-line message naming the problem, untouched inputs and no partial outputs.
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from entanglecodec import EntangleCodec, EntangleCodecConfig
from entanglecodec.audio import AudioError, AudioWarning, load_audio, save_audio
from entanglecodec.cli import app
from entanglecodec.codec.model import CheckpointError, check_sampling
from entanglecodec.codec.streaming import encode_file, encode_stream
from entanglecodec.codec.tokens import TokenFileError, load_tokens
from entanglecodec.fileio import OutputError, atomic_write_bytes

runner = CliRunner()
GL = ["--vocoder", "griffin-lim"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return EntangleCodec(EntangleCodecConfig.preset("tiny"), build_text_encoder=False).save_pretrained(
        tmp_path_factory.mktemp("ck") / "tiny"
    )


@pytest.fixture(scope="module")
def model(ckpt: Path) -> EntangleCodec:
    return EntangleCodec.from_pretrained(ckpt, build_text_encoder=False)


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    p = tmp_path / "in" / "a.wav"
    p.parent.mkdir()
    sf.write(p, (np.random.default_rng(0).standard_normal(12000) * 0.1).astype(np.float32), 24000)
    return p


@pytest.fixture
def tokens(tmp_path: Path, wav: Path, ckpt: Path) -> Path:
    out = tmp_path / "tok" / "a.npz"
    r = runner.invoke(app, ["encode", str(wav), "-o", str(out), "-c", str(ckpt)])
    assert r.exit_code == 0, r.output
    return out


def run(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


def one_error_line(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, out
    assert "Traceback" not in out, out
    return lines[0]


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def save_npz(path: Path, **fields: object) -> Path:
    base: dict[str, object] = dict(
        codes=np.zeros(5, dtype=np.int64), sample_rate=24000, num_samples=2400, frame_rate=50.0,
        codebook_size=64, fingerprint="x", source="a.wav", format_version=1,
    )
    base.update(fields)
    np.savez(path, **base)  # type: ignore[arg-type]
    return path


# ------------------------------------------------------------------ 1. lost input
@pytest.mark.parametrize("link", ["hard", "sym"])
def test_reconstruct_refuses_output_linked_to_input(tmp_path, wav, ckpt, link):
    before = wav.read_bytes()
    out = tmp_path / "out.wav"
    (os.link if link == "hard" else os.symlink)(wav, out)
    code, text = run("reconstruct", wav, "-o", out, "--overwrite", "-c", ckpt, *GL)
    assert code == 1 and "overwrite an input" in one_error_line(text)
    assert wav.read_bytes() == before


def test_encode_refuses_output_hard_linked_to_input(tmp_path, wav, ckpt):
    before = wav.read_bytes()
    os.link(wav, tmp_path / "a.npz")
    code, text = run("encode", wav, "-o", tmp_path / "a.npz", "--overwrite", "-c", ckpt)
    assert code == 1 and "overwrite an input" in one_error_line(text) and wav.read_bytes() == before


def test_decode_refuses_output_hard_linked_to_input(tmp_path, tokens, ckpt):
    before = tokens.read_bytes()
    os.link(tokens, tmp_path / "t.wav")
    code, text = run("decode", tokens, "-o", tmp_path / "t.wav", "--overwrite", "-c", ckpt, *GL)
    assert code == 1 and "overwrite an input" in one_error_line(text) and tokens.read_bytes() == before


def test_atomic_write_failure_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "x.npz"
    target.write_bytes(b"old")

    def boom(*_a: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("entanglecodec.fileio.os.replace", boom)
    with pytest.raises(OutputError, match="no space left on device") as e:
        atomic_write_bytes(target, b"new content")
    assert str(target) in str(e.value)
    assert target.read_bytes() == b"old" and listing(tmp_path) == ["x.npz"]


# ------------------------------------------------------------------ 2. write faults
def test_encode_output_under_a_file(tmp_path, wav, ckpt):
    (tmp_path / "file").write_text("x")
    code, text = run("encode", wav, "-o", tmp_path / "file" / "sub" / "a.npz", "-c", ckpt)
    line = one_error_line(text)
    assert code == 1 and "not a directory" in line and "file" in line


@pytest.mark.parametrize(
    "err", [errno.EROFS, errno.EACCES, errno.ENOSPC], ids=["read-only", "permission", "disk-full"]
)
def test_unwritable_output_fails_before_work(tmp_path, wav, ckpt, monkeypatch, err):
    def refuse(*_a: object, **_k: object) -> None:
        raise OSError(err, os.strerror(err))

    def no_model(*_a: object, **_k: object) -> None:
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr("entanglecodec.fileio.tempfile.mkstemp", refuse)
    monkeypatch.setattr("entanglecodec.cli.codec.load_model", no_model)
    out = tmp_path / "o" / "a.wav"
    code, text = run("reconstruct", wav, "-o", out, "-c", ckpt, *GL)
    line = one_error_line(text)
    assert code == 1 and str(out) in line and os.strerror(err).lower() in line
    assert listing(tmp_path / "o") == []


@pytest.mark.parametrize("cmd", ["encode", "reconstruct"])
def test_disk_full_during_write_leaves_nothing_and_rerun_works(tmp_path, wav, ckpt, monkeypatch, cmd):
    real = os.replace

    def full(*_a: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "o" / ("a.npz" if cmd == "encode" else "a.wav")
    extra = [] if cmd == "encode" else GL
    monkeypatch.setattr("entanglecodec.fileio.os.replace", full)
    code, text = run(cmd, wav, "-o", out, "-c", ckpt, *extra)
    assert code == 1 and "no space left on device" in one_error_line(text)
    assert listing(tmp_path / "o") == []
    monkeypatch.setattr("entanglecodec.fileio.os.replace", real)
    code, text = run(cmd, wav, "-o", out, "-c", ckpt, *extra)
    assert code == 0, text
    assert listing(tmp_path / "o") == [out.name]


def test_output_is_existing_directory_with_wav_suffix(tmp_path, wav, ckpt):
    (tmp_path / "x.wav").mkdir()
    code, text = run("vocode", wav, "-o", tmp_path / "x.wav", "--vocoder", "griffin-lim")
    assert code == 0, text  # a directory: the output goes inside it
    assert listing(tmp_path / "x.wav") == ["a.wav"]


# ------------------------------------------------------------------ 3. silent garbage: sampling
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "11"])
def test_cli_guidance_must_be_finite_and_in_range(tmp_path, tokens, ckpt, value):
    code, text = run("decode", tokens, "-o", tmp_path / "x.wav", "-c", ckpt, "--guidance", value, *GL)
    assert code == 2 and "--guidance" in text and not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize("args", [["--guidance", "nan"], ["--steps", "0"], ["--steps", "2.5"]])
def test_cli_reconstruct_sampling_options(tmp_path, wav, ckpt, args):
    code, text = run("reconstruct", wav, "-o", tmp_path / "x.wav", "-c", ckpt, *args, *GL)
    assert code == 2 and args[0] in text and not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize(
    ("steps", "guidance", "match"),
    [(1, float("nan"), "finite"), (1, float("inf"), "finite"), (2.5, 1.0, "whole number"), (True, 1.0, "whole"),
     (0, 1.0, ">= 1"), (1, -0.5, r"\[0, 10\]"), (1, "2", "number")],
)
def test_api_sampling_validation(model, steps, guidance, match):
    with pytest.raises(ValueError, match=match):
        model.decode(torch.zeros(1, 5, dtype=torch.long), steps=steps, guidance=guidance)
    with pytest.raises(ValueError, match=match):
        model.reconstruct(torch.zeros(4800), 24000, steps=steps, guidance=guidance)


def test_api_extreme_guidance_warns_and_integer_numpy_steps_work():
    with pytest.warns(UserWarning, match="extreme"):
        assert check_sampling(np.int64(2), 5) == (2, 5.0)


# ------------------------------------------------------------------ 3. clipping, short clips
def test_save_audio_peak_limits_with_warning(tmp_path):
    x = (1.6 * np.sin(np.linspace(0, 200 * np.pi, 24000))).astype(np.float32)
    with pytest.warns(AudioWarning, match=r"peaks at 1\.60x full scale"):
        save_audio(tmp_path / "hot.wav", x, 24000)
    y, _ = sf.read(tmp_path / "hot.wav")
    assert np.abs(y).max() <= 0.9991 and np.corrcoef(x, y)[0, 1] > 0.999  # scaled, not clipped


def test_save_audio_refuses_nan(tmp_path):
    with pytest.raises(AudioError, match="NaN"):
        save_audio(tmp_path / "x.wav", np.full(100, np.nan, dtype=np.float32), 24000)
    assert listing(tmp_path) == []


def test_cli_loud_output_is_limited_with_a_warning(tmp_path, wav, ckpt, monkeypatch):
    from entanglecodec.codec.model import Audio

    def loud(self: EntangleCodec, w: torch.Tensor, sr: int, **_k: object) -> Audio:
        return Audio(wav=3 * torch.ones(1, w.shape[-1]) * torch.sign(torch.randn(w.shape[-1])), lengths=torch.tensor([w.shape[-1]]), sample_rate=24000)

    monkeypatch.setattr(EntangleCodec, "reconstruct", loud)
    code, text = run("reconstruct", wav, "-o", tmp_path / "x.wav", "-c", ckpt, *GL)
    assert code == 0 and "warning:" in text and "full scale" in text
    assert np.abs(sf.read(tmp_path / "x.wav")[0]).max() < 1.0


def test_vocode_hot_input_never_clips_silently(tmp_path):
    src = tmp_path / "hot.wav"
    t = np.arange(24000) / 24000
    sf.write(src, np.sign(np.sin(2 * np.pi * 220 * t)).astype(np.float32) * 0.999, 24000, subtype="FLOAT")
    code, text = run("vocode", src, "-o", tmp_path / "out.wav", "--vocoder", "griffin-lim")
    assert code == 0, text
    y = sf.read(tmp_path / "out.wav")[0]
    assert (np.abs(y) >= 0.9999).mean() < 0.001  # no run of full-scale samples


def test_short_clip_warns_api_and_cli(model, tmp_path, ckpt):
    with pytest.warns(AudioWarning, match="shorter than the codec's minimum"):
        model.encode(np.zeros(100, dtype=np.float32) + 0.1, 24000)
    sf.write(tmp_path / "s.wav", np.full(100, 0.1, dtype=np.float32), 24000)
    code, text = run("encode", tmp_path / "s.wav", "-o", tmp_path / "s.npz", "-c", ckpt)
    assert code == 0 and "warning:" in text and "minimum" in text


# ------------------------------------------------------------------ 3. checkpoints
def test_corrupted_weights_with_intact_header_are_refused(tmp_path, model, wav):
    d = model.save_pretrained(tmp_path / "ck")
    w = d / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-4000:-2000] = bytes(2000)
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        EntangleCodec.from_pretrained(d, build_text_encoder=False)
    code, text = run("encode", wav, "-o", tmp_path / "x.npz", "-c", d)
    assert code == 1 and "checksum" in one_error_line(text)


def test_fingerprint_changes_with_any_weight(model):
    m = EntangleCodec(model.config, build_text_encoder=False)
    m.load_state_dict(model.state_dict(), strict=False)
    m.eval()
    fp = m.fingerprint()
    assert fp == model.fingerprint()
    with torch.no_grad():
        m.encoder.proj.weight.zero_() if hasattr(m.encoder, "proj") else next(m.encoder.parameters()).zero_()
    m.train(False)
    assert m.fingerprint() != fp


def test_old_checkpoint_without_checksum_loads_but_nan_weights_do_not(tmp_path, model):
    import json

    from safetensors.torch import load_file, save_file

    d = model.save_pretrained(tmp_path / "ck")
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("weights_sha256")
    (d / "config.json").write_text(json.dumps(cfg))
    assert EntangleCodec.from_pretrained(d, build_text_encoder=False).fingerprint() == model.fingerprint()
    state = load_file(str(d / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match="NaN"):
        EntangleCodec.from_pretrained(d, build_text_encoder=False)


def test_bundled_checkpoints_still_load():
    from entanglecodec.vocoder.load import load_vocoder

    repo = Path(__file__).resolve().parents[2] / "checkpoints"
    EntangleCodec.from_pretrained(repo / "entanglecodec-small", build_text_encoder=False)
    load_vocoder(repo / "vocoder-small")


def test_env_checkpoint_pointing_nowhere_is_an_error(tmp_path, wav, monkeypatch):
    monkeypatch.setenv("ENTANGLECODEC_CHECKPOINT", str(tmp_path / "missing"))
    with pytest.raises(CheckpointError, match="ENTANGLECODEC_CHECKPOINT"):
        EntangleCodec.from_pretrained()
    code, text = run("encode", wav, "-o", tmp_path / "x.npz")
    assert code == 1 and "ENTANGLECODEC_CHECKPOINT" in one_error_line(text)
    assert not (tmp_path / "x.npz").exists()


# ------------------------------------------------------------------ 3./4. token files
@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"codes": np.zeros(5, dtype=np.float32)}, "integer token ids"),
        ({"codes": np.ones(5, dtype=bool)}, "integer token ids"),
        ({"codes": np.array(["1", "2"])}, "integer token ids"),
        ({"sample_rate": np.str_("abc")}, "'sample_rate'"),
        ({"num_samples": 2400.5}, "'num_samples'"),
        ({"frame_rate": float("nan")}, "'frame_rate'"),
        ({"codebook_size": 0}, "'codebook_size'"),
        ({"codes": np.array([1, 99])}, r"outside \[0, 64\)"),
    ],
    ids=["float", "bool", "str", "str-rate", "frac-samples", "nan-rate", "zero-codebook", "range"],
)
def test_bad_token_files_are_named(tmp_path, fields, match):
    p = save_npz(tmp_path / "bad.npz", **fields)
    with pytest.raises(TokenFileError, match=match) as e:
        load_tokens(p)
    assert str(p) in str(e.value)


def test_cli_decode_float_codes_names_file(tmp_path, ckpt):
    p = save_npz(tmp_path / "bad.npz", codes=np.full(5, 0.5))
    code, text = run("decode", p, "-o", tmp_path / "x.wav", "-c", ckpt, *GL)
    line = one_error_line(text)
    assert code == 1 and "bad.npz" in line and "integer" in line and not (tmp_path / "x.wav").exists()


# ------------------------------------------------------------------ 3. CLI numbers
@pytest.mark.parametrize("value", ["-1", "0"])
def test_batch_size_validated_at_parse_time(tmp_path, wav, ckpt, value):
    code, text = run("encode", wav, "-o", tmp_path / "x.npz", "-c", ckpt, "--batch-size", value)
    assert code == 2 and "--batch-size" in text and not (tmp_path / "x.npz").exists()


# ------------------------------------------------------------------ 3. audio inputs
def test_truncated_wav_warns_with_numbers(tmp_path, ckpt):
    full = tmp_path / "full.wav"
    sf.write(full, np.zeros(48000, dtype=np.float32), 24000, subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(AudioWarning, match=r"declares 48000 samples .* only 23989"):
        wav, _ = load_audio(cut)
    assert wav.shape[0] == 23989
    code, text = run("encode", cut, "-o", tmp_path / "cut.npz", "-c", ckpt)
    assert code == 0 and "truncated WAV" in text


@pytest.mark.parametrize("make", [lambda: np.zeros(4800, dtype=np.int16), lambda: torch.zeros(4800, dtype=torch.int16)])
def test_integer_pcm_refused_alike(model, make):
    with pytest.raises(AudioError, match="floating point.*32768"):
        model.encode(make(), 24000)


def test_channel_last_array_refused(model):
    with pytest.raises(AudioError, match=r"\[samples, channels\]"):
        model.encode(np.zeros((48000, 2), dtype=np.float32), 24000)


def test_sample_rates(model, wav):
    with pytest.raises(AudioError, match="whole number"):
        load_audio(wav, sample_rate=22050.5)  # type: ignore[arg-type]
    with pytest.raises(AudioError, match="whole number"):
        model.encode(np.zeros(4800, dtype=np.float32), 22050.5)  # type: ignore[arg-type]
    tokens = model.encode(np.zeros(4800, dtype=np.float32) + 0.1, np.int64(24000))  # type: ignore[arg-type]
    assert tokens.codes.shape == (1, 10)
    assert load_audio(wav, sample_rate=np.int64(16000))[1] == 16000  # type: ignore[arg-type]


def test_cli_unreadable_and_empty_audio(tmp_path, ckpt):
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 24000)
    for name, what in [("junk.wav", "cannot be read"), ("empty.wav", "empty")]:
        code, text = run("encode", tmp_path / name, "-o", tmp_path / "o.npz", "-c", ckpt)
        line = one_error_line(text)
        assert code == 1 and name in line and what in line
    assert not (tmp_path / "o.npz").exists()


# ------------------------------------------------------------------ 4. exit codes
def test_data_synth_failure_exits_1(tmp_path):
    (tmp_path / "x").write_text("occupied")
    code, text = run("data", "synth", "--hours", "0.001", "--out", tmp_path, "--no-progress")
    assert code == 1 and "not empty" in text


def test_unexpected_exception_is_one_line(tmp_path, wav, ckpt, monkeypatch):
    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(EntangleCodec, "encode", broken)
    code, text = run("encode", wav, "-o", tmp_path / "x.npz", "-c", ckpt)
    assert code == 1 and "RuntimeError: boom" in one_error_line(text)


# ------------------------------------------------------------------ 5. directories with bad files
@pytest.fixture
def mixed_dir(tmp_path: Path) -> Path:
    d = tmp_path / "mixed"
    d.mkdir()
    for n in ("a", "c"):
        sf.write(d / f"{n}.wav", np.full(4800, 0.1, dtype=np.float32), 24000)
    (d / "b.wav").write_bytes(b"junk")
    (d / "d.flac").write_bytes(b"")
    return d


def test_default_lists_every_bad_file(tmp_path, mixed_dir, ckpt):
    code, text = run("encode", mixed_dir, "-o", tmp_path / "tok", "-c", ckpt)
    line = one_error_line(text)
    assert code == 1 and "b.wav" in line and "d.flac" in line and "2 of 4" in line and "--skip-errors" in line
    assert listing(tmp_path / "tok") == []


@pytest.mark.parametrize("cmd", ["encode", "reconstruct", "vocode"])
def test_skip_errors_processes_the_rest(tmp_path, mixed_dir, ckpt, cmd):
    extra = {"encode": ["-c", ckpt], "reconstruct": ["-c", ckpt, *GL], "vocode": ["--vocoder", "griffin-lim"]}[cmd]
    code, text = run(cmd, mixed_dir, "-o", tmp_path / "o", "--skip-errors", *extra)
    assert code == 1, text
    assert "b.wav" in text and "d.flac" in text and "2 input file(s) skipped" in one_error_line(text)
    ext = ".npz" if cmd == "encode" else ".wav"
    assert listing(tmp_path / "o") == [f"a{ext}", f"c{ext}"]


def test_skip_errors_decode(tmp_path, tokens, ckpt):
    d = tokens.parent
    save_npz(d / "z.npz", codes=np.full(5, 0.5))
    code, text = run("decode", d, "-o", tmp_path / "w", "--skip-errors", "-c", ckpt, *GL)
    assert code == 1 and "z.npz" in text and listing(tmp_path / "w") == ["a.wav"]


# ------------------------------------------------------------------ 6. streamed encoding
@pytest.mark.parametrize("n", [4000, 48000, 48001, 24000 * 7 + 13])
def test_streamed_encoding_matches_in_memory(model, n):
    x = (np.random.default_rng(n).standard_normal(n) * 0.1).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioWarning)
        ref = model.encode(torch.from_numpy(x), 24000).codes[0].numpy()
        got = encode_stream(model, [x[i : i + 7777] for i in range(0, n, 7777)])
    assert got.num_samples == n and np.array_equal(got.codes, ref)


def test_streamed_file_encoding_resamples_like_load_audio(model, tmp_path):
    x = (np.random.default_rng(1).standard_normal((44100 * 5, 2)) * 0.1).astype(np.float32)
    sf.write(tmp_path / "s.wav", x, 44100, subtype="FLOAT")
    ref = model.encode(torch.from_numpy(load_audio(tmp_path / "s.wav")[0]), 24000).codes[0].numpy()
    got = encode_file(model, tmp_path / "s.wav", block_seconds=0.3)
    assert np.array_equal(got.codes, ref)
