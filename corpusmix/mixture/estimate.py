"""What each source can supply before anything is built: an estimate from its raw input files.

``corpusmix plan`` must answer "is my budget sane, which source runs out first?" before a build
that can take hours. Nothing has counted tokens yet, so: read a sample of each source's files
with the same readers ingest uses (whole files, spread over the source, at least one and about
``SAMPLE_BYTES`` as stored), count the tokens of a subsample of their documents the way ingest
would (exactly with a tokenizer file, else the per-document estimate of ``tokencount`` for
the vocabulary the build will train), scale by the text bytes of the files read, then by
the source's bytes as stored (compressed bytes scale like the text inside when the files of a
source are alike). The counts are of the raw inputs, before dedup and quality filters remove
their share, so they overstate what a build keeps; every such number is labelled an estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from corpusmix.core.spec import LoadedSpec, file_format

SAMPLE_BYTES = 4 << 20  # raw bytes (as stored) read per source, in whole files
ENCODE_BYTES = 256 << 10  # text bytes encoded per batch read (of ``ingest.block_bytes``, 8 MiB by default)


@dataclass(frozen=True)
class RawEstimate:
    """One source's raw-input estimate and what it rests on."""

    tokens: int  # EOS included (one per document), as tokenize stores them
    documents: int
    files_sampled: int
    files: int
    bytes_sampled: int
    bytes: int
    exact_sample: bool  # the sample was counted with the tokenizer file (else bytes per token)

    def describe(self) -> str:
        how = ("counted with the tokenizer file on a sample of the documents" if self.exact_sample
               else "estimated per document as ingest does for a tokenizer the build trains")
        return (f"{self.files_sampled} of {self.files} file(s) read ({self.bytes_sampled / 1e6:,.1f} of "
                f"{self.bytes / 1e6:,.1f} MB as stored), tokens {how}, scaled by size; raw inputs, before dedup "
                f"and quality filters")


def sample_indices(sizes: list[int], budget: int = SAMPLE_BYTES) -> list[int]:
    """Which files to read: every ``step``-th one (spread over the source, not its first files),
    the step chosen so the sample is about ``budget`` bytes; at least one file, all when small."""
    if not sizes:
        return []
    step = max(1, math.floor(sum(sizes) / max(budget, 1)))
    picked, total = [], 0
    for i in range(0, len(sizes), step):
        picked.append(i)
        total += sizes[i]
        if total >= budget:
            break
    return picked


def _count_file(loaded: LoadedSpec, source_name: str, path: Path, encode_bytes: int = ENCODE_BYTES) -> tuple[float, int]:
    """(tokens without EOS, documents) of one input file, read as ingest reads it (records that
    are not documents, or have no text, count nothing). Reading is cheap and encoding is not
    (a few MB/s for code): per batch, every k-th document is counted, about ``encode_bytes`` of
    text, and the batch's tokens are its text bytes times the tokens per byte of those."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from corpusmix.readers import read_unit
    from corpusmix.readers.common import FileReadResult
    from corpusmix.stages.tokencount import count_tokens, counter_for

    source = loaded.source(source_name)
    counting, info = counter_for(loaded)  # as ingest counts
    tokens, documents = 0.0, 0
    for batch in read_unit(file_format(source, path), [path], [path.name], source, loaded.spec.ingest,
                           FileReadResult()):
        texts = batch.candidates.column("text")
        sizes = pc.fill_null(pc.binary_length(texts), 0)
        text_bytes = int(pc.sum(sizes).as_py() or 0)
        documents += int(pc.sum(pc.greater(sizes, 0)).as_py() or 0)
        if not text_bytes:
            continue
        step = max(1, math.ceil(text_bytes / max(encode_bytes, 1)))
        picked = pa.array(range(0, len(texts), step), pa.int64())
        sample_bytes = int(pc.sum(sizes.take(picked)).as_py() or 0)
        if sample_bytes:
            tokens += text_bytes * int(count_tokens(texts.take(picked), counting, info).sum()) / sample_bytes
    return tokens, documents


def raw_estimate(loaded: LoadedSpec, source_name: str, budget: int = SAMPLE_BYTES) -> RawEstimate:
    """A source's tokens (EOS included) and documents, estimated from a sample of its raw files."""
    files = loaded.source_files(loaded.source(source_name))
    sizes = [f.stat().st_size for f in files]
    picked = sample_indices(sizes, budget)
    tokens, documents = 0.0, 0
    for i in picked:
        t, d = _count_file(loaded, source_name, files[i])
        tokens, documents = tokens + t, documents + d
    sampled, total = sum(sizes[i] for i in picked), sum(sizes)
    scale = total / sampled if sampled else 0.0
    return RawEstimate(tokens=round((tokens + documents) * scale), documents=round(documents * scale),
                       files_sampled=len(picked), files=len(files), bytes_sampled=sampled, bytes=total,
                       exact_sample=bool(loaded.spec.tokenizer.path))
