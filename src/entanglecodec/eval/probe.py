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
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .report import json_safe, report_paths, write_report

if TYPE_CHECKING:
    from ..codec.model import EntangleCodec

SAMPLE_RATE = 24000
"""Rate (Hz) at which every clip is loaded."""

MODEL_FEATURES: tuple[str, ...] = ("tokens", "tokens-hist", "prequant", "frames")
"""Feature sets computed by a checkpoint (one row per checkpoint)."""

BASELINE_FEATURES: tuple[str, ...] = ("logmel", "kmeans")
"""Feature sets that need no checkpoint."""

FEATURES: tuple[str, ...] = MODEL_FEATURES + BASELINE_FEATURES
"""Every registered feature set."""

DEFAULT_FEATURES: tuple[str, ...] = ("tokens", "prequant", "logmel", "kmeans")
"""Feature sets probed when none are requested."""

Pooling = Literal["mean", "meanstd"]


class ProbeError(ValueError):
    """Bad probe input: unknown feature/target, unusable manifest, no model for model features."""


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------
GM_FAMILIES: tuple[str, ...] = (
    "piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth lead", "synth pad", "synth effects", "ethnic", "percussive", "sound effects",
)  # fmt: skip
"""The 16 General MIDI instrument families (program ``p`` belongs to family ``p // 8``)."""


