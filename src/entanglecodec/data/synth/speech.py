"""Speech: text-to-speech voices (flite, festival, espeak-ng, mbrola) and recorded speakers.

Synthetic voices read natural sentences (:mod:`.textsource`); speaking rate and pitch are then
changed with sox (``tempo -s`` keeps pitch, ``pitch`` keeps duration) by known factors, and the
level is set to a known loudness. Recorded speech comes from Debian packages: the Asterisk prompt
sets (several real speakers and languages, with their transcripts), KTuberling's spoken words,
KLettres' letters and syllables, the two lead voices of Fish Fillets NG's Czech and Dutch dubs (game
dialogue with its script), and the hero of the adventure game Drascula in English and Spanish (game
dialogue with its subtitles), the hero of Flight of the Amazon Queen and the main voices of Beneath a Steel
Sky (English game dialogue, words unknown).
"""

from __future__ import annotations

import mmap
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from ...fileio import atomic_write, atomic_write_bytes
from .assets import ensure_package
from .bass_voices import BASS_VOICES
from .rnc import MAGIC as RNC_MAGIC
from .rnc import unpack as rnc_unpack
from .signal import SR, SynthError, fade, read_audio_any, run_tool, silence, to_sr, trim_silence
from .textsource import asterisk_transcripts


@dataclass(frozen=True)
class Voice:
    """A speaker: a TTS voice or a recorded person.

    Attributes:
        id: unique id, e.g. ``"flite:slt"``, ``"espeak-ng:en-gb-scotland+f3"``, ``"asterisk:carlo"``.
        engine: ``flite`` | ``festival`` | ``espeak-ng`` | ``mbrola`` | ``recorded``.
        name: engine voice name (or the recording's directory / language code).
        gender: ``"male"``, ``"female"`` or ``None`` when not stated by the source.
        language: ISO 639-1 code of the spoken language.
        accent: human-readable accent/variety (``"American English"``, ``"Mexican Spanish"``).
        age: an age group when the source states one (``"elderly"``), else ``None``.
    """

    id: str
    engine: str
    name: str
    gender: str | None
    language: str
    accent: str
    age: str | None = None


FLITE_VOICES = [
    Voice("flite:kal", "flite", "kal", "male", "en", "American English"),
    Voice("flite:kal16", "flite", "kal16", "male", "en", "American English"),
    Voice("flite:awb", "flite", "awb", "male", "en", "Scottish English"),
    Voice("flite:rms", "flite", "rms", "male", "en", "American English"),
    Voice("flite:slt", "flite", "slt", "female", "en", "American English"),
]
FESTIVAL_VOICES = [
    Voice("festival:kal_diphone", "festival", "kal_diphone", "male", "en", "American English"),
    Voice("festival:ked_diphone", "festival", "ked_diphone", "male", "en", "American English"),
    Voice("festival:cmu_us_slt_arctic_hts", "festival", "cmu_us_slt_arctic_hts", "female", "en", "American English"),
]
ESPEAK_LANGUAGES = {
    "en-us": ("en", "American English"),
    "en-gb": ("en", "British English"),
    "en-gb-x-rp": ("en", "British English (Received Pronunciation)"),
    "en-gb-scotland": ("en", "Scottish English"),
    "en-gb-x-gbclan": ("en", "Lancashire English"),
    "en-gb-x-gbcwmd": ("en", "West Midlands English"),
    "en-029": ("en", "Caribbean English"),
    "es": ("es", "European Spanish"),
    "es-419": ("es", "Latin American Spanish"),
    "fr-fr": ("fr", "French"),
    "fr-be": ("fr", "Belgian French"),
    "it": ("it", "Italian"),
    "ru": ("ru", "Russian"),
}
# espeak-ng variant files m1..m8 / f1..f5 (ages as stated in the variant files).
ESPEAK_VARIANTS = {
    "m1": ("male", "elderly"), "m2": ("male", None), "m3": ("male", None), "m4": ("male", None),
    "m5": ("male", None), "m6": ("male", None), "m7": ("male", None), "m8": ("male", "middle-aged"),
    "f1": ("female", "elderly"), "f2": ("female", None), "f3": ("female", None), "f4": ("female", None),
    "f5": ("female", None),
}

