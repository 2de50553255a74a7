"""Audio question answering generated from the corpus ``attributes`` (MMAU/MMAR-style).

Each :class:`QuestionType` reads one answer from a manifest row (the probe targets of
:mod:`entanglecodec.eval.probe` where they exist, so a label means the same thing in probes and
in AQA) and owns several phrasings. The **last template of every type is held out**: training
questions use the others, test questions use it, and test questions are asked about the test
split's clips only (held-out clips), so the test measures generalisation to new clips *and* new
wordings.

A question is multiple choice with 2-4 options (the correct one and distractors drawn from the
labels the type takes anywhere in the corpus, in a seeded random order, listed as ``(A) ...``)
or open (no options). The answer is always the label text. Chance level of a multiple-choice
question is ``1 / number of options``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..eval.probe.measure import TARGETS, _get, _label

LANGUAGE_NAMES: dict[str, str] = {
    "en": "English", "fr": "French", "es": "Spanish", "it": "Italian", "de": "German", "ru": "Russian",
    "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "sv": "Swedish", "fi": "Finnish", "cs": "Czech",
    "da": "Danish", "el": "Greek", "hu": "Hungarian", "tr": "Turkish", "ca": "Catalan", "eo": "Esperanto",
    "ja": "Japanese", "zh": "Chinese", "ko": "Korean", "ar": "Arabic", "hi": "Hindi", "uk": "Ukrainian",
}  # fmt: skip
"""Language codes of the corpus as answer words (unknown codes are answered as the code)."""
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _language(row: Mapping[str, Any]) -> str | None:
    code = TARGETS["language"].extract(row)
    return None if code is None else LANGUAGE_NAMES.get(code.split("-")[0].lower(), code)


def _count_events(row: Mapping[str, Any]) -> str | None:
    events = (row.get("attributes") or {}).get("events")
    if not isinstance(events, list) or not events or len(events) >= len(NUMBERS):
        return None
    return NUMBERS[len(events)]


def _attr(path: str) -> Callable[[Mapping[str, Any]], str | None]:
    return lambda row: _label(_get(row.get("attributes") or {}, path))


@dataclass(frozen=True)
class QuestionType:
    """One kind of question: ``extract(row) -> answer label or None`` and its phrasings."""

    name: str
    extract: Callable[[Mapping[str, Any]], str | None]
    templates: tuple[str, ...]

    @property
    def train_templates(self) -> tuple[str, ...]:
        return self.templates[:-1]

    @property
    def test_template(self) -> str:
        return self.templates[-1]


QUESTION_TYPES: dict[str, QuestionType] = {
    q.name: q
    for q in (
        QuestionType("domain", TARGETS["domain"].extract, (
            "What kind of audio is this?", "Is this speech, music, sound or a mixture?",
            "Which category does this recording belong to?", "How would you classify this clip?")),
        QuestionType("gender", TARGETS["gender"].extract, (
            "Is the speaker male or female?", "What is the gender of the voice?",
            "Who is talking, a man or a woman?", "Which gender does the talker sound like?")),
        QuestionType("language", _language, (
            "What language is spoken?", "Which language does the speaker use?",
            "In what language are the words?", "Name the language of this speech.")),
        QuestionType("rate", TARGETS["rate"].extract, (
            "How fast does the person speak?", "What is the speaking rate?",
            "Is the speech slow, normal or fast?", "At what pace is the talker speaking?")),
        QuestionType("pitch", TARGETS["pitch"].extract, (
            "How high is the voice?", "What is the pitch of the speaker?",
            "Is the voice low, normal or high?", "Describe the voice pitch.")),
        QuestionType("style", _attr("speaker.style"), (
            "What is the speaking style?", "How is the speech delivered?",
            "Which style of speaking is this?", "Describe the delivery of the speaker.")),
        QuestionType("emotion", _attr("speaker.emotion"), (
            "What emotion does the speaker convey?", "How does the speaker feel?",
            "Which mood is in the voice?", "Name the emotional tone of the speech.")),
        QuestionType("instrument", TARGETS["instrument"].extract, (
            "Which instrument family plays the melody?", "What instrument carries the tune?",
            "Name the lead instrument family.", "Which kind of instrument leads this music?")),
        QuestionType("tempo", TARGETS["tempo"].extract, (
            "How fast is the music?", "What is the tempo of the piece?",
            "Is the tempo slow, moderate or fast?", "Describe the speed of the music.")),
        QuestionType("key", _attr("music.key"), (
            "What key is the music in?", "Which key is the piece played in?",
            "Name the tonic of the music.", "On which note is the key centred?")),
        QuestionType("mode", TARGETS["mode"].extract, (
            "Is the music in a major or minor mode?", "What is the mode of the piece?",
            "Does this sound major or minor?", "Which mode does the harmony use?")),
        QuestionType("event", TARGETS["event"].extract, (
            "Which sound event is the loudest?", "What is the most prominent sound?",
            "Which sound stands out most?", "Name the dominant sound event.")),
        QuestionType("count", _count_events, (
            "How many sound events occur?", "Count the sound events in the clip.",
            "How many distinct sounds can be heard?", "What is the number of sound events?")),
        QuestionType("reverb", TARGETS["reverb"].extract, (
            "How reverberant is the recording?", "How much reverberation is there?",
            "Is the room dry or reverberant?", "Describe the room reverberation.")),
        QuestionType("noise", TARGETS["noise"].extract, (
            "What background noise is present?", "Which kind of noise is in the background?",
            "What can be heard underneath?", "Name the background noise.")),
    )
}  # fmt: skip
"""Built-in question types, in report order."""


@dataclass(frozen=True)
class Question:
    """One AQA item about clip ``row_id``; ``options`` is empty for an open question."""

    row_id: str
    qtype: str
    question: str
    options: tuple[str, ...]
    answer: str
    heldout_template: bool

    @property
    def prompt(self) -> str:
        """The question text the LM reads (options listed as ``(A) x (B) y``)."""
        if not self.options:
            return self.question
        opts = " ".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(self.options))
        return f"{self.question} Options: {opts}."

    @property
    def chance(self) -> float:
        return 1.0 / len(self.options) if self.options else 0.0


def label_sets(rows: Sequence[Mapping[str, Any]], types: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Every label each question type takes in ``rows`` (sorted), the pool of distractors."""
    out: dict[str, set[str]] = {}
    for name in types or QUESTION_TYPES:
        q = QUESTION_TYPES[name]
        out[name] = {a for r in rows if (a := q.extract(r)) is not None}
    return {k: sorted(v) for k, v in out.items()}


