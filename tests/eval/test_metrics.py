"""Every reconstruction metric on known cases: identity, gain, delay, noise, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from entanglecodec.eval import metrics as M

SR = 24000


@pytest.fixture(scope="module")
def noise(speech: tuple[np.ndarray, str]) -> np.ndarray:
    wav, _ = speech
    return (np.random.default_rng(1).standard_normal(wav.size) * 0.1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Identity, gain and noise
# ---------------------------------------------------------------------------------------------
def test_identity_is_perfect(speech: tuple[np.ndarray, str]) -> None:
    wav, text = speech
    assert M.stoi(wav, wav, SR) == pytest.approx(1.0, abs=1e-6)
    assert M.pesq_wb(wav, wav, SR) > 4.0
    assert M.vuv_f1(wav, wav, SR) == 1.0
    assert M.speaker_similarity(wav, wav, SR) == pytest.approx(1.0, abs=1e-6)
    # unpaired (a TTS output against its voice prompt): any lengths; paired ones must match
    assert M.speaker_similarity(wav, wav[: wav.size // 2], SR, paired=False) > 0.9
    with pytest.raises(M.MetricError, match="samples"):
        M.speaker_similarity(wav, wav[: wav.size // 2], SR)
    assert M.log_mel_l1(wav, wav, SR) == 0.0
    assert M.mr_stft_distance(wav, wav, SR) == pytest.approx(0.0, abs=1e-6)
    assert M.si_sdr(wav, wav, SR) == pytest.approx(M.SI_SDR_CAP_DB)
    original = M.asr_errors(text, wav, SR)
    copy = M.asr_errors(text, wav.copy(), SR)
    assert copy.wer == original.wer  # the floor: a perfect codec cannot beat the recogniser
    assert copy.hypothesis == original.hypothesis


def test_pocketsphinx_recognises_flite_speech(speech: tuple[np.ndarray, str]) -> None:
    wav, text = speech
    res = M.asr_errors(text, wav, SR, engine="pocketsphinx")
    assert res.ref_words == len(text.split())
    assert res.wer <= 0.35, f"pocketsphinx heard {res.hypothesis!r} for {res.reference!r}"
    assert res.cer <= res.wer + 0.2


def test_louder_copy_keeps_gain_invariant_metrics(speech: tuple[np.ndarray, str]) -> None:
    wav, _ = speech
    quiet = wav * (0.45 / np.abs(wav).max())  # 2x louder stays below full scale
    loud = 2.0 * quiet
    assert M.stoi(quiet, loud, SR) > 0.999
    assert M.si_sdr(quiet, loud, SR) > 90.0
    assert M.pesq_wb(quiet, loud, SR) > 4.0
    assert M.vuv_f1(quiet, loud, SR) == 1.0
    assert M.speaker_similarity(quiet, loud, SR) > 0.99


def test_spectral_distances_of_a_gain_are_known() -> None:
    x = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1  # no floored (silent) bins
    assert M.log_mel_l1(x, 2 * x, SR) == pytest.approx(math.log(4.0), abs=0.01)  # power x4, natural log
    # a 2x magnitude: spectral convergence 1 and log-magnitude L1 ln 2 at every resolution
    assert M.mr_stft_distance(x, 2 * x, SR) == pytest.approx(1.0 + math.log(2.0), abs=0.01)


def test_noise_instead_of_speech_scores_low(speech: tuple[np.ndarray, str], noise: np.ndarray) -> None:
    wav, text = speech
    assert M.stoi(wav, noise, SR) < 0.6
    assert M.pesq_wb(wav, noise, SR) < 1.5
    assert M.vuv_f1(wav, noise, SR) < 0.3
    assert M.speaker_similarity(wav, noise, SR) < 0.75
    assert M.si_sdr(wav, noise, SR) < -20.0
    assert M.log_mel_l1(wav, noise, SR) > 2.0
    assert M.asr_errors(text, noise, SR).wer >= 0.8


def test_si_sdr_matches_known_snr() -> None:
    rng = np.random.default_rng(3)
    s = rng.standard_normal(48000)
    n = rng.standard_normal(48000)
    n *= np.linalg.norm(s) / np.linalg.norm(n) * 10 ** (-10 / 20)  # 10 dB below the signal
    assert M.si_sdr(s, s + n) == pytest.approx(10.0, abs=0.3)
    assert M.si_sdr(s, 0.3 * (s + n)) == pytest.approx(M.si_sdr(s, s + n), abs=1e-9)


def test_silent_estimate_has_no_voice_and_silent_pair_agrees(speech: tuple[np.ndarray, str]) -> None:
    wav, _ = speech
    zeros = np.zeros_like(wav)
    assert M.speaker_similarity(wav, zeros, SR) == 0.0
    assert M.vuv_f1(wav, zeros, SR) == 0.0
    assert M.vuv_f1(zeros, zeros, SR) == 1.0  # no voiced frame anywhere: full agreement
    assert 1.0 <= M.pesq_wb(wav, zeros, SR) < 1.1  # the bottom of the scale, not a crash


# ---------------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------------
def test_delayed_copy_is_aligned_back_to_identity(speech: tuple[np.ndarray, str]) -> None:
    wav, _ = speech
    delay = 2400  # 100 ms
    delayed = np.concatenate([np.zeros(delay, np.float32), wav, np.zeros(300, np.float32)])
    assert M.stoi(wav, delayed[: wav.size], SR) < 0.9  # unaligned it is clearly worse
    aligned, lag = M.align(wav, delayed, SR)
    assert lag == delay
    assert aligned.shape == wav.shape
    assert M.stoi(wav, aligned, SR) == pytest.approx(1.0, abs=1e-6)
    assert M.log_mel_l1(wav, aligned, SR) == 0.0
    assert M.si_sdr(wav, aligned, SR) == pytest.approx(M.SI_SDR_CAP_DB)


def test_leading_output_is_shifted_right(speech: tuple[np.ndarray, str]) -> None:
    wav, _ = speech
    early = wav[500:]
    aligned, lag = M.align(wav, early, SR)
    assert lag == -500
    np.testing.assert_array_equal(aligned[:500], 0.0)
    np.testing.assert_allclose(aligned[500:], wav[500:].astype(np.float64))


def test_phase_free_output_is_aligned_by_its_envelope(speech: tuple[np.ndarray, str]) -> None:
    wav, _ = speech
    # A "noise vocoder": the speech envelope on a white-noise carrier, delayed by 25 ms.
    env = np.sqrt(np.convolve(wav.astype(np.float64) ** 2, np.ones(240) / 240, mode="same"))
    carrier = np.random.default_rng(2).standard_normal(wav.size)
    vocoded = np.concatenate([np.zeros(600), env * carrier])
    assert M.estimate_delay(wav, vocoded, SR, method="envelope") == pytest.approx(600, abs=60)
    assert M.estimate_delay(wav, vocoded, SR) == pytest.approx(600, abs=60)  # auto falls back to envelopes


def test_unrelated_stationary_noise_is_not_shifted() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal(SR), rng.standard_normal(SR)
    assert M.estimate_delay(a, b, SR) == 0


def test_max_lag_bounds_the_search(speech: tuple[np.ndarray, str]) -> None:
    wav, _ = speech
    delayed = np.concatenate([np.zeros(SR // 2), wav])  # 0.5 s
    assert M.estimate_delay(wav, delayed, SR, max_lag_s=0.6) == SR // 2
    assert abs(M.estimate_delay(wav, delayed, SR, max_lag_s=0.1, method="waveform")) <= SR // 10


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------
def test_text_normalisation_and_error_rates() -> None:
    assert M.normalize_text("  Don't  STOP, 'now'! <sil> [noise] Well-known.") == "don't stop now well known"
    r = M.score_transcript("a b c d", "a x c")
    assert (r.wer, r.word_errors, r.ref_words) == (0.5, 2, 4)  # one substitution + one deletion
    assert M.score_transcript("Hello, World!", "hello world").wer == 0.0
    empty = M.score_transcript("one two three", "")
    assert empty.wer == 1.0 and empty.cer == 1.0
    assert M.score_transcript("abc", "abd").cer == pytest.approx(1 / 3)
    with pytest.raises(M.MetricError, match="no words"):
        M.score_transcript(" ... ", "x")


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fn",
    [M.stoi, M.pesq_wb, M.vuv_f1, M.speaker_similarity, M.log_mel_l1, M.mr_stft_distance, M.si_sdr],
    ids=lambda f: f.__name__,
)
def test_bad_input_is_a_clear_error(fn) -> None:  # noqa: ANN001
    good = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    with pytest.raises(M.MetricError, match="empty"):
        fn(good, np.zeros(0, np.float32), SR)
    bad = good.copy()
    bad[10] = np.nan
    with pytest.raises(M.MetricError, match="NaN"):
        fn(good, bad, SR)
    with pytest.raises(M.MetricError, match="different sample rates"):
        fn(good, good[::3], SR)  # an 8 kHz estimate next to a 24 kHz reference
    with pytest.raises(M.MetricError, match="align"):
        fn(good, good[:-10], SR)
    with pytest.raises(M.MetricError, match="floating point"):
        fn(good, (good * 32767).astype(np.int16), SR)
    with pytest.raises(M.MetricError, match="mono"):
        fn(good, np.stack([good, good]), SR)
    with pytest.raises(M.MetricError, match="sample_rate"):
        fn(good, good, 0)
    with pytest.raises(M.MetricError, match="sample_rate"):
        fn(good, good, 22050.5)


def test_undefined_cases_raise() -> None:
    x = np.random.default_rng(0).standard_normal(SR) * 0.1
    zeros = np.zeros(SR)
    with pytest.raises(M.MetricError, match="silent"):
        M.si_sdr(zeros, x)
    with pytest.raises(M.MetricError, match="silent"):
        M.mr_stft_distance(zeros, x, SR)
    with pytest.raises(M.MetricError, match="silent"):
        M.speaker_similarity(zeros, x, SR)
    with pytest.raises(M.MetricError, match="PESQ"):
        M.pesq_wb(zeros, x, SR)
    with pytest.raises(M.MetricError, match="0.4 s"):
        M.stoi(x[:2400], x[:2400], SR)  # 0.1 s
    with pytest.raises(M.MetricError, match="max_lag_s"):
        M.align(x, x, SR, max_lag_s=-1)