# Recorded speakers: (voice, package, directory under usr/share/asterisk/sounds, transcript language,
# transcript exact?). Gender is taken from the directory name where it states one (``_f_``/``_m_``).
ASTERISK_SPEAKERS: list[tuple[Voice, str, str, str, bool]] = [
    (Voice("asterisk:allison-es", "recorded", "es_MX_f_Allison", "female", "es", "Mexican Spanish"),
     "asterisk-core-sounds-es-g722", "es_MX_f_Allison", "es", True),
    (Voice("asterisk:june", "recorded", "fr_CA_f_June", "female", "fr", "Canadian French"),
     "asterisk-core-sounds-fr-g722", "fr_CA_f_June", "fr", True),
    (Voice("asterisk:carlo", "recorded", "it_IT_m_Carlo", "male", "it", "Italian"),
     "asterisk-core-sounds-it-g722", "it_IT_m_Carlo", "it", True),
    (Voice("asterisk:ivrvoice-ru", "recorded", "ru_RU_f_IvrvoiceRU", "female", "ru", "Russian"),
     "asterisk-core-sounds-ru-g722", "ru_RU_f_IvrvoiceRU", "ru", True),
    (Voice("asterisk:menardi", "recorded", "it_IT_f_Menardi", "female", "it", "Italian"),
     "asterisk-prompt-it-menardi-wav", "it_IT_f_Menardi", "it", False),
    (Voice("asterisk:es-co", "recorded", "es-co", None, "es", "Colombian Spanish"),
     "asterisk-prompt-es-co", "es", "es", False),
    (Voice("asterisk:armelle", "recorded", "fr-armelle", None, "fr", "French"),
     "asterisk-prompt-fr-armelle", "fr", "fr", False),
]
KTUBERLING_LANGUAGES = {
    "en": "English", "es": "Spanish", "it": "Italian", "nl": "Dutch", "pt": "Portuguese", "sv": "Swedish",
    "fi": "Finnish", "ro": "Romanian", "da": "Danish", "ga": "Irish", "nds": "Low German", "wa": "Walloon",
    "fr": "French",
}
KTUBERLING_EXACT = frozenset({"en", "nl"})
"""KTuberling languages whose file names spell the spoken words exactly. The others drop accents
(``chapeu`` for *chapéu*, ``glasogon`` for *glasögon*, ``tete`` for *tête*) or spaces
(``gafasdesol``), so their words are approximate transcripts (``transcript_exact`` false). Themes
not listed above (de, ru, sl, el, ca, ...) name their files in English or mix English names in, so
the spoken word is unknown: not used."""
# KLettres: language directory -> (ISO 639-1 language, language/accent name). Malayalam, Arabic, Hebrew
# and Setswana are left out: their letter names cannot be written in the Latin script of the captions.
KLETTRES_LANGUAGES = {
    "cs": ("cs", "Czech"), "da": ("da", "Danish"), "de": ("de", "German"), "en": ("en", "American English"),
    "en_GB": ("en", "British English"), "es": ("es", "Spanish"), "fr": ("fr", "French"), "hu": ("hu", "Hungarian"),
    "it": ("it", "Italian"), "lt": ("lt", "Lithuanian"), "nb": ("nb", "Norwegian Bokmål"), "nds": ("nds", "Low German"),
    "nl": ("nl", "Dutch"), "pt_BR": ("pt", "Brazilian Portuguese"), "ru": ("ru", "Russian"), "uk": ("uk", "Ukrainian"),
}


def available_mbrola_voices() -> list[Voice]:
    """English mbrola voices usable through espeak-ng (only those whose database is installed)."""
    out = []
    for name, gender in (("us1", "female"), ("us2", "male"), ("us3", "male"), ("en1", "male")):
        if Path(f"/usr/share/mbrola/{name}/{name}").is_file() or Path(f"/usr/share/mbrola/{name}").is_file():
            accent = "British English" if name == "en1" else "American English"
            out.append(Voice(f"mbrola:{name}", "mbrola", f"mb-{name}", gender, "en", accent))
    return out


@lru_cache(maxsize=1)
def tts_voices() -> tuple[Voice, ...]:
    """All synthetic voices whose engine is installed (sorted by id)."""
    voices: list[Voice] = []
    if shutil.which("flite"):
        voices += FLITE_VOICES
    if shutil.which("text2wave"):
        voices += [v for v in FESTIVAL_VOICES if _festival_has(v.name)]
    if shutil.which("espeak-ng"):
        for code, (lang, accent) in ESPEAK_LANGUAGES.items():
            for var, (gender, age) in ESPEAK_VARIANTS.items():
                voices.append(Voice(f"espeak-ng:{code}+{var}", "espeak-ng", f"{code}+{var}", gender, lang, accent, age))
        voices += available_mbrola_voices()
    return tuple(sorted(voices, key=lambda v: v.id))


def _festival_has(name: str) -> bool:
    roots = [Path("/usr/share/festival/voices")]
    return any(p.name == name for r in roots if r.is_dir() for p in r.glob("*/*"))


def synthesize(voice: Voice, text: str, workdir: Path) -> tuple[np.ndarray, int]:
    """Speak ``text`` with a TTS voice at its default rate and pitch.

    Args:
        voice: a voice from :func:`tts_voices`.
        text: the sentence to speak.
        workdir: a scratch directory for the engine's output file.

    Returns:
        ``(wav [S], sample_rate)`` as produced by the engine, silence-trimmed.
    """
    out = workdir / "tts.wav"
    if out.exists():
        out.unlink()
    if voice.engine == "flite":
        run_tool(["flite", "-voice", voice.name, "-t", text, "-o", str(out)], f"flite voice {voice.name}")
    elif voice.engine == "festival":
        run_tool(
            ["text2wave", "-eval", f"(voice_{voice.name})", "-o", str(out)],
            f"festival voice {voice.name}",
            stdin=text.encode("utf-8"),
        )
    elif voice.engine in ("espeak-ng", "mbrola"):
        run_tool(["espeak-ng", "-v", voice.name, "-w", str(out), text], f"espeak-ng voice {voice.name}")
    else:
        raise SynthError(f"voice {voice.id}: engine '{voice.engine}' cannot synthesise text")
    wav, sr = read_audio_any(out)
    wav = trim_silence(wav, sr)
    if wav.size < sr // 10:
        raise SynthError(f"voice {voice.id} produced no audible speech for {text!r}")
    return wav, sr


def change_rate_pitch(wav: np.ndarray, sr: int, rate: float, semitones: float, workdir: Path) -> np.ndarray:
    """Change speaking rate (``tempo``, pitch kept) and pitch (``pitch``, duration kept) with sox.

    Args:
        wav: speech ``[S]`` at ``sr`` Hz.
        rate: tempo factor (> 1 is faster).
        semitones: pitch shift in semitones.

    Returns:
        the processed waveform ``[S']`` at ``sr`` Hz.
    """
    if abs(rate - 1.0) < 1e-6 and abs(semitones) < 1e-6:
        return wav
    pcm = (np.clip(wav, -1, 1) * 32767.0).astype("<i2").tobytes()
    fmt = ["-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r", str(sr), "-L"]
    effects: list[str] = []
    if abs(rate - 1.0) >= 1e-6:
        effects += ["tempo", "-s", f"{rate:.4f}"]
    if abs(semitones) >= 1e-6:
        effects += ["pitch", f"{100.0 * semitones:.1f}"]
    raw = run_tool(["sox", "-R", "-V1", *fmt, "-", *fmt, "-", *effects], "sox rate/pitch change", stdin=pcm)
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


