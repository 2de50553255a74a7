"""Systems under evaluation: classical codecs, mel oracle, external commands, our model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from entanglecodec.eval import metrics as M
from entanglecodec.eval import systems as S

SR = 24000


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(
            f"missing {missing}: install the Debian packages codec2 / opus-tools (requirements/debian.txt)"
        )


def _aligned_stoi(ref: np.ndarray, out: np.ndarray) -> float:
    aligned, _ = M.align(ref, out, SR)
    return M.stoi(ref, aligned, SR)


@pytest.mark.parametrize(
    ("mode", "bitrate", "min_stoi"), [("700C", 700, 0.4), ("1200", 1200, 0.5), ("3200", 3200, 0.6)]
)
def test_codec2_round_trip(speech: tuple[np.ndarray, str], mode: str, bitrate: int, min_stoi: float) -> None:
    _require("c2enc", "c2dec")
    wav, _ = speech
    system = S.Codec2System(mode)
    out = system.process(wav)
    assert system.name == f"codec2-{mode}" and system.bitrate == bitrate
    assert out.shape == wav.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and np.abs(out).max() > 0.01
    assert _aligned_stoi(wav, out) > min_stoi
    # narrow band: (almost) nothing above 4 kHz survives
    spec = np.abs(np.fft.rfft(out))
    freqs = np.fft.rfftfreq(out.size, 1 / SR)
    assert spec[freqs > 4200].sum() < 0.02 * spec.sum()


def test_opus_round_trip_without_delay(speech: tuple[np.ndarray, str]) -> None:
    _require("opusenc", "opusdec")
    wav, _ = speech
    system = S.OpusSystem(6)
    out = system.process(wav)
    assert system.name == "opus-6k" and system.bitrate == 6000
    assert out.shape == wav.shape
    assert abs(M.estimate_delay(wav, out, SR)) < SR // 200  # opusdec removed the pre-skip (< 5 ms left)
    assert _aligned_stoi(wav, out) > 0.8


def test_mel_oracle_griffin_lim(speech: tuple[np.ndarray, str]) -> None:
    wav, _ = speech
    system = S.MelOracleSystem("griffin-lim")
    out = system.process(wav)
    assert system.bitrate is None and system.name == "mel-oracle-gl"
    assert out.shape == wav.shape
    aligned, lag = M.align(wav, out, SR)
    assert abs(lag) < 480  # the mel frames are centred: no delay beyond a frame
    assert M.log_mel_l1(wav, aligned, SR) < 0.5  # the magnitude is (nearly) the original's
    assert M.stoi(wav, aligned, SR) > 0.8


def test_mel_oracle_refuses_a_silent_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    import entanglecodec.vocoder.load as vocoder

    monkeypatch.setattr(vocoder, "default_vocoder_dir", lambda: None)
    with pytest.raises(S.CodecSystemError, match="no default vocoder weights"):
        S.MelOracleSystem("default")
    notes: list[str] = []
    names = [s.name for s in S.default_baselines(notes=notes)]
    assert names == ["codec2-700C", "codec2-1200", "codec2-3200", "opus-6k", "mel-oracle-gl"]
    assert len(notes) == 1 and "neural vocoder" in notes[0]


def test_command_system_identity_and_resampling(speech: tuple[np.ndarray, str]) -> None:
    wav, _ = speech
    out = S.CommandSystem("copy", "cp {in} {out}").process(wav)
    np.testing.assert_allclose(out, wav, atol=1.5 / 32768)  # through a 16-bit WAV
    # the command may write any rate and channel count: output comes back at 24 kHz mono, input length
    _require("sox")
    out = S.CommandSystem("sox16k", "sox {in} -r 16000 -c 2 {out}").process(wav)
    assert out.shape == wav.shape
    assert M.stoi(wav, out, SR) > 0.95


def test_command_runs_in_the_callers_directory_with_a_scratch_dir(
    speech: tuple[np.ndarray, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wav, _ = speech
    (tmp_path / "mycodec.sh").write_text('cp "$1" "$WORKDIR/mid.wav" && cp "$WORKDIR/mid.wav" "$2"\n')
    monkeypatch.chdir(tmp_path)
    out = S.CommandSystem("mine", "sh mycodec.sh {in} {out}").process(wav)  # a path relative to the caller
    np.testing.assert_allclose(out, wav, atol=1.5 / 32768)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mycodec.sh"]  # intermediates stayed in $WORKDIR


def test_command_errors_are_clear(speech: tuple[np.ndarray, str]) -> None:
    wav, _ = speech
    with pytest.raises(S.CodecSystemError, match=r"(?s)exit code 3.*boom"):
        S.CommandSystem("bad", "echo boom >&2; exit 3 # {in} {out}").process(wav)
    with pytest.raises(S.CodecSystemError, match="did not write"):
        S.CommandSystem("lazy", "true {in} {out}").process(wav)
    with pytest.raises(S.CodecSystemError, match="timed out"):
        S.CommandSystem("slow", "sleep 5 # {in} {out}", timeout=0.3).process(wav)
    with pytest.raises(S.CodecSystemError, match="cannot read"):
        S.CommandSystem("junk", "echo hello > {out} # {in}").process(wav)
    with pytest.raises(S.CodecSystemError, match="empty"):
        S.CommandSystem("copy", "cp {in} {out}").process(np.zeros(0, np.float32))


def test_parse_system_spec() -> None:
    s = S.parse_system_spec("mine=cp {in} {out}")
    assert (s.name, s.template, s.bitrate) == ("mine", "cp {in} {out}", None)
    s = S.parse_system_spec(
        "opus12@12000=opusenc --bitrate 12 {in} $WORKDIR/x.opus && opusdec $WORKDIR/x.opus {out}"
    )
    assert (s.name, s.bitrate) == ("opus12", 12000.0)
    assert s.template.startswith("opusenc") and "&&" in s.template
    s = S.parse_system_spec("eq=sox {in} {out} gain=2")  # '=' inside the command is kept
    assert s.template == "sox {in} {out} gain=2"
    for bad, msg in [
        ("no-command", "NAME=CMD"),
        ("=cp {in} {out}", "NAME=CMD"),
        ("x=cp {in} y.wav", r"\{out\}"),
        ("x@fast=cp {in} {out}", "bits per second"),
        ("x@-5=cp {in} {out}", "positive"),
    ]:
        with pytest.raises(ValueError, match=msg):
            S.parse_system_spec(bad)


def test_entanglecodec_system(tmp_path, speech: tuple[np.ndarray, str]) -> None:  # noqa: ANN001
    import torch

    from entanglecodec import EntangleCodec, EntangleCodecConfig

    torch.manual_seed(0)
    model = EntangleCodec(EntangleCodecConfig.preset("tiny"))
    model.save_pretrained(tmp_path / "tiny")
    wav, _ = speech
    clip = wav[: SR + 123]  # not a whole number of frames
    for system in (S.EntangleCodecSystem(model), S.EntangleCodecSystem(tmp_path / "tiny")):
        out = system.process(clip)
        assert out.shape == clip.shape and np.isfinite(out).all()
        assert system.bitrate == model.bitrate
    assert S.EntangleCodecSystem(tmp_path / "tiny").name == "tiny"
    with pytest.raises(S.CodecSystemError, match="not a directory"):
        S.EntangleCodecSystem(tmp_path / "missing")


def test_unknown_modes_are_rejected() -> None:
    with pytest.raises(ValueError, match="Codec2 mode"):
        S.Codec2System("2400x")
    with pytest.raises(ValueError, match="6..256"):
        S.OpusSystem(3)
