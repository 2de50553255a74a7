"""End-to-end checks of the synthetic corpus generator (tiny corpora, seconds of audio)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("pretty_midi")
pytest.importorskip("pyroomacoustics")
for _tool in ("flite", "text2wave", "espeak-ng", "sox", "ffmpeg", "apt-get"):
    if shutil.which(_tool) is None:
        pytest.skip(f"Debian tool '{_tool}' is not installed (see requirements/debian.txt)", allow_module_level=True)

from entanglecodec.data.captions import REVERB_WORDS, asr_caption  # noqa: E402
from entanglecodec.data.synth import CorpusError, generate_corpus  # noqa: E402
from entanglecodec.data.synth import environment as envmod  # noqa: E402
from entanglecodec.data.synth.generator import build_pools  # noqa: E402
from entanglecodec.data.synth.signal import SynthError, active_rms_dbfs  # noqa: E402

HOURS = 0.02  # 72 s: one full block of ten clips (every kind and split) plus a little more
SEED = 3


def _rows(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def _audio_hashes(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((d / "audio").rglob("*.flac"))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    generate_corpus(out, hours=HOURS, seed=SEED, workers=2, progress=False)
    return out


def test_same_seed_is_byte_identical_across_worker_counts(corpus: Path, tmp_path: Path) -> None:
    other = tmp_path / "b"
    generate_corpus(other, hours=HOURS, seed=SEED, workers=1, progress=False)
    assert (corpus / "manifest.jsonl").read_bytes() == (other / "manifest.jsonl").read_bytes()
    assert (corpus / "corpus.json").read_bytes() == (other / "corpus.json").read_bytes()
    hashes = _audio_hashes(corpus)
    assert hashes and hashes == _audio_hashes(other)


def test_manifest_rows_match_the_contract_and_the_audio(corpus: Path) -> None:
    rows = _rows(corpus)
    keys = {"id", "audio", "duration", "sample_rate", "domain", "split", "caption", "asr_caption", "text", "attributes"}
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert keys <= set(r), r["id"]
        assert r["sample_rate"] == 24000
        info = sf.info(str(corpus / r["audio"]))
        assert (info.samplerate, info.channels, info.format) == (24000, 1, "FLAC")
        assert abs(info.frames / 24000 - r["duration"]) < 1e-3
        wav, _ = sf.read(str(corpus / r["audio"]), dtype="float32")
        assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0
        # the stored loudness is the level of the stored audio (16-bit quantisation aside)
        assert abs(active_rms_dbfs(wav) - r["attributes"]["loudness"]["dbfs"]) < 0.2
        if r["domain"] == "speech":
            assert r["text"] or r["attributes"]["speaker"].get("transcript")
        elif r["domain"] in ("music", "sound"):
            assert r["text"] is None
    summary = json.loads((corpus / "corpus.json").read_text())
    assert summary["seed"] == SEED and summary["clips"] == len(rows)
    assert sum(sum(c.values()) for c in summary["counts"].values()) == len(rows)
    assert "flite" in summary["tools"] and "ktuberling-data" in summary["debian_packages"]


def test_all_domains_kinds_and_splits_appear(corpus: Path) -> None:
    rows = _rows(corpus)
    assert {r["domain"] for r in rows} == {"speech", "music", "sound", "mixture"}
    assert {r["split"] for r in rows} == {"train", "valid", "test"}
    assert {r["attributes"]["kind"] for r in rows} >= {"tts", "real-speech", "music", "recorded-music", "scene", "mixture"}


def test_captions_state_the_attributes_in_all_four_dimensions(corpus: Path) -> None:
    rows = _rows(corpus)
    seen = set()
    for r in rows:
        cap, a = r["caption"], r["attributes"]
        sp = a.get("speaker")
        if sp:
            seen.add("speaker")
            transcript = r["text"] or sp.get("transcript")
            assert transcript in cap, r["id"]
            if sp.get("gender"):
                assert any(w in cap for w in ({"male": ("male", "man"), "female": ("female", "woman")}[sp["gender"]])), cap
        env = a["environment"]
        if env.get("room_size"):
            seen.add("environment")
            assert {"small": "small room", "medium": "medium-sized room", "large": "large hall"}[env["room_size"]] in cap
            assert REVERB_WORDS[env["reverb"]] in cap
        if env.get("noise_type"):
            seen.add("environment")
            assert env["noise_type"] in cap
        if env.get("setting") == "outdoor":
            assert "outdoor" in cap
        mu = a.get("music")
        if mu:
            seen.add("music")
            for inst in mu.get("instruments", []):
                assert inst in cap.lower(), cap
            if not mu.get("tempo_estimated"):
                assert f"{mu['tempo_bpm']:.0f} B" in cap or f"{mu['tempo_bpm']:.0f} beats" in cap
                assert f"{mu['key']} {mu['mode']}" in cap
        for ev in a.get("events", []):
            seen.add("events")
            assert ev["label"] in cap and f"{ev['onset_s']:.1f}" in cap, cap
    assert seen == {"speaker", "environment", "music", "events"}


def test_captions_vary_in_wording(corpus: Path) -> None:
    rows = _rows(corpus)
    caps = [r["caption"] for r in rows]
    assert len(set(caps)) == len(caps)
    openings = {" ".join(c.split()[:2]) for c in caps}
    assert len(openings) >= len(caps) // 2, openings
    env_sentences = {c.split(".")[-2] for c in caps}
    assert len(env_sentences) > 3


def test_asr_caption_is_only_the_transcript_or_label(corpus: Path) -> None:
    for r in _rows(corpus):
        a = r["attributes"]
        if r["domain"] in ("speech", "mixture"):
            expected = r["text"] or a["speaker"].get("transcript")
        elif r["domain"] == "music":
            expected = ", ".join(a["music"].get("instruments", [])) or "music"
        else:
            expected = ", ".join(dict.fromkeys(e["label"] for e in a["events"]))
        assert r["asr_caption"] == expected == asr_caption(r)
        assert "reverb" not in r["asr_caption"] and "BPM" not in r["asr_caption"]


def test_test_split_voices_instruments_and_files_are_held_out(corpus: Path) -> None:
    pools = build_pools()
    assert not {v.id for v in pools.tts_voices["test"]} & {v.id for v in pools.tts_voices["train"]}
    assert not set(pools.real_speakers["test"]) & set(pools.real_speakers["train"])
    assert not set(pools.instruments["test"]) & set(pools.instruments["train"])
    assert not set(pools.music_files["test"]) & set(pools.music_files["train"])
    assert not set(pools.event_files["test"]) & set(pools.event_files["train"])
    for lang, s in pools.sentences.items():
        assert not set(s["test"]) & set(s["train"]), lang

    def used(rows: list[dict]) -> set[str]:
        out: set[str] = set()
        for r in rows:
            a = r["attributes"]
            if a.get("speaker"):
                out.add("voice:" + a["speaker"]["id"])
            out |= {"inst:" + i for i in (a.get("music") or {}).get("instruments", [])}
            out |= {"file:" + e["source"] for e in a.get("events", []) if e["source"] != "sox"}
            out |= {"file:" + a["source"]["package"] + "/" + f for f in (a.get("source") or {}).get("files", [])}
        return out

    rows = _rows(corpus)
    test_used = used([r for r in rows if r["split"] == "test"])
    train_used = used([r for r in rows if r["split"] == "train"])
    assert test_used and not test_used & train_used
    held = json.loads((corpus / "corpus.json").read_text())["held_out_test"]
    assert not {"voice:" + v for v in held["tts_voices"] + held["recorded_speakers"]} & train_used
    assert not {"inst:" + i for i in held["instruments"]} & train_used


def test_refuses_non_empty_output_unless_overwrite(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(CorpusError, match="not empty"):
        generate_corpus(tmp_path, hours=0.001, seed=0, progress=False)
    with pytest.raises(CorpusError, match="positive"):
        generate_corpus(tmp_path / "new", hours=0, seed=0, progress=False)
    with pytest.raises(CorpusError, match="workers"):
        generate_corpus(tmp_path / "new", hours=0.001, seed=0, workers=0, progress=False)


def test_cli_synth_reports_errors_cleanly(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from entanglecodec.cli.data import app

    (tmp_path / "x").write_text("occupied")
    res = CliRunner().invoke(app, ["synth", "--hours", "0.001", "--out", str(tmp_path), "--seed", "1"])
    assert res.exit_code == 1
    assert "not empty" in res.output and "--overwrite" in res.output
    res = CliRunner().invoke(app, ["synth", "--hours", "0.001", "--out", str(tmp_path), "--overwrite", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "x").exists() and (tmp_path / "manifest.jsonl").is_file()


def test_resume_after_a_kill_is_byte_identical(corpus: Path, tmp_path: Path) -> None:
    """A run killed mid-way (torn last line, clip files after it missing) resumes to the same bytes."""
    run = tmp_path / "killed"
    shutil.copytree(corpus, run)
    lines = (run / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    keep = len(lines) - 3
    (run / "manifest.jsonl").unlink()
    (run / "corpus.json").unlink()
    (run / "manifest.jsonl.partial").write_text("\n".join(lines[:keep]) + "\n" + lines[keep][:40], encoding="utf-8")
    for line in lines[keep + 1 :]:
        (run / json.loads(line)["audio"]).unlink()
    generate_corpus(run, hours=HOURS, seed=SEED, workers=1, progress=False, resume=True)
    assert (run / "manifest.jsonl").read_bytes() == (corpus / "manifest.jsonl").read_bytes()
    assert (run / "corpus.json").read_bytes() == (corpus / "corpus.json").read_bytes()
    assert _audio_hashes(run) == _audio_hashes(corpus)
    assert not (run / "manifest.jsonl.partial").exists()


def test_resume_refuses_what_it_cannot_continue(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="finished corpus"):
        generate_corpus(corpus, hours=HOURS, seed=SEED, progress=False, resume=True)
    with pytest.raises(CorpusError, match="nothing to resume"):
        generate_corpus(tmp_path / "empty", hours=HOURS, seed=SEED, progress=False, resume=True)
    with pytest.raises(CorpusError, match="exclude"):
        generate_corpus(tmp_path / "x", hours=HOURS, seed=SEED, progress=False, resume=True, overwrite=True)
    run = tmp_path / "other-seed"
    run.mkdir()
    first = (corpus / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[0]
    (run / "manifest.jsonl.partial").write_text(first + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="--hours/--seed"):
        generate_corpus(run, hours=HOURS, seed=SEED + 1, progress=False, resume=True)


# ---------------------------------------------------------------------------------------------
# The clean-english profile: a small test set on which English ASR word error rate is meaningful
# ---------------------------------------------------------------------------------------------
EN_HOURS = 0.005  # 18 s: three clips
EN_SEED = 5


@pytest.fixture(scope="module")
def clean_english(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth-en") / "en"
    generate_corpus(out, hours=EN_HOURS, seed=EN_SEED, workers=2, progress=False, profile="clean-english")
    return out


def test_clean_english_rows_are_clean_english_test_speech(clean_english: Path) -> None:
    from entanglecodec.data.synth.generator import CLEAN_ENGLISH_ENGINES

    rows = _rows(clean_english)
    held_out = {v.id for v in build_pools().tts_voices["test"]}
    assert len(rows) >= 3
    for r in rows:
        a, sp, env = r["attributes"], r["attributes"]["speaker"], r["attributes"]["environment"]
        assert r["id"].startswith(f"synth{EN_SEED}-en-") and r["audio"].startswith("audio/test/")
        assert (r["domain"], r["split"], a["kind"]) == ("speech", "test", "tts")
        assert (sp["language"], sp["kind"]) == ("en", "synthetic") and sp["engine"] in CLEAN_ENGLISH_ENGINES
        assert sp["id"] in held_out
        assert (sp["rate"], sp["rate_factor"], sp["pitch"], sp["pitch_semitones"]) == ("normal", 1.0, "normal", 0.0)
        assert (env["setting"], env["reverb"], env["noise_type"]) == ("clean", "dry", None)
        assert "room_size" not in env and "mixture" not in a and "music" not in a
        assert r["text"] and r["text"] in r["caption"] and r["asr_caption"] == r["text"]
        said = r["caption"].replace(r["text"], "")  # the caption without the transcript
        assert any(c in said for c in ("clean and dry", "close-miked studio", "no background noise and no noticeable"))
        assert not any(n in said for n in (*envmod.INDOOR_NOISES, *envmod.OUTDOOR_NOISES, "outdoor", "hall"))
        assert not any(w in said for w in ("slow", "fast", "quick", "brisk", "unhurried", "high-pitched", "deep", "lowered"))
    assert len({r["attributes"]["speaker"]["engine"] for r in rows}) >= min(2, len(CLEAN_ENGLISH_ENGINES))
    summary = json.loads((clean_english / "corpus.json").read_text())
    assert summary["profile"] == "clean-english" and summary["clips"] == len(rows)
    assert summary["counts"] == {"speech": {"test": len(rows)}} and summary["kinds"] == {"tts": len(rows)}


def test_clean_english_plan_is_pure_and_validated(tmp_path: Path) -> None:
    from entanglecodec.data.synth import PROFILES, plan_corpus

    short, long = plan_corpus(0.01, 4, "clean-english"), plan_corpus(0.05, 4, "clean-english")
    assert short == long[: len(short)] == plan_corpus(0.01, 4, "clean-english")
    assert {(s.kind, s.split, s.profile) for s in long} == {("tts", "test", "clean-english")}
    assert all(3.0 <= s.duration <= 10.0 for s in long)
    assert plan_corpus(0.02, 4) == plan_corpus(0.02, 4, "mixed") and plan_corpus(0.02, 4)[0].id == "synth4-000000"
    with pytest.raises(CorpusError, match="mixed, real-speech, clean-english"):
        generate_corpus(tmp_path / "x", hours=0.001, profile="clean", progress=False)
    assert not (tmp_path / "x").exists() and PROFILES == ("mixed", "real-speech", "clean-english")

    from typer.testing import CliRunner

    from entanglecodec.cli.data import app

    res = CliRunner().invoke(app, ["synth", "--hours", "0.001", "--out", str(tmp_path / "y"), "--profile", "noisy"])
    assert res.exit_code == 2 and "'noisy'" in res.output and "mixed, real-speech, clean-english" in res.output


def test_clean_english_resumes_byte_identically_and_only_its_own_profile(clean_english: Path, tmp_path: Path) -> None:
    """The fixture ran with two workers; the resumed clips are made in this process (one worker)."""
    run = tmp_path / "killed"
    shutil.copytree(clean_english, run)
    lines = (run / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    (run / "manifest.jsonl").unlink()
    (run / "corpus.json").unlink()
    (run / "manifest.jsonl.partial").write_text(lines[0] + "\n" + lines[1][:30], encoding="utf-8")
    for line in lines[1:]:
        (run / json.loads(line)["audio"]).unlink()
    with pytest.raises(CorpusError, match="--profile"):
        generate_corpus(run, hours=EN_HOURS, seed=EN_SEED, progress=False, resume=True)  # the mixed plan
    generate_corpus(run, hours=EN_HOURS, seed=EN_SEED, progress=False, resume=True, profile="clean-english")
    assert (run / "manifest.jsonl").read_bytes() == (clean_english / "manifest.jsonl").read_bytes()
    assert (run / "corpus.json").read_bytes() == (clean_english / "corpus.json").read_bytes()
    assert _audio_hashes(run) == _audio_hashes(clean_english)


def test_clean_english_originals_have_a_low_pocketsphinx_wer(clean_english: Path) -> None:
    """The point of the profile: on the mixed corpus's test speech pocketsphinx gets ~93 % WER."""
    pytest.importorskip("pocketsphinx")
    pytest.importorskip("jiwer")
    from entanglecodec.eval.metrics import asr_errors

    errors = words = 0
    for r in _rows(clean_english):
        wav, sr = sf.read(str(clean_english / r["audio"]), dtype="float32")
        res = asr_errors(r["text"], wav, sr)
        errors, words = errors + res.word_errors, words + res.ref_words
    wer = errors / words
    print(f"pocketsphinx WER on the clean-english originals: {100 * wer:.1f} % ({errors}/{words} words)")
    assert wer < 0.5


