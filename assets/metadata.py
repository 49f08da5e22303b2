"""Turn a stage manifest into the Dagster metadata every stage shows the same way."""

from __future__ import annotations

from pathlib import Path

from dagster import (
    AutomationCondition,
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableRecord,
    TableSchema,
)


def _follow_upstream() -> AutomationCondition:
    """Dagster's ``eager()`` with one change: an upstream counts as updated only when its data
    version (the stage's content key) changed. A materialization that found its partition
    current records the same data version, so it pulls nothing after it (with ``eager()`` one
    no-op click on dedup started 11 runs, ~5.5 minutes, all doing nothing)."""
    new_data = AutomationCondition.any_deps_match(
        (AutomationCondition.data_version_changed() & ~AutomationCondition.executed_with_root_target())
        | AutomationCondition.will_be_requested()).with_label("any_deps_have_new_data")
    return (AutomationCondition.in_latest_time_window()
            & (AutomationCondition.newly_missing() | new_data).since_last_handled()
            & ~AutomationCondition.any_deps_missing()
            & ~AutomationCondition.any_deps_in_progress()
            & ~AutomationCondition.in_progress()).with_label("eager_on_new_data")


# Every asset after ingest follows its upstream: when the automation sensor runs, a new ingest
# partition (from the source-file sensor or the UI) pulls the later stages after it.
FOLLOW_UPSTREAM = _follow_upstream()

def column_schema(table: str) -> TableSchema:
    """The catalog's column list of a table, from its pandera schema (the one source of truth)."""
    from schemas.tables import SCHEMAS

    return TableSchema(columns=[
        TableColumn(name, str(col.dtype.type.pyarrow_dtype), description=col.description or "",
                    constraints=TableColumnConstraints(nullable=bool(col.nullable)))
        for name, col in SCHEMAS[table].columns.items()])


def tokens_label(manifest: dict) -> str:
    """"tokens" when the stage's counts are exact, else "tokens (estimate)": an estimate is never
    shown as a plain number."""
    return "tokens" if manifest["token_counting"].get("method") == "exact" else "tokens (estimate)"


def count(n: int) -> str:
    """A count as the UI should show it, digits grouped (Dagster shows an int metadata value raw)."""
    return f"{n:,}"


def pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f} %"


def funnel_table(manifest: dict) -> MetadataValue:
    """In, removed per reason, out: additive (each removed document is charged to one reason, so
    in - the removed rows = out, documents and tokens). Where a reason also counts every document
    that failed it (quality rules overlap), those counts are separate, labelled columns."""
    c, tok = manifest["counts"], tokens_label(manifest)
    tin = max(1, c["tokens_in"])
    overlap = any("failed_records" in r for r in manifest["reasons"].values())
    cols = ["step", "documents", tok, f"share of {tok} in"]
    cols += ["failed (any)", "only this rule"] if overlap else []

    def row(step: str, docs: int, tokens: int, *extra: str) -> TableRecord:
        cells = [step, f"{docs:,}", f"{tokens:,}", pct(tokens / tin)] + (list(extra) if overlap else [])
        return TableRecord(dict(zip(cols, cells)))

    rows = [row("in", c["documents_in"], c["tokens_in"], "", "")]
    rows += [row(f"removed: {reason}", r["records"], r["tokens"], f"{r.get('failed_records', r['records']):,}",
                 f"{r.get('only_this_rule', r['records']):,}") for reason, r in manifest["reasons"].items()]
    rows.append(row("out", c["documents_out"], c["tokens_out"], "", ""))
    return MetadataValue.table(rows, schema=TableSchema(columns=[TableColumn(n, "string") for n in cols]))


def text_table(columns: list[str], rows: list[list[str]]) -> MetadataValue:
    """A table the UI shows as a table (markdown hides behind "[Show Markdown]"), cells formatted."""
    return MetadataValue.table([TableRecord(dict(zip(columns, map(str, row)))) for row in rows],
                               schema=TableSchema(columns=[TableColumn(c, "string") for c in columns]))


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