# ---------------------------------------------------------------------------------------------
# Recorded speech
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordedUtterance:
    """One recorded file with what is known about it."""

    voice: Voice
    package: str
    path: str  # absolute path of the unpacked file
    source: str  # path inside the package (used for held-out splits and provenance)
    text: str  # "" when the words are not known
    transcript_exact: bool


@cache
def asterisk_utterances(voice_id: str) -> tuple[RecordedUtterance, ...]:
    """Utterances of one Asterisk speaker that have a usable transcript (sorted by file)."""
    for voice, package, sub, lang, exact in ASTERISK_SPEAKERS:
        if voice.id != voice_id:
            continue
        root = ensure_package(package)
        base = root / "usr" / "share" / "asterisk" / "sounds" / sub
        transcripts = asterisk_transcripts(lang)
        out = []
        for f in sorted(base.glob("*.*")):
            if f.suffix.lower() not in (".g722", ".gsm", ".wav") or f.stem not in transcripts:
                continue
            text = transcripts[f.stem]
            if len(text.split()) < 2:
                continue
            out.append(RecordedUtterance(voice, package, str(f), str(f.relative_to(root)), text, exact))
        return tuple(out)
    raise SynthError(f"unknown recorded speaker {voice_id!r}")


# KTuberling's English item names that are not the spoken word as written (compounds run together, typos)
_ENGLISH_SPELLING = {
    "palmtree": "palm tree", "fallingstar": "falling star", "sphynx": "sphinx", "ufo": "UFO", "brocolli": "broccoli",
}


def _ktuberling_word(name: str, file: str, lang: str) -> str | None:
    stem = Path(file).stem
    word = stem.split("_", 1)[1] if "_" in stem else stem
    english = name.split("_", 1)[1] if "_" in name else name
    english = english.split("-", 1)[-1]
    if lang == "en":
        english = english.replace("_", " ")
        return _ENGLISH_SPELLING.get(english, english)
    if word.lower() == english.lower():
        return None  # file named in English: the spoken word is not known
    if not re.fullmatch(r"[A-Za-z\-]+", word):
        return None
    return word.replace("-", " ")


_SOUND_ENTRY = re.compile(r'name="([^"]+)"\s+file="([^"]+)"')


def ktuberling_voice(lang: str) -> Voice:
    """The (unnamed) speaker of one KTuberling language."""
    if lang not in KTUBERLING_LANGUAGES:
        raise SynthError(f"unknown KTuberling language {lang!r} (known: {', '.join(KTUBERLING_LANGUAGES)})")
    return Voice(f"ktuberling:{lang}", "recorded", f"ktuberling-{lang}", None, lang, KTUBERLING_LANGUAGES[lang])


def klettres_voice(code: str) -> Voice:
    """The (unnamed) speaker of one KLettres language directory."""
    if code not in KLETTRES_LANGUAGES:
        raise SynthError(f"unknown KLettres language {code!r} (known: {', '.join(KLETTRES_LANGUAGES)})")
    lang, accent = KLETTRES_LANGUAGES[code]
    return Voice(f"klettres:{code}", "recorded", f"klettres-{code}", None, lang, accent)


# Fish Fillets NG: language -> (package with the recorded dub, language name). The Dutch dub was checked
# against the Dutch dev speakers (ktuberling:nl, klettres:nl) in session 19: resemblyzer cosine of the
# speakers' mean d-vectors 0.43-0.50, against 0.96-0.98 between two halves of one speaker's lines
# (reports/speech-sources.md). The English lines in fillets-ng-data are too few (0.1 h).
FILLETS_LANGUAGES = {"cs": ("fillets-ng-data-cs", "Czech"), "nl": ("fillets-ng-data-nl", "Dutch")}
FILLETS_CHARACTERS = {"v": "big", "m": "small"}
"""Dialogue-id field -> voice name of the two lead characters (the big and the small fish; 611 and 653
Czech lines). The minor characters' lines are left out: who voices them is not known."""
FILLETS_GENDERS = {"big": "male", "small": "female"}
"""The Czech script addresses the small fish in the feminine ("Buď ráda", "dostala") and the big fish in
the masculine; the voices' median F0, 126 Hz (big) and 250 Hz (small) over 12 lines each, agree. The
Dutch dub keeps the cast's genders: median F0 122 Hz (big) and 197 Hz (small) over 12 lines each."""
_FILLETS_SCRIPTS = ("fillets-ng-data", Path("usr/share/games/fillets-ng/script"))
_DIALOG = re.compile(r'dialogId\(\s*"([^"]+)"[^\n]*\)\s*dialogStr\(\s*"((?:[^"\\]|\\.)*)"\s*\)')


def parse_fillets_dialogs(lua: str) -> list[tuple[str, str]]:
    """``(dialogue id, text)`` pairs of a Fish Fillets NG ``dialogs_<lang>.lua`` script, in order.

    Each line of the dub is ``sound/<level>/<lang>/<id>.ogg``; the id's second dash field names the
    character (``let-m-divna``: the small fish). Escapes are undone and whitespace collapsed.
    """
    out = []
    for did, text in _DIALOG.findall(lua):
        text = re.sub(r"\\(.)", lambda m: " " if m.group(1) == "n" else m.group(1), text)
        out.append((did, " ".join(text.split())))
    return out


