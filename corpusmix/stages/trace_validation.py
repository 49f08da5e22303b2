"""Trace validation stage: a reasoning_traces source's traces judged before anything else sees them.

A teacher model's traces are only worth training on when they are right. Per source, after
ingest: the traces are grouped by their problem id (a metadata field the spec names), and each
problem's traces are judged together by ``answers.judge_problem``: final answer found, every
calculator step true, the answer equal to the problem's reference or, without one, to the
majority of its independent traces; near-copies of one problem vote once and only one of them
is kept. A trace that names no problem, or whose problem carries two different references,
cannot be judged and is rejected for that (``missing_problem_id``, ``conflicting_reference``),
as are the traces of a problem with more than ``traces.max_per_problem`` (``too_many_traces``:
a generator that wrote one id for everything must not make the near-copy search quadratic in
the source, nor hold the source in memory as one problem).

Outputs: the kept traces (ingest's schema, in ingest's order, so dedup and everything after it
read them as they would ingest's), and ``trace_verdicts``: every trace with its verdict, the
answer found, the answer expected and the detail (which step, what vote), in ingest order.
The funnel is additive (each rejected trace is charged to its one reason); the manifest also
keeps the step funnel generated -> answer found -> correct -> distinct per strategy and per
difficulty, and an audit sample of each reason. The quality stage adds the last step (passed
quality) for the same traces (``passed_quality``).

A source of any other kind has nothing to judge: its partition writes no files and its dedup
reads ingest's documents, so adding a trace source to a spec changes no other source's keys.

Memory: DuckDB groups the traces by problem (spilling to disk past its memory limit), runs of
whole problems are judged on the spec's executor a few at a time, the verdicts stay in DuckDB
(counted, sampled and written to Parquet in fixed row groups from there), and the kept
documents are written part by part: nothing grows with the source.
"""

from __future__ import annotations

import functools
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from corpusmix.core.parquet_io import PARQUET_OPTS, PartWriter
from corpusmix.core.spec import LoadedSpec, Spec, Traces
from corpusmix.core.sql import literal, literals
from corpusmix.core.stage import Built, Stage, StageRun, documents_built
from corpusmix.core.storage import file_record
from corpusmix.stages.answers import compare_answers, judge_problem
from corpusmix.stages.trace_funnel import step_funnel
from schemas.tables import ARROW_SCHEMAS

NAME = "trace_validation"
DOCS_SCHEMA = ARROW_SCHEMAS["ingest_documents"]
VERDICTS_SCHEMA = ARROW_SCHEMAS["trace_verdicts"]
SCRATCH = "_scratch"
JUDGED_BATCH = 50_000  # judged rows buffered before they go to a scratch file
VERDICT_ROWS = 65_536  # rows per row group of trace-verdicts.parquet
UNIT_TRACES = 2_000  # traces per unit of work (whole problems): ~0.3 s of judging, well above a task's cost
# the additive funnel's reasons, in the order a trace meets them
REASONS = ("missing_problem_id", "too_many_traces", "conflicting_reference", "no_answer_found", "bad_step",
           "wrong_answer", "no_majority", "duplicate_trace")
TAIL_CHARS = 240  # an audit sample shows a trace's end: where its answer is


def trace_config(loaded: LoadedSpec, source_name: str) -> dict:
    """The source's trace fields and judging (every default filled in: a changed default changes
    the key); a source of another kind has nothing to judge, whatever the spec says."""
    traces = loaded.source(source_name).traces
    return {"source": source_name, "traces": None if traces is None else traces.model_dump(mode="json"),
            "audit_samples": loaded.spec.quality.audit_samples}


# ------------------------------------------------------------------------------------ judging

@dataclass(frozen=True)
class _Trace:
    part: int
    row: int
    text: str
    reference: str | None


