"""Pre-computed feature shards: the codec's training inputs without audio decoding or Debian tools.

A feature directory holds, per clip of the chosen splits, what the stage-1 / disc / stage-2 recipes
read from a waveform: the log-mel of the codec's front end (:class:`~entanglecodec.audio.MelFrontend`),
the per-frame F0 targets of the ``loss.primitives`` term (WORLD DIO + StoneMask at 16 kHz, as
:class:`~entanglecodec.training.aux_losses.PitchCollate` computes them), the caption text and, when the
caption tower is a frozen pretrained backbone, its pooled caption embedding. A GPU run trains from it
with ``data.features: DIR`` (see :mod:`entanglecodec.training.data`).

Layout (every array is a plain ``.npy`` file, memory-mapped when read)::

    DIR/index.json                 format, mel config, quantisation grid, mel statistics, captions,
                                   the config hash training checks, per-split clip/frame/hour counts
    DIR/plan.json                  a hash of the clips chosen and the config (written first; ``--resume``
                                   continues only with the same plan)
    DIR/SPLIT-NNNNN.mel.npy        uint8 ``[T, n_mels]``: all frames of the shard's clips, one after another
    DIR/SPLIT-NNNNN.f0.npy         float16 ``[T]``: F0 in Hz per frame, 0 = unvoiced
    DIR/SPLIT-NNNNN.emb.npy        float16 ``[N, D]``: pooled caption embeddings (frozen pretrained tower only)
    DIR/SPLIT-NNNNN.json           the shard's clips (id, first frame, frames, domain, caption) and the
                                   SHA-256 of its arrays; written last, so a shard without it is incomplete

Quantisation: ``log_mel = offset[b] + scale[b] * q`` with ``q`` uint8. ``offset`` is the log floor
(silence is exact) and ``offset + 255 * scale`` the largest log-mel a signal in ``[-1, 1]`` can reach
in bin ``b`` (Parseval: ``max_k fb[b, k] * n_fft * sum(window^2)``), so nothing ever clips. The grid
depends on the mel config only. Log-mels are stored un-normalised; training normalises them with the
run's statistics exactly as the front end does (``index.json`` carries the statistics given at build
time, which ``data.mel_stats: compute`` then uses).

Frames are the whole clip's frames: a training crop is a run of them, so its first and last two frames
see the real neighbouring audio where the waveform path's crop sees zero padding; every other frame is
the same up to the quantisation step.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..config import EntangleCodecConfig, MelConfig, TextEncoderConfig
from ..fileio import atomic_write, atomic_write_text
from .dataset import _crop_offset, check_text_field, crop_length, crop_rng
from .manifest import SPLITS, ManifestRow, read_manifest, read_manifests

FORMAT = "entanglecodec-features"
VERSION = 1
INDEX_NAME = "index.json"
PLAN_NAME = "plan.json"
F0_TRACKER = {"tracker": "pyworld dio+stonemask", "rate_hz": 16000, "floor_hz": 60.0, "ceil_hz": 900.0}


class FeatureError(ValueError):
    """A feature directory is missing, incomplete, corrupted or made for another mel/caption config."""


# ---------------------------------------------------------------------------------------------
# Configuration, hashes and the quantisation grid
# ---------------------------------------------------------------------------------------------
def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def mel_config_hash(mel: MelConfig) -> str:
    """Short hash of the mel front end's configuration (training refuses a shard of another one)."""
    return _hash(asdict(mel))


