"""Per-stage time of the compiled runtime's decode of a 10 s clip, 2 threads (reports/decode-profile.md §9).

    .venv/bin/python scripts/onnx_decode_profile.py

Median of 7 calls per stage after a warm-up, on a voiced test signal encoded by the bundled model.
The stages are timed one by one, so their sum is below the whole decode (which also pays for thread
wake-ups between the ONNX sessions and for fresh output buffers).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from entanglecodec.runtime import OnnxCodec, build_runtime, dsp, find_runtime, resolve_pair


def median_ms(f: Callable[[], object], n: int = 7) -> float:
    f()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main() -> None:
    codec_dir, voc_dir = resolve_pair(None, None)
    assert voc_dir is not None, "the bundled model decodes with a neural vocoder"
    rt = OnnxCodec(find_runtime(codec_dir, voc_dir) or build_runtime(codec_dir, voc_dir), threads=2)
    rng = np.random.default_rng(0)
    t = np.arange(240000) / 24000
    voiced = 0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    wav = (voiced + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    codes = rt.encode(wav, 24000)
    m, v = rt.meta, rt.meta["vocoder"]
    mel = rt.decode_mel(codes)
    pitch = rt.pitch(codes)
    assert pitch is not None, "the bundled model decodes with decoder.pulse_phase"
    n, hop, p = mel.shape[1], rt.hop_length, m["pulse_phase"]
    real, imag = rt._session("vocoder").run(None, {"log_mel": mel[None]})
    spec = real[0] + 1j * imag[0]
    net_wav = dsp.istft(spec, v["hop_length"], rt.voc_window, n * v["hop_length"])

    def pulse() -> np.ndarray:
        return dsp.pulse_excitation(pitch[0], pitch[1], hop, m["sample_rate"], 0, n * hop, p["floor_hz"], p["ceil_hz"],
                                    bool(p.get("interpolate", False)))  # fmt: skip

    exc = pulse()
    swapped = dsp.adopt_phase(net_wav, exc, m["n_fft"], hop, m["sample_rate"], p["max_hz"])
    rows = {
        "encode": lambda: rt.encode(wav, 24000),
        "flow decoder (decode_mel)": lambda: rt.decode_mel(codes),
        "pitch graph": lambda: rt.pitch(codes),
        "vocoder network": lambda: rt._session("vocoder").run(None, {"log_mel": mel[None]}),
        "vocoder iSTFT": lambda: dsp.istft(spec, v["hop_length"], rt.voc_window, n * v["hop_length"]),
        "pulse excitation": pulse,
        "adopt phase": lambda: dsp.adopt_phase(net_wav, exc, m["n_fft"], hop, m["sample_rate"], p["max_hz"]),
        f"consistency x{v['consistency_passes']}": lambda: dsp.consistency_filter(
            swapped, mel, rt.mel_fb, v["consistency_passes"], v["consistency_step"], m["n_fft"], hop, m["log_floor"],
            v["max_log_gain"],
        ),
        "whole decode": lambda: rt.decode(codes),
    }
    for name, f in rows.items():
        print(f"{name:28s} {median_ms(f):8.1f} ms")


if __name__ == "__main__":
    main()
