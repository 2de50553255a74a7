"""Pitch-conditioned decoder (decoder.pitch_cond): harmonic comb, decoder input, decode paths, fingerprint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from entanglecodec import EntangleCodec, EntangleCodecConfig
from entanglecodec.codec.model import TokenError
from entanglecodec.codec.pitch import PitchConditioner, hz_to_octaves, octaves_to_hz, pitch_loss
from entanglecodec.config import MelConfig


def pitch_model(seed: int = 0) -> EntangleCodec:
    cfg = EntangleCodecConfig.preset("tiny")
    cfg.decoder.pitch_cond = True
    torch.manual_seed(seed)
    return EntangleCodec(cfg, build_text_encoder=False).eval()


def band_at(pc: PitchConditioner, hz: float) -> int:
    """The mel band with the largest filter weight at frequency ``hz``."""
    return int(pc.fb[:, int(torch.argmin((pc.freqs - hz).abs()))].argmax())


def test_comb_peaks_on_harmonics_and_is_silent_when_unvoiced():
    pc = PitchConditioner(MelConfig(), cond_dim=8)
    comb = pc.comb(torch.tensor([[150.0]]))[0, 0]  # [n_mels]
    assert comb.shape == (128,) and float(comb.min()) >= 0 and float(comb.max()) <= 1
    for k in range(2, 7):  # resolved harmonics: peaks on k F0, dips half-way between
        assert float(comb[band_at(pc, 150.0 * k)]) > 0.6, k
        assert float(comb[band_at(pc, 150.0 * (k + 0.5))]) < 0.45, k
    shifted = pc.comb(torch.tensor([[170.0]]))[0, 0]
    assert float((shifted[:30] - comb[:30]).abs().max()) > 0.3  # another pitch, other low bands
    feats = pc.features(torch.tensor([[150.0, 0.0]]), torch.tensor([[True, False]]))
    assert feats.shape == (1, 2, 130)
    assert float(feats[0, 1].abs().max()) == 0.0  # unvoiced frame: no comb, no voicing, no F0
    assert float(feats[0, 0, -2]) == 1.0 and float(feats[0, 0, -1]) == pytest.approx(np.log2(150 / 200), abs=1e-6)


def test_octave_round_trip_and_loss_ignores_unvoiced_f0():
    hz = torch.tensor([80.0, 200.0, 640.0])
    assert torch.allclose(octaves_to_hz(hz_to_octaves(hz)), hz)
    f0 = torch.tensor([[200.0, 0.0]])
    mask = torch.tensor([[True, True]])
    logit = torch.tensor([[5.0, -5.0]])
    right = pitch_loss(logit, torch.tensor([[0.0, 3.0]]), f0, mask)  # unvoiced frame's F0 value is free
    assert float(right["f0"]) == 0.0 and float(right["vuv_acc"]) == 1.0
    wrong = pitch_loss(logit, torch.tensor([[1.0, 0.0]]), f0, mask)  # one octave off
    assert float(wrong["f0_cents"]) == pytest.approx(1200.0)


def test_pitch_decoder_needs_features_and_adds_the_ripple_at_t0():
    from entanglecodec.codec.decoder import HARMONIC_DEPTH_INIT

    m = pitch_model()
    dec = m.decoder
    assert dec.pitch_proj is not None and dec.harmonic_depth is not None
    torch.nn.init.normal_(dec.out.weight, std=0.1)  # an untrained decoder's output layer is zero
    n = m.config.mel.n_mels
    x, cond = torch.randn(2, n, 20), torch.randn(2, 20, m.config.quantizer.dim)
    t0, t1 = torch.zeros(2), torch.ones(2)
    with pytest.raises(ValueError, match="pitch features are required"):
        dec(x, t0, cond)
    silent = torch.zeros(2, 20, n + 2)  # unvoiced everywhere
    voiced = m.pitch.features(torch.full((2, 20), 140.0), torch.ones(2, 20, dtype=torch.bool))
    base0, base1 = dec(x, t0, cond, pitch=silent), dec(x, t1, cond, pitch=silent)
    ripple = (voiced[..., :n] - 0.5 * voiced[..., n : n + 1]).transpose(1, 2)
    # At initialisation the input projection is zero and the depth is HARMONIC_DEPTH_INIT in every band:
    # at t = 0 the output gains exactly depth x ripple; at t = 1 nothing (x_t shows the ripple there).
    assert torch.allclose(dec(x, t0, cond, pitch=voiced) - base0, HARMONIC_DEPTH_INIT * ripple, atol=1e-5)
    assert torch.allclose(dec(x, t1, cond, pitch=voiced), base1, atol=1e-6)
    dec.pitch_proj, dec.harmonic_depth = None, None  # unvoiced frames: as if the pitch path did not exist
    assert torch.equal(dec(x, t0, cond), base0)


def test_decode_uses_predicted_or_oracle_pitch_in_windows():
    m = pitch_model()
    torch.nn.init.normal_(m.decoder.out.weight, std=0.1)
    torch.nn.init.normal_(m.decoder.pitch_proj.weight, std=0.5)
    wav = torch.randn(1, 24000 * 5) * 0.1  # 250 frames: several 100-frame windows
    tokens = m.encode(wav, 24000)
    f = tokens.codes.shape[1]
    a = m.decode(tokens).wav
    b = m.decode(tokens, f0_hz=torch.full((1, f), 120.0)).wav
    c = m.decode(tokens, f0_hz=torch.full((1, f), 240.0)).wav
    assert a.shape == b.shape == (1, 24000 * 5) and torch.isfinite(b).all()
    assert not torch.allclose(b, c)  # the oracle contour reaches the decoder
    with pytest.raises(TokenError, match="f0_hz has shape"):
        m.decode(tokens, f0_hz=torch.zeros(1, f - 1))
    plain = EntangleCodec(EntangleCodecConfig.preset("tiny"), build_text_encoder=False).eval()
    with pytest.raises(TokenError, match="not pitch-conditioned"):
        plain.decode(plain.encode(wav, 24000), f0_hz=torch.zeros(1, f))


def test_fingerprint_hashes_pitch_options_only_when_set():
    plain_cfg = EntangleCodecConfig.preset("tiny")
    torch.manual_seed(0)
    plain = EntangleCodec(plain_cfg, build_text_encoder=False).eval()
    fp = plain.fingerprint()
    legacy = plain.legacy_fingerprint()
    plain.config.decoder.pitch_hidden = 256  # the default: same token space, same fingerprint
    plain.__dict__["_fingerprint"] = None
    assert plain.fingerprint() == fp and plain.legacy_fingerprint() == legacy
    plain.config.decoder.pitch_hidden = 64
    plain.__dict__["_fingerprint"] = None
    assert plain.fingerprint() != fp and plain.legacy_fingerprint() is None
    pm = pitch_model()
    assert pm.legacy_fingerprint() is None
    assert any(k.startswith("pitch.predictor.") for k in pm.state_dict())
    assert not any(k.startswith("pitch.fb") for k in pm.state_dict())  # derived buffers are not saved


def test_eval_system_oracle_f0_tracks_the_input():
    from entanglecodec.eval.systems import CodecSystemError, EntangleCodecSystem

    plain = EntangleCodec(EntangleCodecConfig.preset("tiny"), build_text_encoder=False).eval()
    with pytest.raises(CodecSystemError, match="pitch-conditioned"):
        EntangleCodecSystem(plain, oracle_f0=True)
    m = pitch_model()
    torch.nn.init.normal_(m.decoder.out.weight, std=0.1)
    torch.nn.init.normal_(m.decoder.pitch_proj.weight, std=0.5)
    t = np.arange(24000) / 24000
    tone = (0.3 * np.sin(2 * np.pi * 180.0 * t)).astype(np.float32)
    oracle = EntangleCodecSystem(m, oracle_f0=True).process(tone)
    predicted = EntangleCodecSystem(m).process(tone)
    assert oracle.shape == predicted.shape == tone.shape and not np.allclose(oracle, predicted)


def test_pulse_train_spacing_and_segments():
    from entanglecodec.codec.pitch import pulse_excitation

    f0 = torch.full((1, 20), 200.0)
    voiced = torch.ones(1, 20, dtype=torch.bool)
    voiced[0, 12:] = False
    e = pulse_excitation(f0, voiced, 480, 24000)[0]
    at = torch.nonzero(e).flatten()
    assert e.shape == (20 * 480,) and set(e.unique().tolist()) <= {0.0, 1.0}
    assert set(torch.diff(at).tolist()) <= {119, 120, 121}  # one 200 Hz period = 120 samples
    assert int(at.max()) < 12 * 480 - 240  # silent where unvoiced (frame 12 starts half a hop early)
    g = torch.rand(2, 37, generator=torch.Generator().manual_seed(0)) * 400 + 70
    v = torch.rand(2, 37, generator=torch.Generator().manual_seed(1)) > 0.3
    whole = pulse_excitation(g, v, 480, 24000)
    for start, n in ((0, 5000), (4321, 9000), (37 * 480 - 700, 700)):  # any segment = that slice of the whole
        assert torch.equal(pulse_excitation(g, v, 480, 24000, start, n), whole[:, start : start + n])
    with pytest.raises(ValueError, match="outside"):
        pulse_excitation(g, v, 480, 24000, 37 * 480 - 10, 20)


@pytest.mark.parametrize("interpolate", [False, True])
def test_pulse_train_segments_equal_the_whole(interpolate: bool):
    from entanglecodec.codec.pitch import pulse_excitation

    g = torch.rand(2, 37, generator=torch.Generator().manual_seed(0)) * 400 + 70
    v = torch.rand(2, 37, generator=torch.Generator().manual_seed(1)) > 0.3
    whole = pulse_excitation(g, v, 480, 24000, interpolate=interpolate)
    for start, n in ((0, 5000), (4321, 9000), (480 * 7, 480), (37 * 480 - 700, 700), (37 * 480, 0)):
        part = pulse_excitation(g, v, 480, 24000, start, n, interpolate=interpolate)
        assert (part != whole[:, start : start + n]).sum() <= 1  # float64 sums: a pulse may move one sample


def test_linear_pulse_f0_glides_between_frame_centres():
    """A rising contour: "hold" keeps each frame's period for its whole span (a staircase), "linear"
    shortens the period sample by sample; both follow the mean pitch, and stay silent where unvoiced."""
    from entanglecodec.codec.pitch import pulse_excitation

    f0 = torch.linspace(100.0, 300.0, 30)[None]
    voiced = torch.ones(1, 30, dtype=torch.bool)
    voiced[0, :2] = False
    periods = {}
    for interp in (False, True):
        at = torch.nonzero(pulse_excitation(f0, voiced, 480, 24000, interpolate=interp)[0]).flatten()
        assert int(at.min()) >= 2 * 480 - 240  # nothing in the unvoiced frames
        periods[interp] = torch.diff(at).double()
    hold, lin = periods[False], periods[True]
    assert abs(len(hold) - len(lin)) <= 1  # the same number of cycles over the clip
    assert (torch.diff(lin) <= 1).all()  # a glide: the period never grows (beyond rounding) on a rising pitch

    def period_error(interp: bool) -> float:  # against the period of the straight-line contour itself
        at = torch.nonzero(pulse_excitation(f0, voiced, 480, 24000, interpolate=interp)[0]).flatten().double()
        mid = (at[1:] + at[:-1]) / 2 / 480  # in frames
        true_f0 = 100.0 + (300.0 - 100.0) * mid / 29
        return float((torch.diff(at) - 24000 / true_f0).abs().mean())

    assert period_error(True) < 0.6 < period_error(False)  # the staircase is off by up to half a frame's step


def test_pulse_phase_makes_voiced_frames_periodic_and_keeps_the_token_space():
    from entanglecodec.config import ConfigError
    from entanglecodec.vocoder.model import Vocoder, VocoderConfig

    m = pitch_model()
    torch.nn.init.normal_(m.decoder.out.weight, std=0.1)
    torch.manual_seed(0)
    m.set_vocoder(Vocoder(VocoderConfig.preset("tiny")).eval())  # a network phase to replace (Griffin-Lim has none)
    fp = m.fingerprint()
    tokens = m.encode(torch.randn(1, 24000 * 2) * 0.1, 24000)
    f = tokens.codes.shape[1]
    f0 = torch.full((1, f), 150.0)
    f0[0, f // 2 :] = 0.0  # voiced first half, unvoiced second half (oracle contour)
    off = m.decode(tokens, f0_hz=f0, precision="float32").wav[0]
    m.config.decoder.pulse_phase = True
    m.__dict__["_fingerprint"] = None
    assert m.fingerprint() == fp  # a decode-time option: token files stay valid
    on = m.decode(tokens, f0_hz=f0, precision="float32").wav[0]
    assert on.shape == off.shape and torch.isfinite(on).all()
    half = (f // 2) * 480

    def periodicity(x: torch.Tensor) -> float:  # normalised autocorrelation at one 150 Hz period
        x = x - x.mean()
        return float((x[:-160] * x[160:]).sum() / x.square().sum().clamp_min(1e-12))

    voiced_on, voiced_off = on[2000 : half - 2000], off[2000 : half - 2000]
    assert periodicity(voiced_on) > periodicity(voiced_off) + 0.2
    assert not torch.allclose(voiced_on, voiced_off)
    err = float((on[half + 2000 :] - off[half + 2000 :]).abs().max())
    assert err < 2e-3 * float(off.abs().max())  # unvoiced frames keep the network phase (float noise)
    data = EntangleCodecConfig.preset("tiny").to_dict()
    data["decoder"]["pulse_phase"] = True
    with pytest.raises(ConfigError, match="pulse_phase needs pitch_cond"):
        EntangleCodecConfig.from_dict(data)
    data["decoder"]["pitch_cond"] = True
    for key, bad, msg in (("pulse_f0", "cubic", "pulse_f0 must be"), ("pulse_voiced_prob", 1.0, "pulse_voiced_prob")):
        with pytest.raises(ConfigError, match=msg):
            EntangleCodecConfig.from_dict({**data, "decoder": {**data["decoder"], key: bad}})


def test_pitch_predictor_in_chunks_equals_one_pass():
    """Long clips are predicted in chunks with context (bounded memory); the result is the whole-clip one."""
    torch.manual_seed(0)
    p = PitchConditioner(MelConfig(), cond_dim=14, hidden=16).eval()
    zq = torch.randn(2, 331, 14)
    with torch.no_grad():
        whole = p.predict(zq, chunk=10_000)
        for chunk in (7, 50, 330):
            parts = p.predict(zq, chunk=chunk)
            for a, b in zip(whole, parts, strict=True):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
