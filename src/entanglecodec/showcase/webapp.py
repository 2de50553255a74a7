"""The web demo behind ``entanglecodec serve`` (Gradio, the ``[demo]`` extra).

:func:`build_app` returns the ``gr.Blocks``: a *Codec* tab (upload or record audio -> tokens with
their rate, ids and a token-over-time strip, the reconstruction to play, the mel comparison and
caption retrieval; model / steps / guidance controls), then every tab registered with
:func:`register_tab`. Tabs from other parts of the package (the language-model tabs: TTS, TTA,
ask) plug in there: a module listed in :data:`TAB_MODULES` is imported when it exists and calls
:func:`register_tab` at import; nothing here depends on it.

Everything the server writes goes to one temporary directory (:class:`ServeContext.workdir`:
Gradio's uploads and cached outputs); pictures are drawn with NumPy (no plotting library, no
font cache written under ``$HOME``).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MAX_SECONDS = 30.0
"""Longest upload accepted by default (``serve --max-seconds``)."""
BUNDLED = "bundled default"
"""Name of the default model in the model menu."""
TAB_MODULES: tuple[str, ...] = ("entanglecodec.lm.serve",)
"""Modules imported (when they exist) so that they can :func:`register_tab` their tabs."""


@dataclass
class ServeContext:
    """What every tab shares.

    Attributes:
        checkpoints: model menu: name -> checkpoint spec (directory or Hub id; ``None``: the default).
        max_seconds: longest accepted upload.
        workdir: the server's temporary directory (the only place it writes).
        captions: default candidate captions of the retrieval box.
    """

    checkpoints: dict[str, str | None]
    max_seconds: float
    workdir: Path
    captions: list[str]
    _models: dict[str, Any] = field(default_factory=dict)

    def model(self, name: str) -> Any:
        """The model named ``name`` in the menu, loaded once (caption tower built on first use)."""
        if name not in self.checkpoints:
            raise ValueError(f"unknown model {name!r}: choose one of {sorted(self.checkpoints)}")
        if name not in self._models:
            from ..codec.model import EntangleCodec

            self._models[name] = EntangleCodec.from_pretrained(self.checkpoints[name])
        return self._models[name]


TabBuilder = Callable[[ServeContext], None]
"""Builds one tab's components inside an open ``gr.Tab`` (event handlers included)."""
_TABS: list[tuple[str, TabBuilder]] = []


def register_tab(title: str, build: TabBuilder) -> None:
    """Add a tab after the Codec tab (a second registration of ``title`` replaces the first)."""
    for i, (t, _) in enumerate(_TABS):
        if t == title:
            _TABS[i] = (title, build)
            return
    _TABS.append((title, build))


def registered_tabs() -> list[tuple[str, TabBuilder]]:
    """Tabs registered so far, after importing the existing :data:`TAB_MODULES`."""
    for name in TAB_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not name.startswith(e.name):  # a missing dependency *inside* it is a bug
                raise
    return list(_TABS)


# ---------------------------------------------------------------------------------------------
# Pictures (NumPy only)
# ---------------------------------------------------------------------------------------------
_MAGMA_ANCHORS = np.array(
    [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]], dtype=np.float64
)