def _field(name: str | None) -> str:
    """The SQL reading one metadata field as text (null when absent or blank, or when no field is
    named); a number in the JSON reads as its text, so problem ids 7 and "7" are one problem."""
    if name is None:
        return "NULL::VARCHAR"
    quoted = name.replace('"', '\\"').replace("'", "''")
    return f"nullif(trim(json_extract_string(metadata, '$.\"{quoted}\"')), '')"


def _connect(scratch: Path):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET temp_directory = {literal(str(scratch / 'duckdb'))}")
    return con


def _load(con, parts: list[Path], traces: Traces) -> None:
    """``placed``: the parts' rows with their place (part number, row in the part); ``docs``: one
    row per trace with its place and its fields, text aside."""
    con.register("part_paths", pa.table({"part": pa.array(range(len(parts)), pa.int64()),
                                         "filename": [str(p) for p in parts]}))
    con.execute(f"""CREATE VIEW placed AS SELECT n.part, d.file_row_number AS "row", d.*
                    FROM read_parquet([{literals(parts)}], filename = true, file_row_number = true) d
                    JOIN part_paths n USING (filename)""")
    con.execute(f"""
        CREATE TABLE docs AS
        SELECT part, "row", doc_id, source, n_bytes, n_tokens,
               {_field(traces.problem_id)} AS problem_id, {_field(traces.strategy)} AS strategy,
               {_field(traces.difficulty)} AS difficulty, {_field(traces.reference)} AS reference
        FROM placed""")


def _groups(con) -> Iterator[tuple[str, list[_Trace]]]:
    """Each problem's traces together, problems in id order and traces in ingest order: the
    texts stream out of DuckDB sorted, so one problem's traces are in memory at a time."""
    reader = con.sql("""
        SELECT d.problem_id, d.part, d."row", t.text, d.reference
        FROM docs d JOIN (SELECT part, "row", text FROM placed) t USING (part, "row")
        WHERE d.problem_id IS NOT NULL AND d.problem_id NOT IN (SELECT problem_id FROM oversized)
        ORDER BY d.problem_id, d.part, d."row" """).to_arrow_reader(4096)
    current, group = None, []
    for batch in reader:
        for pid, part, row, text, ref in zip(*(batch.column(i).to_pylist() for i in range(5))):
            if pid != current and group:
                yield current, group
                group = []
            current = pid
            group.append(_Trace(part, row, text, ref))
    if group:
        yield current, group


def _reference(group: list[_Trace]) -> tuple[str | None, str | None]:
    """(the problem's reference answer, None) or (None, why it has no single one): references
    written differently but equal (``18`` and ``18.00``) are one reference."""
    refs: list[str] = []
    for t in group:
        if t.reference is not None and not any(compare_answers(t.reference, r).equal for r in refs):
            refs.append(t.reference)
    if len(refs) > 1:
        return None, f"the problem's traces carry {len(refs)} different references: {refs[:3]}"
    return (refs[0] if refs else None), None


def _judge_group(traces: Traces, group: list[_Trace]) -> list[dict]:
    """One problem's traces as verdict rows (place, verdict fields)."""
    reference, conflict = _reference(group)
    if conflict is not None:
        return [{"part": t.part, "row": t.row, "kept": False, "reason": "conflicting_reference", "answer": None,
                 "expected": None, "judged_by": None, "rule": None, "detail": conflict, "steps_checked": 0}
                for t in group]
    judged = judge_problem([t.text for t in group], reference, min_agree=traces.vote.min_agree,
                           min_traces=traces.vote.min_traces, pattern=traces.answer_pattern,
                           duplicate_threshold=traces.duplicate_threshold)
    by = "reference" if reference is not None else "majority"
    return [{"part": t.part, "row": t.row, "kept": j.kept, "reason": j.reason, "answer": j.answer,
             "expected": j.expected, "judged_by": by, "rule": j.rule, "detail": j.detail,
             "steps_checked": j.steps.checked} for t, j in zip(group, judged)]


