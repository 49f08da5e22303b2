"""The ingest asset: one partition per source, reading raw files into validated Parquet."""

from dagster import AssetExecutionContext, MaterializeResult, PartitionsDefinition, asset

from corpusmix.ingest import ingest_source
from workflows.resources import CorpusSpec

from .checks import previous_manifest, stage_check_specs, stage_result
from .metadata import stage_metadata
from .progress import progress_log


def build_ingest_asset(partitions: PartitionsDefinition):
    @asset(
        name="ingest",
        partitions_def=partitions,
        group_name="corpus",
        kinds={"parquet", "python"},
        check_specs=stage_check_specs("ingest"),
        description="Raw source files -> documents (zstd Parquet, schema-validated) + quarantine table. "
                    "Per source: documents/tokens in and out, acceptance rates, quarantine per reason.",
    )
    def ingest(context: AssetExecutionContext, corpus: CorpusSpec) -> MaterializeResult:
        loaded = corpus.load()
        previous = previous_manifest(loaded, "ingest", context.partition_key)
        with progress_log(context) as progress:
            manifest, path = ingest_source(loaded, context.partition_key, progress=progress)
        return stage_result(loaded, manifest, path, stage_metadata(manifest, path), previous)

    return ingest
