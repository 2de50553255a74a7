"""The codec-controlled comparison end to end at toy size, the k-means tokenizer and the statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from entanglecodec.cli import app
from entanglecodec.lm.judge import diff_interval, wilson

REPO = Path(__file__).resolve().parents[2]


def test_wilson_and_difference() -> None:
    lo, hi = wilson(50, 100)
    assert lo < 0.5 < hi and math.isclose(0.5 - lo, hi - 0.5, rel_tol=1e-9) and 0.09 < hi - lo < 0.2
    assert wilson(0, 10)[0] == 0.0 and math.isclose(wilson(10, 10)[1], 1.0) and math.isnan(wilson(0, 0)[0])
    d, dlo, dhi = diff_interval(80, 100, 50, 100)
    assert math.isclose(d, 0.3) and 0 < dlo < d < dhi
    assert diff_interval(50, 100, 50, 100)[1] < 0 < diff_interval(50, 100, 50, 100)[2]


@pytest.fixture(scope="module")
def kmeans_dir(lm_corpus: Path, tiny_codec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("km") / "k64"
    res = CliRunner().invoke(app, ["lm", "fit-kmeans", str(lm_corpus), "-o", str(out), "--codec", str(tiny_codec)])
    assert res.exit_code == 0, res.output
    return out


def test_kmeans_tokenizer_roundtrip(kmeans_dir: Path) -> None:
    from entanglecodec.lm.audio_tokenizer import KMeansMelTokenizer, load_audio_tokenizer

    tok = load_audio_tokenizer(kmeans_dir, vocoder="griffin-lim")
    assert isinstance(tok, KMeansMelTokenizer) and tok.codebook_size == 64 and tok.frame_rate == 50
    wav = np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1
    codes = tok.encode([wav])[0]
    assert codes.shape == (50,) and codes.max() < 64 and tok.accepts_fingerprint(tok.fingerprint())
    # nearest centre, as MiniBatchKMeans.predict would choose
    z = (tok._mel(wav) - tok.mean) / tok.std
    assert np.array_equal(codes, ((z[:, None] - tok.centres[None]) ** 2).sum(-1).argmin(-1).numpy())
    tok._vocoder = __import__("entanglecodec.vocoder.load", fromlist=["load_vocoder"]).load_vocoder("griffin-lim")
    tok._vocoder.n_iter = 2
    assert tok.decode(codes).shape == (50 * 480,)
    with pytest.raises(ValueError, match="k-means token ids"):
        tok.decode(np.array([64]))


def test_compare_command_writes_report(lm_corpus: Path, tiny_codec: Path, kmeans_dir: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "report"
    shutil.copytree(kmeans_dir, tmp_path / "work" / "kmeans" / "k64")  # the comparison reuses a fitted k-means
    args = [
        "lm", "compare", "-c", str(REPO / "configs" / "lm-compare.yaml"), "--work-dir", str(tmp_path / "work"), "-o", str(out),
        "--set", f"manifest={lm_corpus}", "--set", f"recipe={REPO / 'configs' / 'lm-tiny.yaml'}",
        "--set", "recipe_overrides=[trainer.max_steps=2]", "--set", "seeds=[0]",
        "--set", f"tokenizers=[{{name: tiny, path: {tiny_codec}}}, {{name: kmeans-mel, kmeans: true}}]",
        "--set", "eval.retrieval_clips=2", "--set", "eval.tts_clips=1", "--set", "eval.tta_clips=2",
        "--set", "eval.caption_max_tokens=4", "--set", "eval.speaker_similarity=false", "--set", "eval.asr=pocketsphinx",
        "--set", "kmeans_clips=30", "--set", "contrasts=[[kmeans-mel, tiny]]", "--set", "generation_recipe=null",
    ]  # fmt: skip
    # --only: one tokenizer's rows (another process may fill the others), no report
    res = CliRunner().invoke(app, [*args, "--only", "tiny"])
    assert res.exit_code == 0 and "no report written" in res.output, res.output
    assert "evaluation reused" not in res.output and not out.with_suffix(".md").exists()
    assert not (tmp_path / "work" / "tokens" / "kmeans-mel").exists()
    res = CliRunner().invoke(app, [*args, "--only", "nope"])
    assert res.exit_code == 1 and "--only nope: not a tokenizer" in res.output, res.output
    cache = tmp_path / "work" / "runs" / "tiny" / "seed0" / "eval.json"
    first = json.loads(cache.read_text())
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and res.output.count("evaluation reused") == 1, res.output
    # a rerun (next session, one more tokenizer) reuses finished evaluations; other eval settings redo them
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and res.output.count("evaluation reused") == 2, res.output
    res = CliRunner().invoke(app, [*args, "--set", "eval.retrieval_clips=1"])
    assert res.exit_code == 0 and "evaluation reused" not in res.output, res.output
    assert json.loads(cache.read_text())["key"] != first["key"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    md = (tmp_path / "report.md").read_text()
    doc = json.loads((tmp_path / "report.json").read_text())
    assert set(doc["results"]) == {"tiny", "kmeans-mel"} and set(doc["results"]["tiny"]) == {"0"}
    for section in ("## AQA accuracy", "### Per question type", "## Captioning", "## TTS", "## TTA judged", "kmeans-mel - tiny",
                    "| answer prior (no audio) |"):  # fmt: skip
        assert section in md
    assert doc["answer_prior"] and {"type", "mc", "correct", "chance"} <= set(doc["answer_prior"][0])
    aqa = doc["results"]["tiny"]["0"]["aqa"]
    assert aqa and all(0 < q["chance"] <= 0.5 for q in aqa)
    km = json.loads((tmp_path / "work" / "tokens" / "kmeans-mel" / "meta.json").read_text())
    assert km["tokenizer"]["codebook_size"] == 64 and km["tokenizer"]["frame_rate"] == 50


def test_tts_speaker_similarity_takes_outputs_of_any_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TTS output is never as long as its reference clip; the pilot's similarity column was empty."""
    import soundfile as sf

    from entanglecodec.eval import metrics
    from entanglecodec.lm.compare import EvalSection, _tts_scores

    rng = np.random.default_rng(0)
    t = np.arange(24000) / 24000
    voice = (0.3 * np.sin(2 * np.pi * 140 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size))
    sf.write(tmp_path / "ref.wav", voice.astype(np.float32), 24000)
    monkeypatch.setattr(metrics, "transcribe", lambda *a, **k: "hello")
    out = _tts_scores(voice[:15000].astype(np.float32), {"audio": str(tmp_path / "ref.wav"), "text": "hello"}, 24000,
                      EvalSection(speaker_similarity=True))
    assert out["wer"] == 0.0 and isinstance(out["speaker_sim"], float) and out["speaker_sim"] > 0.5