def colorize(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """``[H, W]`` values -> ``uint8 [H, W, 3]`` RGB (magma-like ramp), row 0 at the bottom."""
    v = np.asarray(values, dtype=np.float64)
    lo = float(v.min()) if lo is None else lo
    hi = float(v.max()) if hi is None else hi
    t = np.clip((v - lo) / max(hi - lo, 1e-9), 0.0, 1.0) * (len(_MAGMA_ANCHORS) - 1)
    i = np.minimum(t.astype(int), len(_MAGMA_ANCHORS) - 2)
    f = (t - i)[..., None]
    rgb = _MAGMA_ANCHORS[i] * (1 - f) + _MAGMA_ANCHORS[i + 1] * f
    return rgb[::-1].astype(np.uint8)


def mel_comparison(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """Log-mels ``[n_mels, F]`` of both side by side on the original's scale, 3x taller: ``uint8 [H, W, 3]``."""
    lo, hi = float(original.min()), float(original.max())
    gap = np.full((original.shape[0] * 3, 6, 3), 255, dtype=np.uint8)
    a, b = (np.repeat(colorize(m, lo, hi), 3, axis=0) for m in (original, reconstruction))
    return np.concatenate([a, gap, b], axis=1)


def token_strip(codes: np.ndarray, codebook_size: int, height: int = 48) -> np.ndarray:
    """One column per token (colour = id / codebook size) repeated 4x wide: ``uint8 [height, 4F, 3]``."""
    row = np.asarray(codes, dtype=np.float64)[None, :] / max(codebook_size - 1, 1)
    return np.repeat(np.repeat(colorize(row, 0.0, 1.0), height, axis=0), 4, axis=1)


# ---------------------------------------------------------------------------------------------
# The Codec tab
# ---------------------------------------------------------------------------------------------
def check_upload(path: str | None, max_seconds: float) -> tuple[int, int]:
    """``(frames, sample_rate)`` of an upload, or a ``ValueError`` saying what is wrong with it."""
    from ..audio import audio_info

    if not path:
        raise ValueError("no audio: upload a file or record a clip first")
    name = Path(path).name
    try:
        frames, sr = audio_info(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"{name}: not a readable audio file ({' '.join(str(e).split())[:160]})") from e
    if frames == 0:
        raise ValueError(f"{name}: the audio is empty (0 samples)")
    if frames / sr > max_seconds:
        raise ValueError(f"{name}: {frames / sr:.1f} s is longer than this server's limit of {max_seconds:g} s")
    return frames, sr


def process(
    ctx: ServeContext, path: str | None, model_name: str, steps: float, guidance: float, captions: str
) -> tuple[str, str, np.ndarray, tuple[int, np.ndarray], np.ndarray, dict[str, float]]:
    """One request of the Codec tab.

    Returns:
        ``(summary markdown, token ids, token strip image, (24000, reconstruction int16),
        mel comparison image, caption -> probability)``.

    Raises:
        ValueError: a bad upload or setting (shown to the user as one message).
    """
    import torch

    from ..audio import load_audio
    from ..codec.sampling import check_sampling

    check_upload(path, ctx.max_seconds)
    assert path is not None
    n_steps, g = check_sampling(int(steps), float(guidance))
    model = ctx.model(model_name)
    wav, sr = load_audio(path, model.sample_rate)
    x = torch.from_numpy(wav)
    tokens = model.encode(x, sr)
    audio = model.decode(tokens, steps=n_steps, guidance=g)
    rec = audio.wav[0, : int(audio.lengths[0])].cpu().numpy()
    codes = tokens.codes[0, : int(tokens.lengths[0])].cpu().numpy()
    with torch.no_grad():
        mels = model.frontend.log_mel(torch.stack([x, torch.from_numpy(rec).float()]))
    ranking: dict[str, float] = {}
    wanted = [c.strip() for c in captions.splitlines() if c.strip()]
    if wanted and model.has_text_encoder:
        from .clips import DemoClip
        from .run import rank_captions

        clip = DemoClip("upload", "unknown", wav, "", Path(path).name)
        (ranked,) = rank_captions(model, [clip], wanted)
        scale = float(model.training_tensors.get("logit_scale", torch.tensor(math.log(100.0))).exp())
        logits = np.array([s for _, s in ranked]) * min(scale, 100.0)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        ranking = {c: float(p) for (c, _), p in zip(ranked, probs, strict=True)}
    peak = float(np.abs(rec).max()) if rec.size else 0.0
    gain = 0.999 / peak if peak > 0.999 else 1.0
    summary = (
        f"**{codes.size} tokens** for {wav.size / model.sample_rate:.2f} s at {model.frame_rate} Hz · "
        f"**{model.bitrate:.0f} bit/s** (codebook {model.codebook_size}) · "
        f"**{np.unique(codes).size} distinct codes** · steps {n_steps}, guidance {g:g}"
        + (f" · output scaled down {20 * math.log10(1 / gain):.1f} dB (peak {peak:.2f}x full scale)" if gain < 1 else "")
    )
    pcm = (np.clip(rec * gain, -1.0, 1.0) * 32767).astype(np.int16)
    ids = " ".join(str(int(c)) for c in codes)
    return summary, ids, token_strip(codes, model.codebook_size), (model.sample_rate, pcm), \
        mel_comparison(mels[0].numpy(), mels[1].numpy()), ranking


def codec_tab(ctx: ServeContext) -> None:
    """Components and events of the Codec tab (inside an open ``gr.Tab``)."""
    import gradio as gr

    with gr.Row():
        with gr.Column():
            inp = gr.Audio(sources=["upload", "microphone"], type="filepath", label="audio (upload or record)",
                           elem_id="input-audio")
            names = list(ctx.checkpoints)
            model = gr.Dropdown(names, value=names[0], label="model")
            steps = gr.Slider(1, 32, value=1, step=1, label="Euler steps of the flow decoder")
            # starts at the first model's own default (decoder.guidance in its config.json)
            default_g = float(ctx.model(names[0]).config.decoder.guidance)
            guidance = gr.Slider(0.0, 10.0, value=default_g, step=0.1, label="classifier-free guidance (0: off)")
            captions = gr.Textbox("\n".join(ctx.captions), lines=6, label="candidate captions (one per line)")
            run = gr.Button("Tokenise and reconstruct", variant="primary", elem_id="run")
        with gr.Column():
            summary = gr.Markdown(elem_id="summary")
            out_audio = gr.Audio(label="reconstruction", type="numpy", interactive=False, elem_id="reconstruction",
                                 waveform_options=gr.WaveformOptions(show_recording_waveform=False))
            strip = gr.Image(label="tokens over time (colour = code id)", type="numpy", interactive=False)
            ids = gr.Textbox(label="token ids", lines=3, max_lines=6, buttons=["copy"])
            mel = gr.Image(label="log-mel: original | reconstruction", type="numpy", interactive=False)
            ranking = gr.Label(label="caption retrieval", num_top_classes=5)

    def handler(path: str | None, name: str, n: float, g: float, caps: str) -> Any:
        try:
            return process(ctx, path, name, n, g, caps)
        except ValueError as e:
            raise gr.Error(" ".join(str(e).split())) from None

    run.click(handler, [inp, model, steps, guidance, captions], [summary, ids, strip, out_audio, mel, ranking],
              api_name="reconstruct")


def build_app(ctx: ServeContext, extra_tabs: list[tuple[str, TabBuilder]] | None = None) -> Any:
    """The ``gr.Blocks`` of the web demo: the Codec tab, then the registered and ``extra_tabs``."""
    import gradio as gr

    with gr.Blocks(title="EntangleCodec") as app:
        gr.Markdown(
            "# EntangleCodec\nOne stream of discrete tokens at 50 Hz from a single codebook, for speech, music "
            f"and sound. Uploads up to {ctx.max_seconds:g} s."
        )
        with gr.Tabs():
            with gr.Tab("Codec"):
                codec_tab(ctx)
            for title, build in [*registered_tabs(), *(extra_tabs or [])]:
                with gr.Tab(title):
                    build(ctx)
    return app