JUDGED_SCHEMA = pa.schema([("part", pa.int64()), ("row", pa.int64()), ("kept", pa.bool_()),
                           ("reason", pa.string()), ("answer", pa.string()), ("expected", pa.string()),
                           ("judged_by", pa.string()), ("rule", pa.string()), ("detail", pa.string()),
                           ("steps_checked", pa.int64())])


def _judge_unit(traces: Traces, problems: list[list[_Trace]]) -> list[dict]:
    """One unit of work: a run of whole problems, judged one after another (problems are
    independent, so where a unit runs and how many there are changes no verdict)."""
    return [row for group in problems for row in _judge_group(traces, group)]


def _units(groups: Iterator[tuple[str, list[_Trace]]]) -> Iterator[list[list[_Trace]]]:
    """Whole problems in runs of at least ``UNIT_TRACES`` traces, in problem order."""
    unit, size = [], 0
    for _, group in groups:
        unit.append(group)
        size += len(group)
        if size >= UNIT_TRACES:
            yield unit
            unit, size = [], 0
    if unit:
        yield unit


def _judge_all(ctx: StageRun, con, traces: Traces, scratch: Path) -> None:
    """``judged``: a verdict row per trace that names a problem. Runs of problems are judged on the
    spec's executor (the driver streams them out of DuckDB's sort, at most two per worker in
    flight) and their rows go to scratch files of ``JUDGED_BATCH`` rows: memory is a few units
    and one batch, whatever the source's size."""
    files, rows, n = [], [], 0
    con.execute(f"""CREATE TABLE oversized AS SELECT problem_id, count(*) AS n FROM docs
                    WHERE problem_id IS NOT NULL GROUP BY problem_id HAVING count(*) > {int(traces.max_per_problem)}""")
    for pid, size in con.execute("SELECT problem_id, n FROM oversized ORDER BY problem_id LIMIT 5").fetchall():
        ctx.say(f"problem {pid!r} has {size:,} traces, over traces.max_per_problem {traces.max_per_problem}: "
                f"its traces are rejected (too_many_traces), not judged")
    total, problems = con.execute(
        "SELECT count(*), count(DISTINCT problem_id) FROM docs WHERE problem_id IS NOT NULL "
        "AND problem_id NOT IN (SELECT problem_id FROM oversized)").fetchall()[0]

    def spill() -> None:
        path = scratch / f"judged-{len(files):05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=JUDGED_SCHEMA), path)
        files.append(path)
        rows.clear()

    with ctx.executor(math.ceil(total / UNIT_TRACES)) as executor:
        ctx.say(f"judging {total:,} traces of {problems:,} problems on {executor.backend} "
                f"({executor.workers} worker(s))")
        for judged in executor.map(functools.partial(_judge_unit, traces), _units(_groups(con))):
            rows += judged
            n += len(judged)
            if len(rows) >= JUDGED_BATCH:
                spill()
                ctx.say(f"judged {n:,}/{total:,} traces")
    spill()
    con.execute(f"CREATE TABLE judged AS SELECT * FROM read_parquet([{literals(files)}])")
    ctx.say(f"judged {n:,} traces of {problems:,} problems")


def _verdicts(con, max_per_problem: int) -> None:
    """``verdicts``: every trace's verdict with its place; the traces that were not judged are a
    trace naming no problem (``missing_problem_id``) or one of a problem with too many
    (``too_many_traces``)."""
    con.execute(f"""
        CREATE TABLE verdicts AS
        SELECT d.part, d."row", d.source, d.doc_id, d.problem_id, d.strategy, d.difficulty,
               coalesce(j.kept, false) AS kept,
               CASE WHEN j.part IS NOT NULL THEN j.reason WHEN o.n IS NOT NULL THEN 'too_many_traces'
                    ELSE 'missing_problem_id' END AS reason,
               j.answer, j.expected, j.judged_by, j.rule,
               CASE WHEN j.part IS NOT NULL THEN j.detail
                    WHEN o.n IS NOT NULL THEN o.n || ' traces name this problem, over traces.max_per_problem '
                         || {int(max_per_problem)} || ': check the generator''s problem ids, or raise the limit'
                    ELSE 'the record has no problem id field (or it is empty)' END AS detail,
               coalesce(j.steps_checked, 0) AS steps_checked, d.n_bytes, d.n_tokens
        FROM docs d LEFT JOIN judged j USING (part, "row") LEFT JOIN oversized o USING (problem_id)""")


