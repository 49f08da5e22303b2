"""Turn a stage manifest into the Dagster metadata every stage shows the same way."""

from __future__ import annotations

from pathlib import Path

from dagster import AutomationCondition, MetadataValue, TableColumn, TableRecord, TableSchema

# Every asset after ingest follows its upstream: when the automation sensor runs, a new ingest
# partition (from the source-file sensor or the UI) pulls the later stages after it.
FOLLOW_UPSTREAM = AutomationCondition.eager()

FUNNEL_SCHEMA = TableSchema(columns=[
    TableColumn("step", "string"), TableColumn("documents", "int"), TableColumn("tokens", "int"),
    TableColumn("bytes", "int"), TableColumn("share_of_tokens_in", "float"),
])


def funnel_table(manifest: dict) -> MetadataValue:
    """Documents and tokens in, removed per reason, and out: the stage funnel."""
    c = manifest["counts"]
    tin = max(1, c["tokens_in"])
    rows = [TableRecord({"step": "in", "documents": c["documents_in"], "tokens": c["tokens_in"],
                         "bytes": c["bytes_in"], "share_of_tokens_in": 1.0})]
    for reason, r in manifest["reasons"].items():
        rows.append(TableRecord({"step": f"removed: {reason}", "documents": r["records"], "tokens": r["tokens"],
                                 "bytes": r["bytes"], "share_of_tokens_in": round(r["tokens"] / tin, 6)}))
    rows.append(TableRecord({"step": "out", "documents": c["documents_out"], "tokens": c["tokens_out"],
                             "bytes": c["bytes_out"], "share_of_tokens_in": round(c["tokens_out"] / tin, 6)}))
    return MetadataValue.table(rows, schema=FUNNEL_SCHEMA)


def markdown_table(header: list[str], rows: list[list[str]], empty: str, width: int = 80) -> MetadataValue:
    """An audit table for the UI: cells cut to ``width`` characters, pipes and newlines escaped."""
    if not rows:
        return MetadataValue.md(f"_{empty}_")

    def cell(value) -> str:
        return str(value)[:width].replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return MetadataValue.md("\n".join(lines))


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "" if value is None else format(value, spec)


def stage_metadata(manifest: dict, manifest_file: Path) -> dict:
    """Counts, acceptance rates, funnel, token method, throughput and where the manifest is."""
    c, r = manifest["counts"], manifest["rates"]
    return {
        "documents_in": c["documents_in"],
        "documents_out": c["documents_out"],
        "document_acceptance_rate": MetadataValue.float(r["document_acceptance"] or 0.0),
        "tokens_in": c["tokens_in"],
        "tokens_out": c["tokens_out"],
        "token_acceptance_rate": MetadataValue.float(r["token_acceptance"] or 0.0),
        "token_counting": manifest["token_counting"].get("description", ""),
        "funnel": funnel_table(manifest),
        "bytes_in": c["bytes_in"],
        "elapsed_s": MetadataValue.float(manifest["elapsed_s"]),
        "text_mb_per_s": MetadataValue.float(manifest["timing"].get("text_mb_per_s", 0.0)),
        "version": manifest["version"],
        "manifest": MetadataValue.path(str(manifest_file)),
        "skipped_files": MetadataValue.json(manifest["skipped_files"]),
    }
