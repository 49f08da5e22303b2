"""The step funnel of reasoning traces: how many reach each step, per strategy and per difficulty.

generated -> answer found -> correct -> distinct (trace_validation's verdicts) -> passed quality
(still there after dedup, decontamination and the quality rules: the quality stage's output).
Each step holds the traces that passed every step before it, so the columns only shrink; a trace
leaves at the step of its one reason (``STEPS``). Tokens are the trace's as generated (ingest's
count), the same at every step, so a column's tokens are those of its traces. Kept apart from
trace_validation so that the quality stage, which adds the last step, does not carry the
judging code in its code version.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# the reasons a trace leaves at each step (a step is reached by passing every earlier one)
STEPS: dict[str, tuple[str, ...]] = {
    "generated": (),
    "answer_found": ("missing_problem_id", "too_many_traces", "conflicting_reference", "no_answer_found"),
    "correct": ("bad_step", "wrong_answer", "no_majority"),
    "distinct": ("duplicate_trace",),
}
PASSED = "passed_quality"
COLUMNS = ("doc_id", "strategy", "difficulty", "reason", "n_tokens")


def _rows(verdicts: pa.Table, by: str | None, passed: list[bool] | None) -> list[dict]:
    steps = [*STEPS, *([PASSED] if passed is not None else [])]
    groups: dict[str | None, dict[str, list[int]]] = {}
    keys = verdicts.column(by).to_pylist() if by else [None] * verdicts.num_rows
    flags = passed if passed is not None else [True] * verdicts.num_rows
    for key, reason, tokens, ok in zip(keys, verdicts.column("reason").to_pylist(),
                                       verdicts.column("n_tokens").to_pylist(), flags):
        g = groups.setdefault(key, {s: [0, 0] for s in steps})
        out_at = next((s for s, reasons in STEPS.items() if reason in reasons), PASSED if not ok else None)
        for step in steps:
            if step == out_at:
                break
            g[step][0] += 1
            g[step][1] += tokens
    return [{"by": by, "value": key} | {f"{s}_{unit}": g[s][i] for s in steps
                                        for i, unit in enumerate(("documents", "tokens"))}
            for key, g in sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))]


def step_funnel(verdicts: pa.Table, passed: list[bool] | None = None) -> list[dict]:
    """The funnel of the whole source (``by`` None), then per strategy and per difficulty where
    the records carry one; ``passed`` (per trace: in quality's output) adds the last step."""
    rows = _rows(verdicts, None, passed)
    for by in ("strategy", "difficulty"):  # a field the records never fill gives no table
        if verdicts.column(by).null_count < verdicts.num_rows:
            rows += _rows(verdicts, by, passed)
    return rows


def through_quality(verdicts_path, kept_parts: list) -> list[dict]:
    """The funnel with its last step: which validated traces are in quality's kept documents."""
    verdicts = pq.read_table(verdicts_path, columns=list(COLUMNS))
    kept = (pa.concat_arrays([pq.read_table(p, columns=["doc_id"]).column("doc_id").combine_chunks()
                              for p in kept_parts]) if kept_parts else pa.array([], pa.string()))
    passed = pc.is_in(verdicts.column("doc_id"), value_set=kept).to_pylist()
    return step_funnel(verdicts, passed)


STEP_LABELS = {"generated": "generated", "answer_found": "answer found", "correct": "correct",
               "distinct": "distinct", PASSED: "kept (passed dedup + quality)"}


def funnel_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The funnel as a table for people (the UI's and REPORT.md's): one row per strategy or
    difficulty value, per step "documents (share of generated) / tokens (share of generated)"."""
    steps = [s for s in STEP_LABELS if f"{s}_documents" in (rows[0] if rows else {})]
    header = ["by", "value", *(STEP_LABELS[s] for s in steps)]
    cells = []
    for r in rows:
        n, t = max(1, r["generated_documents"]), max(1, r["generated_tokens"])
        cells.append([r["by"] or "all traces", "" if r["by"] is None else str(r["value"]),
                      *(f"{r[f'{s}_documents']:,} ({100 * r[f'{s}_documents'] / n:.1f} %) / "
                        f"{r[f'{s}_tokens']:,} tok ({100 * r[f'{s}_tokens'] / t:.1f} %)" for s in steps)])
    return header, cells