def _write_verdicts(con, path: Path) -> dict:
    """The verdicts in ingest order, streamed from DuckDB in row groups of ``VERDICT_ROWS`` (a
    fixed size, so the bytes do not depend on how DuckDB cut its batches)."""
    columns = ", ".join(f'"{c}"' for c in VERDICTS_SCHEMA.names)
    reader = con.sql(f'SELECT {columns} FROM verdicts ORDER BY part, "row"').to_arrow_reader(VERDICT_ROWS)
    pending: list[pa.RecordBatch] = []
    with pq.ParquetWriter(path, VERDICTS_SCHEMA, **PARQUET_OPTS) as writer:
        for batch in reader:
            pending.append(batch.cast(VERDICTS_SCHEMA))
            while sum(b.num_rows for b in pending) >= VERDICT_ROWS:
                table = pa.Table.from_batches(pending)
                writer.write_table(table.slice(0, VERDICT_ROWS), row_group_size=VERDICT_ROWS)
                pending = table.slice(VERDICT_ROWS).to_batches()
        if rows := sum(b.num_rows for b in pending):
            writer.write_table(pa.Table.from_batches(pending, VERDICTS_SCHEMA), row_group_size=rows)
    return file_record(path, con.execute("SELECT count(*) FROM verdicts").fetchall()[0][0])


def _write_kept(con, parts: list[Path], staging: Path, part_bytes: int) -> list[dict]:
    """The kept traces, part by part in ingest order (each part's mask read from ``verdicts``)."""
    writer = PartWriter(staging, "part", DOCS_SCHEMA, part_bytes)
    for i, path in enumerate(parts):
        mask = con.sql(f'SELECT kept FROM verdicts WHERE part = {i} ORDER BY "row"').to_arrow_table().column(0)
        writer.write(pq.read_table(path, schema=DOCS_SCHEMA).filter(mask))
    return writer.close()


# ------------------------------------------------------------------------------------ audit

def _audit(con, k: int, traces: Traces) -> dict[str, list[dict]]:
    """Up to ``k`` traces per reason, chosen by a hash of the doc_id (the same whatever the order),
    with the problem's start and the trace's end (where its answer is); one pass over the texts."""
    rows = con.execute(f"""
        WITH chosen AS (
            SELECT * FROM verdicts WHERE reason IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY reason ORDER BY md5(doc_id)) <= {int(k)})
        SELECT c.reason, c.doc_id, c.problem_id, c.strategy, c.answer, c.expected, c.detail,
               right(t.text, {TAIL_CHARS}), left(coalesce({_field(traces.problem)}, ''), {TAIL_CHARS})
        FROM chosen c JOIN placed t USING (part, "row")
        ORDER BY c.reason, md5(c.doc_id)""").fetchall()
    out: dict[str, list[dict]] = {}
    for reason, d, p, s, a, e, x, tail, problem in rows:
        out.setdefault(reason, []).append({"doc_id": d, "problem_id": p, "problem": problem, "strategy": s,
                                           "answer": a, "expected": e, "detail": x, "tail": tail})
    return {r: out[r] for r in REASONS if r in out}


# ------------------------------------------------------------------------------------ the stage