def test_corpus_never_trains_on_the_heldout_evaluation_speakers(corpus: Path) -> None:
    """The dev/test speakers of `data real-speech` (and the test-only packages) stay out of train/valid clips."""
    from entanglecodec.data import heldout

    blocked = heldout.training_exclusions()
    rows = _rows(corpus)
    real = [r for r in rows if (r["attributes"].get("speaker") or {}).get("kind") == "recorded"]
    assert real, "the tiny corpus holds no recorded speech"
    for r in rows:
        a = r["attributes"]
        speaker = (a.get("speaker") or {}).get("id")
        packages = {(a.get("source") or {}).get("package")} | {e["source"].split("/", 1)[0] for e in a.get("events", [])}
        if r["split"] == "test":
            if speaker and a["speaker"]["kind"] == "recorded":
                assert speaker in heldout.TEST_SPEAKERS, r["id"]
        else:
            assert speaker not in blocked.speakers, r["id"]
        assert not packages & set(heldout.TEST_PACKAGES), r["id"]
    summary = json.loads((corpus / "corpus.json").read_text())
    comp = summary["composition"]
    assert sum(v["clips"] for v in comp["per_source"].values()) == len(rows)
    assert comp["speech_real_share"] == round(
        sum(1 for r in real if r["domain"] == "speech") / sum(1 for r in rows if r["domain"] == "speech"), 3
    )
    assert summary["held_out_evaluation"]["test_speakers"] == list(heldout.TEST_SPEAKERS)


