"""``python -m entanglecodec.cli``: the ``entanglecodec`` command (used by ``torchrun``)."""

from . import main

main()
