"""What a newcomer meets: ``make demo`` and ``entanglecodec serve``.

=============  ==========================================================================
module         contents
=============  ==========================================================================
``clips``      one short clip per domain from the corpus generator's own sources
``run``        the pipeline: tokens, decode, Codec2 700C / Opus 6 kbps, scores, caption ranking
``page``       the outputs: WAVs, token files, one mel PNG, ``results.json``, ``index.html``
``webapp``     the Gradio web demo (``[demo]`` extra): the Codec tab and the tab registry
=============  ==========================================================================
"""
