"""AQA question generation, task sequences and loss masking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from entanglecodec.data.manifest import read_manifest
from entanglecodec.lm.aqa import QUESTION_TYPES, label_sets, make_questions
from entanglecodec.lm.data import IGNORE, collate
from entanglecodec.lm.model import LMModelConfig, build_lm
from entanglecodec.lm.shards import TokenShards
from entanglecodec.lm.tasks import TaskConfig, TaskError, build_examples, check_task, generation_prompt
from entanglecodec.lm.vocab import ANSWER, AUDIO_END, AUDIO_START


def test_questions_types_templates_and_options(lm_corpus: Path) -> None:
    rows = [dict(r) for r in read_manifest(lm_corpus)]
    labels = label_sets(rows)
    assert labels["gender"] == ["female", "male"] and labels["language"] == ["English", "French"]
    assert labels["count"] == ["one", "three", "two"] and labels["mode"] == ["major", "minor"]
    train = make_questions([r for r in rows if r["split"] == "train"], labels, test=False, seed=3)
    test = make_questions([r for r in rows if r["split"] == "test"], labels, test=True, seed=3)
    assert {q.qtype for q in train} >= {"domain", "gender", "language", "rate", "instrument", "tempo", "key", "mode",
                                        "event", "count", "reverb", "noise"}  # fmt: skip
    for q in train:
        assert q.question in QUESTION_TYPES[q.qtype].train_templates and not q.heldout_template
    for q in test:
        assert q.question == QUESTION_TYPES[q.qtype].test_template
    mc = [q for q in train + test if q.options]
    assert mc and any(not q.options for q in train)
    for q in mc:
        assert 2 <= len(q.options) <= 4 and q.answer in q.options and len(set(q.options)) == len(q.options)
        assert q.prompt.startswith(q.question) and "(A)" in q.prompt and q.chance == 1 / len(q.options)
    assert make_questions(rows, labels, test=False, seed=3) == make_questions(rows, labels, test=False, seed=3)
    with pytest.raises(ValueError, match="unknown question type"):
        make_questions(rows, labels, test=True, types=["colour"])


def test_examples_layout_and_loss_mask(lm_corpus: Path, tokens: Path) -> None:
    rows = [dict(r) for r in read_manifest(lm_corpus)]
    shards = TokenShards(tokens)
    model, tok, vocab = build_lm(LMModelConfig(preset="tiny"), shards.tokenizer["fingerprint"],
                                 np.random.default_rng(0).standard_normal((64, 14)), ["hello world"] * 5)  # fmt: skip
    cfg = TaskConfig(tasks=["tts", "tta", "aqa", "caption", "asr"], tta_domains=["music", "sound"], cond_dropout=0.0)
    train = [r for r in rows if r["split"] == "train"]
    ex, skipped = build_examples(train, rows, shards, tok, vocab, cfg, test=False, max_len=4096)
    assert skipped == {"no_tokens": 0, "too_long": 0}
    assert {e.task for e in ex} == {"tts", "tta", "aqa", "caption", "asr"}
    for e in ex:
        assert e.prompt[0] == vocab.task_id(e.task)
        codes = shards.codes(e.row_id)
        if e.task in ("tts", "tta"):
            assert e.prompt[-1] == vocab.special[AUDIO_START]
            assert e.target == [*(codes + vocab.audio_offset).tolist(), vocab.special[AUDIO_END], vocab.eos_id]
        else:
            assert e.prompt[1] == vocab.special[AUDIO_START] and e.prompt[-1] == vocab.special[ANSWER]
            assert e.prompt[2 : 2 + codes.size] == (codes + vocab.audio_offset).tolist()
            assert e.target[-1] == vocab.eos_id and max(e.target[:-1]) < vocab.text_vocab_size
    batch = collate(ex[:3], vocab.pad_id)
    for i, e in enumerate(ex[:3]):
        lab = batch["labels"][i]
        assert (lab[: len(e.prompt)] == IGNORE).all() and lab[len(e.prompt) : len(e)].tolist() == e.target
        assert (lab[len(e):] == IGNORE).all() and int(batch["attention_mask"][i].sum()) == len(e)
    short, skipped = build_examples(train, rows, shards, tok, vocab, cfg, test=False, max_len=20)
    assert skipped["too_long"] > 0 and all(len(e) <= 20 for e in short)
    # the null prompt (condition dropout / CFG) is the task tag + <|audio|>
    assert generation_prompt("tta", vocab, tok, None) == [vocab.task_id("tta"), vocab.special[AUDIO_START]]
    with pytest.raises(TaskError, match="caption is empty"):
        generation_prompt("tta", vocab, tok, "  ")
    with pytest.raises(TaskError, match="unknown task 'sing'"):
        check_task("sing")


def test_aqa_turns_pack_a_clips_questions_and_label_every_answer(lm_corpus: Path, tokens: Path) -> None:
    rows = [dict(r) for r in read_manifest(lm_corpus)]
    shards = TokenShards(tokens)
    model, tok, vocab = build_lm(LMModelConfig(preset="tiny"), shards.tokenizer["fingerprint"],
                                 np.random.default_rng(0).standard_normal((64, 14)), ["hello world"] * 5)  # fmt: skip
    train = [r for r in rows if r["split"] == "train"]
    one, _ = build_examples(train, rows, shards, tok, vocab, TaskConfig(["aqa"], [], aqa_per_row=2), False, 4096)
    packed, _ = build_examples(train, rows, shards, tok, vocab, TaskConfig(["aqa"], [], aqa_per_row=2, aqa_turns=4),
                               False, 4096)  # fmt: skip
    # the same questions, about 4x fewer sequences, at most 4 per sequence and all about one clip
    assert sum(1 + len(e.turns) for e in packed) == len(one) and len(packed) < len(one) / 2
    assert max(len(e.turns) for e in packed) == 3
    def answers(exs: list) -> list:  # noqa: ANN001
        return sorted((e.row_id, tuple(p[-12:]), tuple(t)) for e in exs for p, t in e.segments())

    assert answers(packed) == answers(one)
    batch = collate(packed[:4], vocab.pad_id)
    for i, e in enumerate(packed[:4]):
        assert e.prompt[-1] == vocab.special[ANSWER] and e.prompt[1] == vocab.special[AUDIO_START]
        lab, ids, at = batch["labels"][i], batch["input_ids"][i], 0
        for prompt, target in e.segments():
            assert ids[at : at + len(prompt)].tolist() == prompt and (lab[at : at + len(prompt)] == IGNORE).all()
            at += len(prompt)
            assert lab[at : at + len(target)].tolist() == target and target[-1] == vocab.eos_id
            at += len(target)
        assert at == len(e) and (lab[at:] == IGNORE).all() and int(batch["attention_mask"][i].sum()) == len(e)
        for prompt, _ in e.turns:  # later turns: question + <|answer|>, no second audio span
            assert prompt[-1] == vocab.special[ANSWER] and vocab.special[AUDIO_START] not in prompt
    # test examples keep one question each
    test, _ = build_examples([r for r in rows if r["split"] == "test"], rows, shards, tok, vocab,
                             TaskConfig(["aqa"], [], aqa_turns=4), True, 4096)  # fmt: skip
    assert test and all(not e.turns for e in test)
