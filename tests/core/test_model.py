import math

import numpy as np
import pytest
import torch

from entanglecodec import CheckpointError, EntangleCodec, EntangleCodecConfig, TokenError
from entanglecodec.audio import AudioError
from entanglecodec.codec.model import window_plan
from entanglecodec.codec.sampling import decode_noise
from entanglecodec.config import ConfigError


def _batch():
    torch.manual_seed(1)
    lens = [24000, 17333, 481, 1]
    wav = torch.zeros(len(lens), max(lens))
    for i, n in enumerate(lens):
        wav[i, :n] = torch.randn(n) * 0.1
    return wav, torch.tensor(lens)


def test_properties(tiny_model):
    assert tiny_model.sample_rate == 24000 and tiny_model.frame_rate == 50
    assert tiny_model.codebook_size == 64 and tiny_model.bitrate == pytest.approx(300.0)


def test_padded_batch_equals_per_item(tiny_model):
    wav, lens = _batch()
    wav[2, 481:] = 0.9  # padding garbage must not matter
    tok = tiny_model.encode(wav, 24000, lens)
    assert tok.codes.shape == (4, math.ceil(24000 / 480))
    assert tok.lengths.tolist() == [math.ceil(n / 480) for n in lens.tolist()]
    for i, n in enumerate(lens.tolist()):
        alone = tiny_model.encode(wav[i, :n], 24000)
        assert alone.codes.shape[1] == math.ceil(n / 480)
        assert torch.equal(alone.codes[0], tok.codes[i, : tok.lengths[i]])


def test_decode_lengths_and_trimming(tiny_model):
    wav, lens = _batch()
    tok = tiny_model.encode(wav, 24000, lens)
    audio = tiny_model.decode(tok.codes, tok.lengths)
    assert audio.lengths.tolist() == [int(f) * 480 for f in tok.lengths]
    assert audio.wav.shape == (4, int(tok.lengths.max()) * 480)
    trimmed = tiny_model.decode(tok)
    assert trimmed.lengths.tolist() == lens.tolist()
    assert trimmed.wav.shape[1] == 24000
    for i, n in enumerate(lens.tolist()):
        assert torch.all(trimmed.wav[i, n:] == 0)
    assert torch.isfinite(trimmed.wav).all() and trimmed.wav.abs().max() <= 1.0
    one = tiny_model.decode(tok.codes[1, : tok.lengths[1]], num_samples=[int(lens[1])])
    torch.testing.assert_close(one.wav[0], trimmed.wav[1, : lens[1]], atol=1e-4, rtol=1e-4)


def test_decode_steps_and_guidance(tiny_model):
    codes = torch.randint(0, 64, (1, 30))
    for steps, g in [(1, 0.0), (4, 1.0), (2, 2.5)]:
        a = tiny_model.decode(codes, steps=steps, guidance=g)
        assert a.wav.shape == (1, 30 * 480)


def test_resampling_input(tiny_model):
    wav = torch.randn(16000) * 0.1
    tok = tiny_model.encode(wav, 16000)
    assert tok.codes.shape[1] == math.ceil(24000 / 480) and tok.num_samples.tolist() == [24000]
    rec = tiny_model.reconstruct(wav.numpy(), 16000)
    assert rec.wav.shape == (1, 24000) and rec.sample_rate == 24000


def test_window_plan_covers_exactly():
    for n in [1, 99, 100, 101, 250, 1000, 1234]:
        plan = window_plan(n, 100, 10)
        kept = [f for (_, ks, ke) in plan for f in range(ks, ke)]
        assert kept == list(range(n))
        for s, ks, ke in plan:
            assert 0 <= s <= ks and ke <= s + min(100, n) and s + min(100, n) <= n


