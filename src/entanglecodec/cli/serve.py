"""``entanglecodec serve``: the Gradio web demo (optional extra ``[demo]``).

Binds to 127.0.0.1 unless ``--host`` says otherwise. Everything the server writes (Gradio's
uploads and cached outputs) goes to one temporary directory, removed when the server stops.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import warnings
from pathlib import Path

import typer

from .common import console, fail, user_errors

app = typer.Typer()


@app.command()
@user_errors
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 exposes the demo to your network)."),
    port: int = typer.Option(7860, min=0, max=65535, help="Port (0: any free port)."),
    checkpoint: list[str] = typer.Option(
        [], "--checkpoint", "-c", help="Model(s) for the menu: directory or Hugging Face repo id (repeatable; "
        "default: the bundled model)."
    ),
    max_seconds: float = typer.Option(30.0, min=0.1, help="Longest accepted upload, in seconds."),
) -> None:
    """Web demo: upload or record audio -> tokens, reconstruction, mel comparison, caption retrieval."""
    warnings.filterwarnings("ignore", category=ResourceWarning)  # asyncio loops of the web server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop cleanly (temporary files removed)
    workdir = Path(tempfile.mkdtemp(prefix="entanglecodec-serve-"))
    os.environ["GRADIO_TEMP_DIR"] = str(workdir)
    os.environ["MPLCONFIGDIR"] = str(workdir / "matplotlib")  # Gradio imports matplotlib: its cache goes here too
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        fail("the web demo needs Gradio: pip install 'entanglecodec[demo]' (make installs it)")
    from ..showcase.clips import DISTRACTOR_CAPTIONS
    from ..showcase.webapp import BUNDLED, ServeContext, build_app

    menu: dict[str, str | None] = {c: c for c in checkpoint} if checkpoint else {BUNDLED: None}
    ctx = ServeContext(menu, max_seconds, workdir, [
        "A woman speaks clearly in a quiet room.", "A man speaks over music playing in the background.",
        "Cheerful piano music with drums.", "A crowd claps and applauds.", *DISTRACTOR_CAPTIONS,
    ])
    ctx.model(next(iter(menu)))  # a bad checkpoint fails here, before the server starts
    demo = build_app(ctx)
    try:
        _, url, _ = demo.launch(
            server_name=host, server_port=port or None, prevent_thread_lock=True, ssr_mode=False,
            quiet=True, share=False, max_file_size=f"{max(1, int(max_seconds * 2))}mb",
        )
        console.print(f"EntangleCodec web demo on [bold]{url}[/] (temporary files in {workdir}); Ctrl+C stops it",
                      highlight=False)
        print(url, flush=True)
        demo.block_thread()
    finally:
        demo.close()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