def test_answer_prior_answers_the_most_frequent_training_label() -> None:
    from entanglecodec.lm.compare import answer_prior

    def row(i: int, split: str, gender: str) -> dict[str, object]:
        return {"id": f"r{i}", "split": split, "domain": "speech", "attributes": {"speaker": {"gender": gender}}}

    train = [row(i, "train", "female" if i < 8 else "male") for i in range(10)]
    test = [row(10 + i, "test", g) for i, g in enumerate(["female", "female", "male"])]
    items = [i for i in answer_prior(train, test, train + test, mc_fraction=0.0) if i["type"] == "gender"]
    assert len(items) == 3 and [i["correct"] for i in items] == [True, True, False]  # always "female"


def test_compare_config_checks_contrasts() -> None:
    from entanglecodec.config import ConfigError
    from entanglecodec.lm.compare import load_compare_config

    cfg = load_compare_config(REPO / "configs" / "lm-compare.yaml")
    assert cfg.pairs()[0] == ("entanglecodec", "kmeans-mel") and len(cfg.pairs()) == len(cfg.contrasts)
    bare = load_compare_config(REPO / "configs" / "lm-compare.yaml", ["contrasts=[]"])
    names = [t.name for t in bare.tokenizers]
    assert bare.pairs() == [(names[0], n) for n in names[1:]]
    with pytest.raises(ConfigError, match="contrasts"):
        load_compare_config(REPO / "configs" / "lm-compare.yaml", ["contrasts=[[entanglecodec, nope]]"])


