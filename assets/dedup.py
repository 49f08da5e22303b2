"""The dedup asset: one partition per source, downstream of the same source's ingest."""

from dagster import (
    AllPartitionMapping, AssetDep, AssetExecutionContext, AssetsDefinition, MaterializeResult,
    MetadataValue, asset,
)

from corpusmix.dedup import cross_source_dedup as cross_source_dedup_stage
from corpusmix.dedup import dedup_source
from workflows.resources import CorpusSpec

from .checks import previous_manifest, stage_check_specs, stage_result
from .metadata import FOLLOW_UPSTREAM, fmt, markdown_table, stage_metadata
from .progress import progress_log


def build_dedup_asset(ingest: AssetsDefinition):
    @asset(
        name="dedup",
        partitions_def=ingest.partitions_def,
        deps=[ingest],
        automation_condition=FOLLOW_UPSTREAM,
        group_name="corpus",
        kinds={"parquet", "python"},
        check_specs=stage_check_specs("dedup"),
        description="Exact + MinHash-LSH near-duplicate removal within the source; writes the surviving "
                    "documents and a duplicates table (cluster, representative, kind, Jaccard).",
    )
    def dedup(context: AssetExecutionContext, corpus: CorpusSpec) -> MaterializeResult:
        loaded = corpus.load()
        previous = previous_manifest(loaded, "dedup", context.partition_key)
        with progress_log(context) as progress:
            manifest, path = dedup_source(loaded, context.partition_key, progress=progress)
        md = stage_metadata(manifest, path)
        c, details = manifest["counts"], manifest["details"]
        md |= {
            "removed_exact": c["removed_exact"],
            "removed_near": c["removed_near"],
            "lsh_candidate_pairs": c["candidate_pairs"],
            "rejected_by_verification": c["rejected_pairs"],
            "cluster_sizes": MetadataValue.json(details["cluster_sizes"]),
            "audit_pairs": _audit_table(details["audit_pairs"]),
        }
        return stage_result(loaded, manifest, path, md, previous)

    return dedup


def _audit_table(pairs: list[dict]) -> MetadataValue:
    return markdown_table(
        ["removed", "kept", "kind", "est. J", "true J", "removed text", "kept text"],
        [[p["doc_id"], p["representative"], p["kind"], fmt(p["estimated_jaccard"]), fmt(p["true_jaccard"]),
          p["doc_head"], p["representative_head"]] for p in pairs],
        empty="no duplicates removed")


def build_cross_source_asset(dedup: AssetsDefinition):
    @asset(
        name="cross_source_dedup",
        deps=[AssetDep(dedup, partition_mapping=AllPartitionMapping())],
        automation_condition=FOLLOW_UPSTREAM,
        group_name="corpus",
        kinds={"parquet", "python"},
        check_specs=stage_check_specs("cross_source_dedup"),
        description="Duplicates across sources enter once, from the source ranked first in the spec: "
                    "a drop list over every source's dedup output.",
    )
    def cross_source_dedup(context: AssetExecutionContext, corpus: CorpusSpec) -> MaterializeResult:
        loaded = corpus.load()
        previous = previous_manifest(loaded, "cross_source_dedup", None)
        with progress_log(context) as progress:
            manifest, path = cross_source_dedup_stage(loaded, progress=progress)
        md = stage_metadata(manifest, path)
        md |= {
            "removed_exact": manifest["counts"]["removed_exact"],
            "removed_near": manifest["counts"]["removed_near"],
            "removed_from_kept_in": MetadataValue.json(manifest["details"]["pairs_removed_from_kept"]),
            "audit_pairs": _audit_table(manifest["details"]["audit_pairs"]),
        }
        return stage_result(loaded, manifest, path, md, previous)

    return cross_source_dedup
