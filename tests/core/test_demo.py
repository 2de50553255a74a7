"""``make demo``: clips of every domain, baselines, scores, caption ranking, one PNG, index.html."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from entanglecodec import EntangleCodec, EntangleCodecConfig
from entanglecodec.cli import app
from entanglecodec.codec.tokens import load_tokens
from entanglecodec.data.heldout import DEV_SPEAKERS, TEST_PACKAGES, TEST_SPEAKERS
from entanglecodec.showcase import clips as C

runner = CliRunner()
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite (Debian package) is not installed")


def test_demo_sources_avoid_heldout_speakers_and_test_packages():
    assert C.RECORDED_SPEAKER not in DEV_SPEAKERS + TEST_SPEAKERS
    assert C.SOUND_EVENT[0] not in TEST_PACKAGES
    names = [n for n, _, _ in C.CLIP_MAKERS]
    assert names == ["speech-recorded", "speech-tts", "music", "sound", "mixture", "note", "drums"]
    assert not set(C.DISTRACTOR_CAPTIONS) & {"", None}


def _made(maker):  # noqa: ANN001, ANN202
    try:
        return maker()
    except (ImportError, FileNotFoundError, RuntimeError) as e:  # no pyfluidsynth / sound font here
        pytest.skip(f"cannot render with FluidSynth here: {e}")


def test_the_sustained_note_is_one_steady_harmonic_stack_at_220_hz():
    clip = _made(C.sustained_note)
    assert clip.domain == "music" and 3.0 <= clip.seconds <= C.MAX_SECONDS
    held = clip.wav[int(0.6 * C.SAMPLE_RATE) : int(2.4 * C.SAMPLE_RATE)]
    spec = np.abs(np.fft.rfft(held * np.hanning(held.size)))
    freqs = np.fft.rfftfreq(held.size, 1 / C.SAMPLE_RATE)
    band = (freqs > 150) & (freqs < 300)
    assert abs(freqs[band][np.argmax(spec[band])] - 220.0) < 3.0  # the fundamental, A3
    rms = [float(np.sqrt(np.mean(x**2))) for x in np.array_split(held, 6)]
    assert max(rms) < 2.0 * min(rms)  # held, not decaying away


def test_the_drum_clip_has_four_separate_hits():
    clip = _made(C.drum_hits)
    env = np.array([np.sqrt(np.mean(x**2)) for x in np.array_split(clip.wav, int(clip.seconds * 50))])
    hits, quiet = 0, True  # a hit: a rise above 10 % of the peak after a near-silence (< 1 %)
    for e in env / env.max():
        if quiet and e > 0.1:
            hits, quiet = hits + 1, False
        elif e < 0.01:
            quiet = True
    assert hits == 4


@needs_flite
def test_demo_without_a_model_is_honest_and_writes_every_output(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTANGLECODEC_CHECKPOINT", str(tmp_path / "none"))
    monkeypatch.setattr("entanglecodec.checkpoint._find_repo_checkpoints", lambda: tmp_path / "nothing")
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--out", str(out), "--clips", "speech-tts"])
    assert r.exit_code == 0, r.output
    assert "UNTRAINED tiny model" in r.output and "caption ranking not run" in r.output
    assert str((out / "index.html").resolve()) in r.output
    original = sf.info(str(out / "speech-tts-original.wav"))
    recon = sf.info(str(out / "speech-tts-entanglecodec.wav"))
    assert recon.frames == original.frames and recon.samplerate == 24000
    tf = load_tokens(out / "speech-tts.npz")
    assert tf.codes.size == -(-original.frames // 480)
    page = (out / "index.html").read_text()
    assert "RANDOM weights" in page and page.count("<audio") >= 2
    assert (out / "mels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((out / "results.json").read_text())
    (clip,) = res["clips"]
    assert clip["tokens"] == tf.codes.size and clip["distinct_codes"] == len(set(tf.codes.tolist()))
    assert res["trained"] is False


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``entanglecodec demo --clips speech-tts`` with a tiny model (it has a caption tower)."""
    if shutil.which("flite") is None:
        pytest.skip("flite (Debian package) is not installed")
    root = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    ck = EntangleCodec(EntangleCodecConfig.preset("tiny")).save_pretrained(root / "ck")
    out = root / "demo"
    r = runner.invoke(app, ["demo", "--out", str(out), "--clips", "speech-tts", "-c", str(ck)])
    assert r.exit_code == 0, r.output
    return out, json.loads((out / "results.json").read_text()), r.output


def test_demo_with_a_model_ranks_captions_and_runs_the_baselines(demo_run):
    out, res, output = demo_run
    (clip,) = res["clips"]
    n_candidates = 1 + len(C.DISTRACTOR_CAPTIONS)
    assert len(clip["ranking"]) == n_candidates and 1 <= clip["caption_rank"] <= n_candidates
    sims = [s for _, s in clip["ranking"]]
    assert sims == sorted(sims, reverse=True)
    systems = set(clip["scores"])
    for name, tool in (("codec2-700C", "c2enc"), ("opus-6k", "opusenc")):
        if shutil.which(tool):
            assert name in systems and (out / f"speech-tts-{name.lower()}.wav").is_file()
            assert clip["bitrate_bps"][name] in (700.0, 6000.0)
        else:
            assert f"{name} left out" in output
    assert clip["bitrate_bps"]["EntangleCodec"] == 300.0
    assert all(0.0 < clip["scores"][s]["mel_l1"] for s in systems)  # identical audio is never claimed
    page = (out / "index.html").read_text()
    assert len(re.findall(r'<audio controls[^>]*src="data:audio/flac;base64,', page)) == 1 + len(systems)
    assert "src=\"http" not in page  # self-contained


def test_demo_page_plays_in_headless_chromium(demo_run, chromium):
    out, res, _ = demo_run
    chromium.get((out / "index.html").resolve().as_uri())
    state = "return Array.from(document.querySelectorAll('audio')).map(a => [a.readyState, a.duration, a.error && a.error.code])"
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(chromium, 60).until(lambda d: all(r >= 1 for r, _, _ in d.execute_script(state)))
    players = chromium.execute_script(state)
    (clip,) = res["clips"]
    assert len(players) == 1 + len(clip["scores"])
    assert all(err is None and abs(dur - clip["seconds"]) < 0.01 for _, dur, err in players), players
    assert chromium.execute_script("const i = document.querySelector('img'); return i.complete && i.naturalWidth") > 0


def test_demo_rejects_unknown_clip_names(tmp_path):
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--clips", "speech-tts,podcast"])
    assert r.exit_code == 1 and "unknown demo clip" in r.output and "podcast" in r.output


def test_missing_clip_sources_are_noted_not_faked(monkeypatch):
    def broken() -> C.DemoClip:
        raise RuntimeError("flite: not found")

    monkeypatch.setattr(C, "CLIP_MAKERS", (("speech-tts", broken, "the Debian package flite"),))
    notes: list[str] = []
    assert C.demo_clips(notes) == []
    assert notes == ["clip 'speech-tts' left out: flite: not found (needs the Debian package flite)"]


def test_clip_lengths_are_bounded():
    wav = C._finish(np.ones(int(9 * C.SAMPLE_RATE), dtype=np.float32))
    assert wav.size == int(C.MAX_SECONDS * C.SAMPLE_RATE) and float(np.abs(wav).max()) <= 0.9 + 1e-6
