"""RNC ProPack method-1 unpacking (Beneath a Steel Sky's speech) and the ``sky.dnr`` index.

The streams are made here by a small encoder (greedy LZ matches, real Huffman tables, both CRCs),
written for these tests from the format as :mod:`entanglecodec.data.synth.rnc` describes it.
"""

from __future__ import annotations

import heapq
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from entanglecodec.data.synth.rnc import HEADER_SIZE, RncError, crc16, parse_header, unpack
from entanglecodec.data.synth.signal import SynthError


def _crc_bitwise(data: bytes) -> int:
    """CRC-16/ARC one bit at a time (the reference the table-driven :func:`crc16` must match)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


class _BitWriter:
    """Little-endian 16-bit words filled LSB first; raw bytes go after the last word begun so far."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.word_at = -1  # offset of the word being filled
        self.filled = 16

    def bits(self, value: int, n: int) -> None:
        for i in range(n):
            if self.filled == 16:
                self.word_at, self.filled = len(self.out), 0
                self.out += b"\0\0"
            if value >> i & 1:
                self.out[self.word_at + self.filled // 8] |= 1 << (self.filled % 8)
            self.filled += 1

    def code(self, code: int, length: int) -> None:
        """A Huffman code, its most significant bit first."""
        for i in reversed(range(length)):
            self.bits(code >> i & 1, 1)

    def raw(self, data: bytes) -> None:
        self.out += data


def _symbol(value: int) -> tuple[int, int, int]:
    """``(symbol, extra bits, their count)`` of a number (0 and 1 are symbols; else 2**(s-1) + x)."""
    if value < 2:
        return value, 0, 0
    s = value.bit_length()
    return s, value - (1 << (s - 1)), s - 1


def _code_lengths(freqs: dict[int, int]) -> list[int]:
    """Huffman code lengths of the symbols 0..max(freqs) (one used symbol gets a 1-bit code)."""
    lengths = [0] * (max(freqs) + 1 if freqs else 0)
    if len(freqs) == 1:
        lengths[next(iter(freqs))] = 1
        return lengths
    heap = [(f, i, [s]) for i, (s, f) in enumerate(sorted(freqs.items()))]
    heapq.heapify(heap)
    tie = len(heap)
    while len(heap) > 1:
        fa, _, a = heapq.heappop(heap)
        fb, _, b = heapq.heappop(heap)
        for s in a + b:
            lengths[s] += 1
        heapq.heappush(heap, (fa + fb, tie, a + b))
        tie += 1
    assert max(lengths, default=0) <= 16
    return lengths


def _canonical(lengths: list[int]) -> dict[int, tuple[int, int]]:
    """Symbol -> (code, length): shorter codes first, equal lengths in symbol order."""
    codes, code = {}, 0
    for n in range(1, 17):
        for s, length in enumerate(lengths):
            if length == n:
                codes[s] = (code, n)
                code += 1
        code <<= 1
    return codes


def _matches(data: bytes, start: int, end: int, min_len: int = 3) -> list[tuple[bytes, int, int]]:
    """Greedy LZ parse of ``data[start:end]`` (matches may reach before ``start``): ``(literals, distance, length)``,
    the last item with distance 0 (no match)."""
    pairs: list[tuple[bytes, int, int]] = []
    heads: dict[bytes, list[int]] = {}
    for p in range(max(0, start - 4096), start):
        heads.setdefault(data[p : p + 3], []).append(p)
    lit_start = i = start
    while i < end:
        best_len, best_dist = 0, 0
        for cand in reversed(heads.get(data[i : i + 3], [])[-32:]):
            n = 0
            while i + n < end - 1 and n < 255 and data[cand + n] == data[i + n]:  # the last byte stays a literal
                n += 1
            if n > best_len:
                best_len, best_dist = n, i - cand
        if best_len >= min_len:
            pairs.append((data[lit_start:i], best_dist, best_len))
            for p in range(i, i + best_len):
                heads.setdefault(data[p : p + 3], []).append(p)
            i += best_len
            lit_start = i
        else:
            heads.setdefault(data[i : i + 3], []).append(i)
            i += 1
    pairs.append((data[lit_start:end], 0, 0))
    return pairs


def rnc_pack(data: bytes, chunk: int = 4096, *, leeway: int = 0) -> bytes:
    """A valid RNC method-1 block (header included) that unpacks to ``data``."""
    w = _BitWriter()
    w.bits(0, 2)  # the two flag bits
    chunks = 0
    for start in range(0, len(data), chunk) if data else []:
        pairs = _matches(data, start, min(start + chunk, len(data)))
        vals = [[_symbol(len(lit)) for lit, _, _ in pairs],
                [_symbol(d - 1) for _, d, n in pairs[:-1]],
                [_symbol(n - 2) for _, d, n in pairs[:-1]]]
        tables = []
        for v in vals:
            freqs: dict[int, int] = {}
            for s, _, _ in v:
                freqs[s] = freqs.get(s, 0) + 1
            lengths = _code_lengths(freqs)
            w.bits(len(lengths), 5)
            for n in lengths:
                w.bits(n, 4)
            tables.append(_canonical(lengths))
        w.bits(len(pairs), 16)
        for i, (lit, _, _) in enumerate(pairs):
            for t in range(3 if i < len(pairs) - 1 else 1):
                s, extra, nx = vals[t][i]
                w.code(*tables[t][s])
                w.bits(extra, nx)
                if t == 0:
                    w.raw(lit)
        chunks += 1
    packed = bytes(w.out)
    head = b"RNC\x01" + struct.pack(">IIHHBB", len(data), len(packed), _crc_bitwise(data), _crc_bitwise(packed), leeway, chunks)
    return head + packed


def _sample_data(rng: random.Random) -> bytes:
    """Speech-like bytes: noise around 0x80, runs of silence, repeated phrases (overlapping matches)."""
    parts = []
    for _ in range(40):
        kind = rng.random()
        if kind < 0.3:
            parts.append(bytes([0x80]) * rng.randint(1, 300))
        elif kind < 0.6 and parts:
            parts.append(rng.choice(parts)[: rng.randint(1, 200)])
        else:
            parts.append(bytes(max(0, min(255, 128 + int(rng.gauss(0, 30)))) for _ in range(rng.randint(1, 400))))
    return b"".join(parts)


def test_crc16_is_crc16_arc() -> None:
    assert crc16(b"123456789") == 0xBB3D == _crc_bitwise(b"123456789")  # the catalogued check value
    rng = random.Random(1)
    for n in (0, 1, 2, 3, 255, 1000, 1001):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc16(data) == _crc_bitwise(data)


def test_packed_streams_round_trip() -> None:
    rng = random.Random(0)
    for _ in range(4):
        data = _sample_data(rng)
        blob = rnc_pack(data, chunk=rng.choice([512, 1500, 4096]))
        head = parse_header(blob)
        assert (head.method, head.unpacked_size, head.packed_size) == (1, len(data), len(blob) - HEADER_SIZE)
        assert head.chunks >= 1 and head.unpacked_crc == _crc_bitwise(data)
        assert unpack(blob) == data
        assert unpack(blob + b"trailing bytes are ignored") == data
    # the edge cases: a single literal run, one long overlapping match (distance 1), nothing at all
    for data in (b"x", b"ab" + b"\x80" * 5000, bytes(range(256)) * 3, b""):
        assert unpack(rnc_pack(data)) == data
    packed = rnc_pack(b"\x80" * 5000)
    assert len(packed) < 100  # really compressed: the match path is exercised


def test_bad_inputs_give_one_line_errors() -> None:
    data = _sample_data(random.Random(3))
    blob = rnc_pack(data)
    packed_crc = struct.pack(">H", _crc_bitwise(blob[HEADER_SIZE:-7]))
    cases = {
        "bad magic": b"RNX" + blob[3:],
        "method 2 is not supported": blob[:3] + b"\x02" + blob[4:],
        "truncated": blob[:-1],
        "header alone": blob[:10],
        "packed data corrupt": blob[:-5] + bytes([blob[-5] ^ 0x40]) + blob[-4:],
        "unpacked data corrupt": blob[:12] + bytes([blob[12] ^ 1]) + blob[13:],
        # shorter packed data whose header (size, CRC) is made consistent: the bit stream runs off its end
        "runs past": blob[:8] + struct.pack(">I", len(blob) - HEADER_SIZE - 7) + blob[12:14] + packed_crc + blob[16:-7],
        # more output than announced
        "more than the": blob[:4] + struct.pack(">I", len(data) - 1) + blob[8:],
    }
    for match, bad in cases.items():
        with pytest.raises(RncError, match=match) as err:
            unpack(bad)
        assert "\n" not in str(err.value) and isinstance(err.value, SynthError)


def test_damaged_streams_only_ever_raise_rnc_errors() -> None:
    """Cut or flipped packed data, with the header's size and packed CRC made to match, reaches the decoder:
    whatever it meets there (odd lengths, bad tables, distances before the start), the error is an RncError.
    (Cutting only bits the stream never reads, such as the unused top of its last word, still unpacks.)"""
    rng = random.Random(11)
    data = _sample_data(rng)[:3000]
    blob = rnc_pack(data, chunk=1000)
    packed = blob[HEADER_SIZE:]
    raised = 0
    for trial in range(150):
        bad = bytearray(packed[: rng.randrange(1, len(packed))] if trial % 2 else packed)
        for _ in range(rng.randint(0 if trial % 2 else 1, 3)):
            bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        head = blob[:8] + struct.pack(">IHH", len(bad), struct.unpack(">H", blob[12:14])[0], _crc_bitwise(bytes(bad)))
        try:
            assert unpack(head + blob[16:18] + bytes(bad)) == data
        except RncError as err:
            assert "\n" not in str(err)
            raised += 1
    assert raised > 140


def _dnr(entries: list[tuple[int, int, int]], shifted: frozenset[int] = frozenset()) -> bytes:
    """A sky.dnr index: u32 count, then (u16 number, u24 offset, u24 flags with the size in the low 22 bits)."""
    out = struct.pack("<I", len(entries))
    for number, offset, size in entries:
        if number in shifted:  # bit 23 set: the offset is stored divided by 16
            field = 0x800000 | (offset >> 4)
        else:
            field = offset
        out += struct.pack("<H", number) + field.to_bytes(3, "little") + (size | 0x400000).to_bytes(3, "little")
    return out


def test_sky_dnr_index_is_parsed() -> None:
    from entanglecodec.data.synth.speech import bass_line, parse_sky_dnr

    pcm = bytes([0x80, 0x90, 0x70]) * 300
    line = struct.pack("<11H", 0x81, *([0x8080] * 5), len(pcm) + 22, *([0] * 4)) + rnc_pack(pcm)
    palette = bytes(768)
    dsk = b"\0" * 32 + line + b"\0" * (48 - len(line) % 16) + palette
    at = 32 + len(line) + 48 - len(line) % 16
    index = _dnr([(50007, 32, len(line)), (59501, at, len(palette)), (60110, 0, 16)], shifted=frozenset({59501}))
    assert at % 16 == 0
    table = parse_sky_dnr(index, len(dsk))
    assert table == {50007: (32, len(line)), 59501: (at, len(palette)), 60110: (0, 16)}
    assert bass_line(dsk[32 : 32 + len(line)], 50007) == pcm
    with pytest.raises(SynthError, match="59501.*not RNC"):
        bass_line(palette, 59501)
    with pytest.raises(SynthError, match="outside the archive"):
        parse_sky_dnr(index, at + 10)
    with pytest.raises(SynthError, match="entries"):
        parse_sky_dnr(index[:-1])
    with pytest.raises(SynthError, match="entries"):
        parse_sky_dnr(b"\1\0")


def test_bass_lines_are_unpacked_once_to_lossless_flac(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from entanglecodec.data.synth import speech

    rng = random.Random(5)
    lines = {50010: _sample_data(rng)[:3000], 50011: bytes([0x80, 0xC0, 0x40]) * 700}
    dsk, entries = bytearray(), []
    for number, pcm in lines.items():
        entry = struct.pack("<11H", 0x81, *([0x8080] * 5), len(pcm) + 22, *([0] * 4)) + rnc_pack(pcm)
        entries.append((number, len(dsk), len(entry)))
        dsk += entry
    base = tmp_path / "usr/share/scummvm/beneath-a-steel-sky"
    base.mkdir(parents=True)
    (base / "sky.dsk").write_bytes(bytes(dsk))
    (base / "sky.dnr").write_bytes(_dnr(entries))
    monkeypatch.setattr(speech, "ensure_package", lambda package: tmp_path)
    monkeypatch.setattr(speech, "BASS_VOICES", {"someone": ("female", "50010-50011")})
    speech.bass_utterances.cache_clear()
    try:
        utts = speech.bass_utterances("someone")
        assert [u.source for u in utts] == [f"usr/share/scummvm/beneath-a-steel-sky/sky.dsk:{n}" for n in lines]
        for u, pcm in zip(utts, lines.values(), strict=True):
            assert u.voice.id == "bass:someone" and u.voice.gender == "female" and u.text == "" and not u.transcript_exact
            wav, sr = speech.read_audio_any(Path(u.path))
            assert sr == 11025 and np.array_equal(np.round(wav * 128 + 128).astype(np.uint8), np.frombuffer(pcm, np.uint8))
        assert sorted(p.name for p in (tmp_path / "_speech").iterdir()) == ["50010.flac", "50011.flac"]  # no temporary left
        stamp = Path(utts[0].path).stat().st_mtime_ns
        speech.bass_utterances.cache_clear()
        speech.bass_utterances("someone")
        assert Path(utts[0].path).stat().st_mtime_ns == stamp  # cached: not unpacked again
        monkeypatch.setattr(speech, "BASS_VOICES", {"someone": ("female", "50010-50012")})
        speech.bass_utterances.cache_clear()
        with pytest.raises(SynthError, match="no file 50012"):
            speech.bass_utterances("someone")
    finally:
        speech.bass_utterances.cache_clear()


def test_bass_voice_table_is_sane() -> None:
    from entanglecodec.data import heldout
    from entanglecodec.data.synth import speech

    seen: set[int] = set()
    assert speech.BASS_VOICES, "no Beneath a Steel Sky voice chosen"
    for name, (gender, spec) in speech.BASS_VOICES.items():
        numbers = speech._number_ranges(spec)
        assert numbers == sorted(set(numbers)) and all(50000 <= n < 55300 for n in numbers)
        assert not seen & set(numbers)  # a line belongs to one voice at most
        seen |= set(numbers)
        voice = speech.bass_voice(name)
        assert gender in ("male", "female") and voice.language == "en"
        assert voice.id not in heldout.DEV_SPEAKERS + heldout.TEST_SPEAKERS
        assert voice in speech.recorded_voices() and speech.recorded_package_of(voice.id) == "beneath-a-steel-sky"
    with pytest.raises(SynthError, match="unknown Beneath a Steel Sky voice"):
        speech.recorded_package_of("bass:nobody")
