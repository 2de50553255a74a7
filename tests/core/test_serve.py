"""``entanglecodec serve``: the Gradio web demo in a real headless Chromium, through ``gradio_client``,
and its pure parts (pictures, upload checks, the tab registry)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from entanglecodec import EntangleCodec, EntangleCodecConfig
from entanglecodec.showcase import webapp

SRC = str(Path(__file__).resolve().parents[2] / "src")
MAX_SECONDS = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running server (tiny model, 3 s upload limit) with its own HOME, TMPDIR and working directory."""
    pytest.importorskip("gradio", reason="the [demo] extra (gradio) is not installed")
    root = tmp_path_factory.mktemp("serve")
    dirs = {k: root / k for k in ("home", "tmp", "cwd")}
    for d in dirs.values():
        d.mkdir()
    torch.manual_seed(0)
    ck = EntangleCodec(EntangleCodecConfig.preset("tiny")).save_pretrained(root / "ck")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": SRC, "HOME": str(dirs["home"]), "TMPDIR": str(dirs["tmp"]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("GRADIO_TEMP_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "entanglecodec.cli", "serve", "--port", str(port), "-c", str(ck),
         "--max-seconds", str(MAX_SECONDS)],
        cwd=dirs["cwd"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = None
    deadline = time.monotonic() + 180
    lines = []
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        lines.append(line)
        if line.startswith("http://"):
            url = line.strip()
            break
    if url is None:
        proc.kill()
        pytest.fail("server did not start:\n" + "".join(lines))
    assert url.startswith(f"http://127.0.0.1:{port}")  # localhost unless told otherwise
    yield {"url": url, "proc": proc, "dirs": dirs, "root": root}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def clip(server) -> Path:
    t = np.arange(int(2.0 * 24000)) / 24000
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)
    path = server["root"] / "tone.wav"
    sf.write(path, wav, 24000)
    return path


def test_upload_in_a_headless_browser_gives_a_playable_reconstruction(server, clip, chromium, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium
    driver.get(server["url"])
    wait = WebDriverWait(driver, 120)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-audio input[type=file]"))
    driver.find_element(By.CSS_SELECTOR, "#input-audio input[type=file]").send_keys(str(clip))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-audio audio, #input-audio canvas, #input-audio wave"))
    driver.find_element(By.CSS_SELECTOR, "#run").click()
    state = "return Array.from(document.querySelectorAll('#reconstruction audio')).map(a => [a.src, a.duration])"
    wait.until(lambda d: any(src and (dur or 0) > 0 for src, dur in d.execute_script(state)))
    ((src, duration),) = [s for s in driver.execute_script(state) if s[0]]
    assert abs(duration - 2.0) < 0.05, duration
    assert "/gradio_api/file=" in src and str(server["dirs"]["tmp"]) in src  # served from its temp dir
    summary = driver.find_element(By.CSS_SELECTOR, "#summary").text
    assert "100 tokens" in summary and "300 bit/s" in summary
    shot = tmp_path / "serve.png"
    driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradio_client_api(server, clip):
    from gradio_client import Client, handle_file

    client = Client(server["url"], verbose=False)
    summary, ids, strip, audio, mel, ranking = client.predict(
        handle_file(str(clip)), next(iter(["" + str(server["root"] / "ck")])), 2, 1.5,
        "a steady tone\na dog barks", api_name="/reconstruct",
    )
    assert "100 tokens" in summary and "steps 2, guidance 1.5" in summary
    codes = [int(c) for c in ids.split()]
    assert len(codes) == 100 and all(0 <= c < 64 for c in codes)
    wav, sr = sf.read(audio)
    assert sr == 24000 and wav.shape[0] == 48000
    for image in (strip, mel):
        assert Path(image).is_file()
    assert {c["label"] for c in ranking["confidences"]} == {"a steady tone", "a dog barks"}


def test_bad_uploads_are_one_clear_message(server, clip):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server["url"], verbose=False)
    model = str(server["root"] / "ck")
    text = server["root"] / "notes.wav"
    text.write_text("this is not audio")
    long = server["root"] / "long.wav"
    sf.write(long, np.zeros(int((MAX_SECONDS + 1) * 16000), dtype=np.float32), 16000)
    empty = server["root"] / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    for path, message in ((text, "not a readable audio file"), (long, f"limit of {MAX_SECONDS:g} s"), (empty, "empty")):
        with pytest.raises(AppError, match=message):
            client.predict(handle_file(str(path)), model, 1, 1.0, "", api_name="/reconstruct")
    with pytest.raises(AppError, match="no audio"):
        client.predict(None, model, 1, 1.0, "", api_name="/reconstruct")


def test_server_writes_only_in_its_temp_dir_and_removes_it(server, clip):
    from gradio_client import Client, handle_file

    Client(server["url"], verbose=False).predict(
        handle_file(str(clip)), str(server["root"] / "ck"), 1, 1.0, "", api_name="/reconstruct"
    )
    dirs = server["dirs"]
    (work,) = list(dirs["tmp"].iterdir())
    assert work.name.startswith("entanglecodec-serve-") and any(work.rglob("*.wav"))
    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert list(dirs["home"].rglob("*")) == [] and list(dirs["cwd"].rglob("*")) == []
    assert list(dirs["tmp"].iterdir()) == []


# ------------------------------------------------------------------ pure parts
def test_pictures_have_the_promised_shapes():
    strip = webapp.token_strip(np.array([0, 63, 5]), 64, height=10)
    assert strip.shape == (10, 12, 3) and strip.dtype == np.uint8
    assert not np.array_equal(strip[0, 0], strip[0, 4])  # different ids, different colours
    mel = webapp.mel_comparison(np.zeros((8, 5)), np.ones((8, 5)))
    assert mel.shape == (24, 5 + 6 + 5, 3)


def test_check_upload(tmp_path):
    with pytest.raises(ValueError, match="no audio"):
        webapp.check_upload(None, 10)
    p = tmp_path / "a.wav"
    sf.write(p, np.zeros(24000, dtype=np.float32), 24000)
    assert webapp.check_upload(str(p), 10) == (24000, 24000)
    with pytest.raises(ValueError, match="a.wav: 1.0 s is longer than this server's limit of 0.5 s"):
        webapp.check_upload(str(p), 0.5)


def test_tab_registry_adds_tabs_after_the_codec_tab(monkeypatch, tmp_path):
    gr = pytest.importorskip("gradio")
    monkeypatch.setattr(webapp, "_TABS", [])
    calls = []

    def lm_tab(ctx: webapp.ServeContext) -> None:
        calls.append(ctx.max_seconds)
        gr.Markdown("text to speech")

    webapp.register_tab("TTS", lm_tab)
    webapp.register_tab("TTS", lm_tab)  # registering again replaces
    assert [t for t, _ in webapp.registered_tabs()] == ["TTS"]
    ctx = webapp.ServeContext({"m": None}, 7.0, tmp_path, ["a caption"])
    app = webapp.build_app(ctx)
    assert calls == [7.0]
    labels = [getattr(b, "label", None) for b in app.blocks.values() if isinstance(b, gr.Tab)]
    assert labels == ["Codec", "TTS"]
