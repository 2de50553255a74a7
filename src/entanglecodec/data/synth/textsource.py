"""Natural sentences and transcripts from Debian-packaged text.

* English sentences for text-to-speech come from the BSD-licensed fortune-cookie files of the
  ``fortunes`` / ``fortunes-min`` packages, filtered to clean single sentences of 5-18 words (letters
  and simple punctuation only, no digits, quotes, dialogue or attributions). Only a curated list of
  inoffensive categories is used.
* Spanish, French, Italian and Russian sentences (for espeak-ng voices in those languages) and the
  transcripts of the recorded Asterisk prompts come from ``core-sounds-XX.txt.gz``.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from functools import cache, lru_cache
from pathlib import Path

from .assets import ensure_package

FORTUNE_FILES: dict[str, tuple[str, ...]] = {
    "fortunes-min": ("fortunes",),
    "fortunes": (
        "art", "computers", "cookie", "education", "food", "goedel", "humorists", "kids", "love", "magic",
        "medicine", "miscellaneous", "paradoxum", "people", "pets", "platitudes", "science", "songs-poems",
        "sports", "wisdom", "work",
    ),
}

_CLEAN = re.compile(r"[A-Z][A-Za-z ,;'\-]{18,150}[a-z][.!?]")
_TRANSCRIPT_LINE = re.compile(r"^([A-Za-z0-9_\-/]+):\s*(.+)$")


def _sentence_ok(s: str) -> bool:
    words = s.split()
    return (
        bool(_CLEAN.fullmatch(s))
        and 5 <= len(words) <= 18
        and s.count(".") + s.count("!") + s.count("?") == 1
        and " -" not in s
        and "--" not in s
        and "''" not in s
        and not any(len(w) > 16 for w in words)
    )


@lru_cache(maxsize=1)
def english_sentences() -> tuple[str, ...]:
    """Clean English sentences from the fortune files, de-duplicated, in a fixed sorted order."""
    found: set[str] = set()
    for package, names in FORTUNE_FILES.items():
        root = ensure_package(package) / "usr" / "share" / "games" / "fortunes"
        for name in names:
            path = root / name
            if not path.is_file():
                continue
            for chunk in path.read_text(encoding="latin-1").split("\n%\n"):
                s = " ".join(chunk.split())
                if _sentence_ok(s):
                    found.add(s)
    if not found:
        raise RuntimeError("no usable sentences found in the fortunes packages")
    return tuple(sorted(found))


def _transcript_file(lang: str) -> Path:
    pkg = f"asterisk-core-sounds-{lang}"
    return ensure_package(pkg) / "usr" / "share" / "doc" / pkg / f"core-sounds-{lang}.txt.gz"


@cache
def asterisk_transcripts(lang: str) -> dict[str, str]:
    """Prompt name -> transcript for one Asterisk language (``es``, ``fr``, ``it``, ``ru``; English is reserved).

    Lines whose text is a bracketed description (``[tono simple]``) or that contain digits or
    placeholders are dropped, so every returned transcript is exactly what is spoken.
    """
    out: dict[str, str] = {}
    with gzip.open(_transcript_file(lang), "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _TRANSCRIPT_LINE.match(line.strip())
            if not m:
                continue
            name, text = m.group(1), " ".join(m.group(2).split())
            if "[" in text or "<" in text or "(" in text or re.search(r"\d", text) or len(text) < 2:
                continue
            if not text[0].isalpha():
                continue
            out[name] = text
    return out


def language_sentences(lang: str, min_words: int = 4, max_words: int = 25) -> tuple[str, ...]:
    """Sentences in ``lang`` (es/fr/it/ru) from the Asterisk transcripts, sorted, de-duplicated."""
    texts = {t for t in asterisk_transcripts(lang).values() if min_words <= len(t.split()) <= max_words}
    return tuple(sorted(texts))


def stable_fraction(key: str) -> float:
    """A number in ``[0, 1)`` fixed by ``key`` (SHA-1), used for seed-independent held-out splits."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) / float(16**12)


def split_pool(items: list[str] | tuple[str, ...], test_fraction: float = 0.15) -> tuple[list[str], list[str]]:
    """Split names into ``(train_pool, test_pool)`` by their stable hash.

    The ``ceil(test_fraction * n)`` items with the smallest hash are held out (at least one when
    there are two or more items; a single item stays in training and the test pool is empty), so the split does not depend on the seed or on list order.
    """
    ordered = sorted(set(items), key=lambda k: (stable_fraction(k), k))
    if len(ordered) < 2:
        return list(ordered), []
    n_test = max(1, int(-(-test_fraction * len(ordered) // 1)))
    test = sorted(ordered[:n_test])
    train = sorted(ordered[n_test:])
    return train, test
