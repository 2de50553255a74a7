"""End to end: `lm train` on tokens of a tiny corpus, then tts / tta / ask / caption, resume, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from entanglecodec.cli import app

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, res.output


def test_train_then_generate_and_understand(trained_lm: Path, tiny_codec: Path, lm_corpus: Path, tmp_path: Path) -> None:
    lm = trained_lm / "lm"
    assert (lm / "entanglecodec_lm.json").is_file() and (trained_lm / "phase-train" / "checkpoints" / "last.ckpt").is_file()
    metrics = (trained_lm / "phase-train" / "logs" / "metrics.csv").read_text()
    assert "train/loss" in metrics and "val/loss" in metrics
    for task, text in (("tts", "hello number three"), ("tta", "A short piece in C major.")):
        out = tmp_path / f"{task}.wav"
        code, msg = _run("lm", task, text, "-o", out, "--lm", lm, "--codec", tiny_codec, "--max-seconds", "0.3",
                         "--seed", "1", "--top-k", "20", "--top-p", "0.9", "--guidance", "1.5", "--temperature", "1.0")  # fmt: skip
        assert code == 0, msg
        wav, sr = sf.read(out)
        assert sr == 24000 and 0 < wav.size <= 0.3 * 24000 + 480 and np.isfinite(wav).all()
    code, msg = _run("lm", "ask", lm_corpus.parent / "clip003.wav", "Is the speaker male or female? Options: (A) male (B) female.",
                     "--lm", lm, "--codec", tiny_codec, "--max-tokens", "4")  # fmt: skip
    assert code == 0, msg
    code, msg = _run("lm", "caption", lm_corpus.parent / "clip004.wav", "--lm", lm, "--codec", tiny_codec, "--max-tokens", "5")
    assert code == 0, msg


def test_same_seed_same_tokens_and_max_length_warning(trained_lm: Path, tiny_codec: Path) -> None:
    from entanglecodec.lm.generate import AudioLM, Sampling

    model = AudioLM(trained_lm / "lm", tiny_codec)
    s = Sampling(temperature=1.0, max_new_tokens=5, seed=3)
    # force the loop to run to the limit: the closing token is never allowed
    model.audio_allowed[[model.vocab.special["<|/audio|>"], model.vocab.eos_id]] = False
    with pytest.warns(UserWarning, match="maximum length"):
        a, trunc = model.generate_codes("tts", "hello", s)
        b, _ = model.generate_codes("tts", "hello", s)
    assert trunc and a.size == 5 and np.array_equal(a, b) and a.max() < model.vocab.codebook_size


def test_resume_finishes_an_interrupted_phase(tiny_codec: Path, lm_corpus: Path, tokens: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["lm", "train", "-c", REPO / "configs" / "lm-tiny.yaml", "--run-dir", run, "--no-progress",
            "--set", f"codec={tiny_codec}", "--set", f"data.manifest={lm_corpus}", "--set", f"data.tokens={tokens}"]  # fmt: skip
    code, msg = _run(*args, "--set", "trainer.max_steps=3")
    assert code == 0, msg
    # as if a 6-step run had been killed right after its step-3 checkpoint: the phase is unfinished
    shutil.rmtree(run / "phase-train" / "lm")
    shutil.rmtree(run / "lm")
    code, msg = _run(*args)
    assert code == 1 and "already holds a run" in msg
    code, msg = _run(*args, "--resume")
    assert code == 0, msg
    assert (run / "phase-train" / "logs" / "resume-1" / "metrics.csv").is_file()
    last = torch.load(run / "phase-train" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 6 and (run / "lm" / "entanglecodec_lm.json").is_file()
    steps = (run / "phase-train" / "logs" / "resume-1" / "metrics.csv").read_text()
    assert "train/loss" in steps


def test_bad_inputs_one_line_errors(trained_lm: Path, tiny_codec: Path, other_codec: Path, lm_corpus: Path,
                                    tokens: Path, tmp_path: Path) -> None:  # fmt: skip
    lm = trained_lm / "lm"
    existing = tmp_path / "mine.wav"
    existing.write_bytes(b"user data")
    cases = [
        (["lm", "tts", "   ", "-o", tmp_path / "a.wav", "--lm", lm, "--codec", tiny_codec], "is empty"),
        (["lm", "tts", "hi", "-o", existing, "--lm", lm, "--codec", tiny_codec], "already exists"),
        (["lm", "tts", "hi", "-o", tmp_path / "a.mp4", "--lm", lm, "--codec", tiny_codec], ".wav or .flac"),
        (["lm", "tts", "hi", "-o", tmp_path / "a.wav", "--lm", lm, "--codec", other_codec], "LM vocabulary was built"),
        (["lm", "tta", "hi", "-o", tmp_path / "a.wav", "--lm", tmp_path, "--codec", tiny_codec], "not an EntangleCodec audio LM"),
        (["lm", "tta", "hi", "-o", tmp_path / "a.wav", "--lm", lm, "--codec", tiny_codec, "--top-p", "0"], "top_p"),
        (["lm", "ask", lm_corpus.parent / "clip003.wav", "", "--lm", lm, "--codec", tiny_codec], "question is empty"),
        (["lm", "ask", tmp_path / "none.wav", "what?", "--lm", lm, "--codec", tiny_codec], "none.wav"),
        (["lm", "train", "-c", REPO / "configs" / "lm-tiny.yaml", "--run-dir", tmp_path / "r2", "--set", f"codec={other_codec}",
          "--set", f"data.manifest={lm_corpus}", "--set", f"data.tokens={tokens}"], "another codec checkpoint"),
        (["lm", "train", "-c", REPO / "configs" / "lm-tiny.yaml", "--set", "data.tasks=[sing]"], "unknown task"),
        (["tokenize", lm_corpus, "-o", tmp_path, "--codec", tiny_codec], "not a token directory"),
    ]  # fmt: skip
    for args, expected in cases:
        code, msg = _run(*args)
        assert code == 1, (args, msg)
        assert expected in msg and "Traceback" not in msg, (args, msg)
        assert msg.strip().splitlines()[-1].startswith("error:"), msg
    assert existing.read_bytes() == b"user data"
    # audio longer than the LM context (tiny preset: 2048 positions = 41 s)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(24000 * 42, dtype=np.float32), 24000)
    code, msg = _run("lm", "caption", long, "--lm", lm, "--codec", tiny_codec)
    assert code == 1 and "too long for the LM context" in msg, msg


def test_recipes_parse() -> None:
    from entanglecodec.lm.recipe import load_lm_recipe

    small = load_lm_recipe(REPO / "configs" / "lm-small.yaml")
    assert [p.name for p in small.phases] == ["pretrain", "sft"] and small.model.preset == "small"
    paper = load_lm_recipe(REPO / "configs" / "lm-paper.yaml")
    assert [(p.max_steps, p.lr) for p in paper.phases] == [(50000, 3e-5), (10000, 1e-5)]
    gen = load_lm_recipe(REPO / "configs" / "lm-paper-gen.yaml")
    assert gen.data.tasks == ["tts", "tta"] and gen.phases[0].epochs == 3 and gen.optim.accumulate == 4
    data = json.loads(json.dumps(small.to_dict()))
    assert data["trainer"]["nan_policy"] == "stop"
    understand = load_lm_recipe(REPO / "configs" / "lm-small-understand.yaml")
    assert understand.data.tasks == ["aqa", "caption"] and understand.data.aqa_turns == 6
    from entanglecodec.config import ConfigError

    with pytest.raises(ConfigError, match="aqa_turns >= 1"):
        load_lm_recipe(REPO / "configs" / "lm-small-understand.yaml", ["data.aqa_turns=0"])


def test_option_scores_are_the_mean_log_probability_of_each_option(trained_lm: Path, tiny_codec: Path) -> None:
    """Options of different lengths, scored from the logits of their own positions only."""
    from entanglecodec.lm.generate import AudioLM
    from entanglecodec.lm.tasks import text_ids, understanding_prompt

    lm = AudioLM(trained_lm / "lm", tiny_codec)
    prompt = understanding_prompt("aqa", lm.vocab, lm.tokenizer, np.arange(7) % lm.vocab.codebook_size, "What is this?")
    options = ["speech", "a sound with many words in it", "music"]
    got = lm.option_scores(prompt, options)
    for o, score in zip(options, got, strict=True):  # reference: each option alone, full logits
        x = text_ids(lm.tokenizer, o) + [lm.vocab.eos_id]
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(input_ids=torch.tensor([prompt + x])).logits.float(), -1)[0]
        ref = float(np.mean([logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(x)]))
        assert score == pytest.approx(ref, abs=1e-4)
