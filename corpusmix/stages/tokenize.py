"""Tokenize stage: every kept document of a source into Megatron token stores, train and held-out.

The held-out split's train documents become ``tokens.bin/.idx`` (what the mixture reads); its
held-out documents become ``valid.bin/.idx`` beside them, the same way (evaluation only).
Each input part is one unit of work for the spec's executor
(``_tokenize_part``): it reads the part in batches of about ``BATCH_BYTES``
of text. A document's ids come from ingest's token-id cache (``token_ref``)
when the digest of its text proves it is the text ingest encoded to count its
tokens; the rest (decontamination's cuts, or every document when ingest only
estimated) are encoded here: long documents cut into pieces where the
tokenizer starts a new token anyway (``tokenizer.pieces``; whole documents if
the tokenizer fails the cut probe), each batch on every core, with tiktoken
where ``fast_bpe`` finds it gives the same ids (about 7x faster), else with
the tokenizers library's ``encode_batch_fast``. Either way the ids are the
same. The driver appends the units' results in part order: each document's
ids, then EOS, become one sequence of ``tokens.bin``/``tokens.idx``
(``indexed``), and ``documents.parquet`` maps doc_id to its sequence index
and token count, in the same order. So the files are the same bytes whichever
backend and however many workers ran the units, with or without the cache.

Token counts here are exact. The manifest compares them with the counts the
earlier stages reported (``estimate_check``): zero difference when ingest
counted with the same tokenizer file, else the measured error of the estimate
that every earlier token-weighted number carries.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpusmix.core.hashing import text_digests
from corpusmix.core.indexed import IndexedWriter
from corpusmix.core.manifest import input_refs, output_ref, require_manifest
from corpusmix.core.parquet_io import PARQUET_OPTS
from corpusmix.core.spec import LoadedSpec, Spec
from corpusmix.core.stage import Built, Stage, StageRun
from corpusmix.core.storage import sha256_file
from corpusmix.stages.tokencount import token_id_lists
from corpusmix.stages.tokenizer import PIECE_CHARS, TokenizerInfo, built_tokenizer
from schemas.tables import ARROW_SCHEMAS, TOKEN_REF_UNIT_SHIFT, TOKENIZED_DOCUMENTS, token_ids_schema, validate_table

PREFIX = "tokens"
DOCS_FILE = "documents.parquet"
TRAIN_KINDS = ("token_bin", "token_index", "token_documents")
VALID_PREFIX = "valid"  # the held-out documents' store, next to the train store: never mixed into shards
VALID_DOCS_FILE = "valid_documents.parquet"
VALID_KINDS = ("valid_bin", "valid_index", "valid_documents")
DOCS_SCHEMA = ARROW_SCHEMAS["tokenized_documents"]
# documents.parquet without ``sequence``, which only the driver knows
PART_DOCS_SCHEMA = DOCS_SCHEMA.remove(DOCS_SCHEMA.get_field_index("sequence"))
BATCH_BYTES = 1 << 20  # text per encode call: enough pieces to keep every core busy
READ_ROWS = 1024


def _to_tokens(info: TokenizerInfo, ids: pa.LargeListArray) -> tuple[np.ndarray, np.ndarray]:
    """Each document's ids, then EOS, concatenated; and tokens per document (EOS included)."""
    flat = ids.flatten().to_numpy(zero_copy_only=False).astype(info.dtype, copy=False)
    ends = ids.offsets.to_numpy()[1:] - ids.offsets[0].as_py()
    return np.insert(flat, ends, info.eos_id), ids.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64) + 1


def _batches(part: Path) -> Iterator[tuple[pa.Table, pa.ChunkedArray]]:
    """(doc_id, n_bytes, token_ref) and texts of one part, in batches of about BATCH_BYTES of text."""
    meta, texts, size = [], [], 0
    for rb in pq.ParquetFile(part).iter_batches(batch_size=READ_ROWS, columns=["doc_id", "text", "n_bytes", "token_ref"]):
        meta.append(rb.select(["doc_id", "n_bytes", "token_ref"]))
        texts.append(rb.column("text"))
        size += pc.sum(rb.column("n_bytes")).as_py() or 0
        if size >= BATCH_BYTES:
            yield pa.Table.from_batches(meta), pa.chunked_array(texts)
            meta, texts, size = [], [], 0
    if meta:
        yield pa.Table.from_batches(meta), pa.chunked_array(texts)