def _get(obj: Any, path: str) -> Any:
    """``obj["a"]["b"]`` for ``path="a.b"``; ``None`` when any step is missing."""
    cur = obj
    for key in path.split("."):
        if not isinstance(cur, Mapping) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _label(value: Any) -> str | None:
    """A class label from an attribute value (first item of a list; ``None``/empty -> ``None``)."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if value is None or isinstance(value, Mapping):
        return None
    text = str(value).strip()
    return text or None


def _instrument_family(attrs: Mapping[str, Any]) -> str | None:
    music = attrs.get("music")
    if not isinstance(music, Mapping):
        return None
    programs, roles = music.get("programs"), music.get("roles")
    if isinstance(programs, list) and programs:
        k = roles.index("melody") if isinstance(roles, list) and "melody" in roles else 0
        p = programs[k] if k < len(programs) else programs[0]
        if isinstance(p, int) and 0 <= p < 128:
            return GM_FAMILIES[p // 8]
    return _label(music.get("instruments"))


def _tempo_bin(attrs: Mapping[str, Any]) -> str | None:
    bpm = _get(attrs, "music.tempo_bpm")
    if not isinstance(bpm, int | float) or _get(attrs, "music.tempo_estimated"):
        return None  # estimated tempi of recordings are unreliable (octave errors)
    return "slow (<100 bpm)" if bpm < 100 else "moderate (100-130 bpm)" if bpm < 130 else "fast (>=130 bpm)"


def _loudest_event(attrs: Mapping[str, Any]) -> str | None:
    events = attrs.get("events")
    if not isinstance(events, list):
        return None
    labelled = [e for e in events if isinstance(e, Mapping) and _label(e.get("label"))]
    if not labelled:
        return None
    best = max(labelled, key=lambda e: float(e.get("level_dbfs", -math.inf) or -math.inf))
    return _label(best["label"])


def _noise_type(attrs: Mapping[str, Any]) -> str | None:
    env = attrs.get("environment")
    if not isinstance(env, Mapping) or "noise_type" not in env:
        return None
    return _label(env["noise_type"]) or "none"


def _speaking_rate(attrs: Mapping[str, Any]) -> str | None:
    rate = _label(_get(attrs, "speaker.rate"))
    if rate is not None:
        return rate
    wps = _get(attrs, "speaker.words_per_second")
    if isinstance(wps, int | float):
        return "slow" if wps < 2.0 else "fast" if wps > 3.4 else "normal"
    return None


@dataclass(frozen=True)
class Target:
    """A probed attribute: ``extract(row) -> class label or None`` (row left out when ``None``)."""

    name: str
    description: str
    extract: Callable[[Mapping[str, Any]], str | None]


def _attr_target(name: str, path: str, description: str) -> Target:
    return Target(name, description, lambda row: _label(_get(row.get("attributes") or {}, path)))


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("domain", "domain (speech/music/sound/mixture)", lambda row: _label(row.get("domain"))),
        _attr_target("speaker", "speaker.id", "speaker / voice identity"),
        _attr_target("gender", "speaker.gender", "speaker gender"),
        _attr_target("language", "speaker.language", "spoken language"),
        _attr_target("accent", "speaker.accent", "accent"),
        Target("rate", "speaking-rate bin (speaker.rate: slow/normal/fast)",
               lambda row: _speaking_rate(row.get("attributes") or {})),
        _attr_target("pitch", "speaker.pitch", "voice pitch bin (low/normal/high)"),
        Target("instrument", "GM family of the melody instrument (music.programs)",
               lambda row: _instrument_family(row.get("attributes") or {})),
        Target("tempo", "tempo bin of rendered music (<100, 100-130, >=130 bpm)",
               lambda row: _tempo_bin(row.get("attributes") or {})),
        _attr_target("mode", "music.mode", "musical mode (major/minor)"),
        Target("event", "loudest sound event's label (events[].label)",
               lambda row: _loudest_event(row.get("attributes") or {})),
        _attr_target("reverb", "environment.reverb", "reverberation bin (dry/slight/moderate/strong)"),
        Target("noise", "background noise type (environment.noise_type, none)",
               lambda row: _noise_type(row.get("attributes") or {})),
    )
}  # fmt: skip
"""Built-in targets, in report order."""


def parse_target(spec: str) -> Target:
    """Parse a custom target ``NAME=dotted.path`` into ``attributes`` (e.g. ``key=music.key``).

    Raises:
        ProbeError: no ``=`` or an empty name/path.
    """
    name, sep, path = spec.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise ProbeError(f"custom target must look like NAME=dotted.path.in.attributes, got {spec!r}")
    return _attr_target(name, path, f"attributes.{path}")


def resolve_targets(names: Sequence[str] | None = None, custom: Sequence[str] = ()) -> list[Target]:
    """Built-in targets by name (``None``: all of them) followed by custom ``NAME=path`` targets.

    Raises:
        ProbeError: an unknown built-in name or a duplicate name.
    """
    chosen = list(TARGETS) if names is None else list(names)
    unknown = [n for n in chosen if n not in TARGETS]
    if unknown:
        raise ProbeError(f"unknown target(s) {unknown}: built-in targets are {', '.join(TARGETS)}")
    out = [TARGETS[n] for n in chosen] + [parse_target(s) for s in custom]
    dup = [n for n, c in Counter(t.name for t in out).items() if c > 1]
    if dup:
        raise ProbeError(f"duplicate target name(s) {dup}")
    return out


# ---------------------------------------------------------------------------------------------
# Clips
# ---------------------------------------------------------------------------------------------
def select_rows(
    rows: Sequence[Mapping[str, Any]], max_clips: int | None, seed: int = 0
) -> list[Mapping[str, Any]]:
    """At most ``max_clips`` rows, drawn round-robin over domains from a seeded shuffle.

    The chosen rows keep their manifest order. ``None`` keeps every row.
    """
    if max_clips is None or max_clips >= len(rows):
        return list(rows)
    if max_clips < 1:
        raise ProbeError(f"max_clips must be >= 1, got {max_clips}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    by_domain: dict[str, list[int]] = {}
    for i in order:
        by_domain.setdefault(str(rows[i].get("domain")), []).append(i)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < max_clips:
        for idx in by_domain.values():
            if depth < len(idx) and len(chosen) < max_clips:
                chosen.append(idx[depth])
        depth += 1
    return [rows[i] for i in sorted(chosen)]


def load_clip(path: str | Path, max_seconds: float | None) -> np.ndarray:
    """``float32 [S]`` mono waveform at 24 kHz, cropped to its first ``max_seconds`` seconds."""
    from ..audio import load_audio

    wav, _ = load_audio(path, SAMPLE_RATE)
    if max_seconds is not None:
        wav = wav[: int(round(max_seconds * SAMPLE_RATE))]
    if wav.size == 0:
        raise ProbeError(f"{path}: empty audio")
    return np.ascontiguousarray(wav, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------
def pool(frames: np.ndarray, how: Pooling = "meanstd") -> np.ndarray:
    """Pool ``[F, D]`` frame features of one clip to ``[D]`` (mean) or ``[2D]`` (mean, std)."""
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ProbeError(f"pool expects [F, D] with F >= 1, got shape {x.shape}")
    if how == "mean":
        return x.mean(0)
    if how == "meanstd":
        return np.concatenate([x.mean(0), x.std(0)])
    raise ProbeError(f"unknown pooling {how!r}: use mean or meanstd")


def code_histogram(codes: np.ndarray, k: int) -> np.ndarray:
    """Normalised bag-of-codes ``[k]`` of a clip's token ids ``[F]`` (sums to 1)."""
    c = np.asarray(codes, dtype=np.int64).reshape(-1)
    if c.size == 0:
        raise ProbeError("code_histogram: no codes")
    return np.bincount(c, minlength=k)[:k].astype(np.float64) / c.size


class LogMelFeatures:
    """Per-clip log-mel ``[F, 128]`` with the codec's front end (natural log of power mel)."""

    def __init__(self) -> None:
        from ..audio import MelFrontend
        from ..config import MelConfig

        self.frontend = MelFrontend(MelConfig()).eval()

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            mel = self.frontend.log_mel(torch.from_numpy(wav)[None])
        return mel[0].T.contiguous().numpy().astype(np.float32)