def _nothing_to_judge(ctx: StageRun, up_path: Path, up: dict) -> Built:
    """A source of another kind: nothing to judge, nothing written; its dedup reads ingest's
    documents (the partition exists because every stage's asset has one per source)."""
    c = up["counts"]
    return Built(inputs=[], outputs=[],
                 counts={k: c[k] for k in ("documents_out", "tokens_out", "bytes_out")} | {
                     "documents_in": c["documents_out"], "tokens_in": c["tokens_out"], "bytes_in": c["bytes_out"]},
                 rates={"document_acceptance": 1.0 if c["documents_out"] else None,
                        "token_acceptance": 1.0 if c["tokens_out"] else None},
                 token_counting=up["token_counting"],
                 summary=f"not a reasoning_traces source: nothing to judge ({c['documents_out']:,} documents; "
                         f"dedup reads them from ingest)")


def build_trace_validation(ctx: StageRun) -> Built:
    loaded = ctx.loaded
    up_path, up = ctx.upstream("ingest")
    parts = [loaded.storage_root / o["path"] for o in up["outputs"] if o["kind"] == "documents"]
    traces = loaded.source(ctx.partition).traces
    if traces is None:
        return _nothing_to_judge(ctx, up_path, up)
    ctx.say(f"{up['counts']['documents_out']:,} traces in {len(parts)} part(s); grouped by {traces.problem_id!r}")
    scratch = ctx.staging / SCRATCH
    scratch.mkdir()
    con = _connect(scratch)
    try:
        if parts:
            _load(con, parts, traces)
            _judge_all(ctx, con, traces, scratch)
            _verdicts(con, traces.max_per_problem)
        else:  # an empty source: the same tables, with no rows
            con.register("empty_verdicts", VERDICTS_SCHEMA.empty_table())
            con.execute('CREATE TABLE verdicts AS SELECT 0::BIGINT AS part, 0::BIGINT AS "row", * '
                        'FROM empty_verdicts')
        doc_parts = _write_kept(con, parts, ctx.staging, loaded.spec.ingest.part_bytes)
        verdict_out = _write_verdicts(con, ctx.staging / "trace-verdicts.parquet")
        audit = _audit(con, ctx.config["audit_samples"], traces) if parts else {}
        (n_in, b_in, t_in), = con.execute("SELECT count(*), coalesce(sum(n_bytes), 0)::BIGINT, "
                                          "coalesce(sum(n_tokens), 0)::BIGINT FROM verdicts").fetchall()
        reasons = {r: {"records": n, "bytes": b, "tokens": t} for r, n, b, t in con.execute(
            "SELECT reason, count(*), sum(n_bytes)::BIGINT, sum(n_tokens)::BIGINT FROM verdicts "
            "WHERE reason IS NOT NULL GROUP BY reason").fetchall()}
        (problems,), = con.execute("SELECT count(DISTINCT problem_id) FROM verdicts").fetchall()
        by_judge = dict(con.execute("SELECT judged_by, count(DISTINCT problem_id) FROM verdicts "
                                    "WHERE judged_by IS NOT NULL GROUP BY judged_by").fetchall())
        funnel = step_funnel(con, "verdicts")
    finally:
        con.close()
    shutil.rmtree(scratch)
    n_out = sum(p["rows"] for p in doc_parts)
    built = documents_built(ctx, (up_path, up), doc_parts, [("trace_verdicts", verdict_out)], (n_in, n_out),
                            (b_in, sum(p["text_bytes"] for p in doc_parts)),
                            (t_in, sum(p["tokens"] for p in doc_parts)), summary="")
    built.reasons = {r: reasons[r] for r in REASONS if r in reasons}
    built.counts |= {"problems": problems, "rejected": n_in - n_out} | {
        f"problems_by_{judge}": n for judge, n in sorted(by_judge.items())}
    built.details = {"funnel": funnel, "audit": audit, "traces": ctx.config["traces"]}
    built.summary = f"{n_out:,}/{n_in:,} traces kept from {problems:,} problems"
    return built


STAGE = Stage(name=NAME, scope="source", upstream=("ingest",), config=trace_config, build=build_trace_validation,
              module=__name__, active=Spec.validates_traces)