class _IdCache:
    """The rows of ingest's token-id cache that one part's documents point at (``token_ref``).

    Only the cache's row groups holding those rows are read, so memory follows the part, not the
    source. A document takes its ids from here only when the digest of its text equals the one the
    cache encoded (decontamination's cuts change a text; a stale or missing cache just misses), so
    the stores are the same bytes with or without the cache."""

    def __init__(self, files: dict[int, Path], refs: np.ndarray, dtype: np.dtype):
        self.refs, tables = np.empty(0, np.int64), []
        for unit in np.unique(refs[refs >= 0] >> TOKEN_REF_UNIT_SHIFT):
            if int(unit) not in files:
                continue
            rows = refs[(refs >> TOKEN_REF_UNIT_SHIFT) == unit] & ((1 << TOKEN_REF_UNIT_SHIFT) - 1)
            pf = pq.ParquetFile(files[int(unit)])
            sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
            starts = np.concatenate([[0], np.cumsum(sizes)])
            groups = np.unique(np.searchsorted(starts, rows, side="right") - 1)
            groups = groups[(groups >= 0) & (groups < len(sizes))]
            if not len(groups):
                continue
            tables.append(pf.read_row_groups([int(g) for g in groups]))
            self.refs = np.concatenate([self.refs] + [(int(unit) << TOKEN_REF_UNIT_SHIFT) + np.arange(starts[g], starts[g + 1])
                                                      for g in groups])
        # sorted as built: units in increasing order (np.unique), each unit's row groups in order
        self.table = pa.concat_tables(tables) if tables else token_ids_schema(dtype).empty_table()

    def lookup(self, refs: np.ndarray, texts: pa.ChunkedArray) -> tuple[np.ndarray, pa.LargeListArray]:
        """Which documents the cache holds with unchanged text, and their ids (in document order)."""
        pos = np.minimum(np.searchsorted(self.refs, refs), max(len(self.refs) - 1, 0))
        hit = np.zeros(len(refs), bool)
        if len(self.refs):
            hit = (refs >= 0) & (self.refs[pos] == refs)
        if hit.any():
            digests = self.table.column("text_digest").take(pos[hit])
            same = pc.equal(digests, text_digests(texts.filter(pa.array(hit)))).to_numpy(zero_copy_only=False)
            hit[np.flatnonzero(hit)[~same]] = False
        return hit, self.table.column("ids").take(pos[hit]).combine_chunks()


def _ids_batches(info: TokenizerInfo, cache: _IdCache, part: Path) -> Iterator[tuple[pa.Table, pa.LargeListArray, int]]:
    """(columns, each document's ids, how many came from the cache) of each batch of ``part``, in order.

    What the cache lacks encodes on a helper thread (all cores, GIL released) for batch k+1 while the
    caller turns batch k into a store's ids: the Python work overlaps the encoder.
    """
    def merged(meta, hit, cached, missing):
        if missing is None:
            return meta, cached, int(hit.sum())
        encoded = missing.result()
        both = pa.concat_arrays([cached.cast(encoded.type), encoded])
        return meta, both.take(np.where(hit, np.cumsum(hit) - 1, hit.sum() + np.cumsum(~hit) - 1)), int(hit.sum())

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for meta, texts in _batches(part):
            refs = pc.fill_null(meta.column("token_ref"), -1).to_numpy()
            hit, cached = cache.lookup(refs, texts)
            missing = None if hit.all() else pool.submit(token_id_lists, texts.filter(pa.array(~hit)), info)
            if pending:
                yield merged(*pending)
            pending = (meta, hit, cached, missing)
        if pending:
            yield merged(*pending)


