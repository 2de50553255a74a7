"""Compile a codec + vocoder into an ONNX runtime folder (needs torch and ``onnx``; run once).

The folder (see :mod:`entanglecodec.runtime`) holds three graphs and what the NumPy side needs:

* ``encoder.onnx``: un-normalised log-mel ``[B, n_mels, F]`` -> token ids ``[B, F]`` int64
  (mel normalisation, the encoder, the MLP + L2 projection and the nearest-code assignment);
* ``decoder.onnx``: token ids ``[B, F]`` int64 and noise ``[B, n_mels, F]`` -> log-mel
  ``[B, n_mels, F]`` (code vectors, pitch features, one Euler step of the flow decoder at the
  checkpoint's guidance, de-normalisation);
* ``vocoder.onnx``: log-mel ``[B, n_mels, F]`` -> the vocoder network's spectrum as ``real``,
  ``imag`` ``[B, F, n_fft/2 + 1]`` (inverse STFT and consistency passes run in NumPy);
* ``runtime.json``: signal sizes, window plan, guidance, the source checkpoint's fingerprint and
  the key of :func:`entanglecodec.runtime.cache.runtime_key`; ``dsp.npz``: the mel filterbank.

Every graph is checked against the torch modules on random input before the folder is written
(atomically), so a graph that does not reproduce the model is never used.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..codec.pitch import F0_CEIL_HZ, F0_FLOOR_HZ, F0_REFERENCE_HZ
from ..fileio import replace_dir
from .cache import FORMAT_VERSION, RuntimeFolderError

OPSET = 17
"""ONNX opset of the exported graphs (STFT-free: the FFTs run in NumPy)."""


class _EncoderGraph(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, log_mel: Tensor) -> Tensor:
        m = self.model
        frames = m.encoder(m.frontend.normalize(log_mel)).frames
        return m.quantizer.assign(m.quantizer.project(frames))  # type: ignore[no-any-return]


class _DecoderGraph(nn.Module):
    def __init__(self, model: Any, guidance: float) -> None:
        super().__init__()
        self.model = model
        self.guidance = float(guidance)

    def forward(self, codes: Tensor, noise: Tensor) -> Tensor:
        m = self.model
        zq = m.quantizer.embed_codes(codes)
        mel = m.decoder.sample(zq, None, 1, self.guidance, noise, m.pitch_features(zq, None))
        return m.frontend.denormalize(mel)  # type: ignore[no-any-return]


class _PitchGraph(nn.Module):
    """Token ids -> the pitch predictor's voicing logits and log2(F0 / 200 Hz), each ``[B, F]``
    (``decoder.pulse_phase``: the runtime builds the same pulse train as the torch model)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        m = self.model
        return m.pitch.predict(m.quantizer.embed_codes(codes))  # type: ignore[no-any-return]


class _VocoderGraph(nn.Module):
    def __init__(self, vocoder: Any) -> None:
        super().__init__()
        self.vocoder = vocoder

    def forward(self, log_mel: Tensor) -> tuple[Tensor, Tensor]:
        mag, phase = self.vocoder.spectrum(log_mel)
        return mag * torch.cos(phase), mag * torch.sin(phase)


def _export(module: nn.Module, args: tuple[Tensor, ...], path: Path, inputs: dict[str, dict[int, str]],
            outputs: list[str]) -> None:
    import warnings

    with warnings.catch_warnings():  # the tracer's notes on Python-side shape checks
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), input_names=list(inputs), output_names=outputs, dynamic_axes=inputs,
            opset_version=OPSET, dynamo=False,
        )


def _check(name: str, got: np.ndarray, want: Tensor, atol: float, rtol: float = 1e-3) -> None:
    w = want.detach().float().numpy()
    if got.shape != w.shape:
        raise RuntimeFolderError(f"{name}.onnx gives shape {got.shape}, the torch model {w.shape}")
    err = float(np.abs(got - w).max())
    if err > atol + rtol * float(np.abs(w).max()):
        raise RuntimeFolderError(f"{name}.onnx differs from the torch model by {err:.3g} (tolerance {atol:g})")


