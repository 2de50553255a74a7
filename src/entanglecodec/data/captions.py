"""Captioners: turn a manifest row into the caption used for contrastive alignment (paper §3, App. C.2).

A *row* is a dict with the keys ``audio`` (path), ``domain`` (``speech``/``music``/``sound``/
``mixture``), ``text`` (transcript or ``None``) and ``attributes`` (structured metadata). Three
captioners share the :class:`Captioner` protocol ``caption(row) -> str``:

* :class:`TemplateCaptioner` writes a *rich* caption covering the paper's four dimensions -- speaker
  attributes, acoustic environment, musical attributes, sound events -- from the attributes, with
  seeded variation in templates and wording (the same row always gets the same caption).
* :func:`asr_caption` is the "w/o rich caption" ablation: the transcript for speech, the bare
  instrument/event label otherwise.
* :class:`CommandCaptioner` runs an external program (e.g. a user's audio LLM) and uses its stdout.

Attribute schema (every key optional; the synthetic generator fills all that apply, importers what
their dataset knows)::

    speaker:     {gender, age, language, accent, kind: synthetic|recorded, engine, rate: slow|normal|fast,
                  words_per_second, pitch: low|normal|high, style: read|prompt|dialogue|words, transcript_exact,
                  transcript (approximate words), transcript_known (false: the words are unknown)}
    loudness:    {dbfs, level: quiet|moderate|loud}
    environment: {setting: clean|indoor|outdoor, room_size: small|medium|large, rt60_s,
                  reverb: dry|slight|moderate|strong, noise_type, snr_db, noise_level, bandwidth_hz}
    music:       {instruments: [...], tempo_bpm, tempo_estimated, tempo_confidence, key, mode,
                  note_density, dynamics, drums, brightness, description}
    events:      [{label, onset_s, offset_s}, ...]
    mixture:     {kind: "speech over music" | "speech in a sound scene", music_to_speech_db}
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Captioner", "CaptionerError", "CommandCaptioner", "TemplateCaptioner", "asr_caption", "caption_dimensions"]

DOMAINS = ("speech", "music", "sound", "mixture")
REVERB_WORDS = {"dry": "almost no", "slight": "slight", "moderate": "moderate", "strong": "strong"}
"""How a reverberation level (``attributes.environment.reverb``) is worded in captions."""
LANGUAGE_NAMES = {
    "en": "English", "es": "Spanish", "fr": "French", "it": "Italian", "ru": "Russian", "de": "German",
    "nl": "Dutch", "pt": "Portuguese", "sv": "Swedish", "fi": "Finnish", "ro": "Romanian", "da": "Danish",
    "ga": "Irish", "nds": "Low German", "wa": "Walloon", "ca": "Catalan", "cs": "Czech", "hu": "Hungarian",
    "lt": "Lithuanian", "nb": "Norwegian", "uk": "Ukrainian",
}


class CaptionerError(RuntimeError):
    """A captioner could not produce a caption for a row (bad row, failing external command)."""


@runtime_checkable
class Captioner(Protocol):
    """Anything that maps a manifest row to a caption string."""

    def caption(self, row: dict) -> str:  # pragma: no cover - protocol
        ...


def _get(d: Any, key: str) -> Any:
    return d.get(key) if isinstance(d, Mapping) else None


def _check_row(row: Mapping[str, Any]) -> None:
    if not isinstance(row, Mapping):
        raise CaptionerError(f"a row must be a dict, got {type(row).__name__}")
    domain = row.get("domain")
    if domain not in DOMAINS:
        raise CaptionerError(f"row {row.get('id', row.get('audio'))!r}: domain must be one of {DOMAINS}, got {domain!r}")
    attrs = row.get("attributes", {})
    if attrs is not None and not isinstance(attrs, Mapping):
        raise CaptionerError(f"row {row.get('id', row.get('audio'))!r}: attributes must be a dict, got {type(attrs).__name__}")


def _labels(row: Mapping[str, Any]) -> list[str]:
    events = _get(row.get("attributes") or {}, "events") or []
    out: list[str] = []
    for e in events:
        lab = _get(e, "label")
        if lab and lab not in out:
            out.append(str(lab))
    return out


def asr_caption(row: dict) -> str:
    """The transcript-only caption (the paper's "w/o rich caption" ablation).

    Speech and mixtures with speech give the transcript (``"speech"`` for a recording whose speaker
    states ``transcript_known: false``); music gives the instrument names (or ``"music"``); sound
    gives the event labels (or ``"sound"``).
    """
    _check_row(row)
    attrs = row.get("attributes") or {}
    text = row.get("text") or _get(_get(attrs, "speaker"), "transcript")
    if row["domain"] in ("speech", "mixture") and text:
        return str(text)
    if row["domain"] == "speech" and _get(_get(attrs, "speaker"), "transcript_known") is False:
        return "speech"  # a recording whose words nobody wrote down: the bare label, as for music and sound
    if row["domain"] == "speech":
        raise CaptionerError(f"speech row {row.get('id', row.get('audio'))!r} has no transcript (text is empty)")
    instruments = _get(_get(attrs, "music"), "instruments") or []
    if row["domain"] == "music":
        return ", ".join(str(i) for i in instruments) if instruments else "music"
    labels = _labels(row)
    if labels:
        return ", ".join(labels)
    return ", ".join(str(i) for i in instruments) if instruments else row["domain"]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


class _Phraser:
    """Seeded choice among alternative phrasings."""

    def __init__(self, key: str) -> None:
        digest = hashlib.sha1(key.encode("utf-8")).digest()
        self.rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def pick(self, *options: str) -> str:
        return options[int(self.rng.integers(0, len(options)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)


class TemplateCaptioner:
    """Rich captions from structured attributes, with seeded variation in templates and wording.

    Args:
        seed: varies the phrasing of the whole corpus; a given ``(seed, row id)`` always gives the
            same caption.
        include_transcript: quote the transcript in speech captions (the paper appends it for
            LibriSpeech/LibriTTS).
    """

    def __init__(self, seed: int = 0, include_transcript: bool = True) -> None:
        self.seed = int(seed)
        self.include_transcript = include_transcript

    # -- public -----------------------------------------------------------------------------
    def caption(self, row: dict) -> str:
        """Caption one row (see the module docstring for the row and attribute schema)."""
        _check_row(row)
        key = f"{self.seed}:{row.get('id') or row.get('audio') or row.get('text') or ''}"
        ph = _Phraser(key)
        attrs = row.get("attributes") or {}
        domain = row["domain"]
        parts: list[str] = []
        has_speech = domain == "speech" or (domain == "mixture" and (row.get("text") or _get(attrs, "speaker")))
        if has_speech:
            parts.append(self._speech(ph, row, attrs))
        if domain == "music" or _get(attrs, "music"):
            parts.append(self._music(ph, attrs, accompaniment=domain == "mixture"))
        if domain == "sound" or _get(attrs, "events"):
            parts.append(self._events(ph, attrs, in_mixture=domain == "mixture"))
        env = self._environment(ph, attrs, domain)
        if env:
            parts.append(env)
        parts.append(self._absent(ph, domain, attrs))
        text = " ".join(p for p in parts if p)
        return " ".join(text.split())

    # -- speaker ----------------------------------------------------------------------------
    def _speech(self, ph: _Phraser, row: Mapping[str, Any], attrs: Mapping[str, Any]) -> str:
        sp = _get(attrs, "speaker") or {}
        gender, age = _get(sp, "gender"), _get(sp, "age")
        if gender == "male":
            noun = ph.pick("male speaker", "man", "male voice")
        elif gender == "female":
            noun = ph.pick("female speaker", "woman", "female voice")
        else:
            noun = ph.pick("speaker", "voice", "person")
        adjs = []
        if age:
            adjs.append(str(age))
        kind = _get(sp, "kind")
        if kind == "synthetic":
            adjs.append(ph.pick("synthetic", "computer-generated", "text-to-speech", "robotic-sounding synthetic"))
        elif kind == "recorded":
            adjs.append(ph.pick("real", "recorded", "human"))
        subject = " ".join([*adjs, noun])
        subject = f"{_article(subject)} {subject}"
        accent, lang = _get(sp, "accent"), _get(sp, "language")
        lang_name = LANGUAGE_NAMES.get(str(lang), str(lang)) if lang else None
        who = subject
        if accent and lang == "en":
            who += ph.pick(f" with {_article(str(accent))} {accent} accent", f" speaking {accent}")
        elif accent and lang_name and str(accent) != lang_name:
            who += ph.pick(f" speaking {accent}", f" speaking {lang_name} ({accent})")
        elif accent:
            who += f" speaking {accent}"
        elif lang_name:
            who += f" speaking {lang_name}"
        engine = _get(sp, "engine")
        if kind == "synthetic" and engine and ph.chance(0.5):
            who += f" (the {engine} engine)"
        style = _get(sp, "style") or "read"
        text = row.get("text") or _get(sp, "transcript")
        verb = {
            "read": ph.pick("reads", "says", "reads aloud", "speaks the sentence"),
            "prompt": ph.pick("announces", "says", "reads the prompt"),
            "dialogue": ph.pick("says", "speaks the lines", "delivers the lines"),
            "words": ph.pick("says the words", "pronounces the words", "names"),
        }.get(str(style), "says")
        manner = []
        rate = _get(sp, "rate")
        if rate == "slow":
            manner.append(ph.pick("slowly", "at a slow, deliberate pace", "at an unhurried rate"))
        elif rate == "fast":
            manner.append(ph.pick("quickly", "at a fast pace", "at a brisk rate"))
        elif rate == "normal":
            manner.append(ph.pick("at a normal pace", "at a conversational rate", "at a moderate speed"))
        wps = _get(sp, "words_per_second")
        if wps and rate and ph.chance(0.5):
            manner[-1] += f" (about {float(wps):.1f} words per second)"
        pitch = _get(sp, "pitch")
        if pitch == "low":
            manner.append(ph.pick("with a low-pitched voice", "in a deep register", "with a lowered pitch"))
        elif pitch == "high":
            manner.append(ph.pick("with a high-pitched voice", "in a raised register", "with a high pitch"))
        elif pitch == "normal":
            manner.append(ph.pick("at a natural pitch", "with an average pitch", "at the voice's usual pitch"))
        level = _get(_get(attrs, "loudness"), "level")
        if level == "quiet":
            manner.append(ph.pick("quietly", "at a low volume", "softly"))
        elif level == "loud":
            manner.append(ph.pick("loudly", "at a high volume", "in a strong, loud voice"))
        elif level == "moderate":
            manner.append(ph.pick("at a moderate volume", "at a comfortable level"))
        if text and self.include_transcript:
            if _get(sp, "transcript_exact") is False and style == "prompt":
                said = ph.pick(f"reads a telephone prompt that says roughly \u201c{text}\u201d",
                               f"announces a prompt along the lines of \u201c{text}\u201d")
            elif _get(sp, "transcript_exact") is False:  # game subtitles, words spelt without accents
                said = ph.pick(f"{verb} roughly \u201c{text}\u201d", f"{verb} something like \u201c{text}\u201d")
            else:
                said = f"{verb} \u201c{text}\u201d"
        else:
            said = ph.pick("speaks", "talks")
        if ph.chance(0.5):
            sentence = f"{_cap(who)} {said} {_join(manner)}." if manner else f"{_cap(who)} {said}."
        else:
            lead = ph.pick("In this clip,", "Here,", "This recording features", "We hear")
            if lead in ("This recording features", "We hear"):
                sentence = f"{lead} {who} who {said}"
                sentence += f", {_join(manner)}." if manner else "."
            else:
                sentence = f"{lead} {who} {said}" + (f" {_join(manner)}." if manner else ".")
        return sentence

    # -- music ------------------------------------------------------------------------------
    @staticmethod
    def _mood(mode: str | None, tempo: float | None, ph: _Phraser) -> str | None:
        if not mode or not tempo:
            return None
        fast = tempo >= 115
        if mode == "major":
            return ph.pick("cheerful, upbeat", "bright and lively") if fast else ph.pick("calm, gentle", "relaxed and warm")
        return ph.pick("tense, driving", "urgent, restless") if fast else ph.pick("melancholic, reflective", "sombre, introspective")

    def _music(self, ph: _Phraser, attrs: Mapping[str, Any], accompaniment: bool) -> str:
        mu = _get(attrs, "music") or {}
        instruments = [str(i) for i in (_get(mu, "instruments") or [])]
        tempo = _get(mu, "tempo_bpm")
        key, mode = _get(mu, "key"), _get(mu, "mode")
        bits: list[str] = []
        if instruments:
            if len(instruments) == 1:
                head = ph.pick(f"a solo {instruments[0]} piece", f"a piece for solo {instruments[0]}",
                               f"a short {instruments[0]} melody")
            else:
                head = ph.pick(f"an ensemble of {_join(instruments)}", f"a piece played by {_join(instruments)}",
                               f"{_join(instruments)} playing together")
        else:
            desc = _get(mu, "description") or "music"
            head = ph.pick(f"an excerpt of recorded {desc}", f"a recorded {desc} excerpt", f"a piece of {desc}")
        if key and mode:
            head += ph.pick(f" in {key} {mode}", f" in the key of {key} {mode}")
        if tempo:
            t = float(tempo)
            if _get(mu, "tempo_estimated"):
                conf = _get(mu, "tempo_confidence")
                if conf is not None and float(conf) < 0.3:
                    bits.append(ph.pick("without a clearly steady beat", "with a loose, hard-to-follow pulse"))
                else:
                    bits.append(ph.pick(f"with an estimated tempo of about {t:.0f} BPM", f"at roughly {t:.0f} beats per minute"))
            else:
                pace = "slow" if t < 90 else "moderate" if t < 125 else "fast"
                bits.append(ph.pick(f"at {t:.0f} BPM", f"at a {pace} tempo of {t:.0f} BPM", f"at {t:.0f} beats per minute"))
        density = _get(mu, "note_density")
        if density:
            bits.append(ph.pick(f"with a {density} melody", f"with {density} note activity"))
        drums = _get(mu, "drums")
        dyn = _get(mu, "dynamics")
        lead = "Behind the voice, there is " if accompaniment else ""
        sentence = _cap(f"{lead}{head}") + (", " + ", ".join(bits) if bits else "") + "."
        extra: list[str] = []
        if drums is True:
            extra.append(ph.pick("A drum kit keeps a steady backbeat.", "Drums play a steady rock beat.",
                                 "Kick, snare and hi-hat drive the rhythm."))
        elif drums is False:
            extra.append(ph.pick("There are no drums.", "No percussion is used."))
        if dyn in ("soft", "medium", "loud"):
            extra.append({
                "soft": ph.pick("It is played softly.", "The dynamics are soft and restrained.", "The playing is gentle and quiet."),
                "medium": ph.pick("The dynamics are moderate.", "It is played at a medium volume."),
                "loud": ph.pick("It is played loudly and forcefully.", "The dynamics are loud.", "The playing is strong and loud."),
            }[str(dyn)])
        elif dyn == "crescendo":
            extra.append(ph.pick("The music grows steadily louder (a crescendo).", "It builds from soft to loud."))
        elif dyn == "decrescendo":
            extra.append(ph.pick("The music fades from loud to soft (a decrescendo).", "It gradually gets quieter."))
        bright = _get(mu, "brightness")
        if bright:
            extra.append(ph.pick(f"The timbre is {bright}.", f"Overall the sound is {bright}."))
        level = _get(_get(attrs, "loudness"), "level")
        if level and not dyn and not accompaniment:
            extra.append(ph.pick(f"The overall level is {level}.", f"It is mixed at a {level} level."))
        mood = self._mood(mode, float(tempo) if tempo else None, ph)
        if mood and not _get(mu, "tempo_estimated"):
            extra.append(ph.pick(f"The mood is {mood}.", f"It has {_article(mood)} {mood} feel."))
        if accompaniment:
            ratio = _get(_get(attrs, "mixture"), "music_to_speech_db")
            if ratio is not None:
                extra.append(ph.pick(f"The music sits about {abs(float(ratio)):.0f} dB below the voice.",
                                     f"The voice is about {abs(float(ratio)):.0f} dB louder than the music."))
        return " ".join([sentence, *extra])

    # -- sound events -----------------------------------------------------------------------
    def _events(self, ph: _Phraser, attrs: Mapping[str, Any], in_mixture: bool) -> str:
        events = [e for e in (_get(attrs, "events") or []) if _get(e, "label")]
        if not events:
            return ""
        phrases = []
        for e in events:
            lab = str(_get(e, "label"))
            on, off = _get(e, "onset_s"), _get(e, "offset_s")
            if on is not None and off is not None:
                phrases.append(ph.pick(
                    f"{_article(lab)} {lab} at {float(on):.1f} s (until {float(off):.1f} s)",
                    f"{_article(lab)} {lab} from {float(on):.1f} to {float(off):.1f} seconds",
                    f"{_article(lab)} {lab} starting around {float(on):.1f} s and ending near {float(off):.1f} s",
                ))
            elif on is not None:
                phrases.append(f"{_article(lab)} {lab} at about {float(on):.1f} s")
            else:
                phrases.append(f"{_article(lab)} {lab}")
        if len(phrases) == 1:
            body = phrases[0]
        else:
            body = ph.pick(
                "first " + ", then ".join(phrases),
                _join(phrases),
                "in order: " + "; ".join(phrases),
            )
        if in_mixture:
            return ph.pick(f"Sound events punctuate the speech: {body}.", f"Around the voice one hears {body}.")
        return ph.pick(f"The clip contains {body}.", f"Sound events: {body}.", _cap(f"{body} can be heard."),
                       f"We hear {body}.")

    # -- environment ------------------------------------------------------------------------
    def _environment(self, ph: _Phraser, attrs: Mapping[str, Any], domain: str) -> str:
        env = _get(attrs, "environment") or {}
        if not env:
            return ""
        setting = _get(env, "setting")
        sents: list[str] = []
        noise, snr, nlevel = _get(env, "noise_type"), _get(env, "snr_db"), _get(env, "noise_level")
        if setting == "clean":
            sents.append(ph.pick(
                "The recording is clean and dry, with no audible background noise or reverberation.",
                "It sounds like a close-miked studio recording, with no room echo and no background noise.",
                "There is no background noise and no noticeable reverb.",
            ))
        elif setting == "indoor":
            size, rt60, reverb = _get(env, "room_size"), _get(env, "rt60_s"), _get(env, "reverb")
            rooms = {"small": "a small room", "medium": "a medium-sized room", "large": "a large hall"}
            if reverb:
                reverb = REVERB_WORDS.get(str(reverb), str(reverb))
            if size:
                where = rooms.get(str(size), f"a {size} room")
                rt = f" (RT60 about {float(rt60):.2f} s)" if rt60 is not None and ph.chance(0.6) else ""
                sents.append(ph.pick(
                    f"It was recorded indoors in {where} with {reverb} reverberation{rt}.",
                    f"The acoustics are those of {where}: {reverb} reverb{rt}.",
                    f"Indoors, {where} adds {reverb} reverberation{rt}.",
                ))
            else:
                sents.append(ph.pick("It was recorded indoors with little reverberation.", "The setting is indoors, acoustically dry."))
        elif setting == "outdoor":
            sents.append(ph.pick("The recording takes place outdoors, with no room reverberation.",
                                 "It is an outdoor recording, acoustically open and dry.", "The scene is outdoors."))
        if noise:
            snr_txt = f" (SNR about {float(snr):.0f} dB)" if snr is not None and ph.chance(0.7) else ""
            lvl = f"{nlevel} " if nlevel else ""
            sents.append(ph.pick(
                f"There is {lvl}{noise} in the background{snr_txt}.",
                _cap(f"{lvl}{noise} can be heard underneath{snr_txt}."),
                f"The background contains {lvl}{noise}{snr_txt}.",
            ))
        elif setting in ("indoor", "outdoor"):
            sents.append(ph.pick("There is no background noise.", "The background is otherwise silent."))
        bw = _get(env, "bandwidth_hz")
        if bw and float(bw) <= 4500:
            sents.append(ph.pick("The audio is band-limited like a telephone line.",
                                 f"It has narrowband, telephone-like quality (about {float(bw) / 1000:.0f} kHz bandwidth)."))
        return " ".join(sents)

    @staticmethod
    def _absent(ph: _Phraser, domain: str, attrs: Mapping[str, Any]) -> str:
        if domain == "speech":
            return ph.pick("No music or other sound events are present.", "There is no music.", "")
        if domain == "music":
            return ph.pick("No vocals are present.", "There is no singing or speech.", "")
        if domain == "sound":
            return ph.pick("No speech or music is present.", "There is no speech.", "")
        return ""


def caption_dimensions(row: dict) -> set[str]:
    """Which of the four caption dimensions a row's attributes support.

    Returns a subset of ``{"speaker", "environment", "music", "events"}``.
    """
    attrs = row.get("attributes") or {}
    dims = set()
    if row.get("domain") in ("speech", "mixture") and (_get(attrs, "speaker") or row.get("text")):
        dims.add("speaker")
    if _get(attrs, "environment"):
        dims.add("environment")
    if _get(attrs, "music"):
        dims.add("music")
    if _get(attrs, "events"):
        dims.add("events")
    return dims


class CommandCaptioner:
    """Caption with an external program: ``template`` is a command line whose stdout is the caption.

    Placeholders ``{audio}`` (absolute audio path; required), ``{domain}`` and ``{text}`` are
    substituted into each argument of the (shell-split) template; no shell is involved.

    Args:
        template: e.g. ``"mycaptioner --input {audio}"``.
        root: directory that relative ``audio`` paths are resolved against (the manifest's folder).
        timeout: seconds before the program is killed.

    Raises:
        CaptionerError: bad template, missing program, non-zero exit, timeout or empty output.
    """

    def __init__(self, template: str, root: str | Path | None = None, timeout: float = 120.0) -> None:
        try:
            self.argv = shlex.split(template)
        except ValueError as e:
            raise CaptionerError(f"cannot parse captioner command {template!r}: {e}") from e
        if not self.argv:
            raise CaptionerError("captioner command is empty")
        if not any("{audio}" in a for a in self.argv):
            raise CaptionerError(f"captioner command {template!r} must contain the placeholder {{audio}}")
        self.template = template
        self.root = Path(root) if root is not None else None
        self.timeout = float(timeout)

    def caption(self, row: dict) -> str:
        """Run the command on ``row['audio']`` and return its stripped stdout."""
        _check_row(row)
        if not row.get("audio"):
            raise CaptionerError(f"row {row.get('id')!r} has no audio path")
        audio = Path(str(row["audio"]))
        if not audio.is_absolute() and self.root is not None:
            audio = self.root / audio
        if not audio.is_file():
            raise CaptionerError(f"audio file not found: {audio}")
        values = {"audio": str(audio.resolve()), "domain": str(row["domain"]), "text": str(row.get("text") or "")}
        try:
            argv = [a.format(**values) for a in self.argv]
        except (KeyError, IndexError, ValueError) as e:
            raise CaptionerError(f"captioner command {self.template!r}: bad placeholder ({e}); use {{audio}}, {{domain}}, {{text}}") from e
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout)
        except FileNotFoundError as e:
            raise CaptionerError(f"captioner program not found: {argv[0]!r}") from e
        except subprocess.TimeoutExpired as e:
            raise CaptionerError(f"captioner `{' '.join(argv)}` timed out after {self.timeout:.0f} s on {audio}") from e
        if proc.returncode != 0:
            raise CaptionerError(
                f"captioner `{' '.join(argv)}` failed on {audio} with exit code {proc.returncode}: "
                f"{proc.stderr.strip()[-500:]}"
            )
        out = " ".join(proc.stdout.split())
        if not out:
            raise CaptionerError(f"captioner `{' '.join(argv)}` printed nothing for {audio}")
        return out
