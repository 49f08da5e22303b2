"""The ingest asset: one partition per source, reading raw files into validated Parquet."""

from .factory import StageAsset

INGEST = StageAsset(
    description="Raw source files -> documents (zstd Parquet, schema-validated) + quarantine table. "
                "Per source: documents/tokens in and out, acceptance rates, quarantine per reason.",
    table="ingest_documents")
