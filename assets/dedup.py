"""The dedup assets: per source (after its ingest), and across sources (after every source's dedup)."""

from pathlib import Path

from dagster import MetadataValue

from corpusmix.core.spec import LoadedSpec

from .factory import StageAsset
from .metadata import fmt, markdown_table


def _audit_table(pairs: list[dict]) -> MetadataValue:
    return markdown_table(
        ["removed", "kept", "kind", "est. J", "true J", "removed text", "kept text"],
        [[p["doc_id"], p["representative"], p["kind"], fmt(p["estimated_jaccard"]), fmt(p["true_jaccard"]),
          p["doc_head"], p["representative_head"]] for p in pairs],
        empty="no duplicates removed")


def _dedup_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    c, details = manifest["counts"], manifest["details"]
    return {
        "removed_exact": c["removed_exact"],
        "removed_near": c["removed_near"],
        "lsh_candidate_pairs": c["candidate_pairs"],
        "rejected_by_verification": c["rejected_pairs"],
        "cluster_sizes": MetadataValue.json(details["cluster_sizes"]),
        "audit_pairs": _audit_table(details["audit_pairs"]),
    }


def _cross_source_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    return {
        "removed_exact": manifest["counts"]["removed_exact"],
        "removed_near": manifest["counts"]["removed_near"],
        "removed_from_kept_in": MetadataValue.json(manifest["details"]["pairs_removed_from_kept"]),
        "audit_pairs": _audit_table(manifest["details"]["audit_pairs"]),
    }


DEDUP = StageAsset(
    description="Exact + MinHash-LSH near-duplicate removal within the source; writes the surviving "
                "documents and a duplicates table (cluster, representative, kind, Jaccard).",
    metadata=_dedup_metadata, table="ingest_documents")
CROSS_SOURCE_DEDUP = StageAsset(
    description="Duplicates across sources enter once, from the source ranked first in the spec: "
                "a drop list over every source's dedup output.",
    metadata=_cross_source_metadata, table="duplicates")