def export_runtime(model: Any, out_dir: str | Path, key: str, threads: int = 1) -> Path:
    """Write the runtime folder of ``model`` (an :class:`~entanglecodec.EntangleCodec` with a neural
    vocoder) to ``out_dir`` (replaced atomically) and return it.

    Raises:
        RuntimeFolderError: the model cannot run in the runtime (Griffin-Lim vocoder, a graph that does not
            reproduce the torch model).
    """
    import onnxruntime as ort

    from ..vocoder.model import Vocoder

    vocoder = model.vocoder
    if not isinstance(vocoder, Vocoder):
        raise RuntimeFolderError(f"the ONNX runtime needs a neural vocoder, not {type(vocoder).__name__}")
    cfg, w = model.config, model.config.max_frames
    model, vocoder = model.float().eval(), vocoder.float().eval()
    guidance = float(cfg.decoder.guidance)
    g = torch.Generator().manual_seed(0)
    n = min(w, 60)
    log_mel = torch.randn(2, cfg.mel.n_mels, n, generator=g) * 2 - 6
    codes = torch.randint(0, model.codebook_size, (2, n), generator=g)
    noise = torch.randn(2, cfg.mel.n_mels, n, generator=g)
    graphs = {
        "encoder": (_EncoderGraph(model), (log_mel,), {"log_mel": {0: "batch", 2: "frames"}}, ["codes"]),
        "decoder": (_DecoderGraph(model, guidance), (codes, noise),
                    {"codes": {0: "batch", 1: "frames"}, "noise": {0: "batch", 2: "frames"}}, ["log_mel"]),
        "vocoder": (_VocoderGraph(vocoder), (log_mel,), {"log_mel": {0: "batch", 2: "frames"}}, ["real", "imag"]),
    }
    pulse = bool(cfg.decoder.pulse_phase and model.pitch is not None)
    if pulse:
        graphs["pitch"] = (_PitchGraph(model), (codes,), {"codes": {0: "batch", 1: "frames"}}, ["voicing_logit", "octaves"])
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.", ignore_cleanup_errors=True) as tmp:
        t = Path(tmp)
        # checked on a different batch and length than the export's example (dynamic axes really dynamic)
        m2 = n // 2 + 3
        probe = {"encoder": (log_mel[:1, :, :m2],), "decoder": (codes[:1, :m2], noise[:1, :, :m2]), "vocoder": (log_mel[:1, :, :m2],),
                 "pitch": (codes[:1, :m2],)}  # fmt: skip
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        with torch.no_grad():
            for name, (module, args, inputs, outputs) in graphs.items():
                _export(module, args, t / f"{name}.onnx", inputs, outputs)
                sess = ort.InferenceSession(str(t / f"{name}.onnx"), so, providers=["CPUExecutionProvider"])
                for a in (args, probe[name]):
                    got = sess.run(None, {k: v.numpy() for k, v in zip(inputs, a, strict=True)})
                    want = module(*a)
                    want = want if isinstance(want, tuple) else (want,)
                    for o, ref, label in zip(got, want, outputs, strict=True):
                        if ref.dtype == torch.long:
                            agree = float((torch.from_numpy(o) == ref).float().mean())
                            if agree < 0.99:
                                raise RuntimeFolderError(f"{name}.onnx agrees with the torch model on {agree:.1%} of {label}")
                        else:
                            _check(f"{name}:{label}", o, ref, atol=1e-3)
        np.savez(t / "dsp.npz", mel_fb=model.frontend.fb.numpy())
        vc = vocoder.config
        meta = {
            "format": FORMAT_VERSION,
            "key": key,
            "fingerprint": model.fingerprint(),
            "accepted_fingerprints": [x for x in (model.fingerprint(), model.legacy_fingerprint()) if x],
            "sample_rate": cfg.mel.sample_rate,
            "hop_length": cfg.mel.hop_length,
            "n_fft": cfg.mel.n_fft,
            "win_length": cfg.mel.win_length,
            "n_mels": cfg.mel.n_mels,
            "log_floor": cfg.mel.log_floor,
            "max_frames": w,
            "window_context": cfg.window_context,
            "codebook_size": model.codebook_size,
            "guidance": guidance,
            "noise_scale": float(cfg.decoder.noise_scale),  # decoder.noise_scale, applied to the noise input
            # decoder.pulse_phase: voiced frames take the phase of a pulse train at the predicted F0
            "pulse_phase": {"max_hz": float(cfg.decoder.pulse_phase_max_hz), "floor_hz": F0_FLOOR_HZ,
                            "interpolate": cfg.decoder.pulse_f0 == "linear",
                            "voiced_prob": float(cfg.decoder.pulse_voiced_prob),
                            "ceil_hz": F0_CEIL_HZ, "reference_hz": F0_REFERENCE_HZ} if pulse else None,  # fmt: skip
            "vocoder": {
                "n_fft": vc.n_fft,
                "hop_length": vc.hop_length,
                "consistency_passes": vc.consistency_passes if cfg.decoder.vocoder_passes is None
                else int(cfg.decoder.vocoder_passes),  # decoder.vocoder_passes overrides the vocoder's own
                "consistency_step": vc.consistency_step,
                "max_log_gain": vocoder.consistency.max_log_gain,
            },
            "opset": OPSET,
            "torch": torch.__version__,
        }
        meta["files"] = {f.name: f.stat().st_size for f in sorted(t.iterdir())}  # find_runtime checks them
        (t / "runtime.json").write_text(json.dumps(meta, indent=2) + "\n")
        replace_dir(t, out)
    return out


__all__ = ["OPSET", "export_runtime"]