def test_mixed_profile_plans_at_least_40_percent_real_speech() -> None:
    from entanglecodec.data.synth.generator import plan_corpus

    kinds = [s.kind for s in plan_corpus(0.5, seed=1)]
    assert kinds.count("real-speech") / (kinds.count("real-speech") + kinds.count("tts")) >= 0.4


def test_user_exclusions_reach_every_generated_clip() -> None:
    from entanglecodec.data.heldout import Exclusions
    from entanglecodec.data.synth.generator import ClipSpec, generate_clip

    exclude = Exclusions(
        frozenset(),
        frozenset({"ktuberling-data", "klettres-data", "fillets-ng-data-cs", "fillets-ng-data-nl", "drascula", "drascula-spanish",
                   "flight-of-the-amazon-queen", "beneath-a-steel-sky"}),
    )
    pools = build_pools(exclude)
    for i in range(4):
        _, row = generate_clip(ClipSpec(i, 11, "real-speech", "train", 3.0), pools)
        assert row["attributes"]["speaker"]["id"].startswith("asterisk:")
        assert row["attributes"]["source"]["package"] not in exclude.packages


def test_fillets_dialogue_is_parsed_with_its_script_text() -> None:
    from entanglecodec.data.synth.speech import fillets_voice, parse_fillets_dialogs

    lua = (
        '\ndialogId("let-m-divna", "font_small", "What kind of strange ship is that?")\n'
        'dialogStr("Co je to za divnou loď?")\n\n'
        'dialogId("let-v-oko", "font_big", "Can you see that eye?")\n'
        'dialogStr("Vidíš to \\"oko\\"?\\n  Němý svědek.")\n'
    )
    assert parse_fillets_dialogs(lua) == [("let-m-divna", "Co je to za divnou loď?"),
                                          ("let-v-oko", 'Vidíš to "oko"? Němý svědek.')]
    big = fillets_voice("cs-big")
    assert big.id == "fillets:cs-big" and big.gender == "male" and big.language == "cs"
    assert fillets_voice("nl-small").gender == "female" and fillets_voice("nl-small").language == "nl"
    with pytest.raises(SynthError, match="unknown Fish Fillets voice"):
        fillets_voice("de-big")


