"""Task sequences: how TTS, TTA, AQA, captioning and ASR are laid out as one token sequence.

Every sequence is ``prompt | target``; the loss is computed on the target only (the prompt ids
get label ``-100``). ``T`` is text (BPE ids), ``A`` audio tokens, ``<|eos|>`` the tokenizer's EOS::

    tts      <|tts|> [style caption <|sep|>] T(transcript) <|audio|>   | A <|/audio|> <|eos|>
    tta      <|tta|> T(caption) <|audio|>                                | A <|/audio|> <|eos|>
    aqa      <|aqa|> <|audio|> A <|/audio|> T(question [options]) <|answer|> | T(answer) <|eos|>
             [ T(question 2) <|answer|> | T(answer 2) <|eos|> ... ]   (training turns, ``aqa_turns``)
    caption  <|caption|> <|audio|> A <|/audio|> <|answer|>               | T(caption) <|eos|>
    asr      <|asr|> <|audio|> A <|/audio|> <|answer|>                   | T(transcript) <|eos|>

**Null prompt** (classifier-free guidance of TTS/TTA, paper Table 6): the task tag followed
directly by ``<|audio|>`` (no text). Training replaces the text of a TTS/TTA example by it with
probability ``cond_dropout`` so the LM also learns the unconditional distribution; at inference
the guided logits are ``l_null + gamma * (l_cond - l_null)`` (``gamma = 1``: plain conditional
sampling, the paper's setting).

**AQA turns.** An AQA training sequence may carry several questions about the same clip, one turn
after another (``TaskConfig.aqa_turns``): the audio, which is most of the sequence, is then read
once for several supervised answers. The first turn has exactly the layout of a test prompt, and
the clip's questions are shuffled before they are grouped, so every question type comes first in
some sequences. Test examples always hold one question.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .aqa import Question, label_sets, make_questions
from .shards import TokenShards
from .vocab import ANSWER, AUDIO_END, AUDIO_START, SEP, AudioVocab, VocabError

TASKS: tuple[str, ...] = ("tts", "tta", "aqa", "caption", "asr")
GENERATION_TASKS = ("tts", "tta")


class TaskError(ValueError):
    """Unknown task, empty text, or a sequence longer than the LM's context."""


def check_task(task: str) -> str:
    if task not in TASKS:
        raise TaskError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    return task


def text_ids(tokenizer: Any, text: str, what: str = "text") -> list[int]:
    """BPE ids of ``text`` (no special tokens added); empty or blank text is a :class:`TaskError`."""
    if not isinstance(text, str) or not text.strip():
        raise TaskError(f"{what} is empty")
    return list(tokenizer(text.strip(), add_special_tokens=False)["input_ids"])


def audio_span(vocab: AudioVocab, codes: np.ndarray) -> list[int]:
    """``<|audio|> A <|/audio|>`` for codebook ids ``[F]``."""
    return [vocab.special[AUDIO_START], *vocab.audio_ids(codes), vocab.special[AUDIO_END]]


def generation_prompt(task: str, vocab: AudioVocab, tokenizer: Any, text: str | None, style: str | None = None) -> list[int]:
    """TTS/TTA prompt ending in ``<|audio|>``; ``text=None`` gives the null prompt (see module doc)."""
    if task not in GENERATION_TASKS:
        raise TaskError(f"task {task!r} does not generate audio (use one of {', '.join(GENERATION_TASKS)})")
    ids = [vocab.task_id(task)]
    if text is not None:
        if task == "tts" and style:
            ids += [*text_ids(tokenizer, style, "style caption"), vocab.special[SEP]]
        ids += text_ids(tokenizer, text, "transcript" if task == "tts" else "caption")
    return [*ids, vocab.special[AUDIO_START]]


def understanding_prompt(task: str, vocab: AudioVocab, tokenizer: Any, codes: np.ndarray, question: str | None = None) -> list[int]:
    """AQA/caption/ASR prompt ending in ``<|answer|>`` (``question`` required for ``aqa``)."""
    if task not in ("aqa", "caption", "asr"):
        raise TaskError(f"task {task!r} does not read audio (use aqa, caption or asr)")
    ids = [vocab.task_id(task), *audio_span(vocab, codes)]
    if task == "aqa":
        ids += text_ids(tokenizer, question or "", "question")
    return [*ids, vocab.special[ANSWER]]