@dataclass(frozen=True)
class _TokenizedPart:
    """One quality part's kept documents, for the driver to append in part order."""

    tokens: np.ndarray  # each kept document's ids, then EOS
    docs: pa.Table  # PART_DOCS_SCHEMA, one row per kept document, in part order
    documents_in: int
    bytes_in: int
    empty: tuple[int, int]  # documents and bytes that encode to no token at all (dropped)
    reused: int  # documents whose ids came from ingest's token-id cache


def _tokenize_part(info: TokenizerInfo, cache_files: dict[int, Path], part: Path) -> _TokenizedPart:
    """Worker: tokenize one part (the tokenizer is loaded once per process, from ``info.path``).

    The result holds the part's ids (about ``ingest.part_bytes`` of text at 2
    or 4 bytes per token): that bounds each result waiting for the driver, and
    a worker's memory at about three times that (the cache's rows, the ids, their
    concatenation) plus two batches' texts and encodings.
    """
    refs = pc.fill_null(pq.read_table(part, columns=["token_ref"]).column(0), -1).to_numpy()
    cache = _IdCache(cache_files, refs, info.dtype)
    tokens, docs = [np.empty(0, info.dtype)], [PART_DOCS_SCHEMA.empty_table()]
    documents_in = bytes_in = empty_docs = empty_bytes = reused = 0
    for meta, doc_ids, n_reused in _ids_batches(info, cache, part):
        ids, lengths = _to_tokens(info, doc_ids)
        meta = meta.select(["doc_id", "n_bytes"])
        sizes = meta.column("n_bytes").to_numpy()
        documents_in += len(sizes)
        bytes_in += int(sizes.sum())
        reused += n_reused
        keep = lengths > 1
        if not keep.all():  # only EOS: the tokenizer's normalizer erased the text
            empty_docs += int((~keep).sum())
            empty_bytes += int(sizes[~keep].sum())
            ids = ids[np.repeat(keep, lengths)]
            lengths = lengths[keep]
            meta = meta.filter(pa.array(keep))
        tokens.append(ids)
        docs.append(meta.add_column(1, "n_tokens", pa.array(lengths)))
    return _TokenizedPart(np.concatenate(tokens), pa.concat_tables(docs), documents_in, bytes_in,
                          (empty_docs, empty_bytes), reused)


def _cache_files(loaded: LoadedSpec, source_name: str, info: TokenizerInfo) -> dict[int, Path]:
    """ingest's token-id cache files by unit, when ingest encoded with this very tokenizer file (a
    file since deleted is a miss: its documents are encoded here)."""
    ingest = require_manifest(loaded.manifest_root, "ingest", source_name)[1]
    if ingest["token_counting"].get("tokenizer_sha256") != info.sha256:
        return {}
    files = {int(o["path"].rsplit("-", 1)[1].split(".")[0]): loaded.storage_root / o["path"]
             for o in ingest["outputs"] if o["kind"] == "token_ids"}
    return {unit: path for unit, path in files.items() if path.is_file()}


def tokenize_config(loaded: LoadedSpec, source_name: str) -> dict:
    """The tokenizer's identity and the cut rule (its version is in the upstream identity too)."""
    d = require_manifest(loaded.manifest_root, "tokenizer", None)[1]
    details = d["details"]
    return {"source": source_name, "piece_chars": PIECE_CHARS if details["split_long_documents"] else None,
            "tokenizer_sha256": d["outputs"][0]["sha256"], "eos_id": details["eos_id"]}


@dataclass
class _Store:
    """One Megatron store written by ``_write_store``, with what went in and out."""

    outputs: list[dict]
    documents_in: int = 0
    documents_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    text_tokens: int = 0
    tokens_stored: int = 0
    reused: int = 0  # documents whose ids came from ingest's token-id cache
    empty: tuple[int, int] = (0, 0)  # documents and bytes that encode to no token at all (dropped)


