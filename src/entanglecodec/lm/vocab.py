"""The LM vocabulary: a text tokenizer extended with audio, boundary and task tokens.

Token layout (ids are contiguous, so an audio token is ``audio_offset + code``)::

    [0, T)                     the text tokenizer's own tokens (BPE trained here, or Qwen3's)
    [T, T + len(SPECIAL))      boundary and task tokens (:data:`SPECIAL_TOKENS`)
    [A, A + K)                 one token ``<|a_00042|>`` per codebook entry, A = audio_offset

Every new token is added as a *special* token, so text never splits into them and decoding
shows them whole. :class:`AudioVocab` records the layout and is saved beside the tokenizer as
``entanglecodec_lm.json`` (with the audio tokenizer's fingerprint), which is how a saved LM
refuses tokens of another codec.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write_text

AUDIO_START = "<|audio|>"
AUDIO_END = "<|/audio|>"
ANSWER = "<|answer|>"
SEP = "<|sep|>"
TASK_TOKENS: dict[str, str] = {
    "tts": "<|tts|>",
    "tta": "<|tta|>",
    "aqa": "<|aqa|>",
    "caption": "<|caption|>",
    "asr": "<|asr|>",
}
"""One tag per task; the first token of every sequence."""
SPECIAL_TOKENS: tuple[str, ...] = (AUDIO_START, AUDIO_END, ANSWER, SEP, *TASK_TOKENS.values())
TEXT_EOS = "<|endoftext|>"
"""End-of-sequence (and padding) token of tokenizers trained here; Qwen3 uses the same string."""
META_NAME = "entanglecodec_lm.json"
META_VERSION = 1


class VocabError(ValueError):
    """The LM vocabulary does not match the audio tokenizer, or token ids are out of range."""


def audio_token(code: int) -> str:
    """The token string of codebook entry ``code``."""
    return f"<|a_{code:05d}|>"


@dataclass
class AudioVocab:
    """Where the audio and special tokens live in the LM vocabulary.

    Attributes:
        audio_offset: id of ``<|a_00000|>``.
        codebook_size: ``K``, the audio tokenizer's codebook size.
        special: token string -> id for :data:`SPECIAL_TOKENS`.
        eos_id / pad_id: end-of-sequence and padding ids.
        text_vocab_size: ``T``, size of the text tokenizer before extension.
        fingerprint: the audio tokenizer's token-space fingerprint.
        tokenizer_name: label of the audio tokenizer (report rows).
        frame_rate: audio tokens per second.
    """

    audio_offset: int
    codebook_size: int
    special: dict[str, int]
    eos_id: int
    pad_id: int
    text_vocab_size: int
    fingerprint: str
    tokenizer_name: str = ""
    frame_rate: int = 50
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Total vocabulary size (``audio_offset + K``)."""
        return self.audio_offset + self.codebook_size

    def task_id(self, task: str) -> int:
        if task not in TASK_TOKENS:
            raise VocabError(f"unknown task {task!r} (known: {', '.join(TASK_TOKENS)})")
        return self.special[TASK_TOKENS[task]]

    def audio_ids(self, codes: Iterable[int] | np.ndarray) -> list[int]:
        """Codebook ids ``[F]`` -> LM ids; raises :class:`VocabError` for ids outside ``[0, K)``."""
        c = np.asarray(codes, dtype=np.int64).reshape(-1)
        if c.size and (int(c.min()) < 0 or int(c.max()) >= self.codebook_size):
            raise VocabError(
                f"audio token ids outside [0, {self.codebook_size}) (found [{int(c.min())}, {int(c.max())}])"
            )
        return (c + self.audio_offset).tolist()

    def is_audio(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask of the audio ids in ``ids``."""
        a = np.asarray(ids)
        return (a >= self.audio_offset) & (a < self.size)

    def to_codes(self, ids: Sequence[int]) -> np.ndarray:
        """LM ids of generated audio -> codebook ids; raises :class:`VocabError` on a non-audio id."""
        a = np.asarray(list(ids), dtype=np.int64)
        bad = ~self.is_audio(a)
        if bad.any():
            raise VocabError(
                f"generated sequence holds {int(bad.sum())} non-audio id(s) inside the audio span "
                f"(e.g. {int(a[bad][0])}; audio ids are [{self.audio_offset}, {self.size}))"
            )
        return a - self.audio_offset

    def check_tokenizer(self, fingerprint: str, codebook_size: int, accepts: Any = None, where: str = "") -> None:
        """Raise :class:`VocabError` unless this vocabulary was built for that audio tokenizer.

        ``accepts`` (optional) is the tokenizer's own ``accepts_fingerprint`` (legacy fingerprints).
        """
        ok_fp = fingerprint == self.fingerprint or (accepts is not None and accepts(self.fingerprint))
        if codebook_size != self.codebook_size or not ok_fp:
            at = f"{where}: " if where else ""
            raise VocabError(
                f"{at}LM vocabulary was built for audio tokens of fingerprint {self.fingerprint} "
                f"(codebook {self.codebook_size}), not for the tokenizer given (fingerprint {fingerprint}, "
                f"codebook {codebook_size}); use the codec the LM was trained on"
            )

    def save(self, directory: str | Path) -> Path:
        data = {"format_version": META_VERSION, **asdict(self)}
        return atomic_write_text(Path(directory) / META_NAME, json.dumps(data, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> AudioVocab:
        p = Path(directory) / META_NAME
        if not p.is_file():
            raise VocabError(f"{directory}: no {META_NAME} (not an EntangleCodec audio LM; build one with `lm train`)")
        try:
            data = json.loads(p.read_text())
            version = int(data.pop("format_version", 0))
            if version > META_VERSION:
                raise VocabError(f"{p}: format {version} is newer than supported ({META_VERSION})")
            data["special"] = {str(k): int(v) for k, v in data["special"].items()}
            return cls(**data)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            if isinstance(e, VocabError):
                raise
            raise VocabError(f"{p}: unreadable LM vocabulary file ({e})") from e


def train_text_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained with ``tokenizers`` on ``texts`` (captions, transcripts,
    questions, answers), wrapped as a ``transformers`` fast tokenizer with :data:`TEXT_EOS`.

    Deterministic for the same texts (BPE training is). ``vocab_size`` counts the 256 byte symbols.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ValueError(f"text vocab_size must be >= 300 (256 bytes + merges), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[TEXT_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((t for t in texts if t), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=TEXT_EOS, pad_token=TEXT_EOS)


def extend_tokenizer(tokenizer: Any, codebook_size: int, fingerprint: str, name: str = "", frame_rate: int = 50) -> AudioVocab:
    """Add :data:`SPECIAL_TOKENS` and ``K`` audio tokens to ``tokenizer`` (in place).

    Raises:
        VocabError: the tokenizer already holds some of these tokens with another layout, or the
            added ids are not contiguous.
    """
    text_size = len(tokenizer)
    present = [t for t in (*SPECIAL_TOKENS, audio_token(0)) if t in tokenizer.get_vocab()]
    if present:
        raise VocabError(f"tokenizer already holds EntangleCodec tokens ({present[:3]}): it was extended before")
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)
    offset = len(tokenizer)
    tokenizer.add_tokens([audio_token(k) for k in range(codebook_size)], special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids([audio_token(0), audio_token(codebook_size - 1)])
    if ids != [offset, offset + codebook_size - 1] or len(tokenizer) != offset + codebook_size:
        raise VocabError(f"audio tokens did not get contiguous ids from {offset} (got {ids})")
    if tokenizer.eos_token is None:
        tokenizer.eos_token = TEXT_EOS if TEXT_EOS in tokenizer.get_vocab() else tokenizer.convert_ids_to_tokens(0)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    special = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS}
    return AudioVocab(
        audio_offset=offset,
        codebook_size=codebook_size,
        special=special,
        eos_id=int(tokenizer.eos_token_id),
        pad_id=int(tokenizer.pad_token_id),
        text_vocab_size=text_size,
        fingerprint=fingerprint,
        tokenizer_name=name,
        frame_rate=frame_rate,
    )