def fillets_voice(code: str) -> Voice:
    """One lead voice of a Fish Fillets NG dub: ``code`` is ``<lang>-<big|small>``, e.g. ``cs-big``."""
    lang, _, char = code.partition("-")
    if lang not in FILLETS_LANGUAGES or char not in FILLETS_CHARACTERS.values():
        known = [f"{la}-{c}" for la in FILLETS_LANGUAGES for c in FILLETS_CHARACTERS.values()]
        raise SynthError(f"unknown Fish Fillets voice {code!r} (known: {', '.join(known)})")
    return Voice(f"fillets:{code}", "recorded", f"fillets-{code}", FILLETS_GENDERS[char], lang, FILLETS_LANGUAGES[lang][1])


@cache
def fillets_utterances(code: str) -> tuple[RecordedUtterance, ...]:
    """The lines of one lead voice of a Fish Fillets NG dub with at least two words, and their script text."""
    voice = fillets_voice(code)
    lang, _, char = code.partition("-")
    field = next(k for k, v in FILLETS_CHARACTERS.items() if v == char)
    package = FILLETS_LANGUAGES[lang][0]
    scripts = ensure_package(_FILLETS_SCRIPTS[0]) / _FILLETS_SCRIPTS[1]
    root = ensure_package(package)
    sounds = root / "usr" / "share" / "games" / "fillets-ng" / "sound"
    out = []
    for lua in sorted(scripts.glob(f"*/dialogs_{lang}.lua")):
        for did, text in parse_fillets_dialogs(lua.read_text(encoding="utf-8", errors="replace")):
            path = sounds / lua.parent.name / lang / f"{did}.ogg"
            if did.split("-")[1:2] != [field] or len(text.split()) < 2 or not path.is_file():
                continue
            out.append(RecordedUtterance(voice, package, str(path), str(path.relative_to(root)), text, True))
    if not out:
        raise SynthError(f"{package}: no recorded lines found for {voice.id} (under {sounds})")
    return tuple(sorted(out, key=lambda u: u.source))


# Drascula: The Vampire Strikes Back (Alcachofa Soft, freeware licence that allows redistribution and
# modification): the recorded lines of its hero, John Hacker. language -> (package, accent, index of the
# language's block in the game's text table, text encoding). The table (drascula.dat) is in the English
# package; the Spanish one links to it. drascula-italian is left out: its .ALS files are the English
# recordings again (same words and lengths; checked with Whisper in session 19).
DRASCULA_LANGUAGES = {"en": ("drascula", "English", 0, "ascii"), "es": ("drascula-spanish", "European Spanish", 1, "cp850")}
_DRASCULA_DIR = Path("usr/share/scummvm/drascula")


def _u16(data: bytes | mmap.mmap, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2], "big")


def _drascula_block(data: bytes, pos: int, count: int) -> tuple[list[bytes], int] | None:
    """``count`` entries (u32 size, itself included, then a NUL-padded string) from ``pos``, or None."""
    out = []
    for _ in range(count):
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size < 4 or size % 4 or pos + size > len(data):
            return None
        out.append(data[pos + 4 : pos + size].split(b"\0", 1)[0])
        pos += size
    return out, pos


def _drascula_table_at(data: bytes, pos: int, min_count: int = 1) -> tuple[list[list[bytes]], int] | None:
    """The text table that starts at ``pos`` as ``(blocks, end)``, or None where the layout does not hold."""
    if pos + 8 > len(data):
        return None
    count, size = _u16(data, pos), _u16(data, pos + 2)
    if not min_count <= count <= 4096 or size < 4 * count + 2 or int.from_bytes(data[pos + 4 : pos + 8], "big") != 4:
        return None
    first = _drascula_block(data, pos + 4, count)
    if first is None or first[1] != pos + 2 + size or data[first[1] : first[1] + 2] != b"\0\0":
        return None
    blocks, at = [first[0]], first[1] + 2
    while at + 4 <= len(data):
        size = _u16(data, at)
        block = _drascula_block(data, at + 2, count)
        if block is None or block[1] != at + size or data[block[1] : block[1] + 2] != b"\0\0":
            break
        blocks.append(block[0])
        at = block[1] + 2
    return blocks, at


def parse_drascula_tables(data: bytes) -> list[list[list[bytes]]]:
    """The game's text tables from ``drascula.dat``: the main one, then each that directly follows it.

    Every table has the layout of :func:`parse_drascula_texts`. In the game's data the main table (the
    hero's lines) is followed by one talk table per other character, each starting where the previous one
    ends; the chain stops at the first offset where the layout does not hold.

    Raises:
        SynthError: no table in ``data``.
    """
    for pos in range(0, len(data) - 8):
        found = _drascula_table_at(data, pos, min_count=2)
        if found is None:
            continue
        tables = [found[0]]
        while (found := _drascula_table_at(data, found[1])) is not None:
            tables.append(found[0])
        return tables
    raise SynthError("drascula.dat: no text table found (an unknown version of the game data?)")


def parse_drascula_texts(data: bytes) -> list[list[bytes]]:
    """The game's main text table from ``drascula.dat``: one list of raw lines per language.

    The table is a big-endian u16 line count, then one block per language: a u16 block size (the
    size field and the entries), the entries (each a u32 entry size, itself included, then the line
    NUL-padded to a multiple of 4) and two zero bytes. Line ``n`` is what the hero says in ``<n>.ALS``. The
    table is found by scanning for the first offset where that layout holds for a block.

    Raises:
        SynthError: no such table in ``data``.
    """
    return parse_drascula_tables(data)[0]


