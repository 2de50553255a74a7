"""Inference with a trained audio LM: TTS, TTA, audio question answering, captioning.

Sampling (:class:`Sampling`) is a plain loop over ``transformers``' KV cache: temperature (0 =
greedy), top-k, top-p, a seeded generator, a hard ``max_new_tokens`` (the loop always ends: when
it is reached without the closing token the result is flagged ``truncated`` and a warning is
issued). Classifier-free guidance for TTS/TTA runs the null prompt (:mod:`.tasks`) as a second
stream and samples from ``l_null + gamma * (l_cond - l_null)``; ``gamma = 1`` (the paper's
Table 6 value) is plain conditional sampling and skips the second stream.

Generation is constrained to the span being written: inside ``<|audio|>`` only audio ids, the
closing ``<|/audio|>`` and EOS can be drawn; in an answer only text ids and EOS. Generated audio
ids go through the audio tokenizer's decoder (EntangleCodec: flow decoder + vocoder).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .audio_tokenizer import AudioTokenizer, load_audio_tokenizer
from .model import load_lm
from .tasks import TaskError, check_context, generation_prompt, text_ids, understanding_prompt
from .vocab import AUDIO_END, VocabError

Progress = Callable[[int, int], None]


@dataclass
class Sampling:
    """Sampling settings (validated by :meth:`check`)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 500
    seed: int = 0
    guidance: float = 1.0
    min_new_tokens: int = 1

    def check(self) -> Sampling:
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must lie in [0, max_new_tokens={self.max_new_tokens}], got {self.min_new_tokens}")
        if not np.isfinite(self.guidance) or not 0.0 <= self.guidance <= 10.0:
            raise ValueError(f"guidance must lie in [0, 10] (1 = no guidance), got {self.guidance}")
        return self


@dataclass
class Generated:
    """Generated ids (closing token excluded) and whether ``max_new_tokens`` cut the sequence."""

    ids: list[int]
    truncated: bool


def _filter(logits: Tensor, s: Sampling) -> Tensor:
    """Top-k and nucleus filtering of ``[V]`` logits (filtered entries set to ``-inf``)."""
    if s.top_k > 0 and s.top_k < logits.numel():
        kth = torch.topk(logits, s.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, -1) >= s.top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


class _Stream:
    """One prompt's KV-cached decoding state (``transformers`` >= 5 names the cache ``cache``,
    earlier releases ``past_key_values``)."""

    def __init__(self, model: Any, prompt: list[int]) -> None:
        import inspect

        self.model = model
        self.key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.past: Any = None
        self._step(prompt)

    def _step(self, ids: list[int]) -> None:
        kwargs = {self.key: self.past} if self.past is not None else {}
        out = self.model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1, **kwargs)
        self.past = getattr(out, self.key)
        self.logits = out.logits[0, -1].float()

    def push(self, token: int) -> None:
        self._step([token])


@torch.no_grad()
def sample(
    model: Any, prompt: list[int], allowed: Tensor, stop: set[int], s: Sampling,
    null_prompt: list[int] | None = None, progress: Progress | None = None,
) -> Generated:  # fmt: skip
    """Sample after ``prompt`` until a ``stop`` id or ``s.max_new_tokens``.

    Args:
        allowed: ``bool [V]``, the ids that may be drawn (``stop`` ids only after ``s.min_new_tokens``).
        null_prompt: the unconditional prompt for guidance (used when ``s.guidance != 1``).
    """
    s.check()
    g = torch.Generator().manual_seed(int(s.seed))
    cond = _Stream(model, prompt)
    null = _Stream(model, null_prompt) if null_prompt is not None and s.guidance != 1.0 else None
    out: list[int] = []
    early = allowed.clone()
    early[sorted(stop)] = False
    for step in range(s.max_new_tokens):
        logits = cond.logits
        if null is not None:
            logits = null.logits + s.guidance * (logits - null.logits)
        ok = early if step < s.min_new_tokens else allowed
        logits = logits.masked_fill(~ok[: logits.numel()], float("-inf"))
        if s.temperature == 0:
            tok = int(torch.argmax(logits))
        else:
            probs = torch.softmax(_filter(logits / s.temperature, s), -1)
            tok = int(torch.multinomial(probs, 1, generator=g))
        if progress is not None:
            progress(step + 1, s.max_new_tokens)
        if tok in stop:
            return Generated(out, False)
        out.append(tok)
        cond.push(tok)
        if null is not None:
            null.push(tok)
    return Generated(out, True)


