"""Torch-free inference: a codec + vocoder compiled to ONNX graphs, run with ONNX Runtime and NumPy.

Loading torch costs 1.5-2.5 s on a small CPU before any work; a compiled runtime folder starts in
a fraction of that and decodes the same tokens to the same audio (float32 rounding). The command
line uses it for ``encode``, ``decode`` and ``reconstruct`` when one is compiled for the
checkpoint (``--backend auto``), and ``entanglecodec runtime build`` compiles one.

* :mod:`.export`: torch modules -> ``encoder.onnx``, ``decoder.onnx``, ``vocoder.onnx`` (needs torch, once);
* :mod:`.cache`: where compiled folders live and which checkpoint pair each belongs to;
* :mod:`.dsp`: the NumPy STFT, inverse STFT and mel-consistency filter;
* :mod:`.onnx_codec`: :class:`OnnxCodec`, encode/decode with a compiled folder.

Only one-step decoding at the checkpoint's own guidance and a neural vocoder are compiled; other
settings run on torch.
"""

from __future__ import annotations

from .cache import RuntimeFolderError, build_runtime, cache_root, find_runtime, resolve_pair, runtime_key
from .onnx_codec import OnnxCodec

__all__ = ["OnnxCodec", "RuntimeFolderError", "build_runtime", "cache_root", "find_runtime", "resolve_pair", "runtime_key"]