def _drascula_table(langs: list[list[bytes]]) -> bytes:
    """A text table laid out as the game's drascula.dat (see parse_drascula_texts)."""
    out = len(langs[0]).to_bytes(2, "big")
    for lines in langs:
        entries = b""
        for line in lines:
            body = line + b"\0" * (-len(line) % 4)  # the game's line 0 is empty: an entry of 4 bytes
            entries += (len(body) + 4).to_bytes(4, "big") + body
        out += (len(entries) + 2).to_bytes(2, "big") + entries + b"\0\0"
    return out


def test_drascula_text_table_is_found_and_parsed() -> None:
    from entanglecodec.data.synth.speech import _drascula_line, parse_drascula_texts

    langs = [[b"", b"THAT'S THE DOOR I SAW", b"Yes"], [b"", b"ES LA PUERTA \xa8QUE\xa8", b"Si"]]
    blob = b"DRASCULA\x00\x06" + bytes(range(40)) + _drascula_table(langs) + b"\x00\x54trailing data"
    assert parse_drascula_texts(blob) == langs
    assert _drascula_line(langs[0][1], "ascii") == "That's the door I saw"
    assert _drascula_line(langs[1][1], "cp850") == "Es la puerta ¿que¿"
    assert _drascula_line(b"Mixed  Case\n line", "ascii") == "Mixed Case line"
    broken = bytearray(blob)
    broken[blob.index(b"THAT'S") - 1] = 7  # an entry size that is not a multiple of 4
    with pytest.raises(SynthError, match="no text table"):
        parse_drascula_texts(bytes(broken))