def test_compare_trains_understanding_and_generation_lms_apart(lm_corpus: Path, tiny_codec: Path, tmp_path: Path) -> None:
    """With a generation recipe, each tokenizer x seed gets two LMs, each scored on what it trained."""
    work, out = tmp_path / "work", tmp_path / "report"
    tiny = REPO / "configs" / "lm-tiny.yaml"
    args = [
        "lm", "compare", "-c", str(REPO / "configs" / "lm-compare.yaml"), "--work-dir", str(work), "-o", str(out),
        "--set", f"manifest={lm_corpus}", "--set", f"recipe={tiny}",
        "--set", "recipe_overrides=[trainer.max_steps=2, 'data.tasks=[aqa, caption]', data.aqa_turns=3]",
        "--set", "seeds=[0]", "--set", f"tokenizers=[{{name: tiny, path: {tiny_codec}}}]", "--set", "contrasts=[]",
        "--set", "eval.retrieval_clips=2", "--set", "eval.tts_clips=1", "--set", "eval.tta_clips=2",
        "--set", "eval.caption_max_tokens=4", "--set", "eval.speaker_similarity=false", "--set", "eval.asr=pocketsphinx",
        "--set", "generation_recipe=null",
    ]  # fmt: skip
    # understanding LM alone: no TTS/TTA rows are invented for it
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    scored = json.loads((work / "runs" / "tiny" / "seed0" / "eval.json").read_text())["result"]
    assert set(scored) == {"aqa", "caption"}
    md = out.with_suffix(".md").read_text()
    assert "Scored on: aqa, caption." in md and "| tiny | 0 | not trained | – | – | – | – |" in md
    # the report names the whole command, overrides included, so that it reproduces
    assert f"--work-dir {work} -o {out} --set manifest={lm_corpus}" in md and "--set 'recipe_overrides=[trainer" in md
    # + a generation LM: trained apart, scored on TTS/TTA; the understanding LM's evaluation is reused
    gen = ["--set", f"generation_recipe={tiny}", "--set", "generation_overrides=[trainer.max_steps=2, 'data.tasks=[tts, tta]']"]
    res = CliRunner().invoke(app, [*args, *gen])
    assert res.exit_code == 0 and res.output.count("evaluation reused") == 1, res.output
    assert "(generation LM): evaluating tts, tta" in res.output
    g = json.loads((work / "runs" / "tiny" / "seed0-gen" / "eval.json").read_text())["result"]
    assert set(g) == {"tts", "tta"}
    doc = json.loads(out.with_suffix(".json").read_text())
    assert set(doc["results"]["tiny"]["0"]) == {"aqa", "caption", "tts", "tta"}
    assert doc["budget"]["scored"] == {"lm": ["aqa", "caption"], "generation": ["tts", "tta"]}
    assert "not trained" not in out.with_suffix(".md").read_text()
    # a generation recipe that trains no generation task is refused in one line
    bad = ["--set", f"generation_recipe={tiny}", "--set", "generation_overrides=['data.tasks=[aqa]']"]
    res = CliRunner().invoke(app, [*args, *bad])
    assert res.exit_code == 1 and "generation LM recipe trains none of the scored tasks tts, tta" in res.output, res.output
    # a changed LM budget does not silently reuse the LMs trained under the old one
    changed = [a.replace("trainer.max_steps=2,", "trainer.max_steps=3,") for a in args]
    res = CliRunner().invoke(app, changed)
    assert res.exit_code == 1 and "was trained with another LM recipe (trainer.max_steps differ)" in res.output, res.output