def _drascula_line(raw: bytes, encoding: str) -> str:
    """A subtitle as a sentence: decoded, whitespace collapsed, all-capital lines in sentence case."""
    text = " ".join(raw.decode(encoding, errors="replace").split())
    if text.upper() == text:
        text = text.lower()
        text = re.sub(r"\bi\b", "I", text) if encoding == "ascii" else text
        text = text[:1].upper() + text[1:]
    return text


@cache
def _drascula_tables() -> tuple[Path, list[list[list[bytes]]]]:
    """``(path, tables)`` of the game's text tables, read once (the English package holds every language's)."""
    table = ensure_package("drascula") / _DRASCULA_DIR / "en" / "drascula.dat"
    if not table.is_file():
        raise SynthError(f"drascula: no text table at {table}")
    return table, parse_drascula_tables(table.read_bytes())


# The other characters with at least 3 minutes of speech in each language: name -> (file-name prefix, index
# of the character's talk table in parse_drascula_tables, the file numbers that are the character's, gender).
# File ``<prefix><n>.ALS`` says line ``n`` of the table (Whisper base on 8 random lines each: 26-43 % WER at
# that index, over 100 % one line before or after). Measured in session 20 (resemblyzer over every file
# of the range, silence-trimmed):
# - drascula (D): lines 1-39 only. The rest of the D table is the hero talking to a blind man (56-67) and the
#   blind man (68-78, 82-83; 79-81 are untitled): cosine 0.74-0.79 between those groups and lines 1-39, so
#   other voices. 3.9 min English, 4.5 min Spanish. D26.ALS (English) is a second take of D27 ("Put that
#   cigarette out now!"), not its subtitle, so it is left out. Median F0 (pyworld dio) 121 Hz English,
#   203 Hz Spanish (a shrill, theatrical count; the role is male).
# - vonbraun (VB): all 62 lines; 4.8 min English, 6.2 min Spanish; median F0 167 Hz / 138 Hz; male role.
# Each is one voice: cosine between the mean d-vectors of the first and second half of the lines 0.986
# (drascula en), 0.971 (drascula es), 0.971 (vonbraun en), 0.960 (vonbraun es).
DRASCULA_CHARACTERS = {
    "drascula": ("D", 1, range(1, 40), "male"),
    "vonbraun": ("VB", 9, range(1, 63), "male"),
}
_DRASCULA_WRONG_LINES = frozenset({("en", "D26")})  # a recording that does not say its subtitle
_DRASCULA_FILE = re.compile(r"^([A-Z]*)(\d+)\.ALS$")
DRASCULA_SOUND_PREFIX = "S"
"""``S<n>.ALS`` are sound effects, not speech."""


def drascula_speech_files(names: list[str]) -> dict[str, list[tuple[int, str]]]:
    """Drascula's speech file names grouped by character prefix (``""``: the hero, ``"D"``, ``"VB"``, ...).

    Each group is ``(n, name)`` sorted by ``n``, the number after the prefix (the line of the character's
    table). Names that are not ``<prefix><n>.ALS`` and the sound effects (``S<n>.ALS``) are left out.
    """
    groups: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        m = _DRASCULA_FILE.match(name)
        if m is None or m.group(1) == DRASCULA_SOUND_PREFIX:
            continue
        groups.setdefault(m.group(1), []).append((int(m.group(2)), name))
    return {k: sorted(v) for k, v in sorted(groups.items())}


def drascula_voice_names() -> list[str]:
    """The names of every Drascula voice: ``en``, ``es`` (the hero), then ``<lang>:<character>``."""
    return list(DRASCULA_LANGUAGES) + [f"{lang}:{c}" for lang in DRASCULA_LANGUAGES for c in DRASCULA_CHARACTERS]


def drascula_voice(name: str) -> Voice:
    """A Drascula voice: the hero in one language (``en`` or ``es``) or another character (``en:vonbraun``)."""
    lang, sep, character = name.partition(":")
    if lang not in DRASCULA_LANGUAGES or (sep and character not in DRASCULA_CHARACTERS):
        raise SynthError(f"unknown Drascula voice {name!r} (known: {', '.join(drascula_voice_names())})")
    accent = DRASCULA_LANGUAGES[lang][1]
    if not character:
        return Voice(f"drascula:{lang}", "recorded", f"drascula-{lang}", "male", lang, accent)
    gender = DRASCULA_CHARACTERS[character][3]
    return Voice(f"drascula:{name}", "recorded", f"drascula-{lang}-{character}", gender, lang, accent)


@cache
def drascula_utterances(name: str) -> tuple[RecordedUtterance, ...]:
    """A character's recorded lines of at least two words, with their subtitles as approximate transcripts.

    ``name`` is a :func:`drascula_voice` name. The subtitles are what the line was written as, not always
    what was said (Whisper base on 30 English lines of the hero: 34 % WER against them, with added and
    dropped words), so ``transcript_exact`` is false.
    """
    voice = drascula_voice(name)
    lang, _, character = name.partition(":")
    prefix, table_index, numbers = DRASCULA_CHARACTERS[character][:3] if character else ("", 0, None)
    package, _, index, encoding = DRASCULA_LANGUAGES[lang]
    root = ensure_package(package)
    base = root / _DRASCULA_DIR / lang
    table, tables = _drascula_tables()
    if len(tables) <= table_index:
        raise SynthError(f"{table}: {len(tables)} text table(s), {voice.id} needs table {table_index}")
    blocks = tables[table_index]
    if len(blocks) <= index:
        raise SynthError(f"{table}: {len(blocks)} language block(s), the {lang!r} lines are block {index}")
    lines = blocks[index]
    files = drascula_speech_files(sorted(p.name for p in base.glob("*.ALS"))).get(prefix, [])
    out = []
    for n, file in files:
        path = base / file
        if n == 0 or n >= len(lines) or (numbers is not None and n not in numbers) or (lang, path.stem) in _DRASCULA_WRONG_LINES:
            continue
        text = _drascula_line(lines[n], encoding)
        if len(text.split()) < 2 or not path.is_file() or path.is_symlink():
            continue
        out.append(RecordedUtterance(voice, package, str(path), str(path.relative_to(root)), text, False))
    if not out:
        raise SynthError(f"{package}: no recorded lines found for {voice.id} (under {base})")
    return tuple(out)


