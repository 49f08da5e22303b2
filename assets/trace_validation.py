"""The trace_validation asset: a reasoning_traces source's traces judged per problem, after ingest."""

from pathlib import Path

from dagster import MetadataValue

from corpusmix.core.spec import LoadedSpec
from corpusmix.ops.report import trace_funnel_cells

from .factory import StageAsset
from .metadata import markdown_table, text_table


def trace_funnel_table(rows: list[dict]) -> MetadataValue:
    """The step funnel per strategy and difficulty (this stage's steps, or quality's with the last),
    inline as a table like every stage's funnel."""
    return text_table(*trace_funnel_cells(rows))


def _audit_table(audit: dict[str, list[dict]]) -> MetadataValue:
    return markdown_table(["reason", "doc_id", "problem", "strategy", "answer", "expected", "detail", "trace (end)"],
                          [[reason, a["doc_id"], f"{a['problem_id']}: {a['problem']}", a["strategy"], a["answer"],
                            a["expected"], a["detail"], a["tail"]]
                           for reason, samples in audit.items() for a in samples],
                          empty="nothing rejected", width=90)


def _metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    d, c = manifest["details"], manifest["counts"]
    if d.get("traces") is None:
        return {"not_judged": MetadataValue.md("_Not a reasoning_traces source: nothing to judge; its dedup reads "
                                               "ingest's documents._")}
    return {
        "problems": c["problems"],
        "problems_judged_by_reference": c.get("problems_by_reference", 0),
        "problems_judged_by_majority": c.get("problems_by_majority", 0),
        "trace_funnel": trace_funnel_table(d["funnel"]),
        "audit_samples": _audit_table(d["audit"]),
        "judging": MetadataValue.json(d["traces"]),
    }


TRACE_VALIDATION = StageAsset(
    description="Reasoning traces judged per problem before they enter the mix: final answer found, calculator "
                "steps true, answer equal to the reference or the majority of independent traces, near-copies "
                "once. Every verdict is in trace_verdicts; a source of another kind has nothing to judge.",
    metadata=_metadata, table="trace_verdicts")
