"""Synthetic captioned multi-domain corpus generator (speech, music, sound events, mixtures).

Entry point: :func:`generate_corpus` (CLI: ``entanglecodec data synth``). Every clip's attributes
are known exactly because they were chosen before synthesis, or measured on the produced audio.
"""

from .generator import (
    GENERATOR_VERSION,
    PROFILES,
    ClipSpec,
    CorpusError,
    generate_clip,
    generate_corpus,
    plan_corpus,
)

__all__ = ["GENERATOR_VERSION", "PROFILES", "ClipSpec", "CorpusError", "generate_clip", "generate_corpus", "plan_corpus"]