# Flight of the Amazon Queen (John Passfield and Steven Stamatiadis; freeware licence that allows
# redistribution and modification; the CD "talkie" release): the lines of its hero, Joe King. The game keeps
# its speech as MP3 (16 kbit/s, 11 025 Hz) inside one archive, queen.1c. Joe's are the JOE*.SB files (his
# remarks on objects) and the dialogue files whose seventh character is J. The two groups are one voice:
# resemblyzer cosine 0.970 between their mean d-vectors, 0.948-0.968 between halves of each (16 lines each,
# session 19). The subtitles are not stored per file, so the words are unknown (no transcript).
FOTAQ_PACKAGE = "flight-of-the-amazon-queen"
_FOTAQ_ARCHIVE = Path("usr/share/scummvm/flight-of-the-amazon-queen/queen.1c")
_FOTAQ_JOE = re.compile(r"^(JOE\w*|\w{6}J\d)\.SB$")


def parse_queen_table(data: bytes | mmap.mmap) -> list[tuple[str, int, int]]:
    """``(name, offset, size)`` of every entry of Flight of the Amazon Queen's ``queen.1c`` archive.

    Layout: ``QTBL`` and a version string, the compression byte at offset 12 (1: MP3 speech), a
    big-endian u16 entry count at 13, then from offset 15 one 21-byte entry each: the name (12 bytes,
    NUL-padded), a bundle number (u8), the offset and the size (big-endian u32).

    Raises:
        SynthError: not such an archive, or an entry outside the data.
    """
    if data[:4] != b"QTBL" or len(data) < 15:
        raise SynthError("queen.1c: not a Flight of the Amazon Queen archive (no QTBL header)")
    if data[12] != 1:
        raise SynthError(f"queen.1c: speech compression {data[12]} (only 1, MP3, is read)")
    count = _u16(data, 13)
    out = []
    for i in range(count):
        entry = data[15 + 21 * i : 36 + 21 * i]
        offset, size = int.from_bytes(entry[13:17], "big"), int.from_bytes(entry[17:21], "big")
        if len(entry) < 21 or offset + size > len(data):  # a short entry reads as a bad offset or size too
            raise SynthError(f"queen.1c: entry {i} lies outside the archive ({len(data)} bytes)")
        out.append((entry[:12].split(b"\0", 1)[0].decode("latin-1"), offset, size))
    return out


def fotaq_voice() -> Voice:
    """Joe King, the hero of Flight of the Amazon Queen (English)."""
    return Voice("fotaq:joe", "recorded", "fotaq-joe", "male", "en", "English")


@cache
def fotaq_utterances(name: str) -> tuple[RecordedUtterance, ...]:
    """Joe King's recorded lines (no transcript), each copied once out of the archive as an MP3 file.

    The copies live beside the unpacked package (``<package>/_speech/<name>.mp3``, written atomically).
    """
    if name != "joe":
        raise SynthError(f"unknown Flight of the Amazon Queen voice {name!r} (known: joe)")
    voice = fotaq_voice()
    root = ensure_package(FOTAQ_PACKAGE)
    archive = root / _FOTAQ_ARCHIVE
    if not archive.is_file():
        raise SynthError(f"{FOTAQ_PACKAGE}: no speech archive at {archive}")
    out_dir = root / "_speech"
    out_dir.mkdir(exist_ok=True)
    out = []
    # mapped, not read: only the table and the lines not copied yet are touched (the archive is 54 MB)
    with archive.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for entry, offset, size in parse_queen_table(data):
            if not _FOTAQ_JOE.match(entry) or size == 0:
                continue
            path = out_dir / (entry.rsplit(".", 1)[0] + ".mp3")
            if not path.is_file():
                atomic_write_bytes(path, data[offset : offset + size])
            out.append(RecordedUtterance(voice, FOTAQ_PACKAGE, str(path), f"{_FOTAQ_ARCHIVE}:{entry}", "", False))
    if not out:
        raise SynthError(f"{archive}: no line of Joe King found")
    return tuple(sorted(out, key=lambda u: u.source))


# Beneath a Steel Sky (Revolution Software; freeware licence that allows redistribution and modification;
# the CD "talkie" release). All of the game's files sit in one archive, sky.dsk, indexed by sky.dnr; the
# dialogue lines are the files numbered 50 000-55 299 (3 491 lines, 1.93 h). Each is a 22-byte file header
# and an RNC ProPack method-1 block (:mod:`.rnc`) that unpacks to unsigned 8-bit PCM at 11 025 Hz. The
# numbers 59 4xx-59 6xx are the CD intro's screens, palettes, animations and sound, not dialogue: not used.
# The file number does not name the speaker: :mod:`.bass_voices` says which lines each chosen voice speaks
# (Robert Foster, the hero, 43 min; the robot Joey, 7.4 min) and how that was found.
BASS_PACKAGE = "beneath-a-steel-sky"
_BASS_DIR = Path("usr/share/scummvm/beneath-a-steel-sky")
BASS_SAMPLE_RATE = 11025
BASS_HEADER_SIZE = 22
"""Size of the file header before each line's RNC block (eleven little-endian u16 fields; the seventh is
the unpacked size plus 22)."""