def _write_store(ctx: StageRun, info: TokenizerInfo, cache_files: dict[int, Path], executor, parts: list[Path],
                 prefix: str, docs_file: str, kinds: tuple[str, str, str]) -> _Store:
    """Tokenize ``parts`` into ``<prefix>.bin/.idx`` and ``docs_file``: one unit per part, appended
    in part order, so the files are independent of the backend. ``kinds`` name the three outputs."""
    st = _Store(outputs=[])
    empty = [0, 0]
    writer = IndexedWriter(ctx.staging / prefix, info.dtype)
    docs = pq.ParquetWriter(ctx.staging / docs_file, DOCS_SCHEMA, **PARQUET_OPTS)
    for i, res in enumerate(executor.map(functools.partial(_tokenize_part, info, cache_files), parts), 1):
        lengths = res.docs.column("n_tokens").to_numpy()
        sequences = pa.array(np.arange(writer.sequences, writer.sequences + len(lengths)))
        table = res.docs.add_column(1, "sequence", sequences)
        validate_table(table, TOKENIZED_DOCUMENTS)
        writer.add(res.tokens, lengths)
        docs.write_table(table, row_group_size=max(1, table.num_rows))
        st.documents_in += res.documents_in
        st.bytes_in += res.bytes_in
        empty[0] += res.empty[0]
        empty[1] += res.empty[1]
        st.documents_out += len(lengths)
        st.reused += res.reused
        st.bytes_out += res.bytes_in - res.empty[1]
        st.text_tokens += len(res.tokens) - len(lengths)
        ctx.say(f"{'' if prefix == PREFIX else 'held-out '}part {i}/{len(parts)}, {st.documents_in} documents, "
                f"{writer.tokens:,} tokens so far")
    writer.close()
    docs.close()
    st.empty, st.tokens_stored = (empty[0], empty[1]), writer.tokens
    st.outputs = [{"name": f"{prefix}.bin", "kind": kinds[0], "rows": writer.sequences, "tokens": writer.tokens},
                  {"name": f"{prefix}.idx", "kind": kinds[1], "rows": writer.sequences, "tokens": 0},
                  {"name": docs_file, "kind": kinds[2], "rows": st.documents_out, "tokens": 0}]
    for o in st.outputs:
        o |= {"sha256": sha256_file(ctx.staging / o["name"]), "bytes": (ctx.staging / o["name"]).stat().st_size}
    return st


def _estimate_check(up: dict, counted: int, exact: int) -> dict:
    """What the earlier stages counted for these documents against the exact count."""
    return {"estimate": up["token_counting"].get("description", up["token_counting"]["method"]),
            "method": up["token_counting"]["method"], "estimated_tokens": counted, "exact_tokens": exact,
            "relative_error": (counted - exact) / exact if exact else None}


def documents_from(spec: Spec) -> str:
    """The stage whose documents tokenize reads: the held-out split's (train and held-out), or
    quality's when no source has a held-out split (the split is then not part of the build)."""
    return "heldout_split" if spec.holds_out() else "quality"


def tokenize_upstream(spec: Spec) -> tuple[str, ...]:
    return documents_from(spec), "tokenizer"


def tokenize_inputs(loaded: LoadedSpec, source_name: str) -> list:
    """The tokenizer's version and the split's document files by content, not the split's version: the
    split reruns whenever another source's dedup changes (a near-duplicate there could move a document
    here), and when it moved nothing this partition and everything after it stay current."""
    tok = require_manifest(loaded.manifest_root, "tokenizer", None)[1]
    split = require_manifest(loaded.manifest_root, documents_from(loaded.spec), source_name)[1]
    return [tok["version"], [(o["kind"], o["path"].rsplit("/", 1)[-1], o["sha256"]) for o in split["outputs"]
                             if o["kind"] in ("documents", "heldout_documents")]]