def test_drascula_talk_tables_follow_the_main_table() -> None:
    from entanglecodec.data.synth.speech import parse_drascula_tables, parse_drascula_texts

    main = [[b"", b"HELLO THERE", b"BYE NOW"], [b"", b"HOLA", b"ADIOS"]]
    drascula = [[b"", b"HEY IGOR"], [b"", b"OYE IGOR"]]
    vonbraun = [[b"", b"WHO IS IT?", b"GO AWAY", b"NO"], [b"", b"QUIEN ES?", b"VETE", b"NO"]]
    tables = _drascula_table(main) + _drascula_table(drascula) + _drascula_table(vonbraun)
    blob = b"DRASCULA\x00\x06" + bytes(range(40)) + tables + b"\x00\x03\x00\x09 not a table"
    assert parse_drascula_tables(blob) == [main, drascula, vonbraun]
    assert parse_drascula_texts(blob) == main
    # the chain stops where a table does not follow directly (a gap of one byte)
    gapped = b"DRASCULA" + _drascula_table(main) + b"\x07" + _drascula_table(drascula)
    assert parse_drascula_tables(gapped) == [main]


def test_drascula_speech_files_are_grouped_by_character_prefix() -> None:
    from entanglecodec.data.synth.speech import drascula_speech_files

    names = ["10.ALS", "2.ALS", "D1.ALS", "D12.ALS", "D3.ALS", "VB2.ALS", "BJ1.ALS", "B7.ALS", "S1.ALS", "S12.ALS",
             "1.ALD", "AUX1.ALG", "drascula.dat", "d4.ALS", "D.ALS"]
    groups = drascula_speech_files(names)
    assert groups == {
        "": [(2, "2.ALS"), (10, "10.ALS")],
        "B": [(7, "B7.ALS")],
        "BJ": [(1, "BJ1.ALS")],
        "D": [(1, "D1.ALS"), (3, "D3.ALS"), (12, "D12.ALS")],
        "VB": [(2, "VB2.ALS")],
    }


