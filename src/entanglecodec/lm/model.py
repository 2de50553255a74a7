"""The audio LM: ``transformers``' ``Qwen3ForCausalLM`` with the vocabulary of :mod:`.vocab`.

Two ways in (``LMModelConfig``):

* ``pretrained: DIR`` — a local directory holding a real Qwen3 checkpoint and its tokenizer (the
  paper's Qwen3-0.6B, Table 6; nothing is downloaded). Loaded with ``AutoTokenizer`` /
  ``Qwen3ForCausalLM.from_pretrained``.
* ``preset: tiny | small`` — a ``Qwen3Config`` built here (``overrides`` change any of its keys)
  with a byte-level BPE text tokenizer trained on the corpus text.

The vocabulary is then extended (:func:`~.vocab.extend_tokenizer`) and the embedding matrix
resized. **New rows** (:func:`init_new_rows`): the audio rows are the audio tokenizer's codebook
vectors (centred, scaled to unit mean norm) through a fixed seeded random projection (orthonormal
columns when the codebook is narrower than the model), scaled to the mean distance of the existing
rows from their mean, plus that mean. Codes that are close in the codebook start close in the LM,
so the LM inherits the codec's geometry instead of learning ``K`` unrelated vectors from scratch,
and every new row has the norm statistics of the rows the pretrained layers already expect (a row
far larger than the others would dominate the first attention layers). Boundary and task rows are
the mean row plus a small seeded random offset (10 % of that spread): distinguishable, yet in
distribution. An untied output head gets the same rows.

A trained LM is a directory written by :func:`save_lm`: the Hugging Face files of the model
(``config.json`` + ``model.safetensors``) and tokenizer, plus ``entanglecodec_lm.json``
(:class:`~.vocab.AudioVocab`). :func:`load_lm` reads it back through the same
``from_pretrained`` path a real Qwen3 checkpoint uses.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError
from .vocab import AudioVocab, VocabError, extend_tokenizer, train_text_tokenizer

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=16, max_position_embeddings=2048),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64, max_position_embeddings=4096),
}  # fmt: skip
"""``Qwen3Config`` keys of the from-scratch presets (tiny: tests; small: ~5-10 M parameters on CPU)."""
TEXT_VOCAB: dict[str, int] = {"tiny": 400, "small": 2000}
"""BPE vocabulary size per preset (256 byte symbols included)."""


@dataclass
class LMModelConfig:
    """Which LM to build (the ``model:`` section of an LM recipe).

    Attributes:
        preset: ``tiny`` or ``small`` (ignored when ``pretrained`` is set).
        pretrained: local directory of a Qwen3 checkpoint + tokenizer (the paper recipe).
        overrides: extra ``Qwen3Config`` keys for presets.
        text_vocab_size: BPE size for presets (``None``: the preset's :data:`TEXT_VOCAB`).
        init: ``codebook`` (projection of the codebook vectors, see module docstring) or ``mean``
            (every audio row = mean row + small noise).
        seed: seed of the projection and of the offsets.
    """

    preset: str = "small"
    pretrained: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    text_vocab_size: int | None = None
    init: str = "codebook"
    seed: int = 0

    def validate(self) -> None:
        if self.pretrained is None and self.preset not in PRESETS:
            raise ConfigError(f"model.preset must be one of {', '.join(PRESETS)} (or set model.pretrained), got {self.preset!r}")
        if self.init not in ("codebook", "mean"):
            raise ConfigError(f"model.init must be 'codebook' or 'mean', got {self.init!r}")


def qwen3_config(cfg: LMModelConfig, vocab_size: int) -> Any:
    """The ``Qwen3Config`` of a preset with ``overrides`` (unknown keys are a :class:`ConfigError`)."""
    from transformers import Qwen3Config

    kwargs = {**PRESETS[cfg.preset], "vocab_size": vocab_size, "tie_word_embeddings": True,
              "attn_implementation": "sdpa", "use_cache": True}  # fmt: skip
    known = set(Qwen3Config().to_dict())
    unknown = sorted(set(cfg.overrides) - known)
    if unknown:
        raise ConfigError(f"unknown model.overrides key(s) {unknown} (Qwen3Config keys)")
    kwargs.update(copy.deepcopy(cfg.overrides))
    return Qwen3Config(**kwargs)


def init_new_rows(model: Any, vocab: AudioVocab, codebook: np.ndarray | None, how: str = "codebook", seed: int = 0) -> None:
    """Initialise embedding rows ``[text_vocab_size, vocab.size)`` in place (see module docstring).

    Args:
        model: a ``PreTrainedModel`` already resized to at least ``vocab.size`` rows.
        codebook: ``[K, D]`` codebook vectors (``None`` or ``how="mean"``: mean-row init).
    """
    emb = model.get_input_embeddings().weight
    d = emb.shape[1]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        old = emb[: vocab.text_vocab_size].float()
        mu = old.mean(0)
        spread = (old - mu).norm(dim=1).mean().clamp_min(1e-6)
        n_special = vocab.audio_offset - vocab.text_vocab_size
        noise = torch.randn(n_special, d, generator=g)
        special = mu + 0.1 * spread * noise / noise.norm(dim=1, keepdim=True)
        if how == "codebook" and codebook is not None:
            c = torch.as_tensor(np.asarray(codebook, dtype=np.float32))
            if c.shape[0] != vocab.codebook_size:
                raise VocabError(f"codebook has {c.shape[0]} vectors for {vocab.codebook_size} audio tokens")
            c = c - c.mean(0)
            c = c / c.norm(dim=1).mean().clamp_min(1e-8)
            proj = torch.randn(c.shape[1], d, generator=g)
            if c.shape[1] <= d:  # orthonormal rows: distances between codes are preserved exactly
                proj = torch.linalg.qr(proj.T)[0].T
            else:  # a Johnson-Lindenstrauss projection keeps them approximately
                proj = proj / float(np.sqrt(d))
            audio = mu + spread * (c @ proj)
        else:
            noise = torch.randn(vocab.codebook_size, d, generator=g)
            audio = mu + 0.1 * spread * noise / noise.norm(dim=1, keepdim=True)
        rows = torch.cat([special, audio]).to(emb.dtype)
        emb[vocab.text_vocab_size : vocab.size] = rows
        head = model.get_output_embeddings()
        if head is not None and head.weight.data_ptr() != emb.data_ptr():
            head.weight[vocab.text_vocab_size : vocab.size] = rows.to(head.weight.dtype)


def build_lm(
    cfg: LMModelConfig, fingerprint: str, codebook: np.ndarray, texts: Iterable[str], name: str = "", frame_rate: int = 50
) -> tuple[Any, Any, AudioVocab]:
    """Build ``(model, tokenizer, vocab)`` for an audio tokenizer with ``codebook [K, D]``.

    ``texts`` trains the BPE of a preset (unused with ``pretrained``).
    """
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    _quiet()
    k = int(np.asarray(codebook).shape[0])
    if cfg.pretrained:
        d = Path(cfg.pretrained)
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: pretrained LM directory not found (a local Qwen3 checkpoint + tokenizer)")
        tokenizer = AutoTokenizer.from_pretrained(str(d))
        model: Any = Qwen3ForCausalLM.from_pretrained(str(d), dtype=torch.float32)
        if getattr(model.config, "model_type", "") != "qwen3":
            raise ConfigError(f"{d}: model_type is {model.config.model_type!r}, expected 'qwen3'")
    else:
        size = cfg.text_vocab_size or TEXT_VOCAB[cfg.preset]
        tokenizer = train_text_tokenizer(texts, size)
        torch.manual_seed(cfg.seed)
        model = Qwen3ForCausalLM(qwen3_config(cfg, len(tokenizer)))
    vocab = extend_tokenizer(tokenizer, k, fingerprint, name, frame_rate)
    rows = max(vocab.size, embedding_rows(model))
    model.resize_token_embeddings(rows, pad_to_multiple_of=64, mean_resizing=False)
    init_new_rows(model, vocab, codebook, cfg.init, cfg.seed)
    model.config.eos_token_id = vocab.eos_id
    model.config.pad_token_id = vocab.pad_id
    return model, tokenizer, vocab


def _quiet() -> None:
    """No per-file progress bars from ``transformers`` (our commands draw their own)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def save_lm(directory: str | Path, model: Any, tokenizer: Any, vocab: AudioVocab) -> Path:
    """Write the model, tokenizer and vocabulary layout to ``directory`` (Hugging Face layout)."""
    _quiet()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(d), safe_serialization=True)
    tokenizer.save_pretrained(str(d))
    vocab.save(d)
    return d


def load_lm(directory: str | Path, map_location: str = "cpu") -> tuple[Any, Any, AudioVocab]:
    """Load a directory written by :func:`save_lm`; ``(model in eval mode, tokenizer, vocab)``.

    Raises:
        VocabError: not an audio LM, or tokenizer / model / layout disagree.
    """
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    _quiet()
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: LM directory not found")
    vocab = AudioVocab.load(d)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(d))
        model: Any = Qwen3ForCausalLM.from_pretrained(str(d), dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:
        raise VocabError(f"{d}: cannot load the LM ({' '.join(str(e).split())[:300]})") from e
    if len(tokenizer) != vocab.size:
        raise VocabError(f"{d}: tokenizer has {len(tokenizer)} tokens, {vocab.size} expected from {d / 'entanglecodec_lm.json'}")
    if embedding_rows(model) < vocab.size:
        raise VocabError(f"{d}: model has {embedding_rows(model)} embedding rows for {vocab.size} tokens")
    return model.to(map_location).eval(), tokenizer, vocab


def embedding_rows(model: Any) -> int:
    """Rows of the input embedding matrix (>= the vocabulary: padded to a multiple of 64)."""
    return int(model.get_input_embeddings().weight.shape[0])


def num_parameters(model: Any) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
