"""Understanding probes and audio<->caption retrieval on frozen features (paper Table 2 axis).

A *probe* is a linear classifier (standardised features -> multinomial logistic regression,
fixed seed) trained on clip-level features of the ``train`` split and scored on the ``test``
split. It measures what a downstream model could read *linearly* from each representation.

Feature sets (:data:`FEATURES`; every frame-level representation is pooled over the clip's valid
frames with the same pooling, mean and standard deviation by default):

============  ===========================================================================  ====
name          what                                                                         ckpt
============  ===========================================================================  ====
``tokens``    codebook embeddings of the tokens, ``codes_to_embeddings(encode().codes)``   yes
              (what a token LM sees), pooled -> ``2 x D_quant``
``tokens-hist``  bag of token ids: normalised histogram over the codebook (``K`` dims)     yes
``prequant``  pre-quantisation features ``h~`` (``encode_features()['pre_quant']``)       yes
``frames``    encoder output frames ``H`` (``encode_features()['frames']``), ``2 x D_enc``  yes
``logmel``    the codec's log-mel (``MelFrontend.log_mel``), pooled -> ``2 x 128``          no
``kmeans``    a k-means tokenizer of mel frames with the model's codebook size ``K``:      no
              ``MiniBatchKMeans`` fitted on per-bin standardised log-mel frames of the
              train split, each clip -> normalised bag-of-codes histogram (``K`` dims)
============  ===========================================================================  ====

Targets (:data:`TARGETS`) are read from each row's ``attributes`` (the synthetic corpus schema,
see ``entanglecodec.data.synth``); rows without the attribute are left out of that probe. Extra
targets can be given as ``NAME=dotted.path`` into ``attributes`` (:func:`parse_target`).

Protocol per target (:func:`plan_target`):

* ``held-out``: train on the train split, test on the test split rows whose class occurs in the
  train split (the others are counted as ``dropped``). Used when at least ``min_shared`` (50 %)
  of the labelled test rows have a class seen in training.
* ``within-test``: the corpus holds classes out of the train split on purpose (voices,
  instruments), so e.g. speaker identity has no class in common between splits. Then the probe
  is trained and scored inside the test split with a seeded, stratified 50/50 clip-level split:
  it measures how well the representation separates *unseen* classes.
* ``skipped``: fewer than 2 classes or too few clips; the reason is recorded.

Chance level is the accuracy of always answering the probe-train split's majority class.

Retrieval (:func:`retrieval_metrics`) ranks the test clips' audio embeddings (``embed_audio``)
against the embeddings of their rich captions (``embed_text``) by cosine similarity and reports
recall@1/@5 in both directions; clips sharing an identical caption count as correct matches.

Modules: :mod:`.measure` (targets, clip selection, feature sets, probes, retrieval), :mod:`.run`
(:func:`~.run.run_probes` over every model x feature set x target), :mod:`.report` (JSON, markdown,
figure through :mod:`entanglecodec.eval.report`).
"""