def test_drascula_character_voices() -> None:
    from entanglecodec.data import heldout
    from entanglecodec.data.synth.speech import (
        DRASCULA_CHARACTERS,
        drascula_voice,
        drascula_voice_names,
        recorded_package_of,
        recorded_voices,
    )

    names = drascula_voice_names()
    assert names[:2] == ["en", "es"] and "en:drascula" in names and "es:vonbraun" in names
    assert len(names) == 2 + 2 * len(DRASCULA_CHARACTERS)
    vb = drascula_voice("es:vonbraun")
    assert (vb.id, vb.language, vb.gender, vb.accent) == ("drascula:es:vonbraun", "es", "male", "European Spanish")
    assert drascula_voice("en:drascula").id == "drascula:en:drascula"
    assert recorded_package_of("drascula:en:drascula") == "drascula"
    assert recorded_package_of("drascula:es:vonbraun") == "drascula-spanish"
    ids = {v.id for v in recorded_voices()}
    assert {"drascula:en", "drascula:es", "drascula:en:vonbraun", "drascula:es:drascula"} <= ids
    assert not {f"drascula:{n}" for n in names} & (set(heldout.DEV_SPEAKERS) | set(heldout.TEST_SPEAKERS))
    for bad in ("en:igor", "it:drascula", "en:"):
        with pytest.raises(SynthError, match="unknown Drascula voice"):
            drascula_voice(bad)


