"""Captioner interface: template captions, the ASR-only ablation caption, external commands."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from entanglecodec.data.captions import (
    Captioner,
    CaptionerError,
    CommandCaptioner,
    TemplateCaptioner,
    asr_caption,
    caption_dimensions,
)

SPEECH = {
    "id": "s1",
    "audio": "a.flac",
    "domain": "speech",
    "text": "Only God can make random selections.",
    "attributes": {
        "speaker": {"gender": "female", "language": "en", "accent": "Scottish English", "kind": "synthetic",
                    "engine": "flite", "rate": "fast", "pitch": "low", "words_per_second": 3.6},
        "loudness": {"dbfs": -17.0, "level": "loud"},
        "environment": {"setting": "indoor", "room_size": "large", "rt60_s": 1.2, "reverb": "strong",
                        "noise_type": "electrical hum", "snr_db": 9.0, "noise_level": "prominent"},
    },
}
MUSIC = {
    "id": "m1", "audio": "m.flac", "domain": "music", "text": None,
    "attributes": {
        "music": {"instruments": ["violin", "cello"], "tempo_bpm": 96.0, "key": "D", "mode": "minor",
                  "note_density": "sparse", "dynamics": "soft", "drums": False},
        "environment": {"setting": "clean"},
    },
}
SOUND = {
    "id": "e1", "audio": "e.flac", "domain": "sound", "text": None,
    "attributes": {
        "events": [{"label": "camera shutter", "onset_s": 1.25, "offset_s": 1.5},
                   {"label": "beep", "onset_s": 3.0, "offset_s": 3.4}],
        "environment": {"setting": "outdoor", "noise_type": "wind", "snr_db": 20.0, "noise_level": "noticeable"},
    },
}


def test_template_caption_covers_every_known_attribute() -> None:
    cap = TemplateCaptioner(seed=0).caption(SPEECH)
    assert "\u201cOnly God can make random selections.\u201d" in cap
    assert any(w in cap for w in ("female", "woman"))
    assert "Scottish English" in cap and "large hall" in cap and "strong" in cap and "electrical hum" in cap
    music = TemplateCaptioner(seed=0).caption(MUSIC)
    assert "violin" in music and "cello" in music and "96" in music and "D minor" in music
    assert "sparse" in music and any(w in music for w in ("soft", "gentle", "quiet"))
    sound = TemplateCaptioner(seed=0).caption(SOUND)
    assert "camera shutter" in sound and "1.2" in sound and "beep" in sound and "3.0" in sound
    assert "outdoor" in sound and "wind" in sound


def test_approximate_transcripts_are_worded_by_style() -> None:
    def row(style: str, i: int) -> dict:
        speaker = {"gender": "male", "language": "en", "kind": "recorded", "style": style,
                   "transcript_exact": False, "transcript": "Yes, that's done"}
        return {"id": f"r{i}", "audio": "r.flac", "domain": "speech", "text": None, "attributes": {"speaker": speaker}}

    dialogue = [TemplateCaptioner(seed=0).caption(row("dialogue", i)) for i in range(12)]
    assert all("\u201cYes, that's done\u201d" in c and "prompt" not in c for c in dialogue)
    assert all(" roughly " in c or " something like " in c for c in dialogue)
    prompts = [TemplateCaptioner(seed=0).caption(row("prompt", i)) for i in range(12)]
    assert all("prompt" in c for c in prompts)
    unknown = {**row("dialogue", 0), "attributes": {"speaker": {"gender": "male", "transcript_known": False}}}
    assert asr_caption(unknown) == "speech"
    with pytest.raises(CaptionerError, match="no transcript"):
        asr_caption({**unknown, "attributes": {"speaker": {"gender": "male"}}})


def test_template_caption_is_seeded_and_varied() -> None:
    cap = TemplateCaptioner(seed=0)
    assert cap.caption(SPEECH) == TemplateCaptioner(seed=0).caption(SPEECH)
    variants = {cap.caption({**SPEECH, "id": f"s{i}"}) for i in range(20)}
    assert len(variants) >= 10
    by_seed = {TemplateCaptioner(seed=s).caption(MUSIC) for s in range(10)}
    assert len(by_seed) >= 5


def test_sparse_rows_from_importers_still_get_a_caption() -> None:
    row = {"audio": "x.flac", "domain": "speech", "text": "hello world", "attributes": {"speaker": {"gender": "male"}}}
    cap = TemplateCaptioner().caption(row)
    assert "hello world" in cap and any(w in cap for w in ("male", "man"))
    assert TemplateCaptioner().caption({"audio": "y.flac", "domain": "music", "text": None, "attributes": {}})
    assert caption_dimensions(SPEECH) == {"speaker", "environment"}
    assert caption_dimensions(SOUND) == {"events", "environment"}
    assert isinstance(TemplateCaptioner(), Captioner)


def test_bad_rows_are_rejected_with_a_clear_error() -> None:
    with pytest.raises(CaptionerError, match="domain"):
        TemplateCaptioner().caption({**SPEECH, "domain": "podcast"})
    with pytest.raises(CaptionerError, match="attributes must be a dict"):
        TemplateCaptioner().caption({**SPEECH, "attributes": [1, 2]})
    with pytest.raises(CaptionerError, match="no transcript"):
        asr_caption({**SPEECH, "text": None})


def test_asr_caption_is_transcript_or_bare_label() -> None:
    assert asr_caption(SPEECH) == "Only God can make random selections."
    assert asr_caption(MUSIC) == "violin, cello"
    assert asr_caption(SOUND) == "camera shutter, beep"
    assert asr_caption({**MUSIC, "attributes": {}}) == "music"


@pytest.fixture()
def audio_file(tmp_path: Path) -> Path:
    p = tmp_path / "clip.flac"
    p.write_bytes(b"not really audio; the command only needs a path")
    return p


def _py(code: str) -> str:
    return f"{sys.executable} -c '{code}'"


def test_command_captioner_uses_stdout(audio_file: Path) -> None:
    cmd = _py("import sys, os; print(\"  a caption for\", os.path.basename(sys.argv[1]), sys.argv[2])") + " {audio} {domain}"
    cap = CommandCaptioner(cmd, root=audio_file.parent).caption({"audio": "clip.flac", "domain": "sound", "attributes": {}})
    assert cap == "a caption for clip.flac sound"


def test_command_captioner_errors(audio_file: Path, tmp_path: Path) -> None:
    row = {"audio": str(audio_file), "domain": "sound", "attributes": {}}
    with pytest.raises(CaptionerError, match="placeholder"):
        CommandCaptioner("echo hello")
    with pytest.raises(CaptionerError, match="not found"):
        CommandCaptioner("/nonexistent/captioner {audio}").caption(row)
    with pytest.raises(CaptionerError, match="exit code 3"):
        CommandCaptioner(_py("import sys; sys.stderr.write(\"boom\"); sys.exit(3)") + " {audio}").caption(row)
    with pytest.raises(CaptionerError, match="timed out"):
        CommandCaptioner(_py("import time; time.sleep(5)") + " {audio}", timeout=0.5).caption(row)
    with pytest.raises(CaptionerError, match="printed nothing"):
        CommandCaptioner(_py("pass") + " {audio}").caption(row)
    with pytest.raises(CaptionerError, match="audio file not found"):
        CommandCaptioner("echo {audio}").caption({**row, "audio": str(tmp_path / "missing.flac")})
    with pytest.raises(CaptionerError, match="bad placeholder"):
        CommandCaptioner("echo {audio} {speaker}").caption(row)
