"""The checks every materialization gets, as plain functions (the Dagster layer reports them).

- integrity: every output the manifest names is on disk with its size, sha256 and row count;
- schema: every table output, read back from disk, passes its pandera schema, and every
  token store or shard is a well-formed Megatron index over its ``.bin``;
- drift: document and token acceptance moved by more than ``checks.drift_threshold``
  since the previous materialization of the same partition (a data-drift signal);
- epoch cap: no source of the published plan is read more than ``max_epochs`` times.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpusmix.core.indexed import read_index
from corpusmix.core.manifest import verify_manifest
from corpusmix.core.spec import LoadedSpec
from schemas.tables import (
    ARROW_SCHEMAS,
    CONTAMINATION,
    DUPLICATES,
    EVAL_ITEMS,
    EVAL_NGRAMS,
    HELDOUT_DOCUMENTS,
    HELDOUT_LINKS,
    HELDOUT_SPLIT,
    INGEST_DOCUMENTS,
    QUALITY_DOCUMENTS,
    QUARANTINE,
    REJECTIONS,
    TOKENIZED_DOCUMENTS,
    validate_table,
)

# which pandera schema checks each kind of table output (documents differ before and after quality)
_TABLE_SCHEMAS = {"quarantine": QUARANTINE, "duplicates": DUPLICATES, "cross_source_duplicates": DUPLICATES,
                  "rejections": REJECTIONS, "token_documents": TOKENIZED_DOCUMENTS,
                  "heldout_documents": HELDOUT_DOCUMENTS, "heldout_split": HELDOUT_SPLIT,
                  "valid_documents": TOKENIZED_DOCUMENTS, "contamination": CONTAMINATION, "eval_items": EVAL_ITEMS,
                  "eval_ngrams": EVAL_NGRAMS, "heldout_links": HELDOUT_LINKS}
_INDEXES = ("token_bin", "valid_bin", "shard_bin")


def row_count(path: Path) -> int:
    """Rows an output holds: Parquet rows, token-store sequences, a tokenizer's vocabulary size,
    a plan's sources, an MDS dataset's or shard's samples, a streams config's streams, an array's
    rows, none for a text for people (README, a data-args line), or 1 for any other JSON record
    (a shard manifest, a blend)."""
    if path.suffix in (".bin", ".idx"):
        return len(read_index(path.with_suffix("")))
    if path.suffix in (".md", ".txt"):
        return 0
    if path.suffix == ".mds":
        return int(np.fromfile(path, "<u4", count=1)[0])
    if path.suffix == ".npy":
        return int(np.load(path, mmap_mode="r").shape[0])
    if path.name == "tokenizer.json":
        from corpusmix.stages.tokenizer import load_tokenizer

        return load_tokenizer(str(path)).get_vocab_size(with_added_tokens=True)
    if path.suffix == ".json":
        import orjson

        data = orjson.loads(path.read_bytes())
        if path.name == "plan.json":
            return len(data["sources"])
        if isinstance(data, dict) and "shards" in data:  # an MDS index
            return sum(shard["samples"] for shard in data["shards"])
        if isinstance(data, dict) and isinstance(data.get("streams"), list):
            return len(data["streams"])
        return 1
    return pq.ParquetFile(path).metadata.num_rows


def integrity_problems(loaded: LoadedSpec, manifest_file: Path) -> list[str]:
    return [p.render() for p in verify_manifest(manifest_file, loaded.storage_root, row_count)]


def schema_problems(loaded: LoadedSpec, manifest: dict) -> list[str]:
    """Every table output against its schema, every index against its .bin; one line per failure.
    An output with the checksum of one of the stage's inputs is that input's bytes (a part passed
    on unchanged, linked: decontaminate, the held-out split), which its own stage's check validated:
    it is not validated again."""
    problems = []
    same_as_input = {i["sha256"] for i in manifest.get("inputs", [])}
    for out in manifest["outputs"]:
        if out["sha256"] in same_as_input:
            continue
        path = loaded.storage_root / out["path"]
        kind = out["kind"]
        schema = _TABLE_SCHEMAS.get(kind)
        if kind == "documents":
            schema = QUALITY_DOCUMENTS if manifest["asset"] in ("quality", "heldout_split") else INGEST_DOCUMENTS
        try:
            if schema is not None:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=65536):  # bounded memory
                    validate_table(pa.Table.from_batches([batch]).cast(ARROW_SCHEMAS[schema.name]), schema)
            elif kind in _INDEXES:
                read_index(path.with_suffix(""))
        except Exception as e:  # noqa: BLE001 - any failure to read or validate is the finding
            problems.append(f"{out['path']}: {kind} fails its schema: {_describe(e)[:300]}")
    return problems


def _describe(e: Exception) -> str:
    """pandera's failures as 'column: check' pairs; other errors by their first line."""
    cases = getattr(e, "failure_cases", None)
    if cases is not None:
        pairs = cases[["column", "check"]].astype(str).drop_duplicates().head(10).itertuples(index=False)
        return "; ".join(f"{c}: {k}" for c, k in pairs)
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def rate_changes(previous: dict | None, current: dict) -> dict[str, float]:
    """How much each acceptance rate moved since ``previous`` (signed; empty without one)."""
    if previous is None:
        return {}
    return {r: current["rates"][r] - previous["rates"][r] for r in ("document_acceptance", "token_acceptance")
            if current["rates"].get(r) is not None and previous["rates"].get(r) is not None}


def drift(previous: dict | None, current: dict, threshold: float) -> dict[str, float]:
    """Acceptance rates that moved by more than ``threshold`` (absolute) since ``previous``."""
    return {r: round(c, 6) for r, c in rate_changes(previous, current).items() if abs(c) > threshold}


def epoch_cap_problems(plan: dict) -> list[str]:
    cap = plan["max_epochs"]
    return [f"{s}: {r['epochs']:.4f} epochs > max_epochs {cap:g}" for s, r in plan["per_source"].items()
            if r["epochs"] > cap * (1 + 1e-9)]
