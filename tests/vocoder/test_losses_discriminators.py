"""Waveform discriminators and losses: shapes, gradients, values on known cases."""

from __future__ import annotations

import pytest
import torch

from entanglecodec.training.discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator
from entanglecodec.training.losses import (
    MultiResolutionMelLoss,
    MultiResolutionSTFTLoss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)


@pytest.mark.parametrize("n", [4800, 4801])
def test_discriminator_shapes_and_grads(n: int) -> None:
    torch.manual_seed(0)
    wav = torch.randn(2, n, requires_grad=True)
    for disc, k in ((MultiPeriodDiscriminator((2, 3, 5), (4, 8)), 3), (MultiResolutionDiscriminator(((256, 64), (128, 32)), 4), 2)):
        logits, feats = disc(wav)
        assert len(logits) == len(feats) == k
        for lg, ft in zip(logits, feats, strict=True):
            assert lg.dim() == 2 and lg.shape[0] == 2
            assert all(f.shape[0] == 2 for f in ft)
        sum(lg.mean() for lg in logits).backward()
        assert wav.grad is not None and torch.isfinite(wav.grad).all()
        wav.grad = None
    with pytest.raises(ValueError, match=r"\[B, S\]"):
        MultiPeriodDiscriminator((2,), (4,))(torch.randn(2, 3, 100))


def test_reconstruction_losses() -> None:
    torch.manual_seed(0)
    y = torch.randn(2, 4800) * 0.1
    mel = MultiResolutionMelLoss(24000, ((256, 64, 32), (512, 128, 64)))
    stft = MultiResolutionSTFTLoss(((256, 64), (512, 128)))
    assert float(mel(y, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(stft(y, y)) == pytest.approx(0.0, abs=1e-6)
    near, far = y + 0.01 * torch.randn_like(y), torch.randn_like(y)
    assert 0 < float(mel(near, y)) < float(mel(far, y))
    assert 0 < float(stft(near, y)) < float(stft(far, y))
    with pytest.raises(ValueError, match="same shape"):
        mel(y[:, :100], y)


def test_adversarial_losses() -> None:
    real = [torch.full((2, 5), 2.0)]
    fake = [torch.full((2, 5), -2.0)]
    assert float(hinge_discriminator_loss(real, fake)) == 0.0  # both beyond the margin
    assert float(hinge_discriminator_loss(fake, real)) == pytest.approx(6.0)
    assert float(hinge_generator_loss(real)) == 0.0
    assert float(hinge_generator_loss(fake)) == pytest.approx(3.0)
    f = [[torch.ones(2, 3), torch.full((2, 4), 2.0)]]
    assert float(feature_matching_loss(f, f)) == 0.0
    g = [[torch.zeros(2, 3, requires_grad=True), torch.full((2, 4), 2.0)]]
    assert float(feature_matching_loss(f, g)) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        hinge_discriminator_loss(real, [])


def test_one_hinge_convention_for_every_critic() -> None:
    """Mean over sub-discriminators (a weight means the same for any count); saturating generator term."""
    real = [torch.full((2, 5), 0.5), torch.full((3,), -1.0)]
    fake = [torch.full((2, 5), 0.0), torch.full((3,), 2.0)]
    one = float(hinge_discriminator_loss(real[:1], fake[:1]))
    assert float(hinge_discriminator_loss(real[:1] * 3, fake[:1] * 3)) == pytest.approx(one)  # not summed
    assert float(hinge_discriminator_loss(real, fake)) == pytest.approx(((0.5 + 1.0) + (2.0 + 3.0)) / 2)
    # generator: relu(1 - D), zero once the critic is fooled by the margin (no push towards +inf)
    assert float(hinge_generator_loss([torch.full((4,), 5.0)])) == 0.0
    assert float(hinge_generator_loss(fake)) == pytest.approx((1.0 + 0.0) / 2)
    # the codec's stage-2 mel critic uses the same functions
    import entanglecodec.training.codec_module as cm

    assert cm.hinge_generator_loss is hinge_generator_loss and cm.hinge_discriminator_loss is hinge_discriminator_loss
