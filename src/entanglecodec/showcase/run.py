"""The showcase pipeline behind ``make demo``: tokens, reconstructions, baselines, scores, captions.

For every demo clip (:mod:`.clips`): encode (token count, bitrate, distinct codes), decode, run
Codec2 700C and Opus 6 kbps on the same audio (:mod:`entanglecodec.eval.systems`), score all three
against the original with the evaluation's own :func:`~entanglecodec.eval.reconstruct.score_clip`,
and let the retrieval towers rank the candidate captions (:func:`rank_captions`). :mod:`.page`
turns the result into one mel PNG and a self-contained ``index.html``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .clips import SAMPLE_RATE, DemoClip, candidate_captions

CODEC_NAME = "EntangleCodec"
BASELINES: tuple[tuple[str, str, str], ...] = (
    ("codec2-700C", "c2enc", "codec2"),
    ("opus-6k", "opusenc", "opus-tools"),
)
"""``(system name, tool, Debian package)`` of the classical baselines run beside the model."""

SCORES: tuple[tuple[str, str, bool], ...] = (
    ("mel_l1", "log-mel L1 (nats) ↓", False),
    ("mr_stft", "MR-STFT ↓", False),
    ("stoi", "STOI ↑", True),
    ("pesq", "PESQ-WB ↑", True),
    ("spk_sim", "speaker SIM ↑", True),
)
"""``(score key, column header, speech only)`` shown in the demo's table."""


@dataclass
class ClipResult:
    """Everything the demo shows for one clip.

    Attributes:
        clip: the clip.
        codes: ``int [F]`` token ids.
        outputs: system name -> ``float32 [S]`` reconstruction at 24 kHz (``CODEC_NAME`` first).
        bitrates: system name -> bits per second.
        scores: system name -> score key -> value (``NaN``: does not apply or failed, see notes).
        ranking: ``(caption, cosine similarity)`` best first; empty without a caption tower.
        encode_s / decode_s: wall time of the model's encode / decode.
    """

    clip: DemoClip
    codes: np.ndarray
    outputs: dict[str, np.ndarray]
    bitrates: dict[str, float]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    ranking: list[tuple[str, float]] = field(default_factory=list)
    encode_s: float = 0.0
    decode_s: float = 0.0

    @property
    def distinct_codes(self) -> int:
        return int(np.unique(self.codes).size)

    @property
    def caption_rank(self) -> int | None:
        """1-based rank of the clip's true caption, ``None`` without a ranking."""
        for i, (caption, _) in enumerate(self.ranking):
            if caption == self.clip.caption:
                return i + 1
        return None


def baseline_systems(notes: list[str]) -> list[Any]:
    """Codec2 700C and Opus 6 kbps, each only when its command-line tool is installed (else a note)."""
    from ..eval.systems import Codec2System, OpusSystem

    systems: list[Any] = []
    for name, tool, package in BASELINES:
        if shutil.which(tool) is None:
            notes.append(f"{name} left out: '{tool}' is not installed (apt-get install {package})")
            continue
        systems.append(Codec2System("700C") if name.startswith("codec2") else OpusSystem(6.0))
    return systems


def rank_captions(model: Any, clips: list[DemoClip], captions: list[str]) -> list[list[tuple[str, float]]]:
    """Rank ``captions`` for every clip by cosine similarity of the retrieval embeddings.

    Returns:
        One list per clip of ``(caption, similarity)``, best first.
    """
    import torch

    text = model.embed_text(captions)  # [C, D], unit norm
    out = []
    for c in clips:
        audio = model.embed_audio(torch.from_numpy(c.wav)[None], SAMPLE_RATE)  # [1, D]
        sims = (audio @ text.t())[0].tolist()
        out.append(sorted(zip(captions, sims, strict=True), key=lambda p: -p[1]))
    return out


