"""The step funnel of reasoning traces: how many reach each step, per strategy and per difficulty.

generated -> answer found -> correct -> distinct (trace_validation's verdicts) -> passed quality
(still there after dedup, decontamination and the quality rules: the quality stage's output).
Each step holds the traces that passed every step before it, so the columns only shrink; a trace
leaves at the step of its one reason (``STEPS``). "answer found" also requires that the trace
could be judged at all (it names a problem, with one reference and not too many traces). Tokens
are the trace's as generated (ingest's count), the same at every step.

Counted by DuckDB over the verdicts table (and quality's kept documents), so memory does not
grow with the source. Kept apart from trace_validation so that the quality stage, which adds the
last step, does not carry the judging code in its code version; how the funnel is shown lives
with the report (``ops.report.trace_funnel_cells``).
"""

from __future__ import annotations

from pathlib import Path

from corpusmix.core.sql import literal, literals

# the reasons a trace leaves at each step (a step is reached by passing every earlier one)
STEPS: dict[str, tuple[str, ...]] = {
    "generated": (),
    "answer_found": ("missing_problem_id", "too_many_traces", "conflicting_reference", "no_answer_found"),
    "correct": ("bad_step", "wrong_answer", "no_majority"),
    "distinct": ("duplicate_trace",),
}
PASSED = "passed_quality"
BY = ("strategy", "difficulty")


def _step_columns(passed: str | None) -> str:
    """count and token sum per step: a trace reaches a step when its reason is none of that
    step's or an earlier step's (and, for the last, when ``passed`` holds)."""
    cols, gone = [], []
    steps = [(s, r) for s, r in STEPS.items()] + ([(PASSED, ())] if passed else [])
    for step, reasons in steps:
        gone += reasons
        cond = ("reason IS NULL OR reason NOT IN (" + literals(gone) + ")") if gone else "true"
        if step == PASSED:
            cond = f"reason IS NULL AND {passed}"
        cols += [f"count(*) FILTER (WHERE {cond}) AS {step}_documents",
                 f"coalesce(sum(n_tokens) FILTER (WHERE {cond}), 0)::BIGINT AS {step}_tokens"]
    return ", ".join(cols)


def step_funnel(con, verdicts: str, passed: str | None = None) -> list[dict]:
    """The funnel of the whole source (``by`` None), then per strategy and per difficulty where
    the records carry one. ``verdicts`` names a DuckDB relation with the verdicts' columns;
    ``passed``, an SQL condition on it, adds the last step."""
    unknown = con.execute(f"SELECT DISTINCT reason FROM {verdicts} WHERE reason IS NOT NULL").fetchall()
    known = {r for reasons in STEPS.values() for r in reasons}
    if missing := sorted(r for (r,) in unknown if r not in known):
        raise RuntimeError(f"trace reasons {missing} have no step in trace_funnel.STEPS; this is a bug")
    rows = []
    for by in (None, *BY):
        key = by or "NULL::VARCHAR"
        if by and not con.execute(f"SELECT count({by}) FROM {verdicts}").fetchall()[0][0]:
            continue  # a field the records never fill gives no table
        result = con.execute(f"SELECT {key} AS value, {_step_columns(passed)} FROM {verdicts} "
                             f"GROUP BY ALL ORDER BY value NULLS LAST")
        names = [d[0] for d in result.description]
        rows += [{"by": by} | dict(zip(names, values)) for values in result.fetchall()]
    return rows


def through_quality(verdicts_path: Path, kept_parts: list[Path]) -> list[dict]:
    """The funnel with its last step: which validated traces are in quality's kept documents."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute(f"CREATE VIEW verdicts AS SELECT * FROM read_parquet({literal(str(verdicts_path))})")
        con.execute(f"CREATE VIEW kept AS SELECT doc_id FROM read_parquet([{literals(kept_parts)}])" if kept_parts else
                    "CREATE VIEW kept AS SELECT NULL::VARCHAR AS doc_id WHERE false")
        return step_funnel(con, "verdicts", "doc_id IN (SELECT doc_id FROM kept)")
    finally:
        con.close()