def test_run_windowed_splits_short_and_long_items():
    from entanglecodec.codec.windowing import Window, run_windowed

    calls: dict[str, list] = {"whole": [], "windows": []}
    run_windowed([50, 250, 100, 130], 100, 10, 3, calls["whole"].append, calls["windows"].append)
    assert calls["whole"] == [[0, 2]]  # items of <= W frames: one padded pass
    jobs = [w for batch in calls["windows"] for w in batch]
    assert all(len(b) <= 3 for b in calls["windows"]) and {w.item for w in jobs} == {1, 3}
    for item, n in ((1, 250), (3, 130)):
        mine = [w for w in jobs if w.item == item]
        assert [f for w in mine for f in range(w.keep_start, w.keep_end)] == list(range(n))
        assert all(w.inner.stop - w.inner.start == w.keep_end - w.keep_start for w in mine)
    assert Window(0, 5, 10, 20).inner == slice(5, 15)


def test_long_audio_windowed(tiny_model):
    w = tiny_model.config.max_frames  # 100 frames = 2 s in the tiny preset
    torch.manual_seed(3)
    long = torch.randn(int(5.3 * w * 480)) * 0.1
    tok = tiny_model.encode(long, 24000)
    assert tok.codes.shape[1] == math.ceil(long.numel() / 480)
    # a window-length prefix gives the same codes as the unwindowed encoder on it
    short = long[: w * 480]
    direct = tiny_model.encode(short, 24000).codes
    assert direct.shape[1] == w
    # frames deep inside the clip only see their own window: re-encoding a slice around them matches
    audio = tiny_model.decode(tok)
    assert audio.wav.shape == (1, long.numel())
    batch = torch.zeros(2, long.numel())
    batch[0] = long
    batch[1, : short.numel()] = short
    tb = tiny_model.encode(batch, 24000, [long.numel(), short.numel()])
    assert torch.equal(tb.codes[0], tok.codes[0]) and torch.equal(tb.codes[1, :w], direct[0])


def test_save_load_roundtrip(tiny_model, tmp_path):
    wav, lens = _batch()
    tiny_model.frontend.set_stats(torch.randn(128), torch.rand(128) + 0.5)
    tok = tiny_model.encode(wav, 24000, lens)
    tiny_model.save_pretrained(tmp_path / "ck")
    assert (tmp_path / "ck" / "config.json").is_file() and (tmp_path / "ck" / "model.safetensors").is_file()
    loaded = EntangleCodec.from_pretrained(tmp_path / "ck")
    assert torch.equal(loaded.encode(wav, 24000, lens).codes, tok.codes)
    assert loaded.fingerprint() == tiny_model.fingerprint()
    torch.testing.assert_close(loaded.frontend.mel_std, tiny_model.frontend.mel_std)
    e1, e2 = loaded.embed_text(["a cat"]), tiny_model.embed_text(["a cat"])
    torch.testing.assert_close(e1, e2)


def test_checkpoint_mismatch_errors(tiny_model, tmp_path):
    d = tiny_model.save_pretrained(tmp_path / "ck")
    cfg = EntangleCodecConfig.from_json(d / "config.json")
    cfg.encoder.depth = 2
    cfg.to_json(d / "config.json")
    with pytest.raises(CheckpointError, match="do not match config.json"):
        EntangleCodec.from_pretrained(d)
    cfg.encoder.depth = 1
    cfg.decoder.transformer.dim = 64
    cfg.to_json(d / "config.json")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        EntangleCodec.from_pretrained(d)
    with pytest.raises(CheckpointError, match="not found"):
        EntangleCodec.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="missing config.json"):
        EntangleCodec.from_pretrained(tmp_path / "empty")
    (d / "model.safetensors").write_bytes(b"garbage")
    tiny_model.config.to_json(d / "config.json")
    with pytest.raises(CheckpointError, match="safetensors"):
        EntangleCodec.from_pretrained(d)


