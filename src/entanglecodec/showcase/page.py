"""What ``make demo`` writes: WAVs, token files, one mel PNG, ``results.json`` and ``index.html``.

``index.html`` is self-contained: the audio (FLAC) and the picture (PNG) are embedded as data
URIs and the page loads nothing from anywhere, so it can be mailed or opened offline; the same
audio also lies beside it as WAV files.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .clips import SAMPLE_RATE
from .run import CODEC_NAME, SCORES, ClipResult, Showcase

MEL_PNG = "mels.png"
INDEX_HTML = "index.html"
RESULTS_JSON = "results.json"


def wav_name(clip: str, system: str) -> str:
    """File name of one clip's audio: ``{clip}-original.wav`` or ``{clip}-{system}.wav``."""
    return f"{clip}-{system.lower()}.wav"


def fmt(value: float, key: str = "") -> str:
    """A score for tables: ``—`` when not applicable, 2-3 decimals otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.2f}" if key == "pesq" else f"{value:.3f}"


def systems_of(show: Showcase) -> list[str]:
    """System names in column order (the model first, then the baselines that ran)."""
    names: list[str] = []
    for r in show.results:
        names += [n for n in r.outputs if n not in names]
    return names


def plot_mels(show: Showcase, path: Path) -> None:
    """One PNG: a row per clip, columns original + every system, log-mels on the original's scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..eval.metrics import _mel_frontend
    from ..eval.reconstruct import _save_png

    fe = _mel_frontend()
    cols = ["original", *systems_of(show)]
    rows = max(1, len(show.results))
    fig, axes = plt.subplots(rows, len(cols), figsize=(2.6 * len(cols), 1.9 * rows), squeeze=False)
    for i, r in enumerate(show.results):
        waves = {"original": r.clip.wav, **r.outputs}
        with torch.no_grad():
            mels = {k: fe.log_mel(torch.from_numpy(v.astype(np.float32))[None])[0].numpy() for k, v in waves.items()}
        lo, hi = float(mels["original"].min()), float(mels["original"].max())
        for j, name in enumerate(cols):
            ax = axes[i][j]
            if name in mels:
                ax.imshow(mels[name], origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0:
                ax.set_ylabel(r.clip.name, fontsize=8)
    fig.tight_layout()
    _save_png(fig, path, dpi=90)
    plt.close(fig)


def _flac_uri(wav: np.ndarray) -> str:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return "data:audio/flac;base64," + base64.b64encode(buf.getvalue()).decode()


def results_json(show: Showcase) -> dict[str, Any]:
    """The numbers of the run (JSON-safe: ``NaN`` -> ``null``)."""
    from ..eval.report import json_safe

    return json_safe(
        {
            "model": show.model_label,
            "trained": show.trained,
            "frame_rate_hz": show.frame_rate,
            "codebook_size": show.codebook_size,
            "seconds": round(show.seconds, 2),
            "notes": show.notes,
            "candidate_captions": show.captions,
            "clips": [
                {
                    "name": r.clip.name,
                    "domain": r.clip.domain,
                    "source": r.clip.source,
                    "caption": r.clip.caption,
                    "text": r.clip.text,
                    "seconds": round(r.clip.seconds, 3),
                    "tokens": int(r.codes.size),
                    "distinct_codes": r.distinct_codes,
                    "first_tokens": [int(c) for c in r.codes[:16]],
                    "encode_s": round(r.encode_s, 3),
                    "decode_s": round(r.decode_s, 3),
                    "bitrate_bps": r.bitrates,
                    "scores": r.scores,
                    "caption_rank": r.caption_rank,
                    "ranking": [[c, round(s, 4)] for c, s in r.ranking],
                }
                for r in show.results
            ],
        }
    )


def _clip_section(r: ClipResult, systems: list[str]) -> str:
    e = html.escape
    players = "".join(
        f'<figure><figcaption>{e(name)}</figcaption><audio controls preload="auto" data-system="{e(name)}" '
        f'src="{_flac_uri(wav)}"></audio></figure>'
        for name, wav in [("original", r.clip.wav), *r.outputs.items()]
    )
    head = "".join(f"<th>{e(h)}</th>" for h in ["system", "bit/s", *[lab for _, lab, _ in SCORES]])
    rows = []
    for name in systems:
        if name not in r.scores:
            continue
        cells = [e(name), f"{r.bitrates[name]:.0f}"] + [fmt(r.scores[name].get(k, math.nan), k) for k, _, _ in SCORES]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    ranking = "".join(
        f'<li class="{"true" if c == r.clip.caption else ""}">{e(c)} <span>({s:+.3f})</span></li>'
        for c, s in r.ranking[:5]
    )
    rank = r.caption_rank
    rank_line = (
        f"<p>Caption ranking: the true caption is <b>#{rank}</b> of {len(r.ranking)} candidates.</p><ol>{ranking}</ol>"
        if rank is not None
        else "<p>Caption ranking: not run (see notes).</p>"
    )
    text = f"<p>Words: <i>{e(r.clip.text)}</i></p>" if r.clip.text else ""
    return (
        f'<section id="{e(r.clip.name)}"><h2>{e(r.clip.name)} <small>({e(r.clip.domain)}, {r.clip.seconds:.2f} s)</small></h2>'
        f"<p>Source: {e(r.clip.source)}. True caption: <i>{e(r.clip.caption)}</i></p>{text}"
        f"<p>Tokens: <b>{r.codes.size}</b> ({r.bitrates[CODEC_NAME]:.0f} bit/s), <b>{r.distinct_codes}</b> distinct codes; "
        f"first: <code>{' '.join(str(int(c)) for c in r.codes[:16])}</code>; encode {r.encode_s:.2f} s, "
        f"decode {r.decode_s:.2f} s.</p>"
        f'<div class="players">{players}</div><table><tr>{head}</tr>{"".join(rows)}</table>{rank_line}</section>'
    )


def render_html(show: Showcase, png: bytes) -> str:
    """The self-contained page (audio players, the mel picture, the tables, the notes)."""
    e = html.escape
    systems = systems_of(show)
    notes = "".join(f"<li>{e(n)}</li>" for n in show.notes)
    warn = (
        ""
        if show.trained
        else '<p class="warn">No trained model was found: the reconstructions come from RANDOM weights.</p>'
    )
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}.players{display:flex;flex-wrap:wrap;gap:1em}"
        "figure{margin:0}figcaption{font-size:.85em;color:#555}li.true{font-weight:bold}li span{color:#777}"
        ".warn{color:#a00;font-weight:bold}img{max-width:100%}section{border-top:1px solid #ddd;margin-top:1.5em}"
    )
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>EntangleCodec demo</title>"
        f"<style>{style}</style></head><body><h1>EntangleCodec demo</h1>{warn}"
        f"<p>Model: <b>{e(show.model_label)}</b> — one token stream at {show.frame_rate:g} Hz from a codebook of "
        f"{show.codebook_size} codes. Baselines run on the same audio: {e(', '.join(systems[1:]) or 'none')}. "
        f"Scores compare each reconstruction with the original (delay removed); speech-only scores are blank for "
        f"music and sound. Made in {show.seconds:.0f} s.</p>"
        f'<h2>Log-mel spectrograms</h2><img alt="log-mel spectrograms of every clip" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}">'
        + "".join(_clip_section(r, systems) for r in show.results)
        + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
        + "</body></html>"
    )


def write_outputs(show: Showcase, out: Path) -> dict[str, Path]:
    """Write every output to ``out`` (atomically, file by file); return the main paths."""
    from ..audio import save_audio
    from ..codec.tokens import TokenFile, save_tokens
    from ..fileio import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    for r in show.results:
        save_audio(out / wav_name(r.clip.name, "original"), r.clip.wav, SAMPLE_RATE)
        for name, wav in r.outputs.items():
            save_audio(out / wav_name(r.clip.name, name), wav, SAMPLE_RATE)
        save_tokens(
            out / f"{r.clip.name}.npz",
            TokenFile(r.codes.astype(np.int64), SAMPLE_RATE, r.clip.wav.size, show.frame_rate, show.codebook_size,
                      show.fingerprint, wav_name(r.clip.name, "original")),
        )
    png_path = out / MEL_PNG
    plot_mels(show, png_path)
    atomic_write_text(out / RESULTS_JSON, json.dumps(results_json(show), indent=2) + "\n")
    index = out / INDEX_HTML
    atomic_write_text(index, render_html(show, png_path.read_bytes()))
    return {"index": index, "png": png_path, "json": out / RESULTS_JSON}
