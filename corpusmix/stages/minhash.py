"""MinHash for dedup: text normalisation, word shingles, signatures and LSH banding.

Everything here is a pure function of text or arrays, vectorised with numpy
(no Python call per word or shingle, see ``hashing.word_hashes``). Signatures
are datasketch's own (scheme ``affine32``: fmix32 then a*h+b mod 2^32, its
permutation parameters), and the LSH uses datasketch's choice of bands x rows;
the banding itself is a numpy group-by that yields the same candidate pairs as
``MinHashLSH`` (tested), cut into a map side (``band_keys``: one part's keys
into buckets) and a reduce side (``band_pairs``: one bucket's groups into
candidate pairs), so no process ever holds every band of every document.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata

import numpy as np
from datasketch import MinHash, MinHashLSH

from corpusmix.core.hashing import NGRAM_MULT, mix64, ngram_hashes, word_hashes
from corpusmix.core.spec import Dedup, Normalize

SIG_BATCH_CELLS = 1 << 23     # permutations x shingles per vectorised step (32 MiB of uint32)


# Unicode punctuation outside ASCII, as UTF-8 byte patterns: Latin-1 punctuation and symbols
# (U+00A1-U+00BF, U+00D7, U+00F7), General Punctuation (U+2000-U+206F), CJK Symbols and
# Punctuation (U+3000-U+303F). Fullwidth forms become ASCII under NFKC first.
_UNICODE_PUNCT = re.compile(rb"\xc2[\xa1-\xbf]|\xc3[\x97\xb7]|\xe2\x80[\x80-\xbf]|\xe2\x81[\x80-\xaf]|\xe3\x80[\x80-\xbf]")


@functools.lru_cache(maxsize=4)
def _byte_table(punctuation: bool, zero_digits: bool) -> bytes:
    """A bytes.translate table for the ASCII rules (GB/s, where a str regex does ~25 MB/s)."""
    table = bytearray(range(256))
    for c in range(128):
        ch = chr(c)
        if punctuation and not ch.isalnum() and not ch.isspace() and ch != "_":
            table[c] = 0x20
        elif zero_digits and ch.isdigit():
            table[c] = ord("0")
    return bytes(table)


def normalize(text: str, cfg: Normalize, unicode_punct: bool = True) -> bytes:
    """The UTF-8 bytes dedup compares; the order matters (NFKC can create punctuation).

    Punctuation means ASCII punctuation and symbols plus the Unicode ranges in
    ``_UNICODE_PUNCT``; digits mean ASCII digits (after NFKC, which maps most
    other digit forms to ASCII). ``unicode_punct=False`` leaves the Unicode
    ranges to the caller (``blank_unicode_punct`` over a whole batch at once).
    """
    if cfg.unicode != "none" and not text.isascii():  # ASCII is its own NFC/NFKC form: skip the call
        text = unicodedata.normalize(cfg.unicode, text)
    if cfg.lowercase:
        text = text.lower()
    data = text.encode("utf-8")
    if cfg.punctuation or cfg.digits == "zero":
        data = data.translate(_byte_table(cfg.punctuation, cfg.digits == "zero"))
        if cfg.punctuation and unicode_punct and not data.isascii():
            data = _UNICODE_PUNCT.sub(b" ", data)
    if cfg.whitespace:
        data = b" ".join(data.split())
    return data


def blank_unicode_punct(data: bytes) -> bytes:
    """``data`` (UTF-8) with each character ``_UNICODE_PUNCT`` matches turned into as many spaces
    as it has bytes: the same words as ``normalize``'s regex (one space per character), with the
    byte offsets kept. Found with numpy over a whole batch: a lead byte 0xC2/0xC3/0xE2/0xE3 is
    never a continuation byte in valid UTF-8, so candidates need no left-to-right scan, and only
    they are looked at further (the regex, per text, was a quarter of decontamination's scan)."""
    b = np.frombuffer(data + b"\0\0", np.uint8)
    top = b & 0xFE
    lead = np.flatnonzero((top == 0xC2) | (top == 0xE2))
    if len(lead) == 0:
        return data
    c0, c1, c2 = b[lead], b[lead + 1], b[lead + 2]
    two = ((c0 == 0xC2) & (c1 >= 0xA1) & (c1 <= 0xBF)) | ((c0 == 0xC3) & ((c1 == 0x97) | (c1 == 0xB7)))
    three = (c2 >= 0x80) & ((((c0 == 0xE2) | (c0 == 0xE3)) & (c1 == 0x80) & (c2 <= 0xBF))
                            | ((c0 == 0xE2) & (c1 == 0x81) & (c2 <= 0xAF)))
    if not (two.any() or three.any()):
        return data
    out = b[:-2].copy()
    for width, starts in ((2, lead[two]), (3, lead[three])):
        for k in range(width):
            out[starts + k] = 0x20
    return out.tobytes()


def exact_key(norm: bytes) -> bytes:
    return hashlib.blake2b(norm, digest_size=16).digest()




SHINGLE_GROUP_BYTES = 1 << 20  # text hashed per numpy pass: bounds the prefix-hash tables (~24 bytes/byte)


def batch_shingles(norms: list[bytes], k: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of the word k-grams of many documents, and the count per document.

    Documents are hashed together, in groups of about SHINGLE_GROUP_BYTES (per-document
    numpy calls would cost more than the hashing for short texts; one giant group would
    need prefix tables the size of the batch); see ``_group_shingles``.
    """
    hashes, counts, group, size = [], [], [], 0
    for norm in norms:
        if group and size + len(norm) > SHINGLE_GROUP_BYTES:
            h, c = _group_shingles(group, k)
            hashes.append(h)
            counts.append(c)
            group, size = [], 0
        group.append(norm)
        size += len(norm) + 1
    if group or not norms:
        h, c = _group_shingles(group, k)
        hashes.append(h)
        counts.append(c)
    return np.concatenate(hashes), np.concatenate(counts)


def _group_shingles(norms: list[bytes], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The documents are hashed as one byte string (a space between them, so no word spans
    two), and a k-gram is kept only when its k words belong to one document; a document of
    1..k-1 words gets one shingle of all its words."""
    n_docs = len(norms)
    w, starts = word_hashes(b" ".join(norms))
    if len(w) == 0:
        return np.empty(0, np.uint32), np.zeros(n_docs, np.int64)
    lengths = np.fromiter((len(x) for x in norms), np.int64, n_docs)
    doc_start = np.cumsum(lengths + 1) - (lengths + 1)
    doc_of = np.searchsorted(doc_start, starts, side="right") - 1
    words_per_doc = np.bincount(doc_of, minlength=n_docs)
    w = mix64(w)
    grams, first = ngram_hashes(w, doc_of, k)
    hashes, owners = [grams], [doc_of[first]]
    first_word = np.cumsum(words_per_doc) - words_per_doc
    for d in np.flatnonzero((words_per_doc > 0) & (words_per_doc < k)):
        acc1 = np.zeros(1, np.uint64)
        with np.errstate(over="ignore"):
            for x in w[first_word[d]:first_word[d] + words_per_doc[d]]:
                acc1 = acc1 * NGRAM_MULT + x
        hashes.append(acc1)
        owners.append(np.array([d]))
    h, o = np.concatenate(hashes), np.concatenate(owners)
    order = np.argsort(o, kind="stable")
    return (mix64(h[order]) >> np.uint64(32)).astype(np.uint32), np.bincount(o, minlength=n_docs)


def shingle_hashes(norm: bytes, k: int) -> np.ndarray:
    """32-bit hashes of the word k-grams of one document (see ``batch_shingles``)."""
    return batch_shingles([norm], k)[0]


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, as datasketch applies it before its permutations."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(0xC2B2AE35)
        return h ^ (h >> np.uint32(16))


def permutations(num_perm: int, seed: int) -> np.ndarray:
    """datasketch's own (a, b) permutation parameters for ``num_perm`` and ``seed``."""
    return MinHash(num_perm=num_perm, seed=seed).permutations


EMPTY_SIG = np.uint32(0xFFFFFFFF)


def signatures(shingles: list[np.ndarray], perms: np.ndarray) -> np.ndarray:
    """MinHash signatures (n_docs x num_perm, uint32) of per-document shingle-hash arrays."""
    counts = np.fromiter((len(x) for x in shingles), np.int64, len(shingles))
    flat = np.concatenate(shingles) if shingles else np.empty(0, np.uint32)
    return batch_signatures(flat.astype(np.uint32), counts, perms)


def batch_signatures(hv: np.ndarray, counts: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """MinHash signatures of documents whose shingle hashes are concatenated in ``hv``.

    Equal to ``MinHash(num_perm, seed, hashfunc=int).update_batch(shingles)``
    per document (datasketch's affine32 scheme), computed for many documents per
    numpy step in a reused buffer of SIG_BATCH_CELLS cells; a document cut by a
    step boundary is finished in the next. A document without shingles gets
    all-0xFFFFFFFF (and never matches).
    """
    a, b = perms[0][:, None], perms[1][:, None]
    num_perm = a.shape[0]
    out = np.full((len(counts), num_perm), EMPTY_SIG, np.uint32)
    if len(hv) == 0:
        return out
    hv = _fmix32(hv)
    starts = np.cumsum(counts) - counts
    ends = starts + counts
    nonempty = np.flatnonzero(counts > 0)
    step = max(1, SIG_BATCH_CELLS // num_perm)
    buf = np.empty((num_perm, min(step, len(hv))), np.uint32)
    for lo in range(0, len(hv), step):
        seg = hv[lo:lo + step]
        view = buf[:, :len(seg)]
        with np.errstate(over="ignore"):
            np.multiply(a, seg[None, :], out=view, dtype=np.uint32, casting="unsafe")
            np.add(view, b, out=view, dtype=np.uint32, casting="unsafe")
        docs = nonempty[(starts[nonempty] < lo + len(seg)) & (ends[nonempty] > lo)]
        mins = np.minimum.reduceat(view, np.maximum(starts[docs], lo) - lo, axis=1).T
        out[docs] = np.minimum(out[docs], mins)
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """True Jaccard similarity of two sets of shingle hashes (unique, sorted arrays)."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def lsh_params(cfg: Dedup) -> tuple[int, int]:
    """Bands x rows: from the spec, or datasketch's choice for the threshold.

    datasketch picks them to minimise fp_weight * P(false positive) + fn_weight *
    P(false negative) around the threshold. Its default weights (0.5, 0.5) make a
    pair at Jaccard 0.85 a candidate only 69 % of the time at threshold 0.8 (9 x 13);
    verification removes false positives anyway, so the default here weights misses
    0.95 (16 x 8: 99.4 % at 0.85, with more candidates to verify).
    """
    near = cfg.near
    if near.bands is not None:
        return near.bands, near.rows
    fn = near.false_negative_weight
    lsh = MinHashLSH(threshold=near.threshold, num_perm=near.num_perm, weights=(1.0 - fn, fn))
    return lsh.b, lsh.r


MAX_BUCKET_PAIRS = 200  # a bucket larger than this yields a star (first member x others), not all pairs


def band_keys(sigs: np.ndarray, positions: np.ndarray, bands: int, rows: int,
              buckets: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The map side of the LSH shuffle: every (band, band values) key of these documents,
    sent to bucket ``hash(key) % buckets`` with the document's position.

    A key holds the band number and its ``rows`` signature values, so two documents
    share a key exactly when they agree on every row of one band; all documents with
    one key land in one bucket, which is what makes the reduce side exact. Like
    ``MinHashLSH``, bands use the first bands x rows permutations, which datasketch's
    optimal layout for most thresholds leaves short of ``num_perm`` (0.7: 11 x 11 of 128).
    """
    m = len(positions)
    keys = np.empty((m, bands, rows + 1), np.uint32)
    keys[:, :, 0] = np.arange(bands, dtype=np.uint32)
    keys[:, :, 1:] = sigs[:, :bands * rows].reshape(m, bands, rows)  # as datasketch: the first bands*rows values
    with np.errstate(over="ignore"):
        bucket = (_fmix32(keys[:, :, 1] ^ (keys[:, :, 0] * np.uint32(0x9E3779B9))) % np.uint32(buckets)).ravel()
    flat = keys.reshape(m * bands, rows + 1).view(np.dtype((np.void, 4 * (rows + 1)))).ravel()
    pos = np.repeat(np.asarray(positions, np.int64), bands)
    return [(flat[bucket == b], pos[bucket == b]) for b in range(buckets)]


def band_pairs(*payloads: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The reduce side: candidate pairs (i < j, sorted rows) among documents sharing a key.

    Datasketch's ``MinHashLSH`` gives the same pairs (tested), at ~0.12 ms per
    document in Python where this is a sort per bucket.
    """
    keys = np.concatenate([k for k, _ in payloads]) if payloads else np.empty(0)
    pos = np.concatenate([p for _, p in payloads]) if payloads else np.empty(0, np.int64)
    pairs: set[tuple[int, int]] = set()
    if len(keys) >= 2:
        order = np.argsort(keys, kind="stable")
        cut = np.flatnonzero(keys[order][1:] != keys[order][:-1]) + 1
        for group in np.split(order, cut):
            if len(group) < 2:
                continue
            members = sorted(pos[group].tolist())
            if len(members) > MAX_BUCKET_PAIRS:
                pairs.update((members[0], m) for m in members[1:])
            else:
                pairs.update((members[i], m) for i in range(len(members)) for m in members[i + 1:])
    return np.array(sorted(pairs), np.int64).reshape(-1, 2)


def lsh_candidate_pairs(sigs: np.ndarray, rows_of: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Candidate pairs among the documents ``rows_of`` of one in-memory signature matrix."""
    return set(map(tuple, band_pairs(*band_keys(sigs[rows_of], rows_of, bands, rows, 1)).tolist()))
