"""Decoding is pinned: the bundled model decodes two fixed token sequences (1 s and 10.5 s, the
second crossing the 10 s window) to what the code before the speed work decoded
(``tests/core/data/decode-reference.npz``, written by ``scripts/pin_decode_reference.py``).

Re-pinned once since, deliberately: when the decoder's initial noise moved from torch's generator
to NumPy's (:func:`entanglecodec.codec.sampling.decode_noise`, so that the ONNX runtime draws the
same noise). Before re-pinning, the code with torch's noise still matched the old reference.
The reference is also re-pinned whenever the bundled weights change (last: session 21,
fingerprint ``ddbb227668d7ba29``), with the code of that commit. The torch backend decodes on one
thread, as the pin does: with these weights, the float noise of another thread count moves one
frame of the 10.5 s item by 1.6 % RMS through the pulse phase (without it: 9e-6). A pulse lands on
a whole sample, so noise on a cycle count that sits at a sample boundary moves one pulse by one sample.
Another CPU's float kernels do the same (session 22, an AMD EPYC: frames 289-294 of the 10.5 s item by up
to 0.86 % RMS on torch, the ONNX runtime within 3e-6), so the float32 check allows one such run of frames.

* float32, on torch and on the compiled ONNX runtime: every frame's RMS within 1e-4 relative, but for at
  most one run of up to 8 frames within 2 % (one pulse moved by a sample), and three exact 960-sample
  spans (start, the window seam, end) within 2e-4 absolute: float noise only (thread count, batching,
  FFT sizes, CPU).
* bfloat16 (only where the CPU has native bfloat16 matrix units): the same items within the
  stated tolerance of the bfloat16 flow decoder (see ``reports/decode-profile.md``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "checkpoints" / "entanglecodec-small"
REFERENCE = Path(__file__).parent / "data" / "decode-reference.npz"

needs_bundled = pytest.mark.skipif(not BUNDLED.is_dir(), reason="the bundled checkpoint is not in this checkout")


def _pin_module():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("pin_decode_reference", ROOT / "scripts" / "pin_decode_reference.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def decoded() -> dict[str, object]:
    from entanglecodec import EntangleCodec

    ref = dict(np.load(REFERENCE))
    model = EntangleCodec.from_pretrained(BUNDLED, build_text_encoder=False)
    assert model.fingerprint() == str(ref["fingerprint"]), (
        "the bundled checkpoint changed: re-pin with `PYTHONPATH=src python scripts/pin_decode_reference.py` "
        "using float32 code whose output is the reference"
    )
    codes, lengths = torch.from_numpy(ref["codes"]), torch.from_numpy(ref["lengths"])
    return {"model": model, "ref": ref, "codes": codes, "lengths": lengths, "pin": _pin_module()}


def _summaries(d: dict[str, object], precision: str) -> list[tuple[np.ndarray, np.ndarray]]:
    model, pin = d["model"], d["pin"]
    if precision == "onnx":  # the compiled runtime (float32), item by item
        from entanglecodec.runtime import OnnxCodec, build_runtime, find_runtime, resolve_pair

        pair = resolve_pair(BUNDLED, None)
        assert pair[1] is not None
        rt = OnnxCodec(find_runtime(*pair) or build_runtime(*pair))
        lengths = d["lengths"].tolist()  # type: ignore[attr-defined]
        return [pin.summarise(rt.decode(d["codes"][i, :n].numpy(), seed=0), n * 480) for i, n in enumerate(lengths)]  # type: ignore[index]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the pin's thread count: see the module docstring
    try:
        audio = model.decode(d["codes"], d["lengths"], seed=0, precision=precision)  # type: ignore[attr-defined]
    finally:
        torch.set_num_threads(threads)
    return [pin.summarise(audio.wav[i].numpy(), n) for i, n in enumerate(audio.lengths.tolist())]  # type: ignore[attr-defined]


@needs_bundled
@pytest.mark.parametrize("backend", ["float32", "onnx"])
def test_float32_decode_matches_the_pinned_reference(decoded: dict[str, object], backend: str) -> None:
    if backend == "onnx":
        pytest.importorskip("onnxruntime")
    ref = decoded["ref"]
    for i, (rms, spans) in enumerate(_summaries(decoded, backend)):
        r_rms, r_spans = ref[f"rms{i}"], ref[f"spans{i}"]  # type: ignore[index]
        assert rms.shape == r_rms.shape
        rel = np.abs(rms - r_rms) / np.maximum(r_rms, 1e-4)
        moved = np.flatnonzero(rel >= 1e-4)
        # one pulse of the pulse phase moved by one sample (float noise at a sample boundary) touches
        # the few frames whose windows hold it: a single run of at most 8 frames, each within 2 %
        one_pulse = moved.size <= 8 and (moved.size == 0 or moved[-1] - moved[0] < 8) and rel.max() < 2e-2
        assert one_pulse, f"item {i}: frame RMS moved by up to {rel.max():.2e} on {moved.size} frames {moved[:10]}"
        err = np.abs(spans - r_spans).max()
        assert err < 2e-4, f"item {i}: exact spans moved by up to {err:.2e}"


@needs_bundled
@pytest.mark.skipif(not __import__("entanglecodec.codec.precision", fromlist=["x"]).native_cpu_bf16(),
                    reason="this CPU has no native bfloat16 matrix units")
def test_bfloat16_decode_stays_within_its_stated_tolerance(decoded: dict[str, object]) -> None:
    ref = decoded["ref"]
    for i, (rms, _spans) in enumerate(_summaries(decoded, "bfloat16")):
        r_rms = ref[f"rms{i}"]  # type: ignore[index]
        loud = r_rms > 1e-3 * r_rms.max()
        db = np.abs(20 * np.log10(np.maximum(rms[loud], 1e-9) / r_rms[loud]))
        assert np.median(db) < 0.15 and np.percentile(db, 99) < 1.0, (
            f"item {i}: bfloat16 frame levels differ from float32 by median {np.median(db):.2f} dB, "
            f"p99 {np.percentile(db, 99):.2f} dB"
        )


def test_precision_names_resolve_and_bad_ones_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from entanglecodec.codec.precision import PRECISION_ENV, native_cpu_bf16, resolve_precision

    cpu = torch.device("cpu")
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert resolve_precision("float32", cpu) == torch.float32
    assert resolve_precision("bfloat16", cpu) == torch.bfloat16
    assert resolve_precision(None, cpu) == (torch.bfloat16 if native_cpu_bf16() else torch.float32)
    assert resolve_precision("auto", torch.device("meta")) == torch.float32  # auto: bfloat16 on CPUs only
    monkeypatch.setenv(PRECISION_ENV, "float32")
    assert resolve_precision(None, cpu) == torch.float32
    monkeypatch.setenv(PRECISION_ENV, "half")
    with pytest.raises(ValueError, match=PRECISION_ENV):
        resolve_precision(None, cpu)
    with pytest.raises(ValueError, match="float32, bfloat16"):
        resolve_precision("fp8", cpu)


def test_decode_refuses_an_unknown_precision(tiny_model) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="decode precision"):
        tiny_model.decode(torch.zeros(1, 10, dtype=torch.long), precision="half")


@needs_bundled
@pytest.mark.parametrize("pulse_phase", [False, True])
def test_vocoder_windows_change_nothing_but_float_noise(
    decoded: dict[str, object], monkeypatch: pytest.MonkeyPatch, pulse_phase: bool
) -> None:
    """The vocoder stage runs in windows of VOCODER_WINDOW_FRAMES (30 s) instead of the flow
    decoder's 500 frames: valid because the bundled vocoder's receptive field is narrower than the
    window context, which this checks on a 26 s decoded mel vocoded in 500- and 3000-frame windows.
    With ``decoder.pulse_phase`` each window builds its piece of one continuous pulse train."""
    import entanglecodec.codec.model as codec_model

    model = decoded["model"]
    codes = torch.from_numpy(np.random.default_rng(3).integers(0, 8192, (1, 1300)))
    log_mel, flen = model.decode_log_mel(codes, precision="float32")  # type: ignore[attr-defined]
    monkeypatch.setattr(model.config.decoder, "pulse_phase", pulse_phase)  # type: ignore[attr-defined]
    pitch = model._pulse_pitch(codes, None, None)  # type: ignore[attr-defined]
    assert (pitch is not None) == pulse_phase
    outs = []
    for frames in (500, 3000):
        monkeypatch.setattr(codec_model, "VOCODER_WINDOW_FRAMES", frames)
        with torch.no_grad():
            outs.append(model._vocode(log_mel, flen, pitch=pitch)[0].numpy())  # type: ignore[attr-defined]
    assert outs[0].shape == outs[1].shape == (1300 * 480,)
    err = np.abs(outs[0] - outs[1]).max()
    assert err < 2e-4 * max(1.0, float(np.abs(outs[1]).max())), f"windowed vocoding moved samples by up to {err:.2e}"


@needs_bundled
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_vocoder_network_runs_in_the_decode_precision(decoded: dict[str, object], precision: str) -> None:
    """``precision`` covers the vocoder's ConvNeXt network as well as the flow decoder (the speed
    work of reports/decode-profile.md); its iSTFT head and mel-consistency passes stay float32."""
    model = decoded["model"]
    seen: dict[str, torch.dtype] = {}
    voc = model.vocoder  # type: ignore[attr-defined]
    hooks = [
        voc.blocks[0].pwconv1.register_forward_hook(lambda _m, _i, out: seen.__setitem__("network", out.dtype)),
        voc.head.register_forward_hook(lambda _m, _i, out: seen.__setitem__("head", out.dtype)),
    ]
    try:
        audio = model.decode(decoded["codes"][:1, :50], torch.tensor([50]), precision=precision)  # type: ignore[attr-defined,index]
    finally:
        for h in hooks:
            h.remove()
    assert seen == {"network": getattr(torch, precision), "head": torch.float32}
    assert audio.wav.dtype == torch.float32
