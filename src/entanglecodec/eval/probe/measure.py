"""Probe measurements: targets read from manifest attributes, clip selection, frozen
feature sets (tokens, pre-quantisation, frames, log-mel, k-means), linear probes and retrieval."""

from __future__ import annotations

import math
import random
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from ...codec.model import EntangleCodec


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
    """``float32 [S]`` mono waveform at 24 kHz, cropped to its first ``max_seconds`` seconds
    (:func:`entanglecodec.eval.load.load_clip`; an empty clip is a :class:`ProbeError`)."""
    from .. import load

    try:
        return load.load_clip(path, max_seconds, SAMPLE_RATE)
    except ValueError as e:
        if "empty audio" in str(e):
            raise ProbeError(str(e)) from e
        raise


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
        from ...audio import MelFrontend
        from ...config import MelConfig

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

    from ...audio import pad_batch

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