def test_bad_inputs(tiny_model):
    with pytest.raises(AudioError, match="empty"):
        tiny_model.encode(torch.zeros(0), 24000)
    with pytest.raises(AudioError, match="NaN or Inf"):
        tiny_model.encode(torch.tensor([0.1, float("inf")]), 24000)
    for sr in (0, -16000):
        with pytest.raises(AudioError, match="sample rate"):
            tiny_model.encode(torch.zeros(100), sr)
    with pytest.raises(AudioError, match="exceed"):
        tiny_model.encode(torch.zeros(2, 100), 24000, [100, 101])
    with pytest.raises(TokenError, match=r"\[0, 64\)"):
        tiny_model.decode(torch.tensor([[1, 2, 64]]))
    with pytest.raises(TokenError, match=r"\[0, 64\)"):
        tiny_model.decode(torch.tensor([[-1, 2]]))
    with pytest.raises(TokenError, match="integers"):
        tiny_model.decode(torch.zeros(1, 3))
    with pytest.raises(TokenError, match="lengths"):
        tiny_model.decode(torch.zeros(1, 3, dtype=torch.long), lengths=[4])
    with pytest.raises(TokenError, match="num_samples"):
        tiny_model.decode(torch.zeros(1, 3, dtype=torch.long), num_samples=[5000])
    with pytest.raises(ValueError, match="steps"):
        tiny_model.decode(torch.zeros(1, 3, dtype=torch.long), steps=0)
    # out-of-range ids in the padding region are fine (masked)
    tiny_model.decode(torch.tensor([[1, 2, 999]]), lengths=[2])


def test_embeddings(tiny_model):
    a = tiny_model.embed_audio(np.random.default_rng(0).standard_normal(30000).astype(np.float32) * 0.1, 24000)
    t = tiny_model.embed_text(["rain on a roof", "a violin"])
    assert a.shape == (1, 16) and t.shape == (2, 16)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(1))
    codes = torch.randint(0, 64, (2, 7))
    z = tiny_model.codes_to_embeddings(codes)
    assert z.shape == (2, 7, 14)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(2, 7))
    feats = tiny_model.encode_features(torch.randn(2, 4800) * 0.1, 24000, [4800, 2400])
    assert feats["pre_quant"].shape == (2, 10, 14) and feats["mask"].sum(1).tolist() == [10, 5]


def test_training_losses_backward():
    torch.manual_seed(0)
    from entanglecodec.training.codec_losses import logit_scale_parameter, stage1_losses

    m = EntangleCodec(EntangleCodecConfig.preset("tiny")).train()
    scale = logit_scale_parameter(m)
    mel = torch.randn(3, 128, 40)
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[2, 30:] = False
    out = stage1_losses(m, scale, mel, mask, ["a", "b", "c"])
    loss = out["flow"] + out["vq"] + out["contrast"]
    loss.backward()
    for name in ["encoder.in_proj.weight", "decoder.x_proj.weight", "text_encoder.proj.0.weight"]:
        assert dict(m.named_parameters())[name].grad is not None, name
    assert scale.grad is not None
    # the inference object carries no training-only parameter or loss
    assert "logit_scale" not in dict(m.named_parameters()) and not hasattr(m, "training_losses")