def process_clip(model: Any, clip: DemoClip, systems: list[Any], notes: list[str]) -> ClipResult:
    """Encode, decode, run the baselines and score all of them on one clip."""
    import torch

    from ..eval.reconstruct import Clip, score_clip

    x = torch.from_numpy(clip.wav)
    t0 = time.perf_counter()
    tokens = model.encode(x, SAMPLE_RATE)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    audio = model.decode(tokens)
    t_dec = time.perf_counter() - t0
    rec = audio.wav[0, : int(audio.lengths[0])].cpu().numpy().astype(np.float32)
    peak = float(np.abs(rec).max()) if rec.size else 0.0
    if peak > 0.999:  # as save_audio would do, but before scoring, so the WAV is what was scored
        rec *= 0.999 / peak
        notes.append(f"{CODEC_NAME} output of clip '{clip.name}' peaked at {peak:.2f}x full scale: scaled down as a whole")
    outputs = {CODEC_NAME: rec}
    bitrates = {CODEC_NAME: float(model.bitrate)}
    for s in systems:
        try:
            outputs[s.name] = s.process(clip.wav)
            bitrates[s.name] = float(s.bitrate)
        except Exception as e:  # a tool that fails on this clip: note it, keep the others
            notes.append(f"{s.name} on clip '{clip.name}': {' '.join(str(e).split())[:200]}")
    ev = Clip(clip.name, Path(f"{clip.name}.wav"), clip.domain, clip.text, clip.seconds, clip.language)
    scores = {}
    for name, est in outputs.items():
        row, _ = score_clip(ev, clip.wav, est, notes, f0_method="dio", pitch_method="dio")
        scores[name] = {k: float(row.get(k, float("nan"))) for k, _, _ in SCORES}
    codes = tokens.codes[0, : int(tokens.lengths[0])].cpu().numpy()
    return ClipResult(clip, codes, outputs, bitrates, scores, [], t_enc, t_dec)


@dataclass
class Showcase:
    """The whole demo run: model description, per-clip results, notes (what was left out and why)."""

    model_label: str
    trained: bool
    fingerprint: str
    frame_rate: float
    codebook_size: int
    results: list[ClipResult]
    notes: list[str]
    captions: list[str]
    seconds: float = 0.0


def load_demo_model(checkpoint: str | Path | None, notes: list[str]) -> tuple[Any, str, bool]:
    """The model to show: ``checkpoint`` (or the default); without any trained model, an UNTRAINED
    ``tiny`` model so the pipeline still runs (noted loudly). Returns ``(model, label, trained)``."""
    import torch

    from ..codec.model import CheckpointError, EntangleCodec
    from ..config import EntangleCodecConfig

    try:
        model = EntangleCodec.from_pretrained(checkpoint)
        return model, str(checkpoint) if checkpoint else "bundled default", True
    except CheckpointError as e:
        if checkpoint is not None:
            raise
        notes.append(
            f"No trained EntangleCodec model found ({e}). The pipeline runs with an UNTRAINED tiny model instead: "
            "shapes, token files and timings are real, its audio is noise."
        )
    torch.manual_seed(0)
    model = EntangleCodec(EntangleCodecConfig.preset("tiny"), build_text_encoder=False).eval()
    return model, "untrained tiny preset (random weights)", False


def run_showcase(clips: list[DemoClip], checkpoint: str | Path | None, notes: list[str]) -> Showcase:
    """Run the model and the baselines on ``clips``; rank captions when the model has a caption tower."""
    t_start = time.perf_counter()
    model, label, trained = load_demo_model(checkpoint, notes)
    systems = baseline_systems(notes)
    results = [process_clip(model, c, systems, notes) for c in clips]
    captions = candidate_captions(clips)
    if model.has_text_encoder and clips:
        try:
            for r, ranking in zip(results, rank_captions(model, clips, captions), strict=True):
                r.ranking = ranking
        except (RuntimeError, OSError, ValueError) as e:
            notes.append(f"caption ranking not run: {' '.join(str(e).split())[:200]}")
    else:
        notes.append("caption ranking not run: the model has no caption tower")
    return Showcase(
        label, trained, model.fingerprint(), float(model.frame_rate), int(model.codebook_size), results, notes, captions,
        time.perf_counter() - t_start,
    )