def sources_summary(loaded, stage: str) -> MetadataValue:
    """Every source's latest funnel of ``stage`` in one table, from the manifests on disk (a
    partitioned asset's page otherwise shows only the partition materialized last)."""
    from corpusmix.core.manifest import manifest_path, read_manifest

    rows = []
    for source in loaded.source_names:
        path = manifest_path(loaded.manifest_root, stage, source)
        if not path.is_file():
            rows.append([source, "not built", "", "", "", ""])
            continue
        m = read_manifest(path)
        c, r = m["counts"], m["rates"]
        mark = "" if m["token_counting"].get("method") == "exact" else " (estimate)"
        rows.append([source, f"{c['documents_in']:,} → {c['documents_out']:,}",
                     f"{c['tokens_in']:,} → {c['tokens_out']:,}{mark}", pct(r.get("document_acceptance")),
                     pct(r.get("token_acceptance")), m["version"]])
    return text_table(["source", "documents in → out", "tokens in → out", "document acceptance",
                       "token acceptance", "version"], rows)


def stage_metadata(manifest: dict, manifest_file: Path) -> dict:
    """Counts, acceptance rates, the additive funnel, how tokens were counted, throughput and where
    the manifest is. Token keys say "estimate" when the counts are one."""
    c, r = manifest["counts"], manifest["rates"]
    suffix = "" if manifest["token_counting"].get("method") == "exact" else "_estimate"
    md = {
        "funnel": funnel_table(manifest),
        "documents_in": count(c["documents_in"]),
        "documents_out": count(c["documents_out"]),
        "dagster/row_count": c["documents_out"],
        f"tokens_in{suffix}": count(c["tokens_in"]),
        f"tokens_out{suffix}": count(c["tokens_out"]),
        "token_counting": manifest["token_counting"].get("description", manifest["token_counting"].get("method", "")),
    }
    for rate in ("document_acceptance", "token_acceptance"):  # a stage reports only rates that can vary
        if r.get(rate) is not None:
            md[f"{rate}_rate"] = MetadataValue.float(round(r[rate], 4))
    return md | {
        "bytes_in": count(c["bytes_in"]),
        "elapsed_s": MetadataValue.float(round(manifest["elapsed_s"], 2)),
        "text_mb_per_s": MetadataValue.float(round(manifest["timing"].get("text_mb_per_s", 0.0), 2)),
        "version": manifest["version"],
        "manifest": MetadataValue.path(str(manifest_file)),
        "skipped_files": MetadataValue.json(manifest["skipped_files"]),
    }


def lines_svg(series: dict[str, list[tuple[float, float]]], caption: str, marks: list[float] = (),
              width: int = 560, height: int = 240) -> str:
    """Lines of (x, y) points on shared axes, named in a legend when there is more than one, with dashed
    vertical marks (e.g. phase boundaries); an empty string when there is nothing to draw."""
    from corpusmix.ops.report import PALETTE

    points = [p for line in series.values() for p in line]
    if not points:
        return ""
    x0 = min(p[0] for p in points)
    x1 = max(max(p[0] for p in points), x0 + 1)
    lo, hi = min(p[1] for p in points), max(p[1] for p in points)
    span, pad, right = (hi - lo) or 1.0, 44, (110 if len(series) > 1 else 10)
    px = lambda x: pad + (width - pad - right) * (x - x0) / (x1 - x0)  # noqa: E731
    py = lambda v: 10 + (height - 40) * (1 - (v - lo) / span)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             'font-size="11"><rect width="100%" height="100%" fill="white"/>']
    parts += [f'<line x1="{px(b):.1f}" x2="{px(b):.1f}" y1="10" y2="{height - 30}" stroke="#999" '
              'stroke-dasharray="4 3"/>' for b in marks if x0 < b <= x1]
    for i, (name, line) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        if line:
            pts = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in line)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>')
        if len(series) > 1:
            parts.append(f'<text x="{width - right + 8}" y="{20 + 14 * i}" fill="{colour}">{name}</text>')
    parts += [f'<text x="{pad - 4}" y="{py(hi) + 4:.1f}" text-anchor="end">{hi:.2f}</text>',
              f'<text x="{pad - 4}" y="{py(lo) + 4:.1f}" text-anchor="end">{lo:.2f}</text>',
              f'<text x="{(width - right) / 2:.0f}" y="{height - 8}" text-anchor="middle">{caption}</text></svg>']
    return "".join(parts)
