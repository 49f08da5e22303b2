"""The quality asset: one partition per source, after dedup and the cross-source drop list."""

from pathlib import Path

from dagster import MetadataValue

from corpusmix.core.spec import LoadedSpec

from .factory import StageAsset
from .metadata import fmt, markdown_table
from .trace_validation import trace_funnel_table


def _audit_table(audit: dict[str, list[dict]]) -> MetadataValue:
    return markdown_table(["rule", "doc_id", "measured", "text"],
                          [[rule, a["doc_id"], fmt(a["value"], ".4g"), a["head"]]
                           for rule, samples in audit.items() for a in samples],
                          empty="nothing rejected", width=90)


def _quality_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    traces = manifest["details"].get("trace_funnel")
    return {
        "rules": MetadataValue.json(manifest["details"]["rules"]),
        "rule_overlap": MetadataValue.json(manifest["details"]["overlap"]),
        "audit_samples": _audit_table(manifest["details"]["audit"]),
    } | ({"trace_funnel": trace_funnel_table(traces)} if traces is not None else {})


QUALITY = StageAsset(
    description="Named quality rules (Gopher, C4, code, length), every rule on every document; the kept "
                "documents, and a rejections table with every failed rule and measured value. The funnel charges "
                "each rejected document to its first failed rule.",
    metadata=_quality_metadata, table="quality_documents")
