"""The codec: waveform -> tokens (encoder, quantizer) and tokens -> mel (flow decoder).

* :mod:`.model`: :class:`EntangleCodec` (inference only), :class:`Tokens`, :class:`Audio`, errors
* :mod:`.encoder`: the unified Transformer encoder with its [CLS] token and audio projection (Eq. 1-3)
* :mod:`.text`: the caption encoder (Eq. 5), used for training and ``embed_text``
* :mod:`.quantizer`: MLP_VQ -> L2 -> single-codebook VQ (Eq. 6, 11)
* :mod:`.decoder`: the rectified-flow mel decoder (Eq. 7-9, 12)
* :mod:`.windowing`: the one long-audio runner; :mod:`.streaming`: file encoding block by block
* :mod:`.tokens`: token files (``.npz``)
"""
