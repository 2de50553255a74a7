"""Importers on tiny directories in the LibriSpeech / LibriTTS / AudioCaps / WavCaps / MusicBench layouts,
and the ``entanglecodec data`` import / validate / shard commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from entanglecodec.cli import data_io
from entanglecodec.data.importers import (
    DatasetImportError,
    hash_split,
    import_audiocaps,
    import_librispeech,
    import_libritts,
    import_musicbench,
    import_wavcaps,
    split_from_name,
)
from entanglecodec.data.manifest import read_manifest


def noise(path: Path, seconds: float = 0.3, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    sf.write(str(path), 0.1 * rng.standard_normal(int(seconds * sr)), sr, subtype="PCM_16")
    return path


class Upper:
    """A stand-in captioner recording what it was given."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def caption(self, row: dict) -> str:
        self.rows.append(row)
        return f"CAPTION {row['domain']} {row['id']}"


LIBRISPEECH_SPEAKERS = """\
; Some comment lines
;ID  |SEX| SUBSET           |MINUTES| NAME
19   | F | train-clean-100  | 25.19 | Kara Shallenberg
84   | F | dev-clean        |  8.02 | Christie Nowak
121  | M | test-clean       |  8.00 | Someone
"""


def librispeech_tree(root: Path) -> Path:
    ls = root / "LibriSpeech"
    ls.mkdir(parents=True)
    (ls / "SPEAKERS.TXT").write_text(LIBRISPEECH_SPEAKERS)
    layout = {
        ("train-clean-100", "19", "198"): ["THE FIRST SENTENCE", "A SECOND ONE HERE"],
        ("dev-clean", "84", "121123"): ["GO DO YOU HEAR"],
        ("test-clean", "121", "121726"): ["ALSO A TEST"],
    }
    for (subset, spk, chap), texts in layout.items():
        d = ls / subset / spk / chap
        lines = []
        for k, text in enumerate(texts):
            utt = f"{spk}-{chap}-{k:04d}"
            noise(d / f"{utt}.flac")
            lines.append(f"{utt} {text}")
        if subset == "train-clean-100":
            lines.append(f"{spk}-{chap}-0009 THIS ONE HAS NO AUDIO")
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    return ls


def test_librispeech_transcripts_genders_splits(tmp_path: Path) -> None:
    ls = librispeech_tree(tmp_path)
    res = import_librispeech(ls)  # default: the template captioner
    assert len(res.rows) == 4 and len(res.missing) == 1 and res.missing[0].endswith("19-198-0009.flac")
    rows = {r["id"]: r for r in res.rows}
    r = rows["librispeech/19-198-0000"]
    assert r["text"] == "THE FIRST SENTENCE" and r["asr_caption"] == "THE FIRST SENTENCE"
    assert r["split"] == "train" and r["domain"] == "speech" and r["duration"] == pytest.approx(0.3)
    assert r["attributes"]["speaker"]["gender"] == "female" and r["attributes"]["speaker"]["id"] == "19"
    assert r["attributes"]["dataset"] == "librispeech" and r["attributes"]["subset"] == "train-clean-100"
    assert "THE FIRST SENTENCE" in r["caption"]  # the transcript is part of the rich caption (App. C.2)
    assert any(w in r["caption"].lower() for w in ("female", "woman"))
    assert rows["librispeech/84-121123-0000"]["split"] == "valid"
    t = rows["librispeech/121-121726-0000"]
    assert t["split"] == "test" and t["attributes"]["speaker"]["gender"] == "male"
    assert "1 missing" in res.summary()
    out = tmp_path / "out" / "ls.jsonl"
    res.write(out)
    back = read_manifest(out)
    assert [b["id"] for b in back] == [r["id"] for r in res.rows]
    assert all(Path(b["audio"]).is_file() for b in back)
    # a subset directory alone works too, still finding SPEAKERS.TXT above it
    sub = import_librispeech(ls / "dev-clean", captioner=Upper())
    assert [r["attributes"]["speaker"].get("gender") for r in sub.rows] == ["female"]


