"""``make demo``: tokenise and rebuild a sample clip with the bundled default model.

The table shows tokens, bitrate, timings and scores of the reconstruction (STOI, log-mel L1, ASR
transcripts) next to the mel-oracle path (input mel -> vocoder), which bounds any token decoder.
Where no trained model is installed (e.g. a wheel without ``checkpoints/``), the demo says so
plainly and runs the same pipeline with an *untrained* ``tiny`` model: shapes, token file and
timings are real, its audio is noise.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import cast

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ..audio import load_audio, save_audio

DEMO_SENTENCE = "The quick brown fox jumps over the lazy dog, and the tokenizer writes it down at fifty frames a second."


def demo_clip(sample_rate: int = 24000) -> tuple[np.ndarray, str]:
    """A demo clip: flite or espeak-ng speech when installed, else a synthetic chord with a click track."""
    for cmd in (["flite", "-voice", "slt", "-t", DEMO_SENTENCE, "-o"], ["espeak-ng", DEMO_SENTENCE, "-w"]):
        if shutil.which(cmd[0]):
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "demo.wav"
                try:
                    subprocess.run([*cmd, str(path)], check=True, capture_output=True, timeout=60)
                    wav, _ = load_audio(path, sample_rate)
                    return wav, f"{cmd[0]} speech: {DEMO_SENTENCE!r}"
                except (subprocess.SubprocessError, ValueError):
                    continue
    t = np.arange(int(4.0 * sample_rate)) / sample_rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63)) / 3
    clicks = (np.mod(t, 0.5) < 0.01) * np.random.default_rng(0).standard_normal(t.size)
    return (0.3 * chord * np.exp(-np.mod(t, 1.0)) + 0.2 * clicks).astype(np.float32), "synthetic chord + clicks"


def quality_rows(
    reference: np.ndarray,
    reconstruction: np.ndarray,
    oracle: np.ndarray,
    sample_rate: int,
    what: str,
    asr: bool = True,
) -> list[tuple[str, str]]:
    """Demo table rows scoring ``reconstruction`` and ``oracle`` (``[S]`` float waveforms) against ``reference``.

    STOI and log-mel L1 (nats) for both; for speech, Whisper transcripts (tiny.en) of the input and of
    the reconstruction (``asr``; pointless and slow on the noise of an untrained model). A metric
    that cannot run here is reported as such, never faked.
    """
    from ..eval import metrics as M

    rows: list[tuple[str, str]] = []
    for label, est in (("reconstruction", reconstruction), ("mel oracle", oracle)):
        try:
            stoi = M.stoi(reference, est, sample_rate)
            mel = M.log_mel_l1(reference, est, sample_rate)
            rows.append((f"{label} vs input", f"STOI {stoi:.3f}, log-mel L1 {mel:.3f} nats"))
        except (M.MetricError, ImportError) as e:
            rows.append((f"{label} vs input", f"not scored: {e}"))
    if asr and "speech" in what:
        try:
            rows.append(("ASR of input", repr(M.transcribe(reference, sample_rate))))
            rows.append(("ASR of reconstruction", repr(M.transcribe(reconstruction, sample_rate))))
        except (M.MetricError, ImportError) as e:
            rows.append(("ASR", f"not run: {e}"))
    return rows


def run_demo(out: Path, checkpoint: Path | None, console: Console) -> None:
    """Run the demo and write ``input.wav``, ``tokens.npz``, ``reconstruction.wav`` (+ mel oracle) to ``out``."""
    from ..codec.model import CheckpointError, EntangleCodec
    from ..codec.tokens import TokenFile, save_tokens
    from ..config import EntangleCodecConfig

    out.mkdir(parents=True, exist_ok=True)
    wav, what = demo_clip()
    save_audio(out / "input.wav", wav, 24000)
    console.print(f"input: {what} ({wav.size / 24000:.2f} s) -> {out / 'input.wav'}")
    trained = True
    try:
        model = EntangleCodec.from_pretrained(checkpoint, build_text_encoder=False)
        source = str(checkpoint) if checkpoint else "bundled default"
    except CheckpointError as e:
        if checkpoint is not None:
            raise
        trained = False
        console.print(f"[bold yellow]No trained EntangleCodec model found.[/] {e}")
        console.print("[yellow]Running the pipeline with an UNTRAINED tiny model instead: shapes, token file and "
                      "timings are real, its audio is noise.[/]")
        torch.manual_seed(0)
        model = EntangleCodec(EntangleCodecConfig.preset("tiny"), build_text_encoder=False)
        source = "untrained tiny preset (random weights)"
    x = torch.from_numpy(wav)
    t0 = time.perf_counter()
    tokens = model.encode(x, 24000)
    t_enc = time.perf_counter() - t0
    save_tokens(
        out / "tokens.npz",
        TokenFile(tokens.codes[0].numpy(), 24000, wav.size, float(model.frame_rate), model.codebook_size,
                  model.fingerprint(), "input.wav"),
    )
    t0 = time.perf_counter()
    audio = model.decode(tokens)
    t_dec = time.perf_counter() - t0
    save_audio(out / "reconstruction.wav", audio.wav[0, : int(audio.lengths[0])], 24000)
    # Mel oracle: the input's own mel through the default (bundled neural) vocoder — the upper
    # bound of any token decoder. The untrained stand-in model keeps its cheap Griffin-Lim.
    from ..vocoder.load import MelVocoder, copy_synthesis, load_vocoder

    oracle_voc = cast(MelVocoder, model.vocoder) if trained else load_vocoder("default", model.config.mel)
    oracle = copy_synthesis(oracle_voc, x.cpu(), model.frontend.cpu())
    save_audio(out / "mel_oracle.wav", oracle, 24000)
    dur = wav.size / 24000
    codes = tokens.codes[0]
    table = Table(title=f"EntangleCodec demo — model: {source}")
    table.add_column("quantity")
    table.add_column("value")
    table.add_row("tokens", f"{codes.numel()} at {model.frame_rate} Hz (F = ceil(S/480) = {-(-wav.size // 480)})")
    table.add_row("bitrate", f"{model.bitrate:.0f} bps (codebook {model.codebook_size})")
    table.add_row("distinct tokens used", str(int(codes.unique().numel())))
    table.add_row("first tokens", " ".join(str(int(c)) for c in codes[:12]))
    table.add_row("encode time", f"{t_enc:.2f} s ({dur / max(t_enc, 1e-9):.1f}x real time)")
    table.add_row("decode time", f"{t_dec:.2f} s ({dur / max(t_dec, 1e-9):.1f}x real time, vocoder {model.config.vocoder})")
    table.add_row("mel oracle vocoder", type(oracle_voc).__name__ + (" (bundled checkpoints/vocoder-small)"
                  if type(oracle_voc).__name__ == "Vocoder" else ""))
    for name, value in quality_rows(wav, audio.wav[0, : wav.size].numpy(), oracle.numpy(), 24000, what, asr=trained):
        table.add_row(name, value)
    table.add_row("outputs", f"{out}/input.wav, tokens.npz, reconstruction.wav, mel_oracle.wav")
    Console().print(table)
    if not trained:
        console.print("[yellow]reconstruction.wav comes from random weights; mel_oracle.wav shows the vocoder "
                      "path on the real mel.[/]")