def build_tokenize(ctx: StageRun) -> Built:
    """The split's train documents into the train store (``tokens``), its held-out documents into
    the ``valid`` store beside it. Memory: each result holds one part's tokens (``_tokenize_part``),
    and the executors keep at most 2 x workers results in flight."""
    loaded = ctx.loaded
    up_path, up = ctx.upstream(documents_from(loaded.spec))
    info, _ = built_tokenizer(loaded)
    parts = [loaded.storage_root / o["path"] for o in up["outputs"] if o["kind"] == "documents"]
    valid_parts = [loaded.storage_root / o["path"] for o in up["outputs"] if o["kind"] == "heldout_documents"]
    ctx.say(f"{up['counts']['documents_out']} train documents, {up['counts']['bytes_out'] / 1e6:.1f} MB, and "
            f"{up['counts'].get('heldout_documents', 0)} held-out with {info.path.name} (vocab {info.vocab_size}, "
            f"{info.dtype.name}, EOS {info.eos_id}, encoder {info.encoder})")
    cache_files = _cache_files(loaded, ctx.partition, info)
    with ctx.executor(len(parts) + len(valid_parts), multithreaded_units=True) as executor:
        train = _write_store(ctx, info, cache_files, executor, parts, PREFIX, DOCS_FILE, TRAIN_KINDS)
        valid = _write_store(ctx, info, cache_files, executor, valid_parts, VALID_PREFIX, VALID_DOCS_FILE, VALID_KINDS)
    n_in, n_out, text_tokens = train.documents_in, train.documents_out, train.text_tokens
    counted = up["counts"]["tokens_out"]  # what the earlier stages counted for exactly these documents
    check = _estimate_check(up, counted, text_tokens)
    err = check["relative_error"]
    return Built(
        inputs=input_refs(loaded, up_path, up, kinds=("documents", "heldout_documents")),
        outputs=[output_ref(o, o["kind"], o["tokens"]) for o in train.outputs + valid.outputs],
        counts={"documents_in": n_in, "documents_out": n_out, "bytes_in": train.bytes_in, "bytes_out": train.bytes_out,
                "tokens_in": text_tokens, "tokens_out": text_tokens, "tokens_stored": train.tokens_stored,
                "eos_tokens": n_out, "valid_documents": valid.documents_out, "valid_tokens_stored": valid.tokens_stored},
        # no token acceptance: the documents it drops have no token, so it could only be 1
        rates={"document_acceptance": n_out / n_in if n_in else None},
        token_counting={"method": "exact", "tokenizer_sha256": info.sha256,
                        "description": f"exact: {info.path.name} (sha256 {info.sha256[:12]}…), "
                                       f"EOS {info.eos_id} appended to every document"},
        reasons={"no_tokens": {"records": train.empty[0], "bytes": train.empty[1], "tokens": 0}} if train.empty[0] else {},
        details={"dtype": info.dtype.name, "eos_id": info.eos_id, "vocab_size": info.vocab_size, "encoder": info.encoder,
                 "split_long_documents": info.split_long_documents,
                 "mean_tokens_per_document": round(train.tokens_stored / n_out, 2) if n_out else None,
                 "bytes_per_token": round(train.bytes_out / text_tokens, 4) if text_tokens else None,
                 "estimate_check": check,
                 # ids taken from ingest's token-id cache (text proven unchanged by its digest), not encoded again
                 "ids_reused_documents": train.reused + valid.reused,
                 "ids_encoded_documents": train.documents_in + valid.documents_in - train.reused - valid.reused,
                 # the held-out store: never in the mixed shards, read by evaluation only
                 "valid": {"documents_in": valid.documents_in, "documents": valid.documents_out,
                           "text_tokens": valid.text_tokens, "tokens_stored": valid.tokens_stored,
                           "no_tokens": valid.empty[0],
                           "estimate_check": _estimate_check(up, up["counts"].get("heldout_tokens", 0),
                                                             valid.text_tokens)}},
        summary=f"{n_out} documents, {train.tokens_stored:,} tokens ({text_tokens:,} + {n_out} EOS); held-out store "
                f"{valid.documents_out} documents, {valid.tokens_stored:,} tokens; the earlier stages' count "
                f"({up['token_counting']['method']}) off by {100 * (err or 0):+.2f}%")


STAGE = Stage(name="tokenize", scope="source", upstream=tokenize_upstream, config=tokenize_config,
              inputs=tokenize_inputs, build=build_tokenize, module=__name__)
