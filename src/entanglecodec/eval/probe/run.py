"""The whole probe evaluation: every model x feature set x target, plus retrieval."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .measure import (
    DEFAULT_FEATURES,
    FEATURES,
    MODEL_FEATURES,
    TARGETS,
    KMeansTokenizer,
    LogMelFeatures,
    Pooling,
    ProbeError,
    Target,
    TargetPlan,
    code_histogram,
    fit_probe,
    load_clip,
    model_features,
    plan_target,
    pool,
    retrieval_metrics,
    select_rows,
)

if TYPE_CHECKING:
    from ...codec.model import EntangleCodec


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
        from ..load import load_codec

        if self.checkpoint is None and self.preset is None:
            raise ProbeError(f"model {self.label!r}: neither a checkpoint nor a preset")
        return load_codec(self.checkpoint, self.preset, self.seed, bundled=False).model


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
    from ...data.manifest import read_manifest

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