def make_questions(
    rows: Sequence[Mapping[str, Any]],
    labels: Mapping[str, Sequence[str]],
    test: bool,
    seed: int = 0,
    mc_fraction: float = 0.75,
    types: Sequence[str] | None = None,
) -> list[Question]:
    """One question per row and answerable type.

    Args:
        rows: manifest rows (the train split for training questions, the test split for test).
        labels: :func:`label_sets` of the whole corpus (distractor pools); a type with fewer than
            two labels is not asked (nothing to choose between).
        test: use the held-out template (else one of the training templates, seeded).
        seed: seed of templates, option counts, distractors and their order.
        mc_fraction: share of multiple-choice questions (the rest are open).
        types: question types to ask (default: all of :data:`QUESTION_TYPES`).

    Raises:
        ValueError: an unknown question type.
    """
    names = list(types or QUESTION_TYPES)
    unknown = [n for n in names if n not in QUESTION_TYPES]
    if unknown:
        raise ValueError(f"unknown question type(s) {unknown} (known: {', '.join(QUESTION_TYPES)})")
    rng = random.Random(seed)
    out: list[Question] = []
    for row in rows:
        for name in names:
            qt = QUESTION_TYPES[name]
            answer = qt.extract(row)
            pool = [x for x in labels.get(name, ()) if x != answer]
            if answer is None or not pool:
                continue
            text = qt.test_template if test else rng.choice(qt.train_templates)
            options: tuple[str, ...] = ()
            if rng.random() < mc_fraction:
                n = rng.randint(2, min(4, len(pool) + 1))
                opts = [answer, *rng.sample(pool, n - 1)]
                rng.shuffle(opts)
                options = tuple(opts)
            out.append(Question(str(row["id"]), name, text, options, answer, test))
    return out
