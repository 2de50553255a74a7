"""Audio language models on EntangleCodec tokens (paper Sec. 4, App. B.2/C.3): Qwen3 via ``transformers``.

==========================  ==============================================================
module                      what
==========================  ==============================================================
``audio_tokenizer``         the tokenizer interface (EntangleCodec checkpoints, k-means of mel)
``vocab``                   extended vocabulary: special, task and audio tokens; id checks
``model``                   Qwen3 presets / local checkpoints, new-row init, ``save_lm``/``load_lm``
``shards``                  ``entanglecodec tokenize``: memory-mapped, resumable token shards
``aqa``                     question generation from corpus attributes (held-out templates)
``tasks``                   TTS / TTA / AQA / captioning / ASR sequences, null prompt
``data``                    collation with target-only labels, resumable task-weighted loader
``recipe``, ``module``,     ``configs/lm-*.yaml``, the Lightning module, the phase runner
``train``
``generate``                sampling (top-k/p, CFG, max length), :class:`~.generate.AudioLM`
``judge``, ``compare``      the codec-controlled comparison and its statistics
==========================  ==============================================================

Nothing here is imported by ``import entanglecodec``: the codec stays light.
"""