def test_drascula_character_lines_come_from_their_talk_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from entanglecodec.data.synth import speech

    lines = [b"", b"HEY IGOR, LISTEN", b"ONE"] + [b"LINE %d OF THE COUNT" % n for n in range(3, 46)]
    talk_d = [lines, [b"", b"OYE IGOR", b"UNO"] + [b"LINEA %d" % n for n in range(3, 46)]]
    tables = [[[b""] * 3] * 2] + [talk_d] + [[[b""]] * 2] * 8
    base = tmp_path / "usr/share/scummvm/drascula/en"
    base.mkdir(parents=True)
    for name in ("D1.ALS", "D2.ALS", "D26.ALS", "D27.ALS", "D45.ALS", "S3.ALS", "3.ALS"):
        (base / name).write_bytes(bytes([128] * 64))
    monkeypatch.setattr(speech, "ensure_package", lambda package: tmp_path)
    monkeypatch.setattr(speech, "_drascula_tables", lambda: (tmp_path / "drascula.dat", tables))
    speech.drascula_utterances.cache_clear()
    try:
        utts = speech.drascula_utterances("en:drascula")
    finally:
        speech.drascula_utterances.cache_clear()
    # D2 has a one-word subtitle, D26 is a known wrong take, D45 is past the count's lines (1-39)
    assert [u.source for u in utts] == ["usr/share/scummvm/drascula/en/D1.ALS", "usr/share/scummvm/drascula/en/D27.ALS"]
    assert [u.text for u in utts] == ["Hey igor, listen", "Line 27 of the count"]
    assert {u.voice.id for u in utts} == {"drascula:en:drascula"} and not any(u.transcript_exact for u in utts)


def test_drascula_speech_files_decode_as_unsigned_8_bit(tmp_path: Path) -> None:
    from entanglecodec.data.synth.signal import ALS_SAMPLE_RATE, read_audio_any
    from entanglecodec.data.synth.speech import drascula_voice

    path = tmp_path / "12.ALS"
    path.write_bytes(bytes([128, 255, 0, 192]))
    wav, sr = read_audio_any(path)
    assert sr == ALS_SAMPLE_RATE == 11025
    np.testing.assert_allclose(wav, [0.0, 127 / 128, -1.0, 0.5])
    with pytest.raises(SynthError, match="cannot be read"):
        read_audio_any(tmp_path / "missing.ALS")
    assert drascula_voice("en").id == "drascula:en" and drascula_voice("es").language == "es"
    with pytest.raises(SynthError, match="unknown Drascula voice"):
        drascula_voice("it")


