"""``make demo`` / ``entanglecodec demo``: every domain through the codec, beside Codec2 and Opus.

The work is done by :mod:`entanglecodec.showcase` (clips, pipeline, page); this module prints what
a newcomer reads in the terminal: one table (tokens, bitrate, distinct codes, scores of the model
and of the baselines, the rank of the true caption), the notes (anything left out and why) and
where the outputs are, ``index.html`` last.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from ..showcase.clips import DemoClip


def select_clips(names: list[str] | None, notes: list[str]) -> list[DemoClip]:
    """The demo clips to make: all of them, or those named (unknown names are a ``ValueError``)."""
    from ..showcase.clips import CLIP_MAKERS, demo_clips

    known = [n for n, _, _ in CLIP_MAKERS]
    if names:
        bad = sorted(set(names) - set(known))
        if bad:
            raise ValueError(f"unknown demo clip(s) {bad}: choose among {known}")
    clips = demo_clips(notes, only=names)
    if not clips:
        raise ValueError("no demo clip could be made here: " + " | ".join(notes))
    return clips


def run_demo(out: Path, checkpoint: str | Path | None, console: Console, clips: list[str] | None = None) -> Path:
    """Run the showcase, write its outputs to ``out`` and print the summary; return ``index.html``."""
    from ..showcase.page import fmt, write_outputs
    from ..showcase.run import CODEC_NAME, run_showcase

    notes: list[str] = []
    console.print("making the demo clips (speech, music, sound, mixture)...")
    made = select_clips(clips, notes)
    show = run_showcase(made, checkpoint, notes)
    paths = write_outputs(show, out)
    table = Table(title=f"EntangleCodec demo — model: {show.model_label}")
    for col in ("clip", "s", "tokens", "distinct", "system", "bit/s", "mel L1 ↓", "STOI ↑", "PESQ ↑", "caption rank"):
        table.add_column(col)
    for r in show.results:
        rank = r.caption_rank
        for k, (name, sc) in enumerate(r.scores.items()):
            first = k == 0
            table.add_row(
                r.clip.name if first else "",
                f"{r.clip.seconds:.1f}" if first else "",
                str(r.codes.size) if first else "",
                str(r.distinct_codes) if first else "",
                name,
                f"{r.bitrates[name]:.0f}",
                fmt(sc.get("mel_l1", math.nan)),
                fmt(sc.get("stoi", math.nan)),
                fmt(sc.get("pesq", math.nan), "pesq"),
                (f"{rank} of {len(r.ranking)}" if rank else "—") if name == CODEC_NAME else "",
            )
    Console(width=max(Console().width, 132)).print(table)
    for n in notes:
        console.print(f"[yellow]note:[/] {n}", highlight=False)
    console.print(f"outputs in {out}/: <clip>-original.wav, <clip>-<system>.wav, <clip>.npz (tokens), "
                  f"{paths['png'].name} (mels of every clip), {paths['json'].name}", highlight=False)
    console.print(f"demo finished in {show.seconds:.0f} s; open [bold]{paths['index'].resolve()}[/]", highlight=False)
    print(paths["index"].resolve())
    return paths["index"]
