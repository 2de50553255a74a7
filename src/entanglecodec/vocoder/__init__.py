"""Mel -> waveform: the Vocos-style neural vocoder, Griffin-Lim, and the one spec resolver.

* :mod:`.config`: :class:`VocoderConfig` (network sizes + the nested :class:`MelConfig` it inverts)
* :mod:`.model`: :class:`Vocoder` (ConvNeXt backbone + inverse-STFT head)
* :mod:`.mel_consistency`: the parameter-free mel-consistency passes applied after the network
* :mod:`.griffin_lim`: the parameter-free fallback
* :mod:`.load`: :func:`load_vocoder` (``"default"``, ``"griffin-lim"``, a directory),
  :class:`MelVocoder`, :func:`copy_synthesis`
"""
