"""The extended vocabulary, the new rows' initialisation and the checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from entanglecodec.lm.generate import parse_audio_span
from entanglecodec.lm.model import LMModelConfig, build_lm, embedding_rows, load_lm, save_lm
from entanglecodec.lm.vocab import (
    AUDIO_END,
    AUDIO_START,
    META_NAME,
    AudioVocab,
    VocabError,
    audio_token,
    train_text_tokenizer,
)

TEXTS = ["a man speaks quickly in English", "music in A minor with drums", "what language is spoken"] * 10


def _fake_qwen3_checkpoint(d: Path) -> Path:
    """A tiny Qwen3 laid out like a downloaded checkpoint: config.json, model.safetensors, tokenizer files."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = train_text_tokenizer(TEXTS, 320)
    torch.manual_seed(1)
    cfg = Qwen3Config(vocab_size=len(tok) + 7, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, tie_word_embeddings=False)  # fmt: skip
    Qwen3ForCausalLM(cfg).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


def test_pretrained_checkpoint_extends_saves_and_loads(tmp_path: Path) -> None:
    base = _fake_qwen3_checkpoint(tmp_path / "qwen3")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in base.iterdir()}
    rng = np.random.default_rng(0)
    codebook = rng.standard_normal((50, 14)).astype(np.float32)
    model, tok, vocab = build_lm(LMModelConfig(pretrained=str(base)), "fp0123", codebook, [], "codec")
    from transformers import Qwen3ForCausalLM

    original = Qwen3ForCausalLM.from_pretrained(str(base))
    n_text = vocab.text_vocab_size
    # text rows untouched, in the input embeddings and in the untied head
    assert torch.equal(model.get_input_embeddings().weight[:n_text], original.get_input_embeddings().weight[:n_text])
    assert torch.equal(model.get_output_embeddings().weight[:n_text], original.get_output_embeddings().weight[:n_text])
    # contiguous audio ids; every new token is atomic
    assert tok.convert_tokens_to_ids(audio_token(7)) == vocab.audio_offset + 7
    assert tok(f"hi {AUDIO_START}{audio_token(3)}", add_special_tokens=False)["input_ids"][-2:] == [
        vocab.special[AUDIO_START], vocab.audio_offset + 3]
    # codebook geometry carried over: pairwise distances proportional to the codebook's
    emb = model.get_input_embeddings().weight.detach()
    audio = emb[vocab.audio_offset : vocab.size].double().numpy()
    c = codebook - codebook.mean(0)
    da = np.linalg.norm(audio[:, None] - audio[None], axis=-1)[np.triu_indices(50, 1)]
    dc = np.linalg.norm(c[:, None] - c[None], axis=-1)[np.triu_indices(50, 1)]
    assert np.allclose(da / dc, (da / dc).mean(), rtol=1e-3)
    # new rows at the scale of the existing ones
    old = emb[:n_text].double()
    spread = float((old - old.mean(0)).norm(dim=1).mean())
    new_spread = float((emb[n_text : vocab.size].double() - old.mean(0)).norm(dim=1).mean())
    assert 0.05 * spread < new_spread < 2 * spread
    assert torch.equal(model.get_output_embeddings().weight[vocab.audio_offset : vocab.size], emb[vocab.audio_offset : vocab.size])
    # round trip through from_pretrained
    out = save_lm(tmp_path / "lm", model, tok, vocab)
    assert (out / META_NAME).is_file()
    m2, tok2, v2 = load_lm(out)
    assert v2 == vocab and len(tok2) == vocab.size and embedding_rows(m2) >= vocab.size
    ids = torch.tensor([[vocab.special[AUDIO_START], vocab.audio_offset + 1, vocab.audio_offset + 2]])
    with torch.no_grad():
        assert torch.allclose(model.eval()(input_ids=ids).logits, m2(input_ids=ids).logits, atol=1e-6)


def test_preset_mean_init_and_errors(tmp_path: Path) -> None:
    cfg = LMModelConfig(preset="tiny", init="mean")
    model, tok, vocab = build_lm(cfg, "fp", np.zeros((16, 14)), TEXTS)
    assert model.config.model_type == "qwen3" and vocab.codebook_size == 16
    with pytest.raises(VocabError, match="extended before"):
        from entanglecodec.lm.vocab import extend_tokenizer

        extend_tokenizer(tok, 16, "fp")
    with pytest.raises(VocabError, match="not an EntangleCodec audio LM"):
        AudioVocab.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="pretrained LM directory not found"):
        build_lm(LMModelConfig(pretrained=str(tmp_path / "nope")), "fp", np.zeros((4, 2)), [])
    from entanglecodec.config import ConfigError

    with pytest.raises(ConfigError, match="unknown model.overrides"):
        build_lm(LMModelConfig(preset="tiny", overrides={"not_a_key": 1}), "fp", np.zeros((4, 2)), TEXTS)


def test_vocab_id_checks() -> None:
    v = AudioVocab(audio_offset=100, codebook_size=10, special={AUDIO_START: 90, AUDIO_END: 91}, eos_id=0, pad_id=0,
                   text_vocab_size=90, fingerprint="aa")  # fmt: skip
    assert v.audio_ids([0, 9]) == [100, 109]
    with pytest.raises(VocabError, match=r"outside \[0, 10\)"):
        v.audio_ids([10])
    with pytest.raises(VocabError, match="non-audio id"):
        v.to_codes([100, 5])
    assert parse_audio_span(v, [7, 90, 101, 102, 91, 0]).tolist() == [1, 2]
    with pytest.raises(VocabError, match="never closed"):
        parse_audio_span(v, [90, 101, 102])
    with pytest.raises(VocabError, match="no <|audio|>"):
        parse_audio_span(v, [101])
    with pytest.raises(VocabError, match="fingerprint aa"):
        v.check_tokenizer("bb", 10)
    with pytest.raises(VocabError, match="codebook 10"):
        v.check_tokenizer("aa", 12)
    v.check_tokenizer("aa", 10)
