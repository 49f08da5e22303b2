"""The quality asset: one partition per source, after dedup and the cross-source drop list."""

from dagster import AssetDep, AssetExecutionContext, AssetsDefinition, MaterializeResult, MetadataValue, asset

from corpusmix.quality import quality_source
from workflows.resources import CorpusSpec

from .checks import previous_manifest, stage_check_specs, stage_result
from .metadata import FOLLOW_UPSTREAM, fmt, markdown_table, stage_metadata
from .progress import progress_log


def build_quality_asset(dedup: AssetsDefinition, cross: AssetsDefinition):
    @asset(
        name="quality",
        partitions_def=dedup.partitions_def,
        deps=[dedup, AssetDep(cross)],
        automation_condition=FOLLOW_UPSTREAM,
        group_name="corpus",
        kinds={"parquet", "python"},
        check_specs=stage_check_specs("quality"),
        description="Named quality rules (Gopher, C4, code, length), every rule on every document; kept documents "
                    "with a quality score, and a rejections table with every failed rule and measured value.",
    )
    def quality(context: AssetExecutionContext, corpus: CorpusSpec) -> MaterializeResult:
        loaded = corpus.load()
        previous = previous_manifest(loaded, "quality", context.partition_key)
        with progress_log(context) as progress:
            manifest, path = quality_source(loaded, context.partition_key, progress=progress)
        md = stage_metadata(manifest, path)
        md |= {
            "rules": MetadataValue.json(manifest["details"]["rules"]),
            "rule_overlap": MetadataValue.json(manifest["details"]["overlap"]),
            "audit_samples": _audit_table(manifest["details"]["audit"]),
        }
        return stage_result(loaded, manifest, path, md, previous)

    return quality


def _audit_table(audit: dict[str, list[dict]]) -> MetadataValue:
    return markdown_table(["rule", "doc_id", "measured", "text"],
                          [[rule, a["doc_id"], fmt(a["value"], ".4g"), a["head"]]
                           for rule, samples in audit.items() for a in samples],
                          empty="nothing rejected", width=90)