class AudioLM:
    """A trained LM with its audio tokenizer (the codec the vocabulary was built for).

    Args:
        lm_dir: directory written by ``lm train`` (``RUN/lm``) or :func:`~.model.save_lm`.
        codec: the audio tokenizer directory (``None``: the bundled EntangleCodec) or a loaded one.
        vocoder: vocoder spec for decoding (``None``: the codec's own).

    Raises:
        VocabError: the LM was built for another codec (fingerprint or codebook size).
    """

    def __init__(self, lm_dir: str | Path, codec: str | Path | AudioTokenizer | None = None, vocoder: str | None = None) -> None:
        self.model, self.tokenizer, self.vocab = load_lm(lm_dir)
        self.tok: AudioTokenizer = (
            load_audio_tokenizer(codec, vocoder) if codec is None or isinstance(codec, str | Path) else codec
        )
        self.vocab.check_tokenizer(self.tok.fingerprint(), self.tok.codebook_size, self.tok.accepts_fingerprint, str(lm_dir))
        self.max_len = int(self.model.config.max_position_embeddings)
        rows = self.model.get_input_embeddings().weight.shape[0]
        v = self.vocab
        self.audio_allowed = torch.zeros(rows, dtype=torch.bool)
        self.audio_allowed[v.audio_offset : v.size] = True
        self.audio_allowed[[v.special[AUDIO_END], v.eos_id]] = True
        self.text_allowed = torch.zeros(rows, dtype=torch.bool)
        self.text_allowed[: v.text_vocab_size] = True
        self.text_allowed[v.eos_id] = True

    # ------------------------------------------------------------------ generation
    def generate_codes(
        self, task: str, text: str, s: Sampling, style: str | None = None, progress: Progress | None = None
    ) -> tuple[np.ndarray, bool]:
        """TTS/TTA: ``(codes int64 [F], truncated)``; warns when ``max_new_tokens`` was reached."""
        prompt = generation_prompt(task, self.vocab, self.tokenizer, text, style)
        check_context(len(prompt), self.max_len, self.vocab.frame_rate, "the text")
        room = self.max_len - len(prompt)
        s = Sampling(**{**s.__dict__, "max_new_tokens": min(s.max_new_tokens, room),
                        "min_new_tokens": min(s.min_new_tokens, s.max_new_tokens, room)})  # fmt: skip
        null = generation_prompt(task, self.vocab, self.tokenizer, None)
        stop = {self.vocab.special[AUDIO_END], self.vocab.eos_id}
        gen = sample(self.model, prompt, self.audio_allowed, stop, s, null, progress)
        if gen.truncated:
            warnings.warn(
                f"generation stopped at the maximum length ({s.max_new_tokens} audio tokens = "
                f"{s.max_new_tokens / self.vocab.frame_rate:.1f} s) without the closing {AUDIO_END} token",
                UserWarning, stacklevel=2,
            )  # fmt: skip
        if not gen.ids:
            raise TaskError(f"the LM generated no audio tokens for {task} (it closed the audio span at once)")
        return self.vocab.to_codes(gen.ids), gen.truncated

    def synthesize(self, task: str, text: str, s: Sampling, style: str | None = None,
                   progress: Progress | None = None) -> tuple[np.ndarray, bool]:  # fmt: skip
        """TTS/TTA to a waveform: ``(float32 [S] at the tokenizer's rate, truncated)``."""
        codes, truncated = self.generate_codes(task, text, s, style, progress)
        return self.tok.decode(codes, seed=s.seed), truncated

    # ------------------------------------------------------------------ understanding
    def encode_audio(self, wav: np.ndarray) -> np.ndarray:
        """A 24 kHz clip -> codebook ids ``[F]``."""
        if wav.size == 0:
            raise TaskError("the audio is empty")
        return np.asarray(self.tok.encode([wav])[0], dtype=np.int64)

    def answer(self, task: str, codes: np.ndarray, question: str | None = None, max_new_tokens: int = 64,
               progress: Progress | None = None) -> tuple[str, bool]:  # fmt: skip
        """Greedy answer of ``aqa`` / ``caption`` / ``asr`` about ``codes``: ``(text, truncated)``."""
        prompt = understanding_prompt(task, self.vocab, self.tokenizer, codes, question)
        check_context(len(prompt), self.max_len, self.vocab.frame_rate, f"the audio ({codes.size} tokens)")
        s = Sampling(temperature=0.0, max_new_tokens=max(1, min(max_new_tokens, self.max_len - len(prompt))), min_new_tokens=0)
        gen = sample(self.model, prompt, self.text_allowed, {self.vocab.eos_id}, s, None, progress)
        if gen.truncated:
            warnings.warn(f"answer stopped at the maximum length ({s.max_new_tokens} tokens)", UserWarning, stacklevel=2)
        return self.tokenizer.decode(gen.ids, skip_special_tokens=True).strip(), gen.truncated

    @torch.no_grad()
    def option_scores(self, prompt: list[int], options: list[str]) -> np.ndarray:
        """Mean log-probability of each option's text (+ EOS) after ``prompt``: ``float64 [n]``."""
        seqs = [text_ids(self.tokenizer, o, "option") + [self.vocab.eos_id] for o in options]
        n = max(len(x) for x in seqs)
        ids = torch.full((len(seqs), len(prompt) + n), self.vocab.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, x in enumerate(seqs):
            ids[i, : len(prompt) + len(x)] = torch.tensor(prompt + x)
            mask[i, : len(prompt) + len(x)] = 1
        # logits only where an option token is predicted (the last n + 1 positions): the prompt's
        # positions would cost a [options, prompt, vocabulary] array for nothing
        logits = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=n + 1).logits
        logp = torch.log_softmax(logits.float(), -1)  # position j predicts ids[:, len(prompt) + j]
        out = np.zeros(len(seqs))
        for i, x in enumerate(seqs):
            out[i] = float(logp[i, torch.arange(len(x)), torch.tensor(x)].mean())
        return out


def parse_audio_span(vocab: Any, ids: list[int]) -> np.ndarray:
    """Codebook ids of the first ``<|audio|> ... <|/audio|>`` span of a raw id sequence.

    Raises:
        VocabError: no opening tag, no closing tag, or a non-audio id inside the span.
    """
    from .vocab import AUDIO_START

    start, end = vocab.special[AUDIO_START], vocab.special[AUDIO_END]
    if start not in ids:
        raise VocabError(f"sequence holds no {AUDIO_START} tag")
    i = ids.index(start) + 1
    if end not in ids[i:]:
        raise VocabError(f"audio span opened at position {i - 1} is never closed by {AUDIO_END}")
    return vocab.to_codes(ids[i : ids.index(end, i)])
