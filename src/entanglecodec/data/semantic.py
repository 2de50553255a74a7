"""Per-frame semantic teacher features for a feature directory (the ``loss.semantic`` switch; not in the paper).

The paper aligns the encoder with captions (one vector per clip). Nothing in it tells the 50 Hz tokens
*what is said*, and on real speech ours decode to mels Whisper cannot read (``reports/codec-diagnosis.md``).
This module adds a frame-level target that does: the output of a speech recogniser's encoder. Whisper's
encoder runs at 50 frames per second (10 ms log-mel frames, one stride-2 convolution), the codec's own
frame rate, and frame ``i`` of both is centred on ``i * 20 ms``, so the two align frame for frame.
Training distils these frames into the token vectors ``Z_q`` through a small head
(:class:`~entanglecodec.training.aux_losses.SemanticHead`), the way SpeechTokenizer and X-Codec distil
a self-supervised model into their first codebook.

The teacher is a CTranslate2 Whisper model shipped in a pip package (:mod:`entanglecodec.eval.whisper`;
``base`` is multilingual, 512-d). Its features sit beside the mels of an existing feature directory::

    DIR/SPLIT-NNNNN.sem.npy     float16 [T, D]: teacher frame of every mel frame of the shard; zeros
                                for clips outside SPEECH_DOMAINS (the loss skips all-zero frames)
    DIR/SPLIT-NNNNN.sem.json    its SHA-256 (written after the array: a shard without it is incomplete)
    DIR/semantic.json           teacher name, dimension, per-dimension mean / std over the train frames
                                of speech (training standardises with them), written last

``entanglecodec data semantic DIR`` writes them; it resumes shard by shard, and ``--reuse OTHER``
copies the frames of clips another directory already holds. ``entanglecodec data compact`` writes a
smaller copy for a machine behind a transfer limit (:func:`compact_features`: a subset of shards,
the frames as int8 principal-component coefficients that the training head maps back).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write, atomic_write_text
from .features import INDEX_NAME, FeatureError, read_index, source_audio_paths

SEMANTIC_NAME = "semantic.json"
TEACHER_RATE = 16000  # Hz: Whisper's input rate
TEACHER_FRAME_RATE = 50  # teacher frames per second (must equal the codec's frame rate)
WINDOW_SECONDS = 30  # Whisper's fixed input window
SPEECH_DOMAINS = ("speech", "mixture")  # clips the teacher reads; the others get zero frames, which the loss skips

Encoder = Callable[[np.ndarray], np.ndarray]
"""A teacher: ``wav [S]`` float32 at 16 kHz (at most 30 s) -> frames ``[ceil(S / 320), D]`` float32."""


def whisper_encoder(name: str = "base", threads: int = 1) -> tuple[Encoder, str]:
    """The encoder of the packaged Whisper model ``name`` as an :data:`Encoder`, and its description."""
    import ctranslate2

    from ..eval.whisper import load_model

    model = load_model(name, threads)
    extractor = model.feature_extractor
    window = WINDOW_SECONDS * TEACHER_RATE
    n_in = extractor.nb_max_frames  # 3000 log-mel frames of 10 ms

    def encode(wav16k: np.ndarray) -> np.ndarray:
        if wav16k.size > window:
            raise ValueError(f"teacher window is {WINDOW_SECONDS} s, got {wav16k.size / TEACHER_RATE:.2f} s")
        padded = np.zeros(window, dtype=np.float32)
        padded[: wav16k.size] = wav16k
        feats = extractor(padded)[:, :n_in]  # [n_mels, 3000]
        x = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[None], dtype=np.float32))
        out = np.asarray(model.model.encode(x, to_cpu=True))[0]  # [1500, D]
        n = -(-wav16k.size // (TEACHER_RATE // TEACHER_FRAME_RATE))
        return out[:n].astype(np.float32)

    return encode, f"whisper-{name} encoder (ctranslate2)"


def _to_teacher_rate(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    import soxr

    x = soxr.resample(wav.astype(np.float32), sample_rate, TEACHER_RATE) if sample_rate != TEACHER_RATE else wav
    return np.asarray(x, dtype=np.float32)


def _fit(frames: np.ndarray, n_frames: int) -> np.ndarray:
    """Trim to ``n_frames``, or repeat the last frame (the codec's centred STFT gives one frame more)."""
    if frames.shape[0] >= n_frames:
        return frames[:n_frames]
    return np.concatenate([frames, np.repeat(frames[-1:], n_frames - frames.shape[0], axis=0)])


def teacher_frames(wav: np.ndarray, sample_rate: int, n_frames: int, encode: Encoder) -> np.ndarray:
    """Teacher frames ``[n_frames, D]`` float32 of one clip ``wav [S]`` at ``sample_rate``.

    The clip is resampled to 16 kHz and encoded in consecutive 30 s windows, each clip from the start
    of its own window; frame ``i`` is centred on ``i * 20 ms`` like the codec's mel frame ``i``.
    Packing several short clips into one window would be cheaper, but Whisper's encoder output
    depends on a frame's absolute position in the window: a clip placed after another one, or after
    10 s of silence, gave frames with a mean cosine of only 0.41-0.56 to the same clip encoded alone.
    """
    x = _to_teacher_rate(wav, sample_rate)
    step = WINDOW_SECONDS * TEACHER_RATE
    return _fit(np.concatenate([encode(x[s : s + step]) for s in range(0, max(x.size, 1), step)]), n_frames)


def _shard_done(root: Path, name: str) -> bool:
    """Whether the shard's frames are complete (their teacher is checked up front by :func:`write_semantic`)."""
    meta = root / f"{name}.sem.json"
    arr = root / f"{name}.sem.npy"
    if not (meta.is_file() and arr.is_file()):
        return False
    try:
        return bool(json.loads(meta.read_text())["sha256"] == hashlib.sha256(arr.read_bytes()).hexdigest())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _lenders(dirs: Sequence[str | Path], teacher: str, mel_hash: str) -> dict[str, tuple[Path, str, int, int]]:
    """Clip id -> ``(directory, shard, first frame, frames)`` over feature directories whose finished
    teacher frames come from ``teacher`` and whose mels from the same front end (``mel_hash``)."""
    out: dict[str, tuple[Path, str, int, int]] = {}
    for d in map(Path, dirs):
        sem, index = read_semantic(d), read_index(d)
        if sem.get("teacher") != teacher or "reduced" in sem:
            what = "reduced frames" if "reduced" in sem else f"frames of another teacher ({sem.get('teacher')})"
            raise FeatureError(f"--reuse {d}: holds {what}, not {teacher} frames")
        if index.get("mel_hash") != mel_hash:
            raise FeatureError(f"--reuse {d}: its mels come from another front end (mel hash {index.get('mel_hash')})")
        for split in index["splits"].values():
            for name in split["shards"]:
                for c in json.loads((d / f"{name}.json").read_text())["clips"]:
                    out.setdefault(c["id"], (d, name, int(c["start"]), int(c["frames"])))
    return out


def write_semantic(
    root: str | Path,
    encode: Encoder,
    teacher: str,
    resume: bool = False,
    on_clip: Callable[[str], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    reuse: Sequence[str | Path] = (),
    part: tuple[int, int] | None = None,
) -> dict[str, Any] | None:
    """Add teacher frames to every shard of the feature directory ``root``; returns ``semantic.json``.

    ``part = (i, n)`` writes only the shards at positions ``i, i + n, i + 2n, ...`` of the index, so
    ``n`` processes (or machines sharing the directory) split the work; each keeps the shards already
    finished, as with ``resume``. The process that finds every shard finished writes
    ``semantic.json`` and returns it; the others return ``None``.

    ``reuse``: other feature directories with this teacher's frames (same mel front end); a clip
    they hold (same id, same frame count) is copied from them instead of encoded again, so a
    directory made of several earlier corpora costs only its new clips.

    Raises:
        FeatureError: not a finished feature directory, semantic features already there (without
            ``resume``) or made by another teacher, a clip whose audio is gone, a ``reuse``
            directory of another teacher or front end.
    """
    from ..audio import load_audio

    root = Path(root)
    index = read_index(root)
    sem_path = root / SEMANTIC_NAME
    if part is not None and not (part[1] >= 1 and 0 <= part[0] < part[1]):
        raise FeatureError(f"part must be I/N with 0 <= I < N, got {part[0]}/{part[1]}")
    existing = sorted(p.name for p in root.glob("*.sem.*"))
    if sem_path.is_file() or existing:
        if not resume and part is None:
            raise FeatureError(f"{root}: already holds semantic features; pass --resume to complete them")
        records = [sem_path] if sem_path.is_file() else []
        records += sorted(root.glob("*.sem.json"))
        for rec in records:  # checked before anything is written: no directory with two teachers' frames
            try:
                other = json.loads(rec.read_text()).get("teacher")
            except (OSError, ValueError, AttributeError):
                continue
            if other != teacher:
                raise FeatureError(f"{root}: its semantic features come from another teacher ({other}); remove them first")
        if sem_path.is_file() and "reduced" in read_semantic(root):
            raise FeatureError(f"{root}: a reduced copy ('entanglecodec data compact'); add teacher frames to its source instead")
    rate = index["mel"]["sample_rate"] / index["mel"]["hop_length"]
    if abs(rate - TEACHER_FRAME_RATE) > 1e-6:
        raise FeatureError(f"{root}: mel frames at {rate:g} Hz; the teacher runs at {TEACHER_FRAME_RATE} Hz")
    everything = [(split, name) for split, s in index["splits"].items() for name in s["shards"]]
    shards = everything if part is None else everything[part[0] :: part[1]]
    metas = {name: json.loads((root / f"{name}.json").read_text()) for _, name in shards}
    if on_start is not None:
        on_start(sum(len(m["clips"]) for m in metas.values()))
    paths: dict[str, str] | None = None
    sr = int(index["mel"]["sample_rate"])
    lent = _lenders(reuse, teacher, str(index.get("mel_hash"))) if reuse else {}
    lent_dim = int(read_semantic(reuse[0])["dim"]) if reuse else None
    lent_arrays: dict[tuple[Path, str], np.ndarray] = {}  # each lender shard memory-mapped once
    for _, name in shards:
        meta = metas[name]
        if _shard_done(root, name):
            if on_clip is not None:
                for c in meta["clips"]:
                    on_clip(c["id"])
            continue
        if paths is None:
            paths = source_audio_paths(index)
        frames = []
        for c in meta["clips"]:
            n = int(c["frames"])
            other = lent.get(c["id"])
            if c["domain"] not in SPEECH_DOMAINS:
                frames.append(np.zeros((n, 0), dtype=np.float16))
            elif other is not None and other[3] == n:
                d, name_, start, _ = other
                if (d, name_) not in lent_arrays:
                    lent_arrays[d, name_] = np.load(d / f"{name_}.sem.npy", mmap_mode="r")
                frames.append(np.array(lent_arrays[d, name_][start : start + n], dtype=np.float16))
            else:
                if c["id"] not in paths:
                    raise FeatureError(f"{root}: clip {c['id']!r} is in no source manifest")
                wav, _ = load_audio(paths[c["id"]], sr)
                frames.append(teacher_frames(wav, sr, n, encode).astype(np.float16))
            if on_clip is not None:
                on_clip(c["id"])
        dim = next((f.shape[1] for f in frames if f.shape[1] > 0), None)
        if dim is None:  # no speech in this shard: the teacher's size from a lender ...
            dim = lent_dim
        if dim is None:  # ... or from a silent window
            dim = int(encode(np.zeros(TEACHER_RATE, dtype=np.float32)).shape[1])
        arr = np.concatenate([np.zeros((f.shape[0], dim), np.float16) if f.shape[1] == 0 else f
                              for f in frames])
        if arr.shape[0] != meta["frames"]:
            raise FeatureError(f"{root}/{name}: {arr.shape[0]} teacher frames for {meta['frames']} mel frames")

        def save(tmp: Path, a: np.ndarray = arr) -> None:
            np.save(tmp, a, allow_pickle=False)

        atomic_write(root / f"{name}.sem.npy", save)
        digest = hashlib.sha256((root / f"{name}.sem.npy").read_bytes()).hexdigest()
        atomic_write_text(root / f"{name}.sem.json", json.dumps({"sha256": digest, "teacher": teacher}) + "\n")
    if part is not None:  # this part's shards were checked or written above; hash only the others'
        mine = set(metas)
        if not all(_shard_done(root, name) for _, name in everything if name not in mine):
            return None  # another part is still running: the last one to finish writes the summary
    stat_split = "train" if "train" in index["splits"] else next(iter(index["splits"]))
    s1: np.ndarray | None = None
    s2: np.ndarray | None = None
    n = 0
    for name in index["splits"][stat_split]["shards"]:
        a = np.load(root / f"{name}.sem.npy", mmap_mode="r").astype(np.float64)
        a = a[np.any(a != 0, axis=1)]
        s1 = a.sum(axis=0) if s1 is None else s1 + a.sum(axis=0)
        s2 = (a * a).sum(axis=0) if s2 is None else s2 + (a * a).sum(axis=0)
        n += a.shape[0]
    assert s1 is not None and s2 is not None
    mean = s1 / max(n, 1)
    std = np.sqrt(np.maximum(s2 / max(n, 1) - mean * mean, 1e-8))
    doc = {"teacher": teacher, "dim": int(mean.size), "frame_rate_hz": TEACHER_FRAME_RATE, "stats_split": stat_split,
           "n_frames": n, "mean": mean.tolist(), "std": std.tolist()}
    atomic_write_text(sem_path, json.dumps(doc) + "\n")
    return doc


def read_semantic(root: str | Path) -> dict[str, Any]:
    """``semantic.json`` of a feature directory (one-line :class:`FeatureError` when it has none)."""
    p = Path(root) / SEMANTIC_NAME
    if not p.is_file():
        raise FeatureError(
            f"{root}: no semantic teacher features (loss.semantic needs them: 'entanglecodec data semantic {root}')"
        )
    try:
        return dict(json.loads(p.read_text()))
    except (OSError, ValueError) as e:
        raise FeatureError(f"{p}: unreadable ({e})") from e


PCA_SAMPLE_EVERY = 4  # every 4th speech frame of the train split estimates the principal components


def _principal_axes(root: Path, shards: Sequence[str], mean: np.ndarray, std: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Leading ``dims`` principal axes ``[dims, D]`` of the standardised speech frames of ``shards``, the
    standard deviation of each coefficient ``[dims]``, and the fraction of the variance they hold."""
    cov = np.zeros((mean.size, mean.size), dtype=np.float64)
    n = 0
    for name in shards:
        a = np.asarray(np.load(root / f"{name}.sem.npy", mmap_mode="r")[::PCA_SAMPLE_EVERY], dtype=np.float64)
        a = (a[np.any(a != 0, axis=1)] - mean) / std
        cov += a.T @ a
        n += a.shape[0]
    if n <= dims:
        raise FeatureError(f"{root}: {n} speech frames are too few for {dims} principal components")
    w, v = np.linalg.eigh(cov / n)
    order = np.argsort(w)[::-1][:dims]
    return v[:, order].T.copy(), np.sqrt(np.maximum(w[order], 1e-12)), float(w[order].sum() / w.sum())


def compact_features(src: str | Path, out: str | Path, dims: int, shards: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A smaller copy of the feature directory ``src`` with teacher frames in ``out`` (for a machine
    reached through a transfer limit); returns the copy's ``semantic.json``.

    The teacher frames ``[T, D]`` float16 become the first ``dims`` principal-component coefficients of
    the standardised frames, ``[T, dims]`` int8 (a per-component step of 4 standard deviations / 127;
    non-speech frames stay all-zero). ``semantic.json`` keeps ``dim`` (= D, what the head predicts),
    ``mean`` and ``std``, and adds ``reduced``: ``{"dims", "basis" [dims][D], "step" [dims],
    "explained"}``; the dataset multiplies by ``step`` and the head maps the coefficients back to D
    dimensions (standardised) through ``basis``, so a head trained on full frames keeps working.
    ``shards`` caps the shards kept per split (evenly spaced over the split; absent: all); the mel
    statistics of ``src`` are kept.

    Raises:
        FeatureError: ``src`` has no (or already reduced) teacher frames, ``out`` is not empty, ``dims`` out of range.
    """
    import shutil

    src, out = Path(src), Path(out)
    index = read_index(src)
    sem = read_semantic(src)
    if "reduced" in sem:
        raise FeatureError(f"{src}: its teacher frames are reduced already")
    d = int(sem["dim"])
    if not 1 <= dims <= d:
        raise FeatureError(f"--dims must lie in 1..{d} (the teacher's size), got {dims}")
    if out.exists() and any(out.iterdir()):
        raise FeatureError(f"{out}: exists and is not empty")
    splits: dict[str, list[str]] = {}
    for split, s in index["splits"].items():
        names = list(s["shards"])
        keep = len(names) if shards is None or split not in shards else max(1, min(int(shards[split]), len(names)))
        splits[split] = [names[round(i * len(names) / keep)] for i in range(keep)]
    for names in splits.values():
        for name in names:
            if not _shard_done(src, name):
                raise FeatureError(f"{src}/{name}: teacher frames missing or damaged (run 'entanglecodec data semantic --resume')")
    mean, std = np.asarray(sem["mean"]), np.asarray(sem["std"]).clip(1e-4)
    stat_split = str(sem.get("stats_split", "train"))
    basis, coef_std, explained = _principal_axes(src, index["splits"][stat_split]["shards"], mean, std, dims)
    step = 4.0 * coef_std / 127.0
    out.mkdir(parents=True, exist_ok=True)
    splits_out: dict[str, Any] = {}
    total_bytes = 0
    for split, names in splits.items():
        clips = frames = 0
        seconds = 0.0
        for name in names:
            meta = json.loads((src / f"{name}.json").read_text())
            for f in meta["files"]:
                shutil.copyfile(src / f, out / f)
                total_bytes += (out / f).stat().st_size
            a = np.asarray(np.load(src / f"{name}.sem.npy", mmap_mode="r"), dtype=np.float64)
            speech = np.any(a != 0, axis=1)
            q = np.zeros((a.shape[0], dims), dtype=np.int8)
            c = ((a[speech] - mean) / std) @ basis.T / step
            q[speech] = np.clip(np.rint(c), -127, 127).astype(np.int8)
            q[speech & ~np.any(q != 0, axis=1), 0] = 1  # a speech frame must not read as "no target"

            def save(tmp: Path, arr: np.ndarray = q) -> None:
                np.save(tmp, arr, allow_pickle=False)

            atomic_write(out / f"{name}.sem.npy", save)
            digest = hashlib.sha256((out / f"{name}.sem.npy").read_bytes()).hexdigest()
            atomic_write_text(out / f"{name}.sem.json", json.dumps({"sha256": digest, "teacher": sem["teacher"]}) + "\n")
            shutil.copyfile(src / f"{name}.json", out / f"{name}.json")  # last: marks the shard complete
            clips += len(meta["clips"])
            frames += int(meta["frames"])
            seconds += float(meta["seconds"])
        splits_out[split] = {"clips": clips, "frames": frames,
                             "hours": round(seconds / 3600.0, 4), "shards": names}
    doc = dict(sem)
    doc["reduced"] = {"dims": dims, "dtype": "int8", "basis": basis.tolist(), "step": step.tolist(),
                      "explained": round(explained, 4), "source": str(src)}
    new_index = dict(index)
    new_index["splits"] = splits_out
    new_index["bytes"] = total_bytes
    atomic_write_text(out / SEMANTIC_NAME, json.dumps(doc) + "\n")
    atomic_write_text(out / INDEX_NAME, json.dumps(new_index, indent=1) + "\n")  # written last: the copy is finished
    return doc