def quant_grid(mel: MelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin ``(offset, scale)`` float32 ``[n_mels]`` of the uint8 grid (see the module docstring)."""
    from ..audio import mel_filterbank

    fb = mel_filterbank(mel.sample_rate, mel.n_fft, mel.n_mels, mel.f_min, mel.f_max).numpy().astype(np.float64)
    win = torch.hann_window(mel.win_length, dtype=torch.float64).numpy()
    peak = fb.max(axis=1) * mel.n_fft * float((win**2).sum())
    lo = math.log(mel.log_floor)
    hi = np.log(np.maximum(peak, mel.log_floor * 2))
    return np.full(mel.n_mels, lo, dtype=np.float32), ((hi - lo) / 255.0).astype(np.float32)


def quantize(log_mel: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Log-mel ``[n_mels, F]`` -> uint8 ``[F, n_mels]`` (frame-major, so crops are contiguous)."""
    q = np.rint((log_mel - offset[:, None]) / scale[:, None])
    return np.ascontiguousarray(np.clip(q, 0, 255).astype(np.uint8).T)


def dequantize(q: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """uint8 ``[F, n_mels]`` -> float32 log-mel ``[n_mels, F]``."""
    return (offset[:, None] + scale[:, None] * q.T.astype(np.float32)).astype(np.float32)


def caption_spec(text: TextEncoderConfig, text_field: str) -> dict[str, Any]:
    """What the shard stores for captions: always the text; the pooled embedding when the tower is
    a frozen pretrained backbone (its output then depends on the caption alone)."""
    emb = None
    if text.kind == "pretrained" and not text.trainable:
        from ..codec.text import default_text_model_path

        path = text.path or default_text_model_path()
        emb = {"model": Path(path).name, "default": text.path is None, "pooling": text.pooling,
               "max_length": text.max_length}
    return {"text_field": text_field, "embedding": emb}


def _embedding_matches(spec: Mapping[str, Any], text: TextEncoderConfig) -> bool:
    """Whether the stored embeddings are what the recipe's frozen pretrained tower would compute
    (the same backbone, by directory name or as the default model, pooling and token limit)."""
    if text.kind != "pretrained" or text.trainable:
        return False
    same_model = bool(spec["default"]) if text.path is None else spec["model"] == Path(text.path).name
    return bool(same_model and spec["pooling"] == text.pooling and spec["max_length"] == text.max_length)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _shard_name(split: str, k: int) -> str:
    return f"{split}-{k:05d}"


def _save_npy(path: Path, arr: np.ndarray) -> str:
    atomic_write(path, lambda tmp: np.save(tmp, arr, allow_pickle=False))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _select(rows: list[ManifestRow], max_hours: float | None, total_hours: float) -> list[ManifestRow]:
    """Clips in manifest order; with a cap, the clips first in a seed-free hash order up to the cap."""
    if max_hours is None or total_hours <= max_hours:
        return rows
    budget = max_hours * 3600.0 * sum(_duration(r) for r in rows) / (total_hours * 3600.0)
    order = sorted(range(len(rows)), key=lambda i: hashlib.blake2b(rows[i]["id"].encode(), digest_size=8).digest())
    keep: set[int] = set()
    used = 0.0
    for i in order:
        if used >= budget:
            break
        keep.add(i)
        used += _duration(rows[i])
    return [r for i, r in enumerate(rows) if i in keep]


def _duration(row: Mapping[str, Any]) -> float:
    d = row.get("duration")
    if d is None:
        from ..audio import audio_info

        n, sr = audio_info(row["audio"])
        return n / sr
    return float(d)


def _plan(
    manifests: Sequence[str | Path], splits: Sequence[str], max_hours: float | None, text_field: str
) -> dict[str, list[dict[str, Any]]]:
    per_split: dict[str, list[ManifestRow]] = {}
    for s in splits:
        try:
            per_split[s] = read_manifests(list(manifests), s)
        except ValueError:
            per_split[s] = []
    seen: set[str] = set()
    for s, rows in per_split.items():
        for r in rows:
            if r["id"] in seen:
                raise FeatureError(f"clip id {r['id']!r} occurs twice in the manifests (split {s}); ids must be unique")
            seen.add(r["id"])
    if not seen:
        raise FeatureError(f"the manifests hold no clips of split(s) {', '.join(splits)}")
    total = sum(_duration(r) for rows in per_split.values() for r in rows) / 3600.0
    return {
        s: [
            {"id": r["id"], "audio": r["audio"], "domain": r["domain"], "caption": str(r.get(text_field, "")),
             "duration": _duration(r)}
            for r in _select(rows, max_hours, total)
        ]
        for s, rows in per_split.items()
    }


def _shards(clips: list[dict[str, Any]], max_frames: int, frame_rate: float) -> list[list[dict[str, Any]]]:
    """Cut a split's clips into consecutive shards of about ``max_frames`` frames (by manifest duration)."""
    out: list[list[dict[str, Any]]] = [[]]
    frames = 0
    for c in clips:
        n = int(math.ceil(float(c["duration"]) * frame_rate))
        if out[-1] and frames + n > max_frames:
            out.append([])
            frames = 0
        out[-1].append(c)
        frames += n
    return [s for s in out if s]


def _shard_complete(out: Path, name: str) -> bool:
    meta_path = out / f"{name}.json"
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
        return all(
            (out / f).is_file() and hashlib.sha256((out / f).read_bytes()).hexdigest() == h
            for f, h in meta["files"].items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_features(
    manifests: Sequence[str | Path],
    out: str | Path,
    codec: EntangleCodecConfig,
    splits: Sequence[str] = ("train", "valid"),
    mel_stats: str | Path | None = None,
    max_hours: float | None = None,
    text_field: str = "caption",
    shard_mib: float = 8.0,
    resume: bool = False,
    overwrite: bool = False,
    on_clip: Callable[[str], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    reuse: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Compute the feature shards of ``manifests`` into ``out`` and return the index.

    Args:
        manifests: corpus manifests (rows of the chosen ``splits`` are used; ids must be unique).
        out: output directory; must be empty unless ``resume`` (same arguments: complete shards are
            kept, the rest is computed) or ``overwrite`` (this writer's files are replaced).
        codec: the codec config whose mel front end and caption tower the features are for.
        splits: manifest splits to write.
        mel_stats: a ``mel_stats.json`` (e.g. a run's) stored in the index as the normalisation that
            ``data.mel_stats: compute`` uses; ``None``: statistics of the written train frames.
        max_hours: cap on the hours written over all splits (each split keeps its share).
        text_field: manifest field stored as the caption (``caption``, ``asr_caption`` or ``text``).
        shard_mib: approximate size of one shard's mel array.
        on_clip / on_start: progress callbacks (clip id written / number of clips to write).
        reuse: finished feature directories of the same mel front end, quantisation grid and F0
            tracker; a clip they hold (same id, same audio file, same length) is copied from them
            instead of computed again (its caption embedding too when caption and tower match), so
            a corpus grown by a new part costs only the new clips. The output is the same either way.

    Raises:
        FeatureError: bad arguments, a non-empty ``out``, a changed plan on ``resume``, duplicate ids,
            a ``reuse`` directory made with another front end, grid or tracker.
        AudioError: an unreadable clip (the message names the file).
    """
    from ..audio import MelFrontend, load_mel_stats

    check_text_field(text_field)
    bad = sorted(set(splits) - set(SPLITS))
    if bad or not splits:
        raise FeatureError(f"unknown split(s) {bad or '(none)'} (choose from {', '.join(SPLITS)})")
    if max_hours is not None and not max_hours > 0:
        raise FeatureError(f"--max-hours must be positive, got {max_hours}")
    mel = codec.mel
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise FeatureError(f"{root}: exists and is not a directory")
    offset, scale = quant_grid(mel)
    stats: dict[str, Any] | None = None
    if mel_stats is not None:
        mean, std = load_mel_stats(mel_stats)
        if mean.shape != (mel.n_mels,):
            raise FeatureError(f"{mel_stats}: statistics of {mean.shape[0]} bins, the mel config has {mel.n_mels}")
        stats = {"mean": mean.tolist(), "std": std.tolist(), "source": str(mel_stats)}
    config: dict[str, Any] = {
        "mel": asdict(mel),
        "mel_hash": mel_config_hash(mel),
        "quant": {"dtype": "uint8", "offset": offset.tolist(), "scale": scale.tolist()},
        "f0": F0_TRACKER,
        "captions": caption_spec(codec.text, text_field),
    }
    chosen = _plan(manifests, splits, max_hours, text_field)
    plan_path = root / PLAN_NAME
    plan_hash = _hash({"format": FORMAT, "version": VERSION, "config": config, "splits": chosen})
    plan_record = {"format": FORMAT, "plan_hash": plan_hash, "clips": {s: len(c) for s, c in chosen.items()}}
    if root.is_dir() and any(root.iterdir()):
        if resume:
            try:
                old = json.loads(plan_path.read_text())
            except (OSError, ValueError) as e:
                raise FeatureError(f"{root}: nothing to resume (no readable {PLAN_NAME}: {e})") from e
            if old != plan_record:
                raise FeatureError(f"{root}: --resume with other manifests, splits, cap or config than the first run")
        elif overwrite:
            for p in root.iterdir():
                if p.name in (INDEX_NAME, PLAN_NAME) or any(p.name.startswith(f"{s}-") for s in SPLITS):
                    p.unlink()
        else:
            raise FeatureError(f"{root}: not empty; pass --resume to continue or --overwrite to replace its features")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan_path, json.dumps(plan_record, sort_keys=True) + "\n")

    fe = MelFrontend(mel)
    embedder = None
    if config["captions"]["embedding"] is not None:
        from ..codec.text import PretrainedTextBackbone

        embedder = PretrainedTextBackbone(codec.text)
        config["captions"]["embedding"]["dim"] = embedder.out_dim
    lenders = _feature_lenders(reuse, config)
    frame_rate = mel.sample_rate / mel.hop_length
    max_frames = max(1, int(shard_mib * 2**20 / mel.n_mels))
    todo = {s: _shards(cl, max_frames, frame_rate) for s, cl in chosen.items()}
    if on_start is not None:
        on_start(sum(len(cl) for cl in chosen.values()))
    splits_out: dict[str, Any] = {}
    for split, shards in todo.items():
        names, n_frames, seconds = [], 0, 0.0
        for k, clips in enumerate(shards):
            name = _shard_name(split, k)
            names.append(name)
            if _shard_complete(root, name):
                meta = json.loads((root / f"{name}.json").read_text())
            else:
                meta = _write_shard(root, name, clips, fe, offset, scale, embedder, on_clip, lenders)
            if on_clip is not None and "computed" not in meta:
                for c in clips:
                    on_clip(c["id"])
            meta.pop("computed", None)
            n_frames += meta["frames"]
            seconds += meta["seconds"]
        splits_out[split] = {"clips": len(chosen[split]), "frames": n_frames,
                             "hours": round(seconds / 3600.0, 4), "shards": names}
    if stats is None:
        stats = _stats_from_shards(root, splits_out.get("train") or next(iter(splits_out.values())), offset, scale)
    total_bytes = sum((root / f).stat().st_size for s in splits_out.values() for n in s["shards"]
                      for f in json.loads((root / f"{n}.json").read_text())["files"])
    hours = sum(s["hours"] for s in splits_out.values())
    config["config_hash"] = _hash({k: config[k] for k in ("mel", "quant", "f0", "captions")})
    index = {
        "format": FORMAT,
        "version": VERSION,
        **config,
        "mel_stats": stats,
        "sources": [str(Path(m).resolve()) for m in manifests],
        "splits": splits_out,
        "bytes": total_bytes,
        "bytes_per_hour": round(total_bytes / hours) if hours > 0 else None,
    }
    atomic_write_text(root / INDEX_NAME, json.dumps(index, indent=1, sort_keys=True) + "\n")
    return index


@dataclass(frozen=True)
class _Lent:
    """Where a finished feature directory holds one clip's features."""

    root: Path
    shard: str
    start: int  # first frame in the shard's arrays
    frames: int
    samples: int  # at the mel sample rate
    row: int  # the clip's row in the shard's caption embeddings
    audio: str  # resolved audio path of the source manifest
    caption: str
    embedding: bool  # whether its caption embedding was made by the same tower for the same field


def source_audio_paths(index: Mapping[str, Any]) -> dict[str, str]:
    """Clip id -> audio path, from the manifests a feature directory was built from.

    Raises:
        FeatureError: one of those manifests is gone.
    """
    paths: dict[str, str] = {}
    for src in index["sources"]:
        if not Path(src).is_file():
            raise FeatureError(f"{src}: the manifest this feature directory was built from is gone (its audio is needed)")
        for r in read_manifest(src, None, allow_empty=True):
            paths[r["id"]] = r["audio"]
    return paths


def _feature_lenders(dirs: Sequence[str | Path], config: Mapping[str, Any]) -> dict[str, _Lent]:
    """Clip id -> :class:`_Lent` over the ``reuse`` directories (the first holding an id wins)."""
    out: dict[str, _Lent] = {}
    for d in map(Path, dirs):
        index = read_index(d)
        for key, what in (("mel_hash", "mel front end"), ("quant", "quantisation grid"), ("f0", "F0 tracker")):
            if index.get(key) != config[key]:
                raise FeatureError(f"--reuse {d}: made with another {what} ({key} {index.get(key)!r}); it cannot lend features")
        same_tower = config["captions"]["embedding"] is not None and index["captions"] == config["captions"]
        paths = source_audio_paths(index)
        for split in index["splits"].values():
            for name in split["shards"]:
                for row, c in enumerate(json.loads((d / f"{name}.json").read_text())["clips"]):
                    if c["id"] in out or c["id"] not in paths:
                        continue
                    out[c["id"]] = _Lent(d, name, int(c["start"]), int(c["frames"]), int(c["samples"]), row,
                                         str(Path(paths[c["id"]]).resolve()), str(c["caption"]), same_tower)
    return out


def _lent_for(clip: Mapping[str, Any], lenders: Mapping[str, _Lent], sample_rate: int) -> _Lent | None:
    """The lender of ``clip`` when it holds the same audio file at the same length, else ``None``."""
    from ..audio import audio_info

    lent = lenders.get(clip["id"])
    if lent is None or lent.audio != str(Path(clip["audio"]).resolve()):
        return None
    n, sr = audio_info(clip["audio"])
    return lent if abs(round(n * sample_rate / sr) - lent.samples) <= 1 else None


def _write_shard(
    root: Path,
    name: str,
    clips: list[dict[str, Any]],
    fe: Any,
    offset: np.ndarray,
    scale: np.ndarray,
    embedder: Any,
    on_clip: Callable[[str], None] | None,
    lenders: Mapping[str, _Lent] | None = None,
) -> dict[str, Any]:
    from ..audio import load_audio
    from ..training.aux_losses import frame_f0

    mel = fe.cfg
    mels, f0s, entries = [], [], []
    embs: list[np.ndarray | None] = []
    arrays: dict[tuple[Path, str, str], np.ndarray] = {}  # each lender array memory-mapped once

    def lent_array(lent: _Lent, kind: str) -> np.ndarray:
        key = (lent.root, lent.shard, kind)
        if key not in arrays:
            arrays[key] = np.load(lent.root / f"{lent.shard}.{kind}.npy", mmap_mode="r")
        return arrays[key]

    start, seconds = 0, 0.0
    for c in clips:
        lent = _lent_for(c, lenders, mel.sample_rate) if lenders else None
        if lent is not None:
            q = np.array(lent_array(lent, "mel")[lent.start : lent.start + lent.frames])
            f0 = np.array(lent_array(lent, "f0")[lent.start : lent.start + lent.frames])
            n, samples = lent.frames, lent.samples
            reuse_emb = embedder is not None and lent.embedding and lent.caption == c["caption"]
            embs.append(np.array(lent_array(lent, "emb")[lent.row]) if reuse_emb else None)
        else:
            wav, _ = load_audio(c["audio"], mel.sample_rate)
            with torch.no_grad():
                lm = fe.log_mel(torch.from_numpy(wav)[None])[0].numpy()
            n, samples = lm.shape[1], int(wav.shape[0])
            q = quantize(lm, offset, scale)
            f0 = frame_f0(wav, mel.sample_rate, mel.hop_length, n).astype(np.float16)
            embs.append(None)
        mels.append(q)
        f0s.append(f0)
        entries.append({"id": c["id"], "start": start, "frames": n, "samples": samples,
                        "domain": c["domain"], "caption": c["caption"]})
        start += n
        seconds += samples / mel.sample_rate
        if on_clip is not None:
            on_clip(c["id"])
    files = {
        f"{name}.mel.npy": _save_npy(root / f"{name}.mel.npy", np.concatenate(mels)),
        f"{name}.f0.npy": _save_npy(root / f"{name}.f0.npy", np.concatenate(f0s)),
    }
    if embedder is not None:
        todo = [i for i, e in enumerate(embs) if e is None]
        with torch.no_grad():
            for i in range(0, len(todo), 64):
                part = todo[i : i + 64]
                new = embedder([clips[k]["caption"] for k in part]).float().numpy().astype(np.float16)
                for k, e in zip(part, new, strict=True):
                    embs[k] = e
        files[f"{name}.emb.npy"] = _save_npy(root / f"{name}.emb.npy", np.stack([e for e in embs if e is not None]))
    meta = {"clips": entries, "files": files, "frames": start, "seconds": round(seconds, 4)}
    atomic_write_text(root / f"{name}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False) + "\n")
    return {**meta, "computed": True}


def _stats_from_shards(root: Path, split: Mapping[str, Any], offset: np.ndarray, scale: np.ndarray) -> dict[str, Any]:
    s1 = np.zeros(offset.shape, dtype=np.float64)
    s2 = np.zeros(offset.shape, dtype=np.float64)
    n = 0
    for name in split["shards"]:
        lm = dequantize(np.load(root / f"{name}.mel.npy", mmap_mode="r"), offset, scale).astype(np.float64)
        s1 += lm.sum(axis=1)
        s2 += (lm * lm).sum(axis=1)
        n += lm.shape[1]
    mean = s1 / max(n, 1)
    std = np.sqrt(np.maximum(s2 / max(n, 1) - mean * mean, 1e-10))
    return {"mean": mean.tolist(), "std": std.tolist(), "source": "computed from the shard's frames", "n_frames": n}


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def read_index(root: str | Path) -> dict[str, Any]:
    """The ``index.json`` of a finished feature directory (one-line :class:`FeatureError` otherwise)."""
    p = Path(root) / INDEX_NAME
    if not p.is_file():
        hint = " (the writer has not finished: run it again with --resume)" if (Path(root) / PLAN_NAME).is_file() else ""
        raise FeatureError(f"{root}: not a feature directory (no {INDEX_NAME}){hint}")
    try:
        index = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise FeatureError(f"{p}: unreadable ({e})") from e
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise FeatureError(f"{p}: not a version-{VERSION} {FORMAT} index")
    return dict(index)


def check_index(index: Mapping[str, Any], codec: EntangleCodecConfig, text_field: str, root: str | Path = "") -> bool:
    """Check a shard against the recipe's model; returns whether its caption embeddings apply.

    Raises:
        FeatureError: another mel config (hash named), or another caption field.
    """
    want = mel_config_hash(codec.mel)
    if index["mel_hash"] != want:
        raise FeatureError(
            f"{root}: features were computed for mel config {index['mel_hash']} ({index['mel']}), "
            f"the recipe's model uses {want} ({asdict(codec.mel)}); rebuild them with 'entanglecodec data features'"
        )
    cap = index["captions"]
    if cap["text_field"] != text_field:
        raise FeatureError(f"{root}: features hold the {cap['text_field']!r} field, the recipe wants data.text_field {text_field!r}")
    return cap["embedding"] is not None and _embedding_matches(cap["embedding"], codec.text)


def feature_stats(index: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """The index's mel normalisation statistics ``(mean, std)``, ``[n_mels]`` each."""
    st = index["mel_stats"]
    return torch.tensor(st["mean"], dtype=torch.float32), torch.tensor(st["std"], dtype=torch.float32)


class FeatureDataset(Dataset[dict[str, Any]]):
    """Random (or centre) crops of a feature directory's split, in frames; items mirror the waveform path.

    Items: ``id``, ``log_mel`` float32 ``[n_mels, F]`` (un-normalised log-mel: the module normalises it
    with the run's statistics), ``mel_length`` (``F``), ``f0`` float32 ``[F]`` (Hz, 0 unvoiced),
    ``caption``, ``caption_emb`` float32 ``[D]`` (when ``embeddings``), ``semantic`` float32
    ``[F, D_teacher]`` (when ``semantic``: :mod:`~entanglecodec.data.semantic`; ``[F, dims]`` principal-component
    coefficients in a reduced copy, :func:`~entanglecodec.data.semantic.compact_features`), ``domain``, ``split`` and
    ``offset`` (crop start in frames). The crop of a clip depends on ``(seed, epoch, clip id)`` as in
    :class:`~entanglecodec.data.dataset.ManifestDataset`; ``crop_seconds`` gives
    ``ceil(round(crop_seconds * sample_rate) / hop)`` frames, the waveform crop's frame count.

    Arrays are memory-mapped lazily in each process (DataLoader workers included).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        crop_seconds: float | None,
        crop_mode: Literal["random", "center", "start"] = "random",
        seed: int = 0,
        embeddings: bool = False,
        index: Mapping[str, Any] | None = None,
        semantic: bool = False,
    ) -> None:
        self.root = Path(root)
        self.index = dict(index) if index is not None else read_index(self.root)
        if split not in self.index["splits"]:
            raise FeatureError(f"{self.root}: no split {split!r} (has {', '.join(self.index['splits'])})")
        if embeddings and self.index["captions"]["embedding"] is None:
            raise FeatureError(f"{self.root}: holds no caption embeddings")
        mel = MelConfig(**self.index["mel"])
        samples = crop_length(crop_seconds, mel.sample_rate)
        self.crop_frames = None if samples is None else int(math.ceil(samples / mel.hop_length))
        self.crop_mode = crop_mode
        self.seed = int(seed)
        self.split = split
        self.embeddings = embeddings
        self.semantic = semantic
        self.semantic_step: np.ndarray | None = None
        if semantic:
            from .semantic import read_semantic

            red = read_semantic(self.root).get("reduced")  # a one-line error when the directory has no teacher frames
            self.semantic_step = None if red is None else np.asarray(red["step"], dtype=np.float32)
        q = self.index["quant"]
        self.offset = np.asarray(q["offset"], dtype=np.float32)
        self.scale = np.asarray(q["scale"], dtype=np.float32)
        self.shards: list[str] = list(self.index["splits"][split]["shards"])
        self.clips: list[dict[str, Any]] = []
        self.where: list[int] = []
        for k, name in enumerate(self.shards):
            p = self.root / f"{name}.json"
            try:
                meta = json.loads(p.read_text())
            except (OSError, ValueError) as e:
                raise FeatureError(f"{p}: missing or unreadable shard ({e})") from e
            for f in list(meta["files"]) + ([f"{name}.sem.npy"] if semantic else []):
                if not (self.root / f).is_file():
                    raise FeatureError(f"{self.root / f}: missing shard file")
            self.clips.extend(meta["clips"])
            self.where.extend([k] * len(meta["clips"]))
        if not self.clips:
            raise FeatureError(f"{self.root}: split {split!r} holds no clips")
        self.domains: list[str] = [c["domain"] for c in self.clips]
        self._row_in_shard = np.zeros(len(self.clips), dtype=np.int64)
        for k in range(len(self.shards)):
            idx = [i for i, w in enumerate(self.where) if w == k]
            self._row_in_shard[idx] = np.arange(len(idx))
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()
        self._arrays: dict[tuple[int, str], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def domain_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.domains:
            out[d] = out.get(d, 0) + 1
        return out

    def _array(self, k: int, kind: str) -> np.ndarray:
        key = (k, kind)
        if key not in self._arrays:
            self._arrays[key] = np.load(self.root / f"{self.shards[k]}.{kind}.npy", mmap_mode="r")
        return self._arrays[key]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.clips):
            raise IndexError(f"index {index} out of range for {len(self.clips)} clips")
        c, k = self.clips[index], self.where[index]
        total = int(c["frames"])
        n = total if self.crop_frames is None else min(total, self.crop_frames)
        off = 0
        if n < total:
            rng = crop_rng(self.seed, self.epoch, c["id"]) if self.crop_mode == "random" else None
            off = _crop_offset(total, n, self.crop_mode, rng)
        a = int(c["start"]) + off
        item: dict[str, Any] = {
            "id": c["id"],
            "log_mel": torch.from_numpy(dequantize(np.asarray(self._array(k, "mel")[a : a + n]), self.offset, self.scale)),
            "mel_length": n,
            "f0": torch.from_numpy(np.asarray(self._array(k, "f0")[a : a + n], dtype=np.float32)),
            "caption": c["caption"],
            "domain": c["domain"],
            "split": self.split,
            "offset": off,
        }
        if self.embeddings:
            row = int(self._row_in_shard[index])
            item["caption_emb"] = torch.from_numpy(np.asarray(self._array(k, "emb")[row], dtype=np.float32))
        if self.semantic:
            sem = np.asarray(self._array(k, "sem")[a : a + n], dtype=np.float32)
            item["semantic"] = torch.from_numpy(sem if self.semantic_step is None else sem * self.semantic_step)
        return item


def collate_features(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pad feature items: ``log_mel [B, n_mels, F]`` (padding at the log floor of the first item's
    grid is irrelevant: the module masks it), ``mel_lengths [B]``, ``f0 [B, F]``, ``caption_emb [B, D]``
    and ``semantic [B, F, D_teacher]`` (zero-padded) when present, and the lists ``id``, ``caption``, ``domain``, ``split``, ``offset``."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    lens = torch.tensor([int(b["mel_length"]) for b in batch], dtype=torch.long)
    f = int(lens.max())
    n_mels = int(batch[0]["log_mel"].shape[0])
    mel = torch.zeros(len(batch), n_mels, f)
    f0 = torch.zeros(len(batch), f)
    for i, b in enumerate(batch):
        n = int(b["mel_length"])
        mel[i, :, :n] = b["log_mel"]
        f0[i, :n] = b["f0"]
    out: dict[str, Any] = {"log_mel": mel, "mel_lengths": lens, "f0": f0}
    if "caption_emb" in batch[0]:
        out["caption_emb"] = torch.stack([b["caption_emb"] for b in batch])
    if "semantic" in batch[0]:
        sem = torch.zeros(len(batch), f, int(batch[0]["semantic"].shape[1]))
        for i, b in enumerate(batch):
            sem[i, : int(b["mel_length"])] = b["semantic"]
        out["semantic"] = sem
    for key in ("id", "caption", "domain", "split", "offset"):
        out[key] = [b[key] for b in batch]
    return out
