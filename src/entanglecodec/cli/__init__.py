"""The ``entanglecodec`` command line: every typer command of the package lives in this package.

=============  ==========================================================================
module         commands
=============  ==========================================================================
``codec``      ``encode``, ``decode``, ``reconstruct``, ``vocode``, ``info``, ``mel-stats``, ``demo``
``data``       ``entanglecodec data ...``: synthesis, real speech, importers, shards, validation
``train``      ``entanglecodec train ...``: codec stages, export, vocoder, throughput, reports
``eval``       ``entanglecodec eval ...``: reconstruction, probes, benchmarks, vocoder evaluation
``lm``         ``entanglecodec tokenize`` and ``entanglecodec lm ...``: audio language models
``serve``      ``serve``: the Gradio web demo (:mod:`entanglecodec.showcase.webapp`)
``runtime``    ``entanglecodec runtime build|info``: the compiled ONNX runtime (:mod:`entanglecodec.runtime`)
``common``     the exit-code policy (:func:`~entanglecodec.cli.common.fail`), messages, input checks
=============  ==========================================================================

Every group is registered statically below; library modules never import typer.
"""

from __future__ import annotations

import sys

import typer

from . import codec, data, eval, lm, runtime, serve, train
from .common import console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="EntangleCodec audio tokenizer.")
app.add_typer(codec.app)
app.add_typer(serve.app)
app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.add_typer(eval.app, name="eval")
app.add_typer(runtime.app, name="runtime")
app.command("tokenize")(lm.tokenize)
app.add_typer(lm.app, name="lm")


def main() -> None:
    """Console-script entry point (``entanglecodec``); ``130`` when interrupted."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        console.print("interrupted")
        sys.exit(130)


__all__ = ["app", "main"]