def test_real_speech_profile_plans_only_recorded_speech_in_every_split() -> None:
    from entanglecodec.data.synth.generator import plan_corpus

    specs = plan_corpus(0.2, seed=4, profile="real-speech")
    assert {s.kind for s in specs} == {"real-speech"}
    assert {s.split for s in specs} == {"train", "valid", "test"}
    assert specs[0].id == "synth4-rs-000000"
    mixed = plan_corpus(0.2, seed=4)
    assert [(s.split, s.duration) for s in specs[:10]] != [] and len({s.id for s in specs} & {s.id for s in mixed}) == 0


def _queen_archive(entries: list[tuple[str, bytes]]) -> bytes:
    """An archive laid out as Flight of the Amazon Queen's queen.1c (see parse_queen_table)."""
    head = b"QTBLCEM10\x00\x00\x00\x01" + len(entries).to_bytes(2, "big")
    offset = len(head) + 21 * len(entries)
    table, body = b"", b""
    for name, data in entries:
        table += name.encode().ljust(12, b"\0") + b"\x01" + (offset + len(body)).to_bytes(4, "big") + len(data).to_bytes(4, "big")
        body += data
    return head + table + body


def test_queen_archive_is_parsed_and_joes_lines_are_picked() -> None:
    from entanglecodec.data.synth.speech import _FOTAQ_JOE, parse_queen_table

    blob = _queen_archive([("JOE00011.SB", b"abc"), ("020006J1.SB", b"defg"), ("020001P2.SB", b"h")])
    entries = parse_queen_table(blob)
    assert [(n, blob[o : o + s]) for n, o, s in entries] == [("JOE00011.SB", b"abc"), ("020006J1.SB", b"defg"), ("020001P2.SB", b"h")]
    assert [n for n, _, _ in entries if _FOTAQ_JOE.match(n)] == ["JOE00011.SB", "020006J1.SB"]
    assert not _FOTAQ_JOE.match("C41B_011.SB") and not _FOTAQ_JOE.match("03XXXXP2.SB") and _FOTAQ_JOE.match("03SSSSJ1.SB")
    with pytest.raises(SynthError, match="no QTBL header"):
        parse_queen_table(b"RIFF" + blob[4:])
    with pytest.raises(SynthError, match="outside the archive"):
        parse_queen_table(blob[:-1])


def test_recordings_without_a_transcript_leave_the_words_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from entanglecodec.data.captions import TemplateCaptioner
    from entanglecodec.data.synth import generator
    from entanglecodec.data.synth.speech import RecordedUtterance, fotaq_voice

    t = np.arange(int(1.5 * 22050)) / 22050
    utts = []
    for i in range(3):
        sf.write(tmp_path / f"l{i}.wav", (0.3 * np.sin(2 * np.pi * (120 + 30 * i) * t)).astype(np.float32), 22050)
        utts.append(RecordedUtterance(fotaq_voice(), "klettres-data", str(tmp_path / f"l{i}.wav"), f"l{i}", "", False))
    monkeypatch.setattr(generator.speechmod, "recorded_utterances", lambda speaker_id: tuple(utts))
    spec = generator.ClipSpec(0, 5, "real-speech", "train", 3.0, {"voice_id": "fotaq:joe", "environment": {"setting": "clean"}})
    _, row = generator.generate_clip(spec, build_pools())
    speaker = row["attributes"]["speaker"]
    assert row["text"] is None and speaker["transcript_known"] is False and speaker["style"] == "dialogue"
    assert "transcript" not in speaker and "words_per_second" not in speaker and "rate" not in speaker
    assert asr_caption(row) == "speech" and "\u201c" not in TemplateCaptioner(seed=0).caption(row)