def test_bundled_default_model_loads_and_round_trips():
    """The committed default weights (checkpoints/entanglecodec-small) load and tokenise audio."""
    from entanglecodec.codec.model import default_checkpoint_dir

    try:
        path = default_checkpoint_dir()
    except CheckpointError:
        pytest.skip("no bundled default model in this checkout")
    model = EntangleCodec.from_pretrained(build_text_encoder=False)
    assert model.config.name == "small" and model.codebook_size == 8192
    t = np.arange(24000) / 24000
    wav = torch.from_numpy((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    tokens = model.encode(wav, 24000)
    assert tokens.codes.shape == (1, 50)
    assert int(tokens.codes.min()) >= 0 and int(tokens.codes.max()) < 8192
    audio = model.decode(tokens)
    assert audio.wav.shape[-1] >= 24000 and int(audio.lengths[0]) == 24000
    assert torch.isfinite(audio.wav).all()
    assert model.fingerprint() == EntangleCodec.from_pretrained(path, build_text_encoder=False).fingerprint()


def test_noise_scale_scales_the_initial_noise_and_stays_out_of_the_fingerprint(tiny_model, tmp_path):
    """decoder.noise_scale (a decode-time default): the flow sampler starts from scale * N(0, I); 1 is
    bit-identical to the unscaled draw, 0 removes the noise, and the token fingerprint does not move."""
    tokens = tiny_model.encode(torch.randn(1, 24000) * 0.1, 24000)
    fp, dec = tiny_model.fingerprint(), tiny_model.config.decoder
    seen: list[torch.Tensor] = []
    sample = tiny_model.decoder.sample

    def spy(cond, mask=None, steps=1, guidance=1.0, noise=None, pitch=None):  # noqa: ANN001, ANN202
        seen.append(noise.clone())
        return sample(cond, mask, steps, guidance, noise, pitch)

    tiny_model.decoder.sample = spy
    try:
        assert dec.noise_scale == 1.0  # what training sees
        plain = tiny_model.decode(tokens, seed=2).wav
        dec.noise_scale = 0.5
        half = tiny_model.decode(tokens, seed=2).wav
        dec.noise_scale = 0.0
        tiny_model.decode(tokens, seed=2)
    finally:
        del tiny_model.decoder.sample
        dec.noise_scale = 1.0
    n = seen[0].shape[-1]
    assert torch.equal(seen[0], torch.from_numpy(decode_noise(2, seen[0].shape[1], n))[None])
    assert torch.allclose(seen[1], seen[0] * 0.5) and not seen[2].any()
    assert not torch.allclose(half, plain)
    assert torch.equal(plain, tiny_model.decode(tokens, seed=2).wav)  # back at 1: the same audio
    dec.noise_scale = 0.8
    try:
        again = EntangleCodec.from_pretrained(tiny_model.save_pretrained(tmp_path / "n"), build_text_encoder=False)
    finally:
        dec.noise_scale = 1.0
    assert again.config.decoder.noise_scale == 0.8 and again.fingerprint() == fp
    for bad in (-0.1, 2.5):
        dec.noise_scale = bad
        try:
            with pytest.raises(ConfigError, match="noise_scale must lie in"):
                dec.validate()
        finally:
            dec.noise_scale = 1.0
    dec.vocoder_passes = -1
    try:
        with pytest.raises(ConfigError, match="vocoder_passes must be a whole number >= 0"):
            dec.validate()
    finally:
        dec.vocoder_passes = None


def test_checkpoint_default_guidance_is_used_and_kept_out_of_the_fingerprint(tiny_model, tmp_path):
    wav = torch.randn(1, 24000) * 0.1
    tokens = tiny_model.encode(wav, 24000)
    fp = tiny_model.fingerprint()
    assert tiny_model.config.decoder.guidance == 1.0  # the paper's value is the default
    paper = tiny_model.decode(tokens).wav
    assert torch.equal(paper, tiny_model.decode(tokens, guidance=1.0).wav)
    tiny_model.config.decoder.guidance = 0.5
    try:
        half = tiny_model.decode(tokens).wav
        assert torch.equal(half, tiny_model.decode(tokens, guidance=0.5).wav)
        seen: list[float] = []
        sample = tiny_model.decoder.sample

        def spy(cond, mask=None, steps=1, guidance=1.0, noise=None, pitch=None):  # noqa: ANN001, ANN202
            seen.append(guidance)
            return sample(cond, mask, steps, guidance, noise, pitch)

        tiny_model.decoder.sample = spy
        try:
            tiny_model.decode(tokens)
            tiny_model.reconstruct(wav, 24000)
            tiny_model.decode(tokens, guidance=2.0)
        finally:
            del tiny_model.decoder.sample
        assert seen == [0.5, 0.5, 2.0]
        again = EntangleCodec.from_pretrained(tiny_model.save_pretrained(tmp_path / "g"), build_text_encoder=False)
        assert again.config.decoder.guidance == 0.5
        assert again.fingerprint() == fp  # token files stay valid when only the decode default changes
    finally:
        tiny_model.config.decoder.guidance = 1.0
