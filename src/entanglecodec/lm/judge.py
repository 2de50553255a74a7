"""The independent audio classifier that judges text-to-audio output, and the report statistics.

:class:`AudioJudge` is trained on **ground-truth** audio of the corpus's train split, never on
codec output and never with EntangleCodec's own towers: clip features are the pooled log-mel of
:class:`~entanglecodec.eval.probe.LogMelFeatures` (mean and standard deviation per mel bin), the
classifier a standardised multinomial logistic regression (scikit-learn, fixed seed), one per
target (:data:`~entanglecodec.eval.probe.TARGETS`, e.g. ``domain`` and ``event``). A generated
clip is correct when the judge assigns it the class of the caption it was generated from; the
judge's accuracy on the real test clips is reported beside it as the ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..eval.probe.measure import TARGETS, LogMelFeatures, pool

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson 95 % interval of a proportion ``k / n`` (``(nan, nan)`` when ``n == 0``)."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def diff_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """``p1 - p2`` with Newcombe's hybrid-score 95 % interval (from the two Wilson intervals)."""
    if n1 == 0 or n2 == 0:
        return math.nan, math.nan, math.nan
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


class AudioJudge:
    """Log-mel + logistic-regression classifiers of ground-truth audio (see module docstring).

    Args:
        targets: target names of :data:`~entanglecodec.eval.probe.TARGETS`.
        seed: classifier seed.
    """

    def __init__(self, targets: Sequence[str] = ("domain", "event"), seed: int = 0) -> None:
        unknown = [t for t in targets if t not in TARGETS]
        if unknown:
            raise ValueError(f"unknown judge target(s) {unknown} (known: {', '.join(TARGETS)})")
        self.targets = list(targets)
        self.seed = seed
        self.features = LogMelFeatures()
        self.models: dict[str, Any] = {}

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """``float64 [256]``: mean and std of the clip's log-mel frames."""
        return pool(self.features(np.asarray(wav, dtype=np.float32)), "meanstd")

    def fit(self, rows: Sequence[Mapping[str, Any]], wavs: Sequence[np.ndarray]) -> AudioJudge:
        """Fit one classifier per target on the rows that have a label (at least 2 classes)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x = np.stack([self.embed(w) for w in wavs])
        for t in self.targets:
            labels = [TARGETS[t].extract(r) for r in rows]
            keep = [i for i, y in enumerate(labels) if y is not None]
            if len({labels[i] for i in keep}) < 2:
                continue
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=self.seed))
            self.models[t] = clf.fit(x[keep], [labels[i] for i in keep])
        return self

    def predict(self, target: str, wavs: Sequence[np.ndarray]) -> list[str]:
        if target not in self.models:
            raise ValueError(f"the judge has no classifier for {target!r} (fewer than 2 classes in training)")
        return [str(y) for y in self.models[target].predict(np.stack([self.embed(w) for w in wavs]))]

    def classes(self, target: str) -> list[str]:
        return [str(c) for c in self.models[target].classes_] if target in self.models else []
