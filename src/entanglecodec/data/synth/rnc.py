"""A reader of Rob Northen Computing's ProPack ("RNC") method-1 compressed data.

Beneath a Steel Sky keeps its speech (and most of its other files) packed this way. The format, as
this reader understands it:

* **Header** (18 bytes, numbers big-endian): ``"RNC"``; the method (a byte, 1 here); the unpacked
  size (u32); the packed size (u32, the bytes after the header); the CRC-16 of the unpacked data
  (u16); the CRC-16 of the packed data (u16); the "leeway" (a byte: how far the packed data may
  overlap the output when unpacking in place; not needed here); the number of chunks (a byte).
* **CRC-16**: the reflected polynomial 0xA001 (CRC-16/ARC), initial value 0, no final XOR.
* **Bit stream**: the packed data is a sequence of little-endian 16-bit words read least significant
  bit first. A word is taken up the moment the first of its bits is needed. Raw bytes (the literal
  runs, below) are stored *between* words: a run of ``n`` literal bytes sits at the position of the
  first word none of whose bits has been read yet, and the bit stream goes on after the run. The
  stream opens with two flag bits, which this reader skips (a stream "locked" with a key, whose
  literal bytes are scrambled, fails its CRC check instead of being read).
* **Chunks**: each chunk starts with three Huffman tables (literal-run lengths, match distances,
  match lengths). A table is a 5-bit symbol count ``n`` (at most 16) and ``n`` 4-bit code lengths
  (0: the symbol is unused). Codes are canonical: shorter codes first, equal lengths in symbol
  order, each code's bits sent most significant first. Then comes a 16-bit count of *pairs*. Each
  pair is a literal run (its length from the first table, then that many raw bytes) and, except for
  the chunk's last pair, an LZ match: a distance (second table, plus 1) back into the output and a
  length (third table, plus 2) of bytes to copy from there (a copy may overlap what it writes).
* **Numbers**: a table decodes a symbol ``s``; symbols 0 and 1 are the numbers 0 and 1, a symbol
  ``s >= 2`` is followed by ``s - 1`` more bits ``x`` and means ``2**(s-1) + x``.

Everything is pure Python; the RNC blocks of Beneath a Steel Sky (3 628, 63.5 MB packed) unpack in
about 40 s of CPU on one core (1.5 MB/s packed; see ``reports/speech-sources.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .signal import SynthError

MAGIC = b"RNC"
HEADER_SIZE = 18
MAX_CODE_BITS = 16


class RncError(SynthError):
    """RNC data that cannot be unpacked: bad magic, unsupported method, truncated, corrupt, CRC mismatch."""


@dataclass(frozen=True)
class RncHeader:
    """The 18-byte header of an RNC packed block (see the module docstring)."""

    method: int
    unpacked_size: int
    packed_size: int
    unpacked_crc: int
    packed_crc: int
    leeway: int
    chunks: int


def _crc_tables() -> np.ndarray:
    """``T[v]``: the CRC-16/ARC state after feeding two zero bytes to the state ``v`` (all 65 536 states)."""
    t = np.arange(65536, dtype=np.uint32)
    for _ in range(16):
        t = np.where(t & 1, (t >> 1) ^ 0xA001, t >> 1)
    return t.astype(np.uint16)


_CRC2: list[int] = _crc_tables().tolist()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/ARC of ``data`` (reflected polynomial 0xA001, initial value 0), as stored in RNC headers.

    The state is 16 bits wide, so it absorbs two bytes at a time: XOR a little-endian word into the
    state, then run 16 bit steps, which :data:`_CRC2` holds precomputed for every state.
    """
    raw = bytes(data)
    t = _CRC2
    crc = 0
    for w in np.frombuffer(raw, dtype="<u2", count=len(raw) // 2).tolist():
        crc = t[crc ^ w]
    if len(raw) % 2:  # an odd last byte: eight single bit steps
        crc ^= raw[-1]
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def parse_header(data: bytes | bytearray | memoryview) -> RncHeader:
    """The header at the start of ``data``.

    Raises:
        RncError: fewer than 18 bytes, or no ``RNC`` magic.
    """
    head = bytes(data[:HEADER_SIZE])
    if len(head) < HEADER_SIZE:
        raise RncError(f"RNC data truncated: {len(head)} bytes, the header alone is {HEADER_SIZE}")
    if head[:3] != MAGIC:
        raise RncError(f"not RNC data: bad magic {head[:4]!r} (expected b'RNC' and a method byte)")
    be = int.from_bytes
    return RncHeader(
        method=head[3],
        unpacked_size=be(head[4:8], "big"),
        packed_size=be(head[8:12], "big"),
        unpacked_crc=be(head[12:14], "big"),
        packed_crc=be(head[14:16], "big"),
        leeway=head[16],
        chunks=head[17],
    )


# A decoding table: ``(bits, lookup)``; ``lookup[v]`` for the next ``bits`` stream bits ``v`` (LSB
# first) is ``(code length, symbol)``, or None where no code matches.
_Table = tuple[int, list[tuple[int, int] | None]]


def _build_table(lengths: list[int]) -> _Table:
    """The lookup table of the canonical code with these code lengths (0: unused symbol)."""
    used = [n for n in lengths if n]
    if not used:
        return 0, [None]
    bits = max(used)
    lookup: list[tuple[int, int] | None] = [None] * (1 << bits)
    code = 0
    for n in range(1, bits + 1):
        for sym, length in enumerate(lengths):
            if length != n:
                continue
            if code >= 1 << n:
                raise RncError("RNC data corrupt: a Huffman table has more codes than its lengths allow")
            rev = int(f"{code:0{n}b}"[::-1], 2)  # the stream sends the code's top bit first
            lookup[rev :: 1 << n] = [(n, sym)] * (1 << (bits - n))
            code += 1
        code <<= 1
    return bits, lookup


def unpack(data: bytes | bytearray | memoryview) -> bytes:
    """Unpack one RNC method-1 block (header included) and check both CRCs.

    Bytes after the packed data are ignored.

    Raises:
        RncError: bad magic, a method other than 1, truncated or corrupt data, or a CRC mismatch.
    """
    head = parse_header(data)
    if head.method != 1:
        raise RncError(f"RNC method {head.method} is not supported (only method 1)")
    end = HEADER_SIZE + head.packed_size
    if len(data) < end:
        raise RncError(
            f"RNC data truncated: the header announces {head.packed_size} packed bytes, {len(data) - HEADER_SIZE} follow"
        )
    src = bytes(data[HEADER_SIZE:end])
    crc = crc16(src)
    if crc != head.packed_crc:
        raise RncError(f"RNC packed data corrupt: CRC-16 {crc:04x}, the header says {head.packed_crc:04x}")
    out = _decode(src, head.unpacked_size, head.chunks)
    crc = crc16(out)
    if crc != head.unpacked_crc:
        raise RncError(f"RNC unpacked data corrupt: CRC-16 {crc:04x}, the header says {head.unpacked_crc:04x}")
    return out


def _decode(src: bytes, size: int, chunks: int) -> bytes:
    """The bit-stream and LZ decoding of :func:`unpack` (no CRC checks).

    The bit reader's state lives in locals for speed: ``bits`` holds ``nbits`` unread bits of the words
    taken up so far, and ``pos`` is the offset of the next word (or literal run) not yet touched.
    """
    n_src = len(src)
    padded = src + bytes(4)  # peeking past the end reads zeros; taking up a word that starts there is an error
    out = bytearray()
    bits = nbits = pos = 0

    def truncated() -> RncError:
        return RncError(f"RNC data truncated: the bit stream runs past the {n_src} packed bytes")

    def read(k: int) -> int:
        nonlocal bits, nbits, pos
        if nbits < k:
            if pos >= n_src:
                raise truncated()
            bits |= (padded[pos] | padded[pos + 1] << 8) << nbits
            nbits += 16
            pos += 2
        v = bits & ((1 << k) - 1)
        bits >>= k
        nbits -= k
        return v

    def read_table() -> _Table:
        count = read(5)
        if count > MAX_CODE_BITS:
            raise RncError(f"RNC data corrupt: a Huffman table of {count} symbols (at most {MAX_CODE_BITS})")
        return _build_table([read(4) for _ in range(count)])

    read(2)  # the two flag bits
    for _ in range(chunks):
        tables = (read_table(), read_table(), read_table())
        pairs = read(16)
        for i in range(pairs):
            for t, (tbits, lookup) in enumerate(tables):
                if t and i == pairs - 1:
                    break  # the chunk's last pair has no match
                # one Huffman symbol: peek ``tbits`` bits (taking the next word only if the code reaches it)
                if nbits < tbits:
                    look = bits | (padded[pos] | padded[pos + 1] << 8) << nbits
                else:
                    look = bits
                entry = lookup[look & ((1 << tbits) - 1)]
                if entry is None:
                    raise RncError("RNC data corrupt: a bit pattern matches no Huffman code")
                n, sym = entry
                if n > nbits:
                    if pos >= n_src:
                        raise truncated()
                    bits, nbits, pos = look, nbits + 16, pos + 2
                bits >>= n
                nbits -= n
                value = sym if sym < 2 else (1 << (sym - 1)) | read(sym - 1)
                if t == 0:
                    if value:
                        if pos + value > n_src:
                            raise truncated()
                        out += src[pos : pos + value]
                        pos += value
                elif t == 1:
                    distance = value + 1
                    if distance > len(out):
                        raise RncError(f"RNC data corrupt: a match reaches {distance} bytes back, {len(out)} are written")
                else:
                    length = value + 2
                    start = len(out) - distance
                    if distance >= length:
                        out += out[start : start + length]
                    else:  # the copy overlaps what it writes: the last ``distance`` bytes repeat
                        out += (out[start:] * (length // distance + 1))[:length]
            if len(out) > size:
                raise RncError(f"RNC data corrupt: more than the {size} unpacked bytes the header announces")
    if len(out) != size:
        raise RncError(f"RNC data corrupt: {len(out)} bytes unpacked, the header announces {size}")
    return bytes(out)
