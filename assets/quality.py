"""The quality asset: one partition per source, after dedup and the cross-source drop list."""

from dagster import AssetDep, AssetExecutionContext, AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from corpusmix.quality import quality_source
from workflows.resources import CorpusSpec

from .metadata import stage_metadata


def build_quality_asset(dedup: AssetsDefinition, cross: AssetsDefinition):
    @asset(
        name="quality",
        partitions_def=dedup.partitions_def,
        deps=[dedup, AssetDep(cross)],
        group_name="corpus",
        kinds={"parquet", "python"},
        description="Named quality rules (Gopher, C4, code, length), every rule on every document; kept documents "
                    "with a quality score, and a rejections table with every failed rule and measured value.",
    )
    def quality(context: AssetExecutionContext, corpus: CorpusSpec) -> MaterializeResult:
        manifest, path = quality_source(corpus.load(), context.partition_key, progress=context.log.info)
        md = stage_metadata(manifest, path)
        md |= {
            "rules": MetadataValue.json(manifest["details"]["rules"]),
            "rule_overlap": MetadataValue.json(manifest["details"]["overlap"]),
            "audit_samples": MetadataValue.md(_audit_markdown(manifest["details"]["audit"])),
        }
        return MaterializeResult(metadata=md, data_version=DataVersion(manifest["version"]))

    return quality


def _audit_markdown(audit: dict[str, list[dict]]) -> str:
    if not audit:
        return "_nothing rejected_"
    rows = ["| rule | doc_id | measured | text |", "|---|---|---|---|"]
    for rule, samples in audit.items():
        for s in samples:
            value = "" if s["value"] is None else f"{s['value']:.4g}"
            text = s["head"][:90].replace("|", "\\|").replace("\n", " ")
            rows.append(f"| {rule} | {s['doc_id']} | {value} | {text} |")
    return "\n".join(rows)
