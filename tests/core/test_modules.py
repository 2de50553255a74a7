import torch

from entanglecodec.codec.decoder import FlowDecoder, flow_interpolate
from entanglecodec.codec.encoder import UnifiedEncoder
from entanglecodec.codec.quantizer import Quantizer, code_statistics
from entanglecodec.codec.text import CaptionEncoder
from entanglecodec.config import DecoderConfig, QuantizerConfig, TextEncoderConfig, TransformerConfig
from entanglecodec.nn.transformer import RMSNorm, Transformer, apply_rotary, rotary_cos_sin
from entanglecodec.training.losses import contrastive_loss

TCFG = TransformerConfig(dim=32, depth=2, heads=4)


def test_transformer_shapes_and_padding_invariance():
    torch.manual_seed(0)
    tr = Transformer(TCFG).eval()
    x = torch.randn(2, 10, 32)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    y = tr(x, mask)
    assert y.shape == (2, 10, 32)
    x2 = x.clone()
    x2[1, 6:] = 100.0  # padding content must not matter
    torch.testing.assert_close(tr(x2, mask)[1, :6], y[1, :6])
    torch.testing.assert_close(tr(x[1:, :6])[0], y[1, :6], atol=1e-5, rtol=1e-5)


def test_rmsnorm_unit_rms():
    n = RMSNorm(16)
    y = n(torch.randn(3, 16) * 7)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(3), atol=1e-3, rtol=1e-3)


def test_rotary_relative():
    cos, sin = rotary_cos_sin(torch.arange(8), 8)
    q = torch.randn(1, 1, 1, 8).expand(1, 1, 8, 8)
    k = torch.randn(1, 1, 1, 8).expand(1, 1, 8, 8)
    qr, kr = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    dots = (qr[0, 0, :, None] * kr[0, 0, None, :]).sum(-1)
    torch.testing.assert_close(dots[0, 2], dots[3, 5], atol=1e-5, rtol=1e-5)  # depends on offset only


def test_encoder_cls_and_mask():
    enc = UnifiedEncoder(128, TCFG).eval()
    mel = torch.randn(2, 128, 12)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 7:] = False
    out = enc(mel, mask)
    assert out.frames.shape == (2, 12, 32) and out.cls.shape == (2, 32)
    alone = enc(mel[:1, :, :7])
    torch.testing.assert_close(alone.frames[0], out.frames[0, :7], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone.cls[0], out.cls[0], atol=1e-5, rtol=1e-5)


def test_quantizer_shapes_stats_and_loss():
    torch.manual_seed(0)
    q = Quantizer(32, QuantizerConfig(dim=14, codebook_size=16, kmeans_init=False))
    h = torch.randn(2, 20, 32, requires_grad=True)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 15:] = False
    out = q(h, mask)
    assert out.codes.shape == (2, 20) and out.quantized.shape == (2, 20, 14)
    assert int(out.codes.max()) < 16 and (out.codes[1, 15:] == 0).all()
    torch.testing.assert_close(out.pre_quant.norm(dim=-1), torch.ones(2, 20), atol=1e-5, rtol=1e-5)
    assert float(out.loss) >= 0 and 0 < float(out.usage) <= 1 and float(out.perplexity) >= 1
    assert float(out.active) == float(out.usage)  # first batch: active over the window == this batch
    second = q(torch.randn(2, 20, 32), mask)
    assert float(second.active) >= float(second.usage)
    out.loss.backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    q.eval()
    e = q(h.detach(), mask)
    torch.testing.assert_close(e.quantized[0], q.embed_codes(e.codes)[0])


def test_dead_codes_are_reseeded_relative_to_batch():
    torch.manual_seed(0)
    cfg = QuantizerConfig(dim=14, codebook_size=64, kmeans_init=False, ema_decay=0.5, dead_code_fraction=0.5)
    q = Quantizer(32, cfg)
    h = torch.randn(1, 1, 32).expand(2, 50, 32) + 0.01 * torch.randn(2, 50, 32)  # one tight cluster
    dead = [int(q(h).dead_codes) for _ in range(6)]
    cb = q.vq._codebook
    assert abs(float(cb.threshold_ema_dead_code) - 0.5 * 100 / 64) < 1e-6  # fraction x frames / codes
    assert max(dead) > 0
    target = torch.nn.functional.normalize(q.mlp(h[:1, :1]), dim=-1)[0, 0]
    sims = q.codebook @ target
    assert int((sims > 0.99).sum()) > 1  # unused codes were re-seeded from the batch