@dataclass
class Example:
    """One training/evaluation sequence: ``prompt`` (no loss) then ``target`` (loss), then optional
    further ``turns`` ``(prompt, target)`` of the same kind (AQA questions about the same clip)."""

    task: str
    row_id: str
    prompt: list[int]
    target: list[int]
    question: Question | None = None
    turns: list[tuple[list[int], list[int]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompt) + len(self.target) + sum(len(p) + len(t) for p, t in self.turns)

    def segments(self) -> list[tuple[list[int], list[int]]]:
        """Every ``(prompt, target)`` pair in sequence order (the first is ``(prompt, target)``)."""
        return [(self.prompt, self.target), *self.turns]


@dataclass
class TaskConfig:
    """Which examples a manifest yields (the ``data.tasks`` part of an LM recipe).

    Attributes:
        tasks: task names (:data:`TASKS`).
        tta_domains: domains whose clips make TTA examples.
        tts_style_prob: probability that a TTS prompt also carries the rich caption as style.
        cond_dropout: probability of the null prompt for TTS/TTA training examples.
        mc_fraction: share of multiple-choice AQA questions.
        question_types: AQA question types (``None``: all).
        aqa_per_row: AQA questions drawn per training clip and type (different templates/options).
        aqa_turns: AQA questions per training sequence (turns about the same clip; 1: one each).
    """

    tasks: list[str]
    tta_domains: list[str]
    tts_style_prob: float = 0.3
    cond_dropout: float = 0.1
    mc_fraction: float = 0.75
    question_types: list[str] | None = None
    aqa_per_row: int = 1
    aqa_turns: int = 1


def build_examples(
    rows: Sequence[Mapping[str, Any]],
    all_rows: Sequence[Mapping[str, Any]],
    shards: TokenShards,
    tokenizer: Any,
    vocab: AudioVocab,
    cfg: TaskConfig,
    test: bool,
    max_len: int,
    seed: int = 0,
) -> tuple[list[Example], dict[str, int]]:
    """Examples of ``cfg.tasks`` for ``rows``; returns them and counts of skipped ones.

    ``all_rows`` (the whole corpus) provides the AQA distractor pools. Rows without tokens in
    ``shards`` are skipped (``no_tokens``); sequences over ``max_len`` are skipped (``too_long``).
    Test examples never use the null prompt and ask AQA questions with the held-out template.
    """
    for t in cfg.tasks:
        check_task(t)
    rng = random.Random(seed)
    skipped = {"no_tokens": 0, "too_long": 0}
    out: list[Example] = []
    labels = label_sets(all_rows, cfg.question_types)
    for row in rows:
        rid = str(row["id"])
        if rid not in shards:
            skipped["no_tokens"] += 1
            continue
        codes = shards.codes(rid)
        text, caption, domain = str(row.get("text") or ""), str(row.get("caption") or ""), str(row.get("domain"))
        target_audio = [*vocab.audio_ids(codes), vocab.special[AUDIO_END], vocab.eos_id]
        cands: list[Example] = []
        if "tts" in cfg.tasks and text.strip() and domain == "speech":
            style = caption if caption and rng.random() < cfg.tts_style_prob else None
            drop = not test and rng.random() < cfg.cond_dropout
            p = generation_prompt("tts", vocab, tokenizer, None if drop else text, style)
            cands.append(Example("tts", rid, p, target_audio))
        if "tta" in cfg.tasks and caption.strip() and domain in cfg.tta_domains:
            drop = not test and rng.random() < cfg.cond_dropout
            p = generation_prompt("tta", vocab, tokenizer, None if drop else caption)
            cands.append(Example("tta", rid, p, target_audio))
        if "caption" in cfg.tasks and caption.strip():
            p = understanding_prompt("caption", vocab, tokenizer, codes)
            cands.append(Example("caption", rid, p, [*text_ids(tokenizer, caption), vocab.eos_id]))
        if "asr" in cfg.tasks and text.strip() and domain in ("speech", "mixture"):
            p = understanding_prompt("asr", vocab, tokenizer, codes)
            cands.append(Example("asr", rid, p, [*text_ids(tokenizer, text), vocab.eos_id]))
        if "aqa" in cfg.tasks:
            qs = []
            for k in range(1 if test else cfg.aqa_per_row):
                qs += make_questions([row], labels, test, seed=zlib.crc32(f"{seed}:{rid}:{k}".encode()),
                                     mc_fraction=cfg.mc_fraction, types=cfg.question_types)  # fmt: skip
            cands += _aqa_examples(rid, codes, qs, vocab, tokenizer, 1 if test else cfg.aqa_turns, rng)
        for ex in cands:
            if len(ex) > max_len:
                skipped["too_long"] += 1
            else:
                out.append(ex)
    return out, skipped


def _aqa_examples(rid: str, codes: np.ndarray, qs: list[Question], vocab: AudioVocab, tokenizer: Any,
                  turns: int, rng: random.Random) -> list[Example]:  # fmt: skip
    """``qs`` about one clip as AQA examples of up to ``turns`` questions each (shuffled first when > 1)."""
    if turns > 1:
        qs = list(qs)
        rng.shuffle(qs)
    out: list[Example] = []
    for i in range(0, len(qs), turns):
        group = qs[i : i + turns]
        first = group[0]
        ex = Example("aqa", rid, understanding_prompt("aqa", vocab, tokenizer, codes, first.prompt),
                     [*text_ids(tokenizer, first.answer), vocab.eos_id], first)  # fmt: skip
        for q in group[1:]:
            ex.turns.append(([*text_ids(tokenizer, q.prompt, "question"), vocab.special[ANSWER]],
                             [*text_ids(tokenizer, q.answer), vocab.eos_id]))  # fmt: skip
        out.append(ex)
    return out


def check_context(n_tokens: int, max_len: int, frame_rate: int, what: str = "audio") -> None:
    """Raise :class:`TaskError` when a prompt of ``n_tokens`` leaves no room in the context."""
    if n_tokens >= max_len:
        raise TaskError(
            f"{what} is too long for the LM context: the prompt needs {n_tokens} tokens, the context holds "
            f"{max_len} (about {max_len / frame_rate:.1f} s of audio at {frame_rate} tokens/s); shorten it"
        )


__all__ = ["TASKS", "Example", "TaskConfig", "TaskError", "VocabError", "build_examples"]
