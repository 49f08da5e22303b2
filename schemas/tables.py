"""pandera schemas of the Parquet tables that stages write.

Tables are checked as Arrow-backed pandas frames (``types_mapper=pd.ArrowDtype``),
which avoids copying text into Python objects; string checks run in Arrow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa_
import pyarrow as pa
import pyarrow.compute as pc

STR = pd.ArrowDtype(pa.string())
I64 = pd.ArrowDtype(pa.int64())
BOOL = pd.ArrowDtype(pa.bool_())


def nul_mask(strings: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """Per row: does the string contain a NUL byte? (null rows: null)

    A NUL is rare, so first look at the raw data buffers with numpy (several
    GB/s); only a buffer holding a zero byte gets the per-row substring search.
    """
    chunks = strings.chunks if isinstance(strings, pa.ChunkedArray) else [strings]
    out = []
    for chunk in chunks:
        data = chunk.buffers()[2] if chunk.type in (pa.string(), pa.large_string()) and len(chunk) else None
        if data is None or not (np.frombuffer(data, dtype=np.uint8) == 0).any():
            out.append(pc.if_else(chunk.is_null(), pa.scalar(None, pa.bool_()), False))
        else:
            out.append(pc.match_substring(chunk, "\x00"))
    return pa.chunked_array(out, pa.bool_())


def _unique(s: pd.Series) -> bool:
    """Uniqueness counted by Arrow (pandas' duplicated() would hash Python objects per row)."""
    return pc.count_distinct(pa.array(s.array), mode="all").as_py() == len(s)


def _no_nul(s: pd.Series) -> pd.Series:
    return ~pd.Series(nul_mask(pa.array(s.array)), index=s.index, dtype=BOOL).fillna(False)


INGEST_DOCUMENTS = pa_.DataFrameSchema(
    {
        "doc_id": pa_.Column(STR, nullable=False,
                             checks=[pa_.Check.str_length(min_value=1),
                                     pa_.Check(_unique, name="unique", error="doc_id values repeat")],
                             description="Stable id: the source's own id, else a content hash"),
        "source": pa_.Column(STR, nullable=False),
        "text": pa_.Column(STR, nullable=False, checks=[
            pa_.Check.str_length(min_value=1),
            pa_.Check(_no_nul, name="no_nul_bytes", error="text contains a NUL byte")]),
        "n_bytes": pa_.Column(I64, pa_.Check.ge(1), nullable=False, description="UTF-8 bytes of text"),
        "n_tokens": pa_.Column(I64, pa_.Check.ge(0), nullable=False,
                               description="Tokens of text: exact with a tokenizer file, else an estimate "
                                           "(the manifest's token_counting says which)"),
        "token_ref": pa_.Column(I64, pa_.Check.ge(0), nullable=True,
                                description="Where ingest keeps this text's token ids: unit << 32 | row of "
                                            "token-ids-<unit>.parquet (null without a tokenizer file)"),
        "metadata": pa_.Column(STR, nullable=True, description="The source's other fields, as a JSON object"),
        "file": pa_.Column(STR, nullable=False, description="Input file, relative to its source glob's base directory"),
        "record_no": pa_.Column(I64, pa_.Check.ge(1), nullable=False,
                                description="1-based line (JSONL) or row (Parquet) in that file"),
        "truncated_input": pa_.Column(BOOL, nullable=False,
                                      description="True when the file was damaged after this record"),
    },
    strict=True,
    ordered=True,
    name="ingest_documents",
)

QUARANTINE = pa_.DataFrameSchema(
    {
        "source": pa_.Column(STR, nullable=False),
        "file": pa_.Column(STR, nullable=False),
        "record_no": pa_.Column(I64, pa_.Check.ge(1), nullable=False),
        "reason": pa_.Column(STR, nullable=False, checks=pa_.Check.str_length(min_value=1)),
        "detail": pa_.Column(STR, nullable=False),
        "doc_id": pa_.Column(STR, nullable=True),
        "snippet": pa_.Column(STR, nullable=False),
        "n_bytes": pa_.Column(I64, pa_.Check.ge(0), nullable=False, description="Bytes of the raw record"),
        "n_tokens": pa_.Column(I64, pa_.Check.ge(0), nullable=False,
                               description="Tokens of the raw record (decoded with replacement), counted as "
                                           "the documents are"),
    },
    strict=True,
    ordered=True,
    name="quarantine",
)

F64 = pd.ArrowDtype(pa.float64())

DUPLICATES = pa_.DataFrameSchema(
    {
        "source": pa_.Column(STR, nullable=False),
        "doc_id": pa_.Column(STR, pa_.Check(_unique, name="unique", error="doc_id values repeat"), nullable=False,
                             description="The removed document"),
        "cluster_id": pa_.Column(STR, nullable=False, description="<source>:<representative doc_id>"),
        "representative_doc_id": pa_.Column(STR, nullable=False, description="The document that survives"),
        "kind": pa_.Column(STR, pa_.Check.isin(["exact", "near"]), nullable=False),
        "estimated_jaccard": pa_.Column(F64, pa_.Check.in_range(0.0, 1.0), nullable=True,
                                        description="From the MinHash signatures, against the representative"),
        "true_jaccard": pa_.Column(F64, pa_.Check.in_range(0.0, 1.0), nullable=True,
                                   description="On the shingle sets, when dedup.near.verify"),
        "n_bytes": pa_.Column(I64, pa_.Check.ge(1), nullable=False),
        "n_tokens": pa_.Column(I64, pa_.Check.ge(0), nullable=False),
    },
    strict=True,
    ordered=True,
    name="duplicates",
)

QUALITY_DOCUMENTS = pa_.DataFrameSchema(
    INGEST_DOCUMENTS.columns,  # a kept document passes every rule: no score that could only be 1
    strict=True,
    ordered=True,
    name="quality_documents",
)

HELDOUT_DOCUMENTS = pa_.DataFrameSchema(
    INGEST_DOCUMENTS.columns,  # the same documents as quality's, on the other side of the split
    strict=True,
    ordered=True,
    name="heldout_documents",
    description="A source's held-out documents: evaluation text that never enters training",
)

HELDOUT_SPLIT = pa_.DataFrameSchema(
    {
        "source": pa_.Column(STR, nullable=False),
        "doc_id": pa_.Column(STR, pa_.Check(_unique, name="unique", error="doc_id values repeat"), nullable=False),
        "split": pa_.Column(STR, pa_.Check.isin(["train", "heldout"]), nullable=False),
        "rank": pa_.Column(I64, pa_.Check.ge(0), nullable=False,
                           description="Place in the source's seeded order (0: the first held-out candidate)"),
        "cluster_id": pa_.Column(STR, nullable=True,
                                 description="Its near-duplicate cluster (the member ranked first), when it has one: "
                                             "a cluster goes to one side of the split whole"),
        "cluster_size": pa_.Column(I64, pa_.Check.ge(1), nullable=False,
                                   description="Documents of its cluster in this source (1: no near-duplicate here)"),
        "duplicate_elsewhere": pa_.Column(STR, nullable=True,
                                          description="A near-duplicate in another source (source:doc_id), or, when "
                                                      "the split is an eval set, a train document sharing an n-gram "
                                                      "with it (heldout_links): its cluster stays in train"),
        "n_bytes": pa_.Column(I64, pa_.Check.ge(1), nullable=False),
        "n_tokens": pa_.Column(I64, pa_.Check.ge(0), nullable=False),
    },
    strict=True,
    ordered=True,
    name="heldout_split",
    description="Where each kept document of a source went: train or held-out, and why",
)

REJECTIONS = pa_.DataFrameSchema(
    {
        "source": pa_.Column(STR, nullable=False),
        "doc_id": pa_.Column(STR, pa_.Check(_unique, name="unique", error="doc_id values repeat"), nullable=False),
        "failed_rules": pa_.Column(pd.ArrowDtype(pa.list_(pa.string())), nullable=False,
                                   description="Every rule the document failed"),
        "values": pa_.Column(STR, nullable=False, description="JSON: the value each rule measured"),
        "quality_score": pa_.Column(F64, pa_.Check.in_range(0.0, 1.0), nullable=False,
                                    description="Fraction of the source's rules the document passes"),
        "n_bytes": pa_.Column(I64, pa_.Check.ge(1), nullable=False),
        "n_tokens": pa_.Column(I64, pa_.Check.ge(0), nullable=False),
        "charged_to": pa_.Column(STR, nullable=False,
                                 description="The one funnel row the document counts in: its first failed rule "
                                             "in the order of the spec's rules"),
    },
    strict=True,
    ordered=True,
    name="rejections",
)

TOKENIZED_DOCUMENTS = pa_.DataFrameSchema(
    {
        "doc_id": pa_.Column(STR, pa_.Check(_unique, name="unique", error="doc_id values repeat"), nullable=False),
        "sequence": pa_.Column(I64, pa_.Check.ge(0), nullable=False,
                               description="Index of the document's sequence in the source's .bin/.idx"),
        "n_tokens": pa_.Column(I64, pa_.Check.ge(2), nullable=False,
                               description="Tokens stored for the document, its final EOS included"),
        "n_bytes": pa_.Column(I64, pa_.Check.ge(1), nullable=False, description="UTF-8 bytes of the text"),
    },
    strict=True,
    ordered=True,
    name="tokenized_documents",
)

QUALITY_AUDIT = pa_.DataFrameSchema(
    {
        "rule": pa_.Column(STR, nullable=False),
        "doc_id": pa_.Column(STR, nullable=False),
        "value": pa_.Column(F64, nullable=True, description="What the rule measured"),
        "head": pa_.Column(STR, nullable=False, description="The document's first characters"),
    },
    strict=True,
    ordered=True,
    name="quality_audit",
    description="A deterministic sample of what each quality rule rejected",
)

I32 = pd.ArrowDtype(pa.int32())

LINEAGE = pa_.DataFrameSchema(
    {
        "stream_start": pa_.Column(I64, pa_.Check.ge(0), nullable=False,
                                   description="Position of the range's first token in the training stream"),
        "n_tokens": pa_.Column(I64, pa_.Check.ge(1), nullable=False),
        "shard": pa_.Column(I32, pa_.Check.ge(0), nullable=False),
        "sequence": pa_.Column(I64, pa_.Check.ge(0), nullable=False, description="Sequence of the shard's .idx"),
        "phase": pa_.Column(STR, nullable=False),
        "source": pa_.Column(STR, nullable=False),
        "doc_id": pa_.Column(STR, nullable=False),
        "epoch": pa_.Column(I32, pa_.Check.ge(0), nullable=False),
        "doc_offset": pa_.Column(I64, pa_.Check.ge(0), nullable=False,
                                 description="Offset of the range inside the document's tokens"),
        "doc_tokens": pa_.Column(I64, pa_.Check.ge(1), nullable=False),
    },
    strict=True,
    ordered=True,
    name="lineage",
    description="One row per token range of the mixed shards: where it came from",
)

CANDIDATES = pa_.DataFrameSchema(
    {
        "doc_id": pa_.Column(STR, nullable=True, description="The source's own id, when it has an id field"),
        "text": pa_.Column(STR, nullable=True),
        "metadata": pa_.Column(STR, nullable=True),
        "record_no": pa_.Column(I64, pa_.Check.ge(1), nullable=False),
    },
    strict=True,
    ordered=True,
    name="candidates",
    description="Records as a reader yields them to ingest, before screening (not written to disk)",
)


U64 = pd.ArrowDtype(pa.uint64())
I32 = pd.ArrowDtype(pa.int32())

EVAL_ITEMS = pa_.DataFrameSchema(
    {
        "eval_set": pa_.Column(STR, nullable=False),
        "item_id": pa_.Column(STR, nullable=False, description="The item's own id, else file:record"),
        "text": pa_.Column(STR, nullable=False, description="The item's fields joined by newlines"),
        "n_ngrams": pa_.Column(I64, pa_.Check.ge(0), nullable=False,
                               description="Its n-grams in the index (0: shorter than n words, or all too common)"),
    },
    strict=True, ordered=True, name="eval_items",
)

EVAL_NGRAMS = pa_.DataFrameSchema(
    {
        "hash": pa_.Column(U64, nullable=False, description="64-bit hash of a normalised word n-gram"),
        "item": pa_.Column(I32, pa_.Check.ge(0), nullable=False, description="Row of eval_items holding it"),
    },
    strict=True, ordered=True, name="eval_ngrams",
)

CONTAMINATION = pa_.DataFrameSchema(
    {
        "source": pa_.Column(STR, nullable=False),
        "doc_id": pa_.Column(STR, nullable=False),
        "eval_set": pa_.Column(STR, nullable=False),
        "item_id": pa_.Column(STR, nullable=False),
        "ngram": pa_.Column(STR, nullable=False, description="The first matched n-gram, normalised"),
        "offset": pa_.Column(I64, pa_.Check.ge(-1), nullable=False,
                             description="Character offset of that n-gram in the document (-1: not mappable)"),
        "ngrams_matched": pa_.Column(I64, pa_.Check.ge(1), nullable=False,
                                     description="How many of the document's n-grams this item holds"),
        "action": pa_.Column(STR, pa_.Check.isin(["dropped", "span_removed"]), nullable=False),
    },
    strict=True, ordered=True, name="contamination",
)


HELDOUT_LINKS = pa_.DataFrameSchema(
    {
        "source": pa_.Column(STR, nullable=False),
        "doc_id": pa_.Column(STR, nullable=False, description="A held-out candidate, kept in train by this link"),
        "other": pa_.Column(STR, nullable=False, description="The document it shares an n-gram with (source:doc_id)"),
        "ngram": pa_.Column(STR, nullable=False, description="The first shared n-gram, normalised"),
        "offset": pa_.Column(I64, pa_.Check.ge(-1), nullable=False,
                             description="Character offset of that n-gram in the other document (-1: not mappable)"),
        "ngrams_matched": pa_.Column(I64, pa_.Check.ge(1), nullable=False,
                                     description="How many of the other document's n-grams the candidate holds"),
    },
    strict=True, ordered=True, name="heldout_links",
    description="Why held-out candidates of a source whose split is an eval set stayed in train: an n-gram shared "
                "with a document that stays in train",
)


def arrow_schema(schema: pa_.DataFrameSchema) -> pa.Schema:
    """The Arrow schema a stage writes, derived from the pandera schema (the one source of truth).
    Fields stay nullable in Arrow, as pyarrow makes them; pandera checks the nulls."""
    return pa.schema([(name, col.dtype.type.pyarrow_dtype) for name, col in schema.columns.items()])


TRACE_VERDICTS = pa_.DataFrameSchema(
    {
        "source": pa_.Column(STR, nullable=False),
        "doc_id": pa_.Column(STR, pa_.Check(_unique, name="unique", error="doc_id values repeat"), nullable=False),
        "problem_id": pa_.Column(STR, nullable=True, description="The seed problem (null: the record named none)"),
        "strategy": pa_.Column(STR, nullable=True),
        "difficulty": pa_.Column(STR, nullable=True),
        "kept": pa_.Column(BOOL, nullable=False, description="Validated: the trace goes on to dedup and quality"),
        "reason": pa_.Column(STR, nullable=True, description="Why not kept: no_answer_found, wrong_answer, bad_step, "
                                                              "no_majority, duplicate_trace, missing_problem_id, "
                                                              "too_many_traces, conflicting_reference"),
        "answer": pa_.Column(STR, nullable=True, description="The final answer extracted from the trace"),
        "expected": pa_.Column(STR, nullable=True, description="The reference answer, or the majority's"),
        "judged_by": pa_.Column(STR, nullable=True, description="reference or majority"),
        "rule": pa_.Column(STR, nullable=True, description="How the answer was found (pattern, ####, boxed, ...)"),
        "detail": pa_.Column(STR, nullable=True, description="The failed step, the vote count, the near-copy"),
        "steps_checked": pa_.Column(I64, pa_.Check.ge(0), nullable=False,
                                    description="Calculator annotations evaluated and found true"),
        "n_bytes": pa_.Column(I64, pa_.Check.ge(1), nullable=False),
        "n_tokens": pa_.Column(I64, pa_.Check.ge(0), nullable=False),
    },
    strict=True,
    ordered=True,
    name="trace_verdicts",
    description="trace_validation: every trace of a reasoning_traces source, in ingest order, with its verdict",
)

SCHEMAS: dict[str, pa_.DataFrameSchema] = {
    s.name: s for s in (INGEST_DOCUMENTS, QUARANTINE, DUPLICATES, QUALITY_DOCUMENTS, REJECTIONS,
                        TOKENIZED_DOCUMENTS, QUALITY_AUDIT, LINEAGE, CANDIDATES, HELDOUT_DOCUMENTS, HELDOUT_SPLIT,
                        EVAL_ITEMS, EVAL_NGRAMS, CONTAMINATION, HELDOUT_LINKS, TRACE_VERDICTS)
}
ARROW_SCHEMAS: dict[str, pa.Schema] = {name: arrow_schema(s) for name, s in SCHEMAS.items()}


TOKEN_IDS_FILE = "token-ids-{unit:05d}.parquet"
TOKEN_REF_UNIT_SHIFT = 32  # token_ref = unit << 32 | row


def token_ids_schema(dtype: np.dtype) -> pa.Schema:
    """ingest's token-id cache, ``token-ids-<unit>.parquet``: a row per kept document in the unit's
    order (what ``token_ref`` points at), the digest of the text it encoded and its ids, no EOS.
    A cache, not a table anyone audits: tokenize takes ids from it only where the digest proves the
    text unchanged, so its outputs are the same bytes with or without it. Plain Arrow: the id type
    follows the tokenizer's vocabulary."""
    return pa.schema([("text_digest", pa.binary(16)), ("ids", pa.large_list(pa.from_numpy_dtype(dtype)))])


def validate_table(table: pa.Table, schema: pa_.DataFrameSchema) -> None:
    """Raise pandera's SchemaErrors (all failures, not the first) if ``table`` breaks ``schema``."""
    if table.schema != ARROW_SCHEMAS[schema.name]:
        raise TypeError(f"{schema.name}: Arrow schema {table.schema} != expected {ARROW_SCHEMAS[schema.name]}")
    schema.validate(table.to_pandas(types_mapper=pd.ArrowDtype), lazy=True)