def parse_sky_dnr(data: bytes, archive_size: int | None = None) -> dict[int, tuple[int, int]]:
    """File number -> ``(offset, size)`` in ``sky.dsk`` for every entry of Beneath a Steel Sky's ``sky.dnr``.

    Layout (little-endian): a u32 entry count, then 8 bytes an entry: the file number (u16), the offset
    (24 bits; when bit 23 is set the other 23 bits are the offset divided by 16) and the flags (24 bits,
    the low 22 of which are the size).

    Raises:
        SynthError: the index is shorter than its entry count says, or (given ``archive_size``) an entry
            lies outside the archive.
    """
    count = int.from_bytes(data[:4], "little") if len(data) >= 4 else -1
    if count < 0 or len(data) < 4 + 8 * count:
        raise SynthError(f"sky.dnr: {len(data)} bytes cannot hold the entries its header announces ({count})")
    out = {}
    for i in range(count):
        e = data[4 + 8 * i : 12 + 8 * i]
        offset = int.from_bytes(e[2:5], "little")
        if offset & 0x800000:
            offset = (offset & 0x7FFFFF) << 4
        size = int.from_bytes(e[5:8], "little") & 0x3FFFFF
        if archive_size is not None and offset + size > archive_size:
            raise SynthError(f"sky.dnr: entry {i} lies outside the archive ({archive_size} bytes)")
        out[int.from_bytes(e[:2], "little")] = (offset, size)
    return out


def bass_line(entry: bytes, number: int) -> bytes:
    """The unsigned 8-bit PCM of one dialogue file of ``sky.dsk`` (its bytes ``entry``), both CRCs checked.

    Raises:
        SynthError: the entry is not an RNC-packed line, or it fails to unpack (:class:`.rnc.RncError`).
    """
    if entry[BASS_HEADER_SIZE : BASS_HEADER_SIZE + 3] != RNC_MAGIC:
        raise SynthError(f"sky.dsk file {number}: not RNC-packed speech (no RNC block after its {BASS_HEADER_SIZE}-byte header)")
    return rnc_unpack(entry[BASS_HEADER_SIZE:])


def _number_ranges(spec: str) -> list[int]:
    """``"50007-50009,50013"`` -> ``[50007, 50008, 50009, 50013]``."""
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.strip().partition("-")
        out += range(int(a), int(b or a) + 1)
    return out


def bass_voice(name: str) -> Voice:
    """One of the chosen voices of Beneath a Steel Sky (:data:`BASS_VOICES`)."""
    if name not in BASS_VOICES:
        raise SynthError(f"unknown Beneath a Steel Sky voice {name!r} (known: {', '.join(BASS_VOICES)})")
    return Voice(f"bass:{name}", "recorded", f"bass-{name}", BASS_VOICES[name][0], "en", "English")


def _write_flac_atomically(path: Path, pcm_u8: bytes, sample_rate: int) -> None:
    """Unsigned 8-bit PCM as an 8-bit FLAC file (lossless), written atomically."""
    wav = (np.frombuffer(pcm_u8, dtype=np.uint8).astype(np.int16) - 128) << 8
    atomic_write(path, lambda tmp: sf.write(tmp, wav, sample_rate, format="FLAC", subtype="PCM_S8"))


@cache
def bass_utterances(name: str) -> tuple[RecordedUtterance, ...]:
    """One Beneath a Steel Sky voice's lines (no transcript), each unpacked once to an 8-bit FLAC file.

    The files live beside the unpacked package (``<package>/_speech/<number>.flac``, written atomically).
    """
    voice = bass_voice(name)
    root = ensure_package(BASS_PACKAGE)
    index, archive = root / _BASS_DIR / "sky.dnr", root / _BASS_DIR / "sky.dsk"
    if not index.is_file() or not archive.is_file():
        raise SynthError(f"{BASS_PACKAGE}: no sky.dnr/sky.dsk under {root / _BASS_DIR}")
    out_dir = root / "_speech"
    out_dir.mkdir(exist_ok=True)
    out = []
    # mapped, not read: only the lines not unpacked yet are touched (the archive is 72 MB)
    with archive.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        table = parse_sky_dnr(index.read_bytes(), len(data))
        for number in _number_ranges(BASS_VOICES[name][1]):
            if number not in table:
                raise SynthError(f"{index}: no file {number} (a line of {voice.id})")
            path = out_dir / f"{number}.flac"
            if not path.is_file():
                offset, size = table[number]
                _write_flac_atomically(path, bass_line(data[offset : offset + size], number), BASS_SAMPLE_RATE)
            out.append(RecordedUtterance(voice, BASS_PACKAGE, str(path), f"{_BASS_DIR}/sky.dsk:{number}", "", False))
    return tuple(out)


@cache
def ktuberling_utterances(lang: str) -> tuple[RecordedUtterance, ...]:
    """Spoken words of one KTuberling language whose word is known (from the file names)."""
    voice = ktuberling_voice(lang)
    root = ensure_package("ktuberling-data")
    base = root / "usr" / "share" / "ktuberling" / "sounds"
    theme = base / f"{lang}.soundtheme"
    if not theme.is_file():
        raise SynthError(f"ktuberling-data has no sound theme for language {lang!r} ({theme})")
    seen: set[str] = set()
    out = []
    for name, file in _SOUND_ENTRY.findall(theme.read_text(encoding="utf-8")):
        path = base / file
        word = _ktuberling_word(name, file, lang)
        if word is None or not path.is_file() or file in seen:
            continue
        seen.add(file)
        exact = lang in KTUBERLING_EXACT
        out.append(RecordedUtterance(voice, "ktuberling-data", str(path), str(path.relative_to(root)), word, exact))
    return tuple(sorted(out, key=lambda u: u.source))


