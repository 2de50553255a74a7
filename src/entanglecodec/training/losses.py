"""Training losses, grouped by role. Inference code never imports this module.

* Alignment (stage 1): :func:`contrastive_loss`, the CLIP-style symmetric InfoNCE of Eq. 10.
* Reconstruction (vocoder): :class:`MultiResolutionMelLoss`, :class:`MultiResolutionSTFTLoss`
  on waveforms ``[B, S]`` (computed in float32 outside autocast: log-spectra are sensitive to bf16).
* Adversarial (codec stage 2 against the mel critic, vocoder against MPD + MRD): one hinge
  convention, :func:`hinge_discriminator_loss` / :func:`hinge_generator_loss`, and
  :func:`feature_matching_loss`.

Hinge convention (chosen once, for every critic of the package). Each critic returns a list of
``K`` logit maps (one per sub-discriminator or resolution); every map's hinge term is averaged
over its elements, and the ``K`` terms are **averaged** (not summed), so a loss weight means the
same whatever the number of sub-discriminators. The generator term is the saturating hinge
``mean(relu(1 - D(fake)))`` (not ``-mean D(fake)``): once a fake clears the margin it gets no
further push, so a generator trained against a *frozen* critic (codec stage 2) cannot run away by
driving the critic's logits to +inf, and the generator and critic losses share one margin.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..audio import mel_filterbank


# ---------------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------------
def contrastive_loss(audio: Tensor, text: Tensor, logit_scale: Tensor, max_scale: float = 100.0) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE between L2-normalised ``audio [B, D]`` and ``text [B, D]`` (Eq. 10).

    ``L = (CE(a->t) + CE(t->a)) / 2`` with logits ``exp(logit_scale) * a @ t^T`` (learnable
    temperature, clamped to ``max_scale``). Returns ``(loss, retrieval accuracy)`` where accuracy is
    the mean of audio->text and text->audio top-1 accuracy within the batch.
    """
    if audio.shape != text.shape:
        raise ValueError(f"audio {tuple(audio.shape)} and text {tuple(text.shape)} embeddings differ in shape")
    scale = logit_scale.exp().clamp(max=max_scale)
    logits = scale * audio.float() @ text.float().t()
    target = torch.arange(audio.shape[0], device=audio.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    acc = 0.5 * ((logits.argmax(1) == target).float().mean() + (logits.argmax(0) == target).float().mean())
    return loss, acc


# ---------------------------------------------------------------------------------------------
# Reconstruction (waveforms)
# ---------------------------------------------------------------------------------------------
def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(
            f"losses need two waveform batches of the same shape [B, S]; got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


class MultiResolutionMelLoss(nn.Module):
    """Mean L1 distance between natural-log power mels at several resolutions.

    Args:
        sample_rate: waveform rate in Hz.
        resolutions: ``(n_fft, hop_length, n_mels)`` triples; the window length is ``n_fft``.
        floor: power floor before the log.
    """

    def __init__(
        self,
        sample_rate: int = 24000,
        resolutions: Sequence[tuple[int, int, int]] = ((512, 120, 64), (1024, 240, 128), (2048, 480, 128)),
        floor: float = 1e-5,
    ) -> None:
        super().__init__()
        if not resolutions:
            raise ValueError("MultiResolutionMelLoss needs at least one resolution")
        self.resolutions = [tuple(int(v) for v in r) for r in resolutions]
        self.floor = floor
        for i, (n_fft, _, n_mels) in enumerate(self.resolutions):
            self.register_buffer(f"fb{i}", mel_filterbank(sample_rate, n_fft, n_mels), persistent=False)
            self.register_buffer(f"win{i}", torch.hann_window(n_fft), persistent=False)

    def log_mels(self, wav: Tensor) -> list[Tensor]:
        """``wav [B, S]`` -> one log-mel ``[B, n_mels_k, frames_k]`` per resolution."""
        out = []
        for i, (n_fft, hop, _) in enumerate(self.resolutions):
            spec = torch.stft(
                wav.float(), n_fft, hop, window=getattr(self, f"win{i}"), center=True, return_complex=True
            )
            mel = torch.matmul(getattr(self, f"fb{i}"), spec.abs().square())
            out.append(torch.log(mel.clamp_min(self.floor)))
        return out

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Scalar loss: L1 between log-mels, averaged over bins/frames and resolutions."""
        _check_pair(pred, target)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            losses = [(a - b).abs().mean() for a, b in zip(self.log_mels(pred), self.log_mels(target), strict=True)]
        return torch.stack(losses).mean()


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1 at several STFT resolutions (Parallel WaveGAN idea).

    Args:
        resolutions: ``(n_fft, hop_length)`` pairs; the window length is ``n_fft``.
        eps: magnitude floor.
    """

    def __init__(
        self, resolutions: Sequence[tuple[int, int]] = ((512, 128), (1024, 256), (2048, 512)), eps: float = 1e-5
    ) -> None:
        super().__init__()
        if not resolutions:
            raise ValueError("MultiResolutionSTFTLoss needs at least one resolution")
        self.resolutions = [(int(n), int(h)) for n, h in resolutions]
        self.eps = eps
        for i, (n_fft, _) in enumerate(self.resolutions):
            self.register_buffer(f"win{i}", torch.hann_window(n_fft), persistent=False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Scalar loss averaged over resolutions (``sc + log-mag L1`` per resolution)."""
        _check_pair(pred, target)
        total = []
        with torch.autocast(device_type=pred.device.type, enabled=False):
            for i, (n_fft, hop) in enumerate(self.resolutions):
                w = getattr(self, f"win{i}")
                p = torch.stft(pred.float(), n_fft, hop, window=w, center=True, return_complex=True).abs()
                t = torch.stft(target.float(), n_fft, hop, window=w, center=True, return_complex=True).abs()
                sc = torch.linalg.vector_norm(t - p) / torch.linalg.vector_norm(t).clamp_min(self.eps)
                mag = (torch.log(p.clamp_min(self.eps)) - torch.log(t.clamp_min(self.eps))).abs().mean()
                total.append(sc + mag)
        return torch.stack(total).mean()


# ---------------------------------------------------------------------------------------------
# Adversarial
# ---------------------------------------------------------------------------------------------
def hinge_discriminator_loss(real_logits: Sequence[Tensor], fake_logits: Sequence[Tensor]) -> Tensor:
    """Critic hinge loss ``mean_k [mean(relu(1 - D_k(real))) + mean(relu(1 + D_k(fake)))]``.

    Args:
        real_logits: ``K`` logit maps of real inputs (any shapes).
        fake_logits: the ``K`` matching maps of generated inputs.

    Returns:
        Scalar (float32), averaged over the ``K`` sub-discriminators (see the module docstring).
    """
    if len(real_logits) != len(fake_logits) or not real_logits:
        raise ValueError("need the same, non-zero number of real and fake logit maps")
    terms = [
        F.relu(1 - r.float()).mean() + F.relu(1 + f.float()).mean() for r, f in zip(real_logits, fake_logits, strict=True)
    ]
    return torch.stack(terms).mean()


def hinge_generator_loss(fake_logits: Sequence[Tensor]) -> Tensor:
    """Generator hinge loss ``mean_k mean(relu(1 - D_k(fake)))`` (saturating; see the module docstring)."""
    if not fake_logits:
        raise ValueError("need at least one logit map")
    return torch.stack([F.relu(1 - f.float()).mean() for f in fake_logits]).mean()


def feature_matching_loss(real_feats: Sequence[Sequence[Tensor]], fake_feats: Sequence[Sequence[Tensor]]) -> Tensor:
    """Mean L1 between discriminator feature maps of real (detached) and generated audio.

    Each layer's L1 is divided by the mean magnitude of the real features, so layers of very
    different scales contribute comparably; the result is averaged over layers and discriminators.
    """
    if len(real_feats) != len(fake_feats) or not real_feats:
        raise ValueError("need the same, non-zero number of real and fake feature lists")
    terms = []
    for rs, fs in zip(real_feats, fake_feats, strict=True):
        for r, f in zip(rs, fs, strict=True):
            r = r.detach().float()
            terms.append((r - f.float()).abs().mean() / r.abs().mean().clamp_min(1e-5))
    return torch.stack(terms).mean()