@dataclass
class KMeansTokenizer:
    """k-means tokenizer of log-mel frames (the discrete baseline with the same codebook size).

    Frames are standardised per mel bin with the fitting data's statistics, then clustered with
    scikit-learn's ``MiniBatchKMeans`` from a *random* initialisation (k-means++ seeding of 8192
    centres took more than 4 minutes on this 2-core machine, the whole fit with random seeding
    a few minutes) for at most ``epochs`` passes, stopping early after 10 mini-batches without
    improvement.

    Attributes:
        k: number of clusters (codebook size).
        seed: seed of the frame subsample and of ``MiniBatchKMeans``.
        epochs: maximum passes over the fitting frames.
        n_frames: frames the clusters were fitted on (after subsampling).
        n_steps: mini-batch steps run.
    """

    k: int
    seed: int = 0
    epochs: int = 10
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    model: Any = None
    n_frames: int = 0
    n_steps: int = 0

    def fit(self, mels: Sequence[np.ndarray], max_frames: int = 200_000) -> KMeansTokenizer:
        """Fit on ``[F_i, 128]`` frames of the given clips (a seeded subsample of ``max_frames``).

        Raises:
            ProbeError: fewer frames than clusters.
        """
        from sklearn.cluster import MiniBatchKMeans

        x = np.concatenate([np.asarray(m, dtype=np.float32) for m in mels], axis=0)
        if x.shape[0] > max_frames:
            idx = np.random.default_rng(self.seed).choice(x.shape[0], max_frames, replace=False)
            x = x[np.sort(idx)]
        if x.shape[0] < self.k:
            raise ProbeError(f"k-means tokenizer: {x.shape[0]} training frames for {self.k} clusters")
        self.mean = x.mean(0)
        self.std = x.std(0) + 1e-5
        z = (x - self.mean) / self.std
        self.model = MiniBatchKMeans(
            n_clusters=self.k,
            init="random",
            random_state=self.seed,
            batch_size=max(4096, 2 * self.k),
            n_init=1,
            init_size=min(z.shape[0], max(3 * self.k, 10_000)),
            max_iter=self.epochs,
            max_no_improvement=10,
        ).fit(z)
        self.n_frames = int(z.shape[0])
        self.n_steps = int(self.model.n_steps_)
        return self

    def tokenize(self, mel: np.ndarray) -> np.ndarray:
        """``[F, 128]`` log-mel frames -> ``[F]`` cluster ids."""
        if self.model is None or self.mean is None or self.std is None:
            raise ProbeError("KMeansTokenizer.tokenize called before fit")
        z = (np.asarray(mel, dtype=np.float32) - self.mean) / self.std
        return np.asarray(self.model.predict(z), dtype=np.int64)


