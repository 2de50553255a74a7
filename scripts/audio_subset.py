"""Carve a compact, balanced audio subset out of corpus manifests, for a machine that has no corpus
generator (the GPU vocoder run, ``scripts/gpu_vocoder.sh``): copies whole FLAC files into
``OUT/audio/<split>/`` and writes ``OUT/manifest.jsonl`` with paths relative to it.

    python scripts/audio_subset.py MANIFEST [MANIFEST ...] -o OUT --max-mb 40 [--clip-seconds 4] [--valid-clips 24]

Selection is deterministic. The domains (speech, music, sound, mixture) take turns; inside a domain
the sources (the speaker id, the source package, or the generator) take turns; inside a source the
clips follow a hash of their id. So every domain, voice and sound package keeps its share instead
of the largest corpus filling the budget. ``--clip-seconds`` keeps one excerpt of that length per
clip (at a hashed offset; re-encoded as FLAC): more clips, so more voices and sources, per MiB.
``--valid-clips`` rows of the ``valid`` split are taken first the same way (the run's validation
set). ``OUT`` must not exist; it appears complete or not at all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from entanglecodec.data.manifest import read_manifests  # noqa: E402


def source_key(row: dict) -> str:
    """The source of a manifest row: the speaker id, else the source package, else ``synth``."""
    attrs = row.get("attributes") or {}
    speaker = attrs.get("speaker") or {}
    source = attrs.get("source") or {}
    return str(speaker.get("id") or source.get("package") or "synth")


def _hash(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16)


def order(rows: list[dict]) -> list[dict]:
    """Rows in selection order: domains in turn, sources in turn inside a domain, hash order inside."""
    tree: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(rows, key=lambda r: _hash(str(r["id"]))):
        tree[str(r.get("domain", "?"))][source_key(r)].append(r)
    per_domain = []
    for dom in sorted(tree):
        queues = [tree[dom][k] for k in sorted(tree[dom])]
        seq = []
        while any(queues):
            seq.extend(q.pop(0) for q in queues if q)
        per_domain.append(seq)
    out = []
    while any(per_domain):
        out.extend(seq.pop(0) for seq in per_domain if seq)
    return out


def copy_clip(src: Path, dest: Path, seconds: float | None, seed: int) -> float:
    """Copy ``src`` to ``dest`` (FLAC), whole or as one ``seconds`` excerpt at an offset set by
    ``seed``; returns the copy's duration in seconds."""
    import soundfile as sf

    info = sf.info(str(src))
    if seconds is None or info.duration <= seconds:
        if src.suffix.lower() == ".flac":
            shutil.copyfile(src, dest)
            return float(info.duration)
        seconds = info.duration
    n = int(round(seconds * info.samplerate))
    start = seed % max(1, info.frames - n + 1)
    wav, sr = sf.read(str(src), start=start, frames=n, dtype="int16", always_2d=False)
    sf.write(str(dest), wav, sr, format="FLAC", subtype="PCM_16")
    return n / sr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifests", nargs="+")
    ap.add_argument("-o", "--out", required=True, type=Path)
    ap.add_argument("--max-mb", type=float, default=40.0, help="size budget of the copied audio (MiB)")
    ap.add_argument("--valid-clips", type=int, default=24)
    ap.add_argument("--clip-seconds", type=float, default=None, help="keep one excerpt of this length per clip")
    args = ap.parse_args(argv)
    if args.out.exists():
        print(f"error: {args.out} exists; give a new directory", file=sys.stderr)
        return 2
    rows = [dict(r) for r in read_manifests(args.manifests)]
    budget = int(args.max_mb * 1024 * 1024)
    tmp = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    lines: list[str] = []
    used = 0
    taken = {"train": [], "valid": []}  # type: dict[str, list[dict]]
    for split, limit in (("valid", args.valid_clips), ("train", None)):
        for r in order([r for r in rows if r.get("split") == split]):
            if limit is not None and len(taken[split]) >= limit:
                break
            rel = Path("audio") / split / f"{r['id']}.flac"
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            duration = copy_clip(Path(r["audio"]), dest, args.clip_seconds, _hash(str(r["id"])))
            size = dest.stat().st_size
            if used + size > budget:
                dest.unlink()
                continue
            used += size
            taken[split].append(r)
            lines.append(json.dumps({**r, "audio": rel.as_posix(), "duration": duration}, ensure_ascii=False))
    (tmp / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.rename(args.out)
    train, valid = taken["train"], taken["valid"]
    hours = sum(json.loads(x)["duration"] for x in lines[len(valid):]) / 3600
    domains = sorted({str(r.get("domain")) for r in train})
    sources = len({source_key(r) for r in train})
    print(f"{args.out}: {len(train)} train clips ({hours:.2f} h; {', '.join(domains)}; {sources} sources) "
          f"+ {len(valid)} valid, {used / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