def test_quantizer_loss_mode_trains_codebook():
    q = Quantizer(32, QuantizerConfig(dim=14, codebook_size=16, kmeans_init=False, codebook_update="loss"))
    out = q(torch.randn(2, 10, 32))
    out.loss.backward()
    grads = [p.grad for n, p in q.vq.named_parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_code_statistics():
    usage, ppl, hist = code_statistics(torch.tensor([[0, 1, 2, 3]]), None, 8)
    assert float(usage) == 0.5 and abs(float(ppl) - 4) < 1e-4 and hist.sum() == 4


def test_flow_interpolation_eq9():
    x, z = torch.randn(3, 128, 5), torch.randn(3, 128, 5)
    s = 1e-4
    xt, u = flow_interpolate(x, z, torch.zeros(3), s)
    torch.testing.assert_close(xt, z)
    xt, u = flow_interpolate(x, z, torch.ones(3), s)
    torch.testing.assert_close(xt, x + s * z)
    t = torch.tensor([0.25, 0.5, 0.9])
    xt, u = flow_interpolate(x, z, t, s)
    torch.testing.assert_close(xt, (1 - (1 - s) * t[:, None, None]) * z + t[:, None, None] * x)
    torch.testing.assert_close(u, x - (1 - s) * z)
    # u is the time derivative of x_t
    eps = 1e-3
    xt2, _ = flow_interpolate(x, z, t + eps, s)
    torch.testing.assert_close((xt2 - xt) / eps, u, atol=1e-2, rtol=1e-2)


def test_decoder_velocity_sampler_and_cfg():
    torch.manual_seed(0)
    dec = FlowDecoder(128, 14, DecoderConfig(transformer=TCFG, time_embed_dim=32)).eval()
    torch.nn.init.normal_(dec.out.weight, std=0.02)
    cond = torch.randn(2, 6, 14)
    z = torch.randn(2, 128, 6)
    v = dec(z, torch.zeros(2), cond)
    assert v.shape == (2, 128, 6)
    torch.testing.assert_close(dec.sample(cond, steps=1, guidance=0.0, noise=z), z + v)
    vu = dec(z, torch.zeros(2), dec.null_condition(cond))
    torch.testing.assert_close(dec.sample(cond, steps=1, guidance=1.0, noise=z), z + 2 * v - vu, atol=1e-5, rtol=1e-5)
    assert dec.sample(cond, steps=4, noise=z).shape == (2, 128, 6)
    dec.train()
    loss, est = dec.loss(torch.randn(2, 128, 6), cond, torch.ones(2, 6, dtype=torch.bool))
    assert loss.dim() == 0 and est.shape == (2, 128, 6)


def test_decoder_mask_invariance():
    dec = FlowDecoder(128, 14, DecoderConfig(transformer=TCFG, time_embed_dim=32)).eval()
    torch.nn.init.normal_(dec.out.weight, std=0.02)
    cond, z = torch.randn(1, 8, 14), torch.randn(1, 128, 8)
    mask = torch.ones(1, 8, dtype=torch.bool)
    mask[0, 5:] = False
    a = dec(z, torch.full((1,), 0.3), cond, mask)[..., :5]
    b = dec(z[..., :5], torch.full((1,), 0.3), cond[:, :5])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_contrastive_loss():
    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    loss, acc = contrastive_loss(a, a, torch.tensor(4.6))
    assert float(acc) == 1.0 and float(loss) < 0.1
    loss2, _ = contrastive_loss(a, a.roll(1, 0), torch.tensor(4.6))
    assert float(loss2) > float(loss)


def test_scratch_text_encoder():
    cfg = TextEncoderConfig(kind="scratch", scratch=TransformerConfig(dim=32, depth=1, heads=2), max_length=32)
    enc = CaptionEncoder(cfg, 16).eval()
    e = enc(["a calm male voice", "piano in a minor key, 72 BPM " * 5])
    assert e.shape == (2, 16)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(2))


def test_pretrained_text_encoder_minilm():
    enc = CaptionEncoder(TextEncoderConfig(kind="pretrained"), 16).eval()
    e = enc(["a dog barks twice", "a dog barks two times", "a slow solo piano piece"])
    assert e.shape == (3, 16)
    assert all(not k.startswith("backbone.") for k in enc.saved_state_dict())
    raw = enc.backbone(["a dog barks twice", "a dog barks two times", "a slow solo piano piece"])
    sim = torch.nn.functional.cosine_similarity(raw[0:1], raw[1:]).tolist()
    assert sim[0] > sim[1]  # the real MiniLM puts paraphrases closer


def test_frozen_pretrained_backbone_cache_is_exact():
    enc = CaptionEncoder(TextEncoderConfig(kind="pretrained"), 16).eval()
    texts = ["a violin plays a slow melody", "rain on a tin roof", "a violin plays a slow melody"]
    direct = enc.backbone._encode(texts)
    cached = enc.backbone(texts)
    again = enc.backbone(texts)
    torch.testing.assert_close(cached, direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, cached)
    assert len(enc.backbone._cache) == 2