@cache
def klettres_utterances(code: str) -> tuple[RecordedUtterance, ...]:
    """Recorded letters and syllables of one KLettres language (the text is the letter or syllable as written).

    Letters keep their case (``"B"``: the speaker says the letter's name); syllables are lower-cased.
    """
    voice = klettres_voice(code)
    root = ensure_package("klettres-data")
    base = root / "usr" / "share" / "klettres"
    index = base / code / "sounds.xml"
    if not index.is_file():
        raise SynthError(f"klettres-data has no sound list for language {code!r} ({index})")
    seen: set[str] = set()
    out = []
    for name, file in _SOUND_ENTRY.findall(index.read_text(encoding="utf-8")):
        path = base / file
        if not path.is_file() or file in seen or not name.strip():
            continue
        seen.add(file)
        text = name.strip() if "/alpha/" in file else name.strip().lower()
        out.append(RecordedUtterance(voice, "klettres-data", str(path), str(path.relative_to(root)), text, True))
    return tuple(sorted(out, key=lambda u: u.source))


def recorded_utterances(speaker_id: str) -> tuple[RecordedUtterance, ...]:
    """Utterances of any recorded speaker id (``asterisk:*``, ``ktuberling:*``, ``klettres:*``, ``fillets:*``,
    ``drascula:*``, ``fotaq:joe``, ``bass:*``)."""
    family, _, name = speaker_id.partition(":")
    if family == "ktuberling":
        return ktuberling_utterances(name)
    if family == "klettres":
        return klettres_utterances(name)
    if family == "fillets":
        return fillets_utterances(name)
    if family == "drascula":
        return drascula_utterances(name)
    if family == "fotaq":
        return fotaq_utterances(name)
    if family == "bass":
        return bass_utterances(name)
    return asterisk_utterances(speaker_id)


def recorded_voices() -> list[Voice]:
    """All recorded speakers (Asterisk prompt voices, KTuberling and KLettres languages, Fish Fillets NG,
    Drascula, Flight of the Amazon Queen and Beneath a Steel Sky voices)."""
    voices = [v for v, *_ in ASTERISK_SPEAKERS]
    voices += [ktuberling_voice(lang) for lang in KTUBERLING_LANGUAGES]
    voices += [klettres_voice(code) for code in KLETTRES_LANGUAGES]
    voices += [fillets_voice(f"{lang}-{c}") for lang in FILLETS_LANGUAGES for c in FILLETS_CHARACTERS.values()]
    voices += [drascula_voice(name) for name in drascula_voice_names()]
    voices.append(fotaq_voice())
    voices += [bass_voice(name) for name in BASS_VOICES]
    return voices


def recorded_package_of(speaker_id: str) -> str:
    """The Debian package that holds a recorded speaker."""
    family = speaker_id.partition(":")[0]
    if family == "ktuberling":
        return "ktuberling-data"
    if family == "klettres":
        return "klettres-data"
    if family == "fillets":
        return FILLETS_LANGUAGES[fillets_voice(speaker_id.partition(":")[2]).language][0]
    if family == "drascula":
        return DRASCULA_LANGUAGES[drascula_voice(speaker_id.partition(":")[2]).language][0]
    if family == "fotaq":
        return FOTAQ_PACKAGE
    if family == "bass":
        bass_voice(speaker_id.partition(":")[2])  # an unknown voice is an error, not a package
        return BASS_PACKAGE
    return asterisk_package_of(speaker_id)


def load_utterance(utt: RecordedUtterance) -> tuple[np.ndarray, int]:
    """Decode a recorded utterance: ``(wav [S] at 24 kHz, silence-trimmed, native sample rate)``."""
    wav, sr = read_audio_any(Path(utt.path))
    wav = trim_silence(wav, sr, threshold_db=40.0)
    if wav.size == 0:
        raise SynthError(f"{utt.path}: silent recording")
    return fade(to_sr(wav, sr), SR, 0.005), sr


def join_with_pauses(parts: list[np.ndarray], pauses: list[float]) -> np.ndarray:
    """Concatenate ``parts`` with ``pauses[i]`` seconds of silence after part ``i`` (except the last)."""
    pieces: list[np.ndarray] = []
    for i, p in enumerate(parts):
        pieces.append(p)
        if i < len(parts) - 1:
            pieces.append(silence(pauses[i]))
    return np.concatenate(pieces).astype(np.float32)


def voice_dict(voice: Voice) -> dict[str, object]:
    """The voice as a JSON-ready dict (for manifest attributes)."""
    return asdict(voice)


def asterisk_package_of(voice_id: str) -> str:
    """The Debian package that holds a recorded Asterisk speaker."""
    for voice, package, *_ in ASTERISK_SPEAKERS:
        if voice.id == voice_id:
            return package
    raise SynthError(f"unknown recorded speaker {voice_id!r}")


def engine_versions() -> dict[str, str]:
    """Debian versions of the installed TTS engines and voices (for corpus.json)."""
    pkgs = ["flite", "festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts", "espeak-ng", "sox", "ffmpeg"]
    out: dict[str, str] = {}
    for p in pkgs:
        try:
            r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", p], capture_output=True, text=True)
        except FileNotFoundError:
            break
        if r.returncode == 0 and r.stdout.strip():
            out[p] = r.stdout.strip()
    return out

