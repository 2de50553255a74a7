"""Manifest schema: validation with file/line numbers, defaults, path resolution, atomic writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from entanglecodec.data.manifest import (
    ManifestError,
    read_manifest,
    read_manifests,
    summarize,
    write_manifest,
)


def _row(audio: str = "a.flac", **kw: object) -> dict:
    r = {"audio": audio, "domain": "speech", "caption": "A woman says hello."}
    r.update(kw)
    return r


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_roundtrip_defaults_and_paths(tmp_path: Path) -> None:
    out = tmp_path / "corpus" / "manifest.jsonl"
    inside = tmp_path / "corpus" / "audio" / "x.flac"
    outside = tmp_path / "elsewhere" / "y.wav"
    rows = [
        _row(str(inside), id="x", split="valid", duration=1.5, text="hello", asr_caption="hello"),
        _row(str(outside), domain="sound", attributes={"events": [{"label": "dog bark"}]}),
        _row("audio/z.flac", domain="music", extra_key=[1, 2], text=None, asr_caption=None),
    ]
    assert write_manifest(rows, out) == 3
    stored = [json.loads(line) for line in out.read_text().splitlines()]
    assert stored[0]["audio"] == "audio/x.flac"  # absolute path under the manifest dir made relative
    assert stored[1]["audio"] == str(outside)  # outside: kept absolute
    back = read_manifest(out)
    assert [r["audio"] for r in back] == [str(inside), str(outside), str(tmp_path / "corpus" / "audio" / "z.flac")]
    assert back[0]["split"] == "valid" and back[0]["duration"] == 1.5 and back[0]["text"] == "hello"
    # defaults
    assert back[1]["split"] == "train" and back[1]["asr_caption"] == "" and back[1]["text"] == ""
    assert back[1]["duration"] is None and back[1]["attributes"]["events"][0]["label"] == "dog bark"
    assert back[2]["id"] == "audio/z" and back[2]["attributes"] == {} and back[2]["extra_key"] == [1, 2]
    assert back[2]["text"] == "" and back[2]["asr_caption"] == ""  # null text (non-speech) reads as ""
    assert [r["id"] for r in read_manifest(out, split="valid")] == ["x"]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"audio": "a.flac", "domain": "speech", "caption": "x"', "invalid JSON"),
        ('{"audio": "a.flac", "domain": "speech"}', "missing required key 'caption'"),
        ('{"audio": 3, "domain": "speech", "caption": "x"}', "'audio' must be a string"),
        ('{"audio": "a.flac", "domain": "noise", "caption": "x"}', "unknown domain 'noise'"),
        ('{"audio": "a.flac", "domain": "speech", "caption": "x", "split": "dev"}', "unknown split 'dev'"),
        ('{"audio": "a.flac", "domain": "speech", "caption": "x", "attributes": []}', "'attributes' must be an object"),
        ('{"audio": "a.flac", "domain": "speech", "caption": "x", "duration": -1}', "positive finite"),
        ('{"audio": "a.flac", "domain": "speech", "caption": "x", "duration": "3"}', "number of seconds"),
        ('{"audio": "", "domain": "speech", "caption": "x"}', "'audio' is empty"),
        ('["a.flac", "speech"]', "expected a JSON object"),
        ('{"audio": "b.flac", "domain": "speech", "caption": "x", "id": "first"}', "duplicate id 'first'"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, needle: str) -> None:
    good = json.dumps(_row("b.flac", id="first"))
    path = _write_lines(tmp_path / "m.jsonl", [good, "", line, json.dumps(_row("c.flac"))])
    with pytest.raises(ManifestError) as ei:
        read_manifest(path)
    msg = str(ei.value)
    assert f"{path}:3:" in msg, msg  # blank line 2 is skipped but still counted
    assert needle in msg, msg


def test_empty_and_missing_and_split_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")
    empty = _write_lines(tmp_path / "e.jsonl", [""])
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(empty)
    assert read_manifest(empty, allow_empty=True) == []
    path = write_manifest([_row("a.flac", split="train"), _row("b.flac", split="test")], tmp_path / "m.jsonl")
    assert path == 2
    with pytest.raises(ManifestError, match=r"no rows of split 'valid'.*test=1, train=1"):
        read_manifest(tmp_path / "m.jsonl", split="valid")
    with pytest.raises(ManifestError, match="unknown split 'eval'"):
        read_manifest(tmp_path / "m.jsonl", split="eval")


def test_read_manifests_concatenates_and_filters(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    write_manifest([_row("1.flac", split="train"), _row("2.flac", split="valid")], a)
    write_manifest([_row("3.flac", split="train")], b)
    assert [r["id"] for r in read_manifests([a, b])] == ["1", "2", "3"]
    assert [r["id"] for r in read_manifests([a, b], split="valid")] == ["2"]
    with pytest.raises(ManifestError, match="no rows of split 'test'"):
        read_manifests([a, b], split="test")


def test_write_refuses_overwrite_and_is_atomic(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    write_manifest([_row("a.flac")], out)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_manifest([_row("b.flac")], out)
    write_manifest([_row("b.flac")], out, overwrite=True)
    assert read_manifest(out)[0]["id"] == "b"
    # an invalid row leaves the existing file untouched and no temporary file behind
    with pytest.raises(ManifestError, match="row 1 .*unknown domain"):
        write_manifest([_row("c.flac"), _row("d.flac", domain="noise")], out, overwrite=True)
    assert read_manifest(out)[0]["id"] == "b"
    with pytest.raises(ManifestError, match="cannot be written as JSON"):
        write_manifest([_row("c.flac", attributes={"snr": math.nan})], out, overwrite=True)
    with pytest.raises(ManifestError, match="duplicate id"):
        write_manifest([_row("c.flac", id="k"), _row("d.flac", id="k")], out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


def test_summarize_counts_hours(tmp_path: Path) -> None:
    rows = [
        _row("a", duration=1800.0, split="train"),
        _row("b", domain="music", duration=3600.0, split="test"),
        _row("c", domain="music"),
    ]
    s = summarize(rows)
    assert s["rows"] == 3 and s["unknown_duration"] == 1
    assert s["hours"] == pytest.approx(1.5)
    assert s["per_domain"]["music"] == {"rows": 2, "hours": pytest.approx(1.0)}
    assert s["per_split"]["train"]["rows"] == 2 and s["per_split"]["test"]["hours"] == pytest.approx(1.0)


def test_merge_command_joins_corpora_with_absolute_paths(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from entanglecodec.cli import app

    a, b = tmp_path / "a" / "manifest.jsonl", tmp_path / "b" / "manifest.jsonl"
    write_manifest([_row("audio/x.flac", id="x", split="train"), _row("audio/y.flac", id="y", split="test")], a)
    write_manifest([_row("audio/x.flac", id="bx", split="train")], b)
    out = tmp_path / "joined" / "manifest.jsonl"
    runner = CliRunner()
    res = runner.invoke(app, ["data", "merge", str(a), str(b), "-o", str(out)])
    assert res.exit_code == 0 and "wrote 3 rows" in res.output, res.output
    rows = read_manifest(out)
    assert [r["id"] for r in rows] == ["x", "y", "bx"] and [r["split"] for r in rows] == ["train", "test", "train"]
    assert rows[0]["audio"] == str((tmp_path / "a" / "audio" / "x.flac").resolve())
    assert rows[2]["audio"] == str((tmp_path / "b" / "audio" / "x.flac").resolve())
    before = out.read_bytes()
    for args, words in (
        ([str(a), str(a), "-o", str(tmp_path / "dup.jsonl")], "duplicate id 'x'"),
        ([str(a), "-o", str(out)], "already exists"),
        ([str(a), "-o", str(a), "--overwrite"], "one of the input manifests"),
        ([str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "n.jsonl")], "not found"),
    ):
        res = runner.invoke(app, ["data", "merge", *args])
        assert res.exit_code != 0 and words in res.output and "Traceback" not in res.output, res.output
    assert out.read_bytes() == before and not (tmp_path / "dup.jsonl").exists()