def model_features(
    model: EntangleCodec,
    wavs: Sequence[np.ndarray],
    features: Sequence[str],
    pooling: Pooling = "meanstd",
    batch_size: int = 8,
    with_audio_embedding: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Clip-level features of a checkpoint, one encoder pass per clip.

    Args:
        model: an :class:`~entanglecodec.codec.model.EntangleCodec` (put in eval mode).
        wavs: ``float32 [S_i]`` clips at 24 kHz.
        features: names from :data:`MODEL_FEATURES`.
        pooling: pooling of frame features.
        batch_size: clips per padded batch (sorted by length; padding does not change results).
        with_audio_embedding: also return ``"audio_embedding"`` ``[N, D_align]``, identical to
            ``model.embed_audio`` (the CLS vector through the audio projection).
        progress: called with the number of clips finished after each batch.

    Returns:
        ``{name: float64 [N, D_name]}`` in the order of ``wavs``.
    """
    import torch

    from ..audio import pad_batch

    bad = [f for f in features if f not in MODEL_FEATURES]
    if bad:
        raise ProbeError(f"not model features: {bad} (model features: {', '.join(MODEL_FEATURES)})")
    model.eval()
    k = int(model.codebook_size)
    out: dict[str, list[np.ndarray | None]] = {f: [None] * len(wavs) for f in features}
    emb: list[np.ndarray | None] = [None] * len(wavs)
    order = sorted(range(len(wavs)), key=lambda i: wavs[i].size)
    done = 0
    for j in range(0, len(order), batch_size):
        idx = order[j : j + batch_size]
        x, lens = pad_batch([torch.from_numpy(wavs[i]) for i in idx])
        with torch.no_grad():
            feats = model.encode_features(x, SAMPLE_RATE, lens)
            mask = feats["mask"]
            codes = model.quantizer.nearest(feats["pre_quant"]).masked_fill(~mask, 0)
            z = model.codes_to_embeddings(codes) if "tokens" in features else None
            a = model.audio_proj(feats["cls"]) if with_audio_embedding else None
        for b, i in enumerate(idx):
            n = int(mask[b].sum())
            for f in features:
                if f == "tokens":
                    assert z is not None
                    out[f][i] = pool(z[b, :n].double().numpy(), pooling)
                elif f == "tokens-hist":
                    out[f][i] = code_histogram(codes[b, :n].numpy(), k)
                elif f == "prequant":
                    out[f][i] = pool(feats["pre_quant"][b, :n].double().numpy(), pooling)
                else:  # frames
                    out[f][i] = pool(feats["frames"][b, :n].double().numpy(), pooling)
            if a is not None:
                emb[i] = a[b].double().numpy()
        done += len(idx)
        if progress is not None:
            progress(done)
    result = {f: np.stack([v for v in vals if v is not None]) for f, vals in out.items()}
    if with_audio_embedding:
        result["audio_embedding"] = np.stack([v for v in emb if v is not None])
    return result


# ---------------------------------------------------------------------------------------------
# Probing
# ---------------------------------------------------------------------------------------------
@dataclass
class TargetPlan:
    """Which clips train and evaluate one target's probe.

    Attributes:
        target: target name.
        protocol: ``held-out``, ``within-test`` or ``skipped``.
        train: indices (into the clip list) of probe-training clips.
        test: indices of probe-evaluation clips.
        labels: label per clip index (``None`` where the attribute is missing).
        classes: classes the probe is trained on.
        dropped: labelled test clips left out (their class never occurs in probe training).
        reason: why this protocol (or why skipped).
        description: what the target reads.
    """

    target: str
    protocol: str
    train: list[int]
    test: list[int]
    labels: list[str | None]
    classes: list[str] = field(default_factory=list)
    dropped: int = 0
    reason: str = ""
    description: str = ""

    @property
    def chance(self) -> float:
        """Accuracy of always answering the probe-training majority class (NaN when skipped)."""
        if not self.train or not self.test:
            return math.nan
        majority = Counter(self.labels[i] for i in self.train).most_common(1)[0][0]
        return sum(self.labels[i] == majority for i in self.test) / len(self.test)

    @property
    def balanced_chance(self) -> float:
        """Balanced accuracy of any constant answer: 1 / classes present in the evaluation clips."""
        if not self.test:
            return math.nan
        return 1.0 / len({self.labels[i] for i in self.test})


def plan_target(
    target: Target,
    rows: Sequence[Mapping[str, Any]],
    split_train: str = "train",
    split_test: str = "test",
    min_shared: float = 0.5,
    min_test: int = 4,
    seed: int = 0,
) -> TargetPlan:
    """Choose the protocol of one target (see the module docstring) and its clip indices.

    Args:
        target: the attribute to predict.
        rows: manifest rows of both splits (each with ``split``).
        split_train, split_test: split names.
        min_shared: minimum fraction of labelled test clips whose class occurs in the train split
            for the ``held-out`` protocol.
        min_test: minimum number of evaluation clips.
        seed: seed of the within-test stratified split.
    """
    labels = [target.extract(r) for r in rows]
    if all(lab is None for lab in labels):
        return TargetPlan(
            target.name,
            "skipped",
            [],
            [],
            labels,
            reason="no clip carries this attribute",
            description=target.description,
        )
    tr = [i for i, r in enumerate(rows) if r.get("split") == split_train and labels[i] is not None]
    te = [i for i, r in enumerate(rows) if r.get("split") == split_test and labels[i] is not None]
    train_classes = {labels[i] for i in tr}
    kept = [i for i in te if labels[i] in train_classes]
    if len(train_classes) >= 2 and te and len(kept) >= min_test and len(kept) >= min_shared * len(te):
        return TargetPlan(
            target.name, "held-out", tr, kept, labels, sorted(str(c) for c in train_classes),
            dropped=len(te) - len(kept),
            reason=f"{len(kept)}/{len(te)} labelled {split_test} clips have a class seen in {split_train}",
            description=target.description,
        )  # fmt: skip
    why = (
        f"only {len(kept)}/{len(te)} labelled {split_test} clips have a class seen in {split_train} "
        f"({len(train_classes)} {split_train} classes)"
    )
    counts = Counter(labels[i] for i in te)
    usable = [i for i in te if counts[labels[i]] >= 2]
    n_cls = len({labels[i] for i in usable})
    if n_cls < 2 or len(usable) < 2 * max(min_test, n_cls):
        return TargetPlan(
            target.name, "skipped", [], [], labels, dropped=len(te),
            reason=f"{why}; within {split_test}: {n_cls} classes with >= 2 clips ({len(usable)} clips), too few",
            description=target.description,
        )  # fmt: skip
    from sklearn.model_selection import train_test_split

    y = [labels[i] for i in usable]
    a, b = train_test_split(usable, test_size=0.5, random_state=seed, stratify=y)
    return TargetPlan(
        target.name, "within-test", sorted(a), sorted(b), labels,
        sorted(str(c) for c in {labels[i] for i in a}), dropped=len(te) - len(usable),
        reason=f"{why}: stratified 50/50 clip split of {split_test} (seed {seed})",
        description=target.description,
    )  # fmt: skip


def fit_probe(
    x_train: np.ndarray, y_train: Sequence[str], x_test: np.ndarray, y_test: Sequence[str],
    c: float = 1.0, seed: int = 0, max_iter: int = 2000,
) -> dict[str, float]:  # fmt: skip
    """Standardise -> multinomial logistic regression; accuracy and balanced accuracy on test.

    Returns:
        ``{"accuracy", "balanced_accuracy", "converged"}`` (``converged`` is 1.0 or 0.0).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(np.asarray(x_train, dtype=np.float64), list(y_train))
    pred = clf.predict(np.asarray(x_test, dtype=np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes absent from y_test
        bal = float(balanced_accuracy_score(list(y_test), pred))
    return {
        "accuracy": float(np.mean(pred == np.asarray(y_test, dtype=object))),
        "balanced_accuracy": bal,
        "converged": 0.0 if any(issubclass(w.category, ConvergenceWarning) for w in caught) else 1.0,
    }


def retrieval_metrics(
    audio: np.ndarray, text: np.ndarray, captions: Sequence[str], ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Audio<->caption recall@k by cosine similarity.

    Args:
        audio: ``[N, D]`` audio embeddings; text: ``[N, D]`` caption embeddings (row ``i`` is clip
            ``i``'s caption). Both are L2-normalised here.
        captions: the caption strings; clips with identical captions are mutual matches.
        ks: cut-offs.

    Returns:
        ``{"a2t_r1", "a2t_r5", "t2a_r1", "t2a_r5", "n"}``. Ties with a wrong item count against
        the query (pessimistic).
    """
    a = np.asarray(audio, dtype=np.float64)
    t = np.asarray(text, dtype=np.float64)
    if a.ndim != 2 or a.shape != t.shape or a.shape[0] != len(captions) or a.shape[0] < 2:
        raise ProbeError(
            f"retrieval needs [N, D] audio and text with N >= 2 equal, got {a.shape} and {t.shape}"
        )
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    sim = a @ t.T
    cap = np.asarray(captions, dtype=object)
    pos = cap[:, None] == cap[None, :]
    out: dict[str, float] = {"n": float(a.shape[0])}
    for name, s in (("a2t", sim), ("t2a", sim.T)):
        best_pos = np.where(pos, s, -np.inf).max(1)
        rank = (np.where(pos, -np.inf, s) >= best_pos[:, None]).sum(1)  # wrong items scoring >= best match
        for k in ks:
            out[f"{name}_r{k}"] = float(np.mean(rank < k))
    return out


# ---------------------------------------------------------------------------------------------
# Whole evaluation
# ---------------------------------------------------------------------------------------------
@dataclass
class ModelSpec:
    """A model row: a checkpoint directory or a randomly initialised preset (clearly labelled)."""

    label: str
    checkpoint: str | None = None
    preset: str | None = None
    seed: int = 0

    def load(self) -> EntangleCodec:
        import torch

        from ..codec.model import EntangleCodec

        if self.checkpoint is not None:
            return EntangleCodec.from_pretrained(self.checkpoint)
        if self.preset is None:
            raise ProbeError(f"model {self.label!r}: neither a checkpoint nor a preset")
        from ..config import EntangleCodecConfig

        torch.manual_seed(self.seed)
        return EntangleCodec(EntangleCodecConfig.preset(self.preset)).eval()


@dataclass
class ProbeResults:
    """Everything :func:`run_probes` measured (JSON-serialisable with :func:`results_to_json`)."""

    manifest: str
    split_train: str
    split_test: str
    clips: dict[str, int]
    feature_rows: list[str]
    plans: list[TargetPlan]
    scores: dict[str, dict[str, dict[str, float]]]  # row -> target -> metrics
    retrieval: dict[str, dict[str, float]]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def run_probes(
    manifest: str | Path,
    models: Sequence[ModelSpec] = (),
    features: Sequence[str] = DEFAULT_FEATURES,
    targets: Sequence[Target] | None = None,
    split_train: str = "train",
    split_test: str = "test",
    max_clips: int | None = None,
    max_seconds: float | None = 30.0,
    kmeans_k: int | None = None,
    pooling: Pooling = "meanstd",
    c: float = 1.0,
    seed: int = 0,
    retrieval: bool = True,
    batch_size: int = 8,
    progress: Callable[[str], None] | None = None,
) -> ProbeResults:
    """Probe every feature set (and every model) on every target; audio<->caption retrieval.

    Args:
        manifest: JSONL corpus manifest with ``attributes``.
        models: checkpoints / random presets providing the model feature sets.
        features: names from :data:`FEATURES`.
        targets: probed attributes (default: all of :data:`TARGETS`).
        split_train, split_test: probe-training and evaluation splits.
        max_clips: at most this many clips per split (domain round-robin, seeded).
        max_seconds: crop each clip to its first ``max_seconds`` (``None``: whole clips).
        kmeans_k: clusters of the k-means tokenizer (default: first model's codebook size, else
            8192, the paper-sized codebook), lowered to the available frame count with a note.
        pooling: ``meanstd`` or ``mean`` for frame-level features.
        c: inverse L2 regularisation strength of the logistic regression.
        seed: seed of clip selection, k-means, the within-test split and the probes.
        retrieval: also compute audio<->caption retrieval for each model with a caption tower.
        batch_size: clips per model batch.
        progress: receives short status strings.

    Raises:
        ProbeError: unknown feature names, model features without a model, unusable manifest.
    """
    from ..data.manifest import read_manifest

    say = progress or (lambda _m: None)
    feats = list(dict.fromkeys(features))
    unknown = [f for f in feats if f not in FEATURES]
    if unknown:
        raise ProbeError(f"unknown feature set(s) {unknown}: choose from {', '.join(FEATURES)}")
    model_feats = [f for f in feats if f in MODEL_FEATURES]
    if model_feats and not models:
        raise ProbeError(f"feature set(s) {model_feats} need a model: give --checkpoint (or --random-preset)")
    if split_train == split_test:
        raise ProbeError(f"train and test splits must differ, both are {split_train!r}")
    tgts = list(targets) if targets is not None else list(TARGETS.values())
    notes: list[str] = []

    rows: list[Mapping[str, Any]] = []
    clips: dict[str, int] = {}
    for split in (split_train, split_test):
        part = select_rows(read_manifest(manifest, split=split), max_clips, seed)
        clips[split] = len(part)
        rows.extend(part)
    say(f"loading {len(rows)} clips")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    wavs = [load_clip(r["audio"], max_seconds) for r in rows]
    timings["load audio"] = time.perf_counter() - t0

    plans = [plan_target(t, rows, split_train, split_test, seed=seed) for t in tgts]
    matrices: dict[str, np.ndarray] = {}
    embeddings: dict[str, np.ndarray] = {}
    retrieval_models: dict[str, Any] = {}
    first_k: int | None = None
    for spec in models:
        say(f"model {spec.label}: loading")
        t0 = time.perf_counter()
        model = spec.load()
        first_k = first_k or int(model.codebook_size)
        want_emb = retrieval and model.text_encoder is not None
        if retrieval and not want_emb:
            notes.append(f"retrieval skipped for {spec.label}: checkpoint has no caption encoder")
        res = model_features(
            model, wavs, model_feats, pooling, batch_size, with_audio_embedding=want_emb,
            progress=lambda n, lab=spec.label: say(f"model {lab}: {n}/{len(wavs)} clips"),  # type: ignore[misc]
        )  # fmt: skip
        for f in model_feats:
            matrices[f"{f} · {spec.label}"] = res[f]
        timings[f"features · {spec.label}"] = time.perf_counter() - t0
        if want_emb:
            embeddings[spec.label] = res["audio_embedding"]
            retrieval_models[spec.label] = model
        else:
            del model

    if "logmel" in feats or "kmeans" in feats:
        say("log-mel features")
        t0 = time.perf_counter()
        melfe = LogMelFeatures()
        mels = [melfe(w) for w in wavs]
        timings["log-mel"] = time.perf_counter() - t0
        if "logmel" in feats:
            matrices["logmel"] = np.stack([pool(m, pooling) for m in mels])
        if "kmeans" in feats:
            k = kmeans_k or first_k or 8192
            train_mels = [m for m, r in zip(mels, rows, strict=True) if r.get("split") == split_train]
            n_frames = sum(m.shape[0] for m in train_mels)
            if n_frames < k:
                notes.append(
                    f"k-means tokenizer: only {n_frames} {split_train} frames, K lowered from {k} to {n_frames // 4}"
                )
                k = max(2, n_frames // 4)
            say(f"k-means tokenizer: fitting K={k} on {n_frames} frames")
            t0 = time.perf_counter()
            tok = KMeansTokenizer(k, seed).fit(train_mels)
            timings["k-means fit"] = time.perf_counter() - t0
            notes.append(
                f"k-means baseline: K={k} fitted on {tok.n_frames} standardised {split_train} log-mel frames "
                f"({tok.n_steps} mini-batch steps, random init); clip feature = normalised histogram of its codes"
            )
            say(f"k-means tokenizer: fitted in {timings['k-means fit']:.0f} s; tokenising")
            t0 = time.perf_counter()
            matrices[f"kmeans (K={k})"] = np.stack([code_histogram(tok.tokenize(m), k) for m in mels])
            timings["k-means tokenise"] = time.perf_counter() - t0
            del mels

    scores: dict[str, dict[str, dict[str, float]]] = {}
    for name, x in matrices.items():
        say(f"probing {name}")
        t0 = time.perf_counter()
        scores[name] = {}
        for p in plans:
            if p.protocol == "skipped":
                continue
            y_tr = [str(p.labels[i]) for i in p.train]
            y_te = [str(p.labels[i]) for i in p.test]
            s = fit_probe(x[p.train], y_tr, x[p.test], y_te, c=c, seed=seed)
            s["chance"] = p.chance
            s["balanced_chance"] = p.balanced_chance
            scores[name][p.target] = s
            if not s["converged"]:
                notes.append(f"probe {name} / {p.target}: logistic regression hit max_iter (not converged)")
        timings[f"probes · {name}"] = time.perf_counter() - t0

    ret: dict[str, dict[str, float]] = {}
    test_idx = [i for i, r in enumerate(rows) if r.get("split") == split_test]
    for label, model in retrieval_models.items():
        caps = [str(rows[i].get("caption") or "") for i in test_idx]
        keep = [j for j, cap in enumerate(caps) if cap.strip()]
        if len(keep) < 2:
            notes.append(f"retrieval skipped for {label}: fewer than 2 {split_test} clips with captions")
            continue
        say(f"retrieval {label}: embedding {len(keep)} captions")
        import torch

        with torch.no_grad():
            txt = np.concatenate(
                [
                    model.embed_text([caps[j] for j in keep[s : s + 64]]).double().numpy()
                    for s in range(0, len(keep), 64)
                ]
            )
        aud = embeddings[label][[test_idx[j] for j in keep]]
        ret[label] = retrieval_metrics(aud, txt, [caps[j] for j in keep])
        n = len({caps[j] for j in keep})
        ret[label]["chance_r1"] = 1.0 / n
        ret[label]["chance_r5"] = min(1.0, 5.0 / n)

    settings = {
        "features": feats, "models": [asdict(m) for m in models], "pooling": pooling, "C": c, "seed": seed,
        "max_clips_per_split": max_clips, "max_seconds": max_seconds, "targets": [t.name for t in tgts],
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }  # fmt: skip
    return ProbeResults(
        str(manifest), split_train, split_test, clips, list(matrices), plans, scores, ret, settings, notes
    )


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def results_to_json(res: ProbeResults) -> dict[str, Any]:
    """A JSON-serialisable summary (NaN -> ``None``)."""

    targets = {
        p.target: {
            "protocol": p.protocol, "reason": p.reason, "n_train": len(p.train), "n_test": len(p.test),
            "classes": p.classes, "dropped": p.dropped, "chance": p.chance, "balanced_chance": p.balanced_chance,
            "description": p.description,
        }
        for p in res.plans
    }  # fmt: skip
    doc = {
        "manifest": res.manifest, "split_train": res.split_train, "split_test": res.split_test,
        "clips": res.clips, "settings": res.settings, "targets": targets, "scores": res.scores,
        "retrieval": res.retrieval, "notes": res.notes,
    }  # fmt: skip
    return dict(json_safe(doc))


def _fmt(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def markdown_report(res: ProbeResults, command: str | None = None, plot_name: str | None = None) -> str:
    """The probe report: accuracy table (rows: feature sets, columns: targets), chance, protocols, retrieval."""
    active = [p for p in res.plans if p.protocol != "skipped"]
    head = ["features"] + [p.target for p in active]
    lines = [
        "# Understanding probes and retrieval",
        "",
        f"Manifest `{res.manifest}`: {res.clips.get(res.split_train, 0)} `{res.split_train}` clips, "
        f"{res.clips.get(res.split_test, 0)} `{res.split_test}` clips.",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += [
        "",
        f"Linear probes: standardised features -> logistic regression (C = {res.settings['C']}, seed "
        f"{res.settings['seed']}), frame features pooled by `{res.settings['pooling']}` over each clip. "
        "Cells are test accuracy in %; `chance` answers the probe-training majority class.",
        "",
        "## Probe accuracy (%)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(active)) + "|",
    ]
    for name in res.feature_rows:
        cells = [_fmt(res.scores[name].get(p.target, {}).get("accuracy")) for p in active]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| *chance* | " + " | ".join(_fmt(p.chance) for p in active) + " |")
    lines += ["", "Balanced accuracy (%) in the same layout:", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * len(active)) + "|")
    for name in res.feature_rows:
        cells = [_fmt(res.scores[name].get(p.target, {}).get("balanced_accuracy")) for p in active]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| *chance* | " + " | ".join(_fmt(p.balanced_chance) for p in active) + " |")
    lines += [
        "",
        "Accuracy favours the majority class of imbalanced targets (e.g. most speech is English); balanced "
        "accuracy (mean per-class recall) does not, its chance level is 1 / number of classes.",
        "",
        "## Targets and protocols",
        "",
        "| target | source | protocol | probe-train clips | eval clips | classes | dropped | reason |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for p in res.plans:
        lines.append(
            f"| {p.target} | {p.description} | {p.protocol} | {len(p.train)} | {len(p.test)} | {len(p.classes)} | "
            f"{p.dropped} | {p.reason} |"
        )
    lines += [
        "",
        "`held-out`: trained on the train split, scored on test clips whose class occurs in training. "
        "`within-test`: the class sets of the two splits barely overlap (the corpus holds voices and "
        "instruments out of training), so the probe is trained and scored on a seeded stratified 50/50 "
        "clip split of the test split: it measures separability of classes the model never saw.",
        "",
        "## Audio <-> caption retrieval (test split, rich captions)",
        "",
    ]
    if res.retrieval:
        lines += [
            "| model | clips | audio->text R@1 | R@5 | text->audio R@1 | R@5 | chance R@1 | chance R@5 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, r in res.retrieval.items():
            lines.append(
                f"| {label} | {int(r['n'])} | {_fmt(r['a2t_r1'])} | {_fmt(r['a2t_r5'])} | {_fmt(r['t2a_r1'])} | "
                f"{_fmt(r['t2a_r5'])} | {_fmt(r['chance_r1'])} | {_fmt(r['chance_r5'])} |"
            )
        lines += [
            "",
            "Recall in %; cosine similarity of `embed_audio` and `embed_text`; identical captions count as matches.",
        ]
    else:
        lines.append("No retrieval row (no model with a caption encoder was given).")
    if plot_name:
        lines += ["", f"![probe accuracy]({plot_name})"]
    timings = res.settings.get("timings_s") or {}
    if timings:
        lines += ["", "Compute time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + "."]
    if res.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res.notes]
    return "\n".join(lines) + "\n"


def plot_probes(res: ProbeResults, path: str | Path) -> None:
    """Grouped bars, one group per target and one bar per feature set, chance as a black line:
    accuracy (top) and balanced accuracy (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    active = [p for p in res.plans if p.protocol != "skipped"]
    n_rows = max(1, len(res.feature_rows))
    width = 0.8 / n_rows
    xs = np.arange(len(active))
    fig, axes = plt.subplots(
        2, 1, figsize=(min(16.0, 2.5 + 0.3 * len(active) * (n_rows + 1)), 7.5), sharex=True
    )
    for ax, metric, chance_of in (
        (axes[0], "accuracy", lambda p: p.chance),
        (axes[1], "balanced_accuracy", lambda p: p.balanced_chance),
    ):
        for j, name in enumerate(res.feature_rows):
            vals = [100 * res.scores[name].get(p.target, {}).get(metric, math.nan) for p in active]
            ax.bar(xs - 0.4 + (j + 0.5) * width, vals, width, label=name, color=f"C{j % 10}")
        for x, p in zip(xs, active, strict=True):
            ax.hlines(100 * chance_of(p), x - 0.42, x + 0.42, colors="black", linewidth=1.5,
                      label="chance" if x == 0 else "_nolegend_")  # fmt: skip
        ax.set_ylabel(f"test {metric.replace('_', ' ')} (%)")
        ax.set_ylim(0, 100)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_title("Linear probes on frozen features")
    axes[1].set_xticks(xs, [f"{p.target}\n({p.protocol})" for p in active], fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=min(3, len(labels)), loc="lower center")
    fig.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(labels) / 3), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_probe_report(res: ProbeResults, out: str | Path, command: str | None = None) -> dict[str, Path]:
    """Write ``OUT.md``, ``OUT.json`` and ``OUT.png``; returns their paths."""
    paths = report_paths(out, {"markdown": ".md", "json": ".json", "plot": ".png"})
    doc = {**results_to_json(res), "command": command}
    return write_report(
        paths,
        lambda: markdown_report(res, command, paths["plot"].name),
        doc,
        figures={"plot": lambda p: plot_probes(res, p)},
    )