def test_librispeech_without_subsets_uses_speaker_hash_split(tmp_path: Path) -> None:
    root = tmp_path / "custom"
    for spk in range(12):
        d = root / str(spk) / "1"
        noise(d / f"{spk}-1-0000.flac", 0.1)
        noise(d / f"{spk}-1-0001.flac", 0.1)
        (d / f"{spk}-1.trans.txt").write_text(f"{spk}-1-0000 HELLO\n{spk}-1-0001 WORLD\n")
    cap = Upper()
    a = import_librispeech(root, captioner=cap, seed=3, valid_fraction=0.3, test_fraction=0.3)
    b = import_librispeech(root, captioner=Upper(), seed=3, valid_fraction=0.3, test_fraction=0.3)
    assert [r["split"] for r in a.rows] == [r["split"] for r in b.rows]
    by_spk: dict[str, set[str]] = {}
    for r in a.rows:
        by_spk.setdefault(r["attributes"]["speaker"]["id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_spk.values())  # a speaker's clips share a split
    assert {r["split"] for r in a.rows} == {"train", "valid", "test"}
    assert "gender" not in a.rows[0]["attributes"]["speaker"]  # no SPEAKERS.TXT: unknown, not guessed
    assert a.rows[0]["caption"].startswith("CAPTION speech") and 'Transcript: "HELLO"' in a.rows[0]["caption"]
    assert cap.rows[0]["audio"] == a.rows[0]["audio"] and cap.rows[0]["text"] == "HELLO"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetImportError, match=r"no \*\.trans\.txt"):
        import_librispeech(tmp_path / "empty", captioner=Upper())


def test_librispeech_malformed_transcript_line(tmp_path: Path) -> None:
    d = tmp_path / "train-clean-100" / "1" / "2"
    d.mkdir(parents=True)
    (d / "1-2.trans.txt").write_text("1-2-0000 OK\nBROKENLINE\n")
    with pytest.raises(DatasetImportError, match=r"1-2\.trans\.txt:2"):
        import_librispeech(tmp_path, captioner=Upper())


def test_libritts_layout(tmp_path: Path) -> None:
    root = tmp_path / "LibriTTS"
    (root / "train-clean-100" / "103" / "1241").mkdir(parents=True)
    (root / "speakers.tsv").write_text("READER\tGENDER\tSUBSET\tNAME\n103\tF\ttrain-clean-100\tA\n1089\tM\ttest-clean\tB\n")
    d = root / "train-clean-100" / "103" / "1241"
    noise(d / "103_1241_000000_000001.wav", sr=24000)
    (d / "103_1241_000000_000001.normalized.txt").write_text("Matthew Cuthbert is surprised.")
    (d / "103_1241_000000_000001.original.txt").write_text("Matthew Cuthbert is surprised")
    noise(d / "103_1241_000000_000002.wav", sr=24000)  # transcript only in the chapter tsv
    (d / "103_1241.trans.tsv").write_text(
        "103_1241_000000_000001\tMatthew Cuthbert is surprised\tMatthew Cuthbert is surprised.\n"
        "103_1241_000000_000002\tchapter two\tChapter two.\n"
        "103_1241_000000_000003\tno audio\tNo audio.\n"
    )
    t = root / "test-clean" / "1089" / "134686"
    noise(t / "1089_134686_000001_000001.wav", sr=24000)
    (t / "1089_134686_000001_000001.normalized.txt").write_text("He hoped there would be stew.")
    res = import_libritts(root)
    rows = {r["id"]: r for r in res.rows}
    assert set(rows) == {
        "libritts/103_1241_000000_000001",
        "libritts/103_1241_000000_000002",
        "libritts/1089_134686_000001_000001",
    }
    assert len(res.missing) == 1
    assert rows["libritts/103_1241_000000_000002"]["text"] == "Chapter two."
    a = rows["libritts/103_1241_000000_000001"]
    assert a["text"] == "Matthew Cuthbert is surprised." and a["split"] == "train"
    assert a["attributes"]["speaker"]["gender"] == "female" and "Matthew Cuthbert is surprised." in a["caption"]
    b = rows["libritts/1089_134686_000001_000001"]
    assert b["split"] == "test" and b["attributes"]["speaker"]["gender"] == "male"


def test_audiocaps_csv(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    noise(audio / "train" / "abc_30.wav", 0.5, 32000)
    noise(audio / "91139.wav", 0.5)
    (tmp_path / "train.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n"
        "1,abc,30,A dog barks while a man talks\n"
        "91139,Zn4ViKWcw,130,A woman talks nearby as water pours\n"
        "3,missing_clip,0,Wind blows\n"
    )
    res = import_audiocaps(tmp_path / "train.csv", audio)
    rows = {r["id"]: r for r in res.rows}
    assert set(rows) == {"audiocaps/abc_30", "audiocaps/Zn4ViKWcw_130"} and len(res.missing) == 1
    r = rows["audiocaps/abc_30"]
    assert r["caption"] == "A dog barks while a man talks"  # the dataset's own caption by default
    assert r["split"] == "train" and r["domain"] == "sound" and r["text"] == ""
    assert r["attributes"]["youtube_id"] == "abc" and r["attributes"]["start_time"] == 30.0
    assert r["asr_caption"] == "sound"
    # five captions per clip (val/test) -> one row keeping all of them; the first is the condition
    noise(audio / "val" / "xyz_10.flac", 0.2)
    lines = [f"{100 + k},xyz,10,caption number {k}" for k in range(5)]
    (tmp_path / "val.csv").write_text("audiocap_id,youtube_id,start_time,caption\n" + "\n".join(lines) + "\n")
    val = import_audiocaps(tmp_path / "val.csv", audio)
    assert len(val.rows) == 1 and val.rows[0]["split"] == "valid"
    assert val.rows[0]["attributes"]["original_captions"] == [f"caption number {k}" for k in range(5)]
    assert val.rows[0]["caption"] == "caption number 0"
    # custom pattern and explicit split
    noise(audio / "custom" / "clip-xyz.wav", 0.2)
    custom = import_audiocaps(
        tmp_path / "val.csv", audio, patterns=["custom/clip-{youtube_id}.wav"], split="test", captioner=Upper()
    )
    assert custom.rows[0]["audio"].endswith("clip-xyz.wav") and custom.rows[0]["split"] == "test"
    assert custom.rows[0]["caption"] == "CAPTION sound audiocaps/xyz_10"
    (tmp_path / "bad.csv").write_text("id,caption\n1,x\n")
    with pytest.raises(DatasetImportError, match="expected columns"):
        import_audiocaps(tmp_path / "bad.csv", audio)


def test_wavcaps_json(tmp_path: Path) -> None:
    audio = tmp_path / "SoundBible"
    noise(audio / "2219.flac", 0.4, 32000)
    noise(audio / "2218.flac", 0.4, 32000)
    (audio / "2217.flac").write_bytes(b"corrupt")
    data = {
        "num_captions_per_audio": 1,
        "data": [
            {"id": "2219", "caption": "An airplane is landing.", "title": "Airplane Landing", "duration": 0.4},
            {"id": "2218", "caption": "Someone is ringing a bell.", "description": "Service bell"},
            {"id": "2217", "caption": "It is raining.", "duration": 1.0},
            {"id": "9999", "caption": "Not downloaded."},
        ],
    }
    (tmp_path / "sb_final.json").write_text(json.dumps(data))
    res = import_wavcaps(tmp_path / "sb_final.json", audio)
    assert len(res.rows) == 2 and len(res.missing) == 1 and len(res.unreadable) == 1
    r = {x["id"]: x for x in res.rows}["wavcaps/SoundBible/2219"]
    assert r["caption"] == "An airplane is landing." and r["attributes"]["title"] == "Airplane Landing"
    assert r["attributes"]["source"] == "SoundBible" and r["split"] in ("train", "valid", "test")
    again = import_wavcaps(tmp_path / "sb_final.json", audio)
    assert [x["split"] for x in again.rows] == [x["split"] for x in res.rows]
    (tmp_path / "plain.json").write_text(json.dumps([{"id": "2219.flac", "caption": "x"}, {"caption": "no id"}]))
    with pytest.raises(DatasetImportError, match="item 1 has no 'id'"):
        import_wavcaps(tmp_path / "plain.json", audio)


def test_musicbench_jsonl(tmp_path: Path) -> None:
    root = tmp_path / "datashare"
    noise(root / "data" / "abc.wav", 0.5, 16000)
    noise(root / "data_aug2" / "abc_1.wav", 0.5, 16000)
    recs = [
        {
            "dataset": "MusicCaps",
            "location": "data/abc.wav",
            "main_caption": "A mellow electric guitar piece. The bpm is 112.0. The key of this song is E major.",
            "alt_caption": "guitar",
            "prompt_bpm": "The bpm is 112.0.",
            "beats": [[0.3, 0.8, 1.4, 1.9], [1, 2, 3, 4]],
            "bpm": 112,
            "chords": ["E", "A"],
            "key": ["E", "major"],
            "keyprob": [0.89],
        },
        {"location": "data_aug2/abc_1.wav", "main_caption": "Shifted version.", "bpm": 120.0, "key": ["F", "minor"]},
        {"location": "data/gone.wav", "main_caption": "Missing."},
    ]
    jf = tmp_path / "MusicBench_test_A.json"
    jf.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    res = import_musicbench(jf, root)
    assert len(res.rows) == 2 and len(res.missing) == 1
    a = res.rows[0]
    assert a["id"] == "musicbench/data/abc" and a["split"] == "test" and a["domain"] == "music"
    assert a["attributes"]["music"] == {
        "tempo_bpm": 112.0,
        "tempo_estimated": True,
        "key": "E",
        "mode": "major",
        "chords": ["E", "A"],
        "beats_per_bar": 4,
    }
    assert a["caption"] == recs[0]["main_caption"] and a["asr_caption"] == "music"
    train = tmp_path / "MusicBench_train.json"
    train.write_text(json.dumps(recs[:2]))  # a JSON list works too
    assert {r["split"] for r in import_musicbench(train, root).rows} == {"train"}


def test_command_captioner_and_failures(tmp_path: Path) -> None:
    from entanglecodec.data.captions import CommandCaptioner

    ls = librispeech_tree(tmp_path)
    script = tmp_path / "cap.py"
    script.write_text("import sys, pathlib\nprint('described', pathlib.Path(sys.argv[1]).name)\n")
    res = import_librispeech(ls / "dev-clean", captioner=CommandCaptioner(f"{sys.executable} {script} {{audio}}"))
    assert res.rows[0]["caption"].startswith("described 84-121123-0000.flac")
    assert 'Transcript: "GO DO YOU HEAR"' in res.rows[0]["caption"]
    failing = CommandCaptioner(f"{sys.executable} -c 'import sys; sys.exit(3)' {{audio}}")
    bad = import_librispeech(ls / "dev-clean", captioner=failing)
    assert bad.rows == [] and len(bad.caption_failed) == 1 and "exit code 3" in bad.caption_failed[0][1]


def test_split_helpers() -> None:
    assert split_from_name("train.csv") == "train" and split_from_name("val.csv") == "valid"
    assert split_from_name("MusicBench_test_B.json") == "test" and split_from_name("fsd_final.json") is None
    splits = [hash_split(f"k{i}", 0, 0.1, 0.1) for i in range(2000)]
    assert abs(splits.count("test") / 2000 - 0.1) < 0.03 and abs(splits.count("valid") / 2000 - 0.1) < 0.03
    assert splits == [hash_split(f"k{i}", 0, 0.1, 0.1) for i in range(2000)]
    assert splits != [hash_split(f"k{i}", 1, 0.1, 0.1) for i in range(2000)]
    with pytest.raises(ValueError):
        hash_split("k", 0, 0.6, 0.5)


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """data"""

    app.add_typer(data_io.app)
    return app


def test_cli_import_validate_shard(cli: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    ls = librispeech_tree(tmp_path)
    out = tmp_path / "ls.jsonl"
    r = runner.invoke(cli, ["import-librispeech", str(ls), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "4 clips" in r.output and "1 missing" in r.output and out.exists()
    r = runner.invoke(cli, ["import-librispeech", str(ls), "--out", str(out)])
    assert r.exit_code == 1 and "already exists" in r.output and "--overwrite" in r.output
    r = runner.invoke(cli, ["validate", str(out)])
    assert r.exit_code == 0, r.output
    assert "rows: 4" in r.output and "speech" in r.output and "all files decode" in r.output
    r = runner.invoke(cli, ["validate", str(out), "--json"])
    summary = json.loads(r.output)
    assert summary["per_split"]["train"]["rows"] == 2 and summary["hours"] == pytest.approx(4 * 0.3 / 3600)
    r = runner.invoke(cli, ["shard", str(out), "--out", str(tmp_path / "sh"), "--max-count", "3"])
    assert r.exit_code == 0, r.output
    assert "wrote 4 clips in 2 shards" in r.output
    r = runner.invoke(cli, ["shard", str(out), "--out", str(tmp_path / "sh")])
    assert r.exit_code == 1 and "not empty" in r.output
    # a broken file makes validate fail, naming it
    victim = Path(read_manifest(out)[0]["audio"])
    victim.write_bytes(b"garbage")
    r = runner.invoke(cli, ["validate", str(out)])
    assert r.exit_code == 1 and victim.name in r.output and "bad files: 1" in r.output
    # a malformed manifest line is reported with its line number
    bad = tmp_path / "bad.jsonl"
    bad.write_text(out.read_text().splitlines()[0] + "\n{not json\n")
    r = runner.invoke(cli, ["validate", str(bad)])
    assert r.exit_code == 1 and f"{bad}:2" in r.output and "invalid JSON" in r.output
    r = runner.invoke(cli, ["import-audiocaps", str(tmp_path / "nope.csv"), "--audio-dir", str(tmp_path), "--out", str(tmp_path / "a.jsonl")])
    assert r.exit_code == 1 and "not found" in r.output
