"""The UI in a real browser (Debian's Chromium, driven by Playwright), after a full `corpusmix build`
of two sources through the CLI into the same Dagster instance: what a user must see.

- the catalog: the column schema of ingest (n_tokens), the spec's owners;
- a materialization launched from the UI (Materialize... -> one partition -> launch) succeeds, finds
  the partition current and says so ("reused": true);
- quality (web): the additive funnel as a table (in, one removed row per rule, out; the separate
  "failed (any)" and "only this rule" columns; in - removed = out), token counts labelled exact;
- mixture_plan: the schedule picture (behind "[Show Markdown]") and the phase quotas table;
- mixed_shards: realised vs target, every row within tolerance, the trainer's shard directory;
  its mixture_on_target check passed and shows its worst margin.

Screenshots of each page go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import CORPUS, REPO
from .dagster_dev import dagster_dev, graphql

sys.path.insert(0, str(REPO / "benchmarks"))
from trace_judging import build as labelled_variants  # noqa: E402

pytestmark = pytest.mark.slow  # a CLI build, then Chromium against dagster dev

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = REPO / "test-artifacts"
WAIT = 60_000  # ms: the first render of a page waits for the code location and GraphQL
RUNS = "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"


def _runs(port: int) -> list[dict]:
    """The instance's runs, newest first."""
    return graphql(port, RUNS)["runsOrError"]["results"]


def _metadata_row(page, key: str):
    """The row of a materialization's metadata table whose key cell is ``key`` (not a row of a table
    nested in another entry's value)."""
    return page.locator("tr").filter(has=page.locator("td:first-child").get_by_text(key, exact=True)).first


def _value(page, key: str, column: int = 1):
    """The value cell of metadata ``key``: column 1 on a partition's page and in a check's metadata
    (key, value), 2 on an asset's overview (key, timestamp, value)."""
    return _metadata_row(page, key).locator("td").nth(column)


def _table_rows(table) -> list[list[str]]:
    return [[c.strip() for c in row.locator("td").all_inner_texts()] for row in table.locator("tbody tr").all()]


def _count(cell: str) -> int:
    return int(cell.replace(",", ""))


# The content of the page's panes beyond the viewport: [width that scrolls sideways, tallest height].
OVERFLOW = """() => {
    let w = 0, h = 0;
    for (const e of document.querySelectorAll('*')) {
        h = Math.max(h, e.scrollHeight);
        if (['auto', 'scroll'].includes(getComputedStyle(e).overflowX)) w = Math.max(w, e.scrollWidth - e.clientWidth);
    }
    return [w, h];
}"""


def _shot(page, name: str, focus=None) -> None:
    """A screenshot of the page. With ``focus``, of all of it: Dagster scrolls its panes inside a
    viewport-high layout (``full_page`` alone captures one screen) and wide metadata tables inside
    a pane of their own, so the viewport first grows by what overflows, and ``focus`` must then be
    on screen."""
    from playwright.sync_api import expect

    viewport = page.viewport_size
    if focus is not None:
        size = dict(viewport)
        for _ in range(5):  # a wider page wraps less, which can widen a table again
            wider, tallest = page.evaluate(OVERFLOW)
            grown = {"width": min(size["width"] + wider + (20 if wider else 0), 4000),
                     "height": min(max(size["height"], tallest + 50), 8000)}
            if grown == size:
                break
            size = grown
            page.set_viewport_size(size)
        expect(focus).to_be_in_viewport(ratio=1, timeout=WAIT)
    try:
        page.screenshot(path=str(SCREENSHOTS / name), full_page=focus is not None)
    finally:
        page.set_viewport_size(viewport)


def test_after_a_build_the_ui_shows_what_a_user_needs(make_spec, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package (apt-get)")
    from playwright.sync_api import expect, sync_playwright

    # a reasoning_traces source too (GSM8K solutions and their labelled variants), weight 0: it is
    # built and judged, and its pages show the trace funnel, but it does not enter the shards
    records = [json.loads(line) for line in itertools.islice(gzip.open(CORPUS / "math" / "math-0000-of-0002.jsonl.gz",
                                                                         "rt"), 40)]
    ref = {r["id"]: r["final_answer"] for r in records}
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps({"id": f"{rid}/{v}", "text": text, "problem_id": f"{rid}/{v}",
                                          "strategy": v, "reference_answer": ref[rid]}) + "\n"
                              for rid, v, text, _, _ in labelled_variants(records, 5)))
    spec = make_spec([{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "math-0000-of-0002.jsonl.gz")]},
                      {"name": "web", "kind": "web", "paths": [str(CORPUS / "web" / "web-0000-of-0003.jsonl.gz")]},
                      {"name": "traces", "kind": "reasoning_traces", "paths": [str(traces)]}],
                     owners=["team:corpus"],
                     mixture={"total_tokens": 1_000_000, "seq_len": 512,
                              "schedule": {"type": "static", "weights": {"math": 1, "web": 1, "traces": 0}}})
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = os.environ | {"DAGSTER_HOME": str(home), "CORPUSMIX_SPEC": str(spec)}
    built = subprocess.run([sys.executable, "-m", "workflows.cli", "build", str(spec)], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    quality_web = json.loads((tmp_path / "manifests" / "quality" / "web.json").read_text())
    rules = list(quality_web["reasons"])
    assert rules, "web's quality stage rejected nothing: the funnel would have no removed rows to show"

    SCREENSHOTS.mkdir(exist_ok=True)
    shots = []
    with dagster_dev(env) as port, sync_playwright() as pw:
        graphql(port, "mutation { setNuxSeen }")  # the first-visit dialog would cover the page
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            base = f"http://127.0.0.1:{port}"

            # the asset graph around ingest
            page.goto(f"{base}/assets/ingest?view=lineage", wait_until="networkidle")
            page.get_by_text("trace_validation", exact=True).first.wait_for(timeout=WAIT)  # ingest's next stage
            _shot(page, "ui-lineage.png")
            shots.append("ui-lineage.png")

            # the catalog: ingest's columns (from dagster/column_schema) and the spec's owners
            page.goto(f"{base}/assets/ingest", wait_until="networkidle")
            page.get_by_role("button", name="Columns").wait_for(timeout=WAIT)
            expect(page.get_by_text("n_tokens", exact=True).first).to_be_visible(timeout=WAIT)
            expect(page.get_by_text(re.compile(r"^Tokens of text: exact with a tokenizer file")).first).to_be_visible()
            owners = page.get_by_text("Owners", exact=True).locator("xpath=..")
            expect(owners.get_by_text("corpus", exact=True)).to_be_visible()  # team:corpus, shown as a team tag
            expect(owners.get_by_role("img", name="people")).to_be_visible()

            # a materialization from the UI, of one partition: the build made it current, so it is reused
            before = {r["runId"] for r in _runs(port)}
            assert before, "the CLI build left no runs in the instance"
            page.get_by_role("button", name="Materialize…").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_role("button", name="All", exact=True).click()
            for other in ("web", "traces"):  # keep math only
                dialog.locator(f"[data-tooltip='{other}']").get_by_role("img", name="close").click()
            dialog.get_by_role("button", name="Launch 1 run").click()
            deadline, run = time.time() + 180, None
            while time.time() < deadline:
                new = [r for r in _runs(port) if r["runId"] not in before]
                run = new[-1] if new else None  # the UI's run is the first new one
                if run and run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                    break
                time.sleep(1)
            assert run is not None, "the UI launched no run"
            assert run["status"] == "SUCCESS", run
            assert {"key": "dagster/partition", "value": "math"} in run["tags"], run["tags"]
            page.goto(f"{base}/assets/ingest?view=partitions&partition=math", wait_until="networkidle")
            # (false when the code changed between the build and dagster dev's load: the content key moved)
            expect(_value(page, "reused")).to_have_text("true", timeout=WAIT)
            for key in ("token_acceptance_rate", "document_acceptance_rate", "funnel"):
                expect(_metadata_row(page, key)).to_be_visible()
            _shot(page, "ui-ingest-materialized.png", focus=_value(page, "reused"))
            shots.append("ui-ingest-materialized.png")
            page.goto(f"{base}/assets/ingest?view=checks", wait_until="networkidle")
            page.get_by_text("outputs_valid").first.wait_for(timeout=WAIT)
            _shot(page, "ui-ingest-checks.png")
            shots.append("ui-ingest-checks.png")

            # quality, web: the additive funnel, inline as a table, and exact token counts
            page.goto(f"{base}/assets/quality?view=partitions&partition=web", wait_until="networkidle")
            funnel = _metadata_row(page, "funnel").locator("table").first
            funnel.wait_for(timeout=WAIT)
            headers = [h.strip() for h in funnel.locator("thead th").all_inner_texts()]
            for column in ("step", "documents", "tokens", "share of tokens in", "failed (any)", "only this rule"):
                assert column in headers, headers
            rows = _table_rows(funnel)
            steps = [r[0] for r in rows]
            # one removed row per rule (in the rules' order, which charges a document to its first failed rule)
            assert steps[0] == "in" and steps[-1] == "out", steps
            assert sorted(steps[1:-1]) == sorted(f"removed: {rule}" for rule in rules), steps
            for step in ("in", "out", *(f"removed: {rule}" for rule in rules)):
                expect(funnel.get_by_role("cell", name=step, exact=True)).to_be_visible()
            docs, toks = headers.index("documents"), headers.index("tokens")
            for col in (docs, toks):  # what the table shows adds up: in - removed = out
                assert _count(rows[0][col]) - sum(_count(r[col]) for r in rows[1:-1]) == _count(rows[-1][col]), rows
            assert _count(rows[-1][docs]) == quality_web["counts"]["documents_out"]
            expect(_value(page, "token_counting")).to_have_text(re.compile(r"^exact"))
            _shot(page, "ui-quality-funnel.png", focus=funnel.locator("thead th").last)
            shots.append("ui-quality-funnel.png")

            # trace_validation, traces: the step funnel per strategy, inline, and audit samples
            page.goto(f"{base}/assets/trace_validation?view=partitions&partition=traces", wait_until="networkidle")
            steps = _metadata_row(page, "trace_funnel").locator("table").first
            steps.wait_for(timeout=WAIT)
            headers = [h.strip() for h in steps.locator("thead th").all_inner_texts()]
            assert headers == ["by", "value", "generated", "answer found", "correct", "distinct"], headers
            shown = {(r[0], r[1]): r for r in _table_rows(steps)}
            manifest = json.loads((tmp_path / "manifests" / "trace_validation" / "traces.json").read_text())
            whole = next(r for r in manifest["details"]["funnel"] if r["by"] is None)
            assert shown["all traces", ""][2].startswith(f"{whole['generated_documents']:,} (100.0 %)")
            assert shown["strategy", "wrong_answer"][4].startswith("0 (0.0 %)")  # none of them correct
            expect(_metadata_row(page, "audit_samples")).to_be_visible()
            _shot(page, "ui-trace-funnel.png", focus=steps.locator("thead th").last)
            shots.append("ui-trace-funnel.png")
            # quality, traces: the same funnel with its last step
            page.goto(f"{base}/assets/quality?view=partitions&partition=traces", wait_until="networkidle")
            steps = _metadata_row(page, "trace_funnel").locator("table").first
            steps.wait_for(timeout=WAIT)
            assert [h.strip() for h in steps.locator("thead th").all_inner_texts()][-1] == "kept (passed dedup + quality)"

            # mixture_plan: the schedule picture and the phase quotas
            page.goto(f"{base}/assets/mixture_plan", wait_until="networkidle")
            quotas = _metadata_row(page, "phase_quotas").locator("table").first
            quotas.wait_for(timeout=WAIT)
            assert [h.strip() for h in quotas.locator("thead th").all_inner_texts()] == ["phase", "tokens", "math",
                                                                                       "web", "traces"]
            assert _table_rows(quotas)[0][:2] == ["all", "1,000,000"]
            _metadata_row(page, "schedule").get_by_text("[Show Markdown]").click()  # Dagster hides markdown
            picture = page.get_by_role("dialog").get_by_role("img", name="mixture schedule")
            expect(picture).to_be_visible(timeout=WAIT)
            width, height = picture.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            assert width > 100 and height > 100, (width, height)  # the SVG decoded and has a size
            _shot(page, "ui-plan-schedule.png")  # the picture is in a dialog over the page
            shots.append("ui-plan-schedule.png")
            page.get_by_role("dialog").get_by_role("button", name="Close").click()

            # mixed_shards: realised vs target, the shard directory, the on-target check's margin
            page.goto(f"{base}/assets/mixed_shards", wait_until="networkidle")
            target = _metadata_row(page, "realised_vs_target").locator("table").first
            target.wait_for(timeout=WAIT)
            headers = [h.strip() for h in target.locator("thead th").all_inner_texts()]
            assert "within" in headers, headers
            rows = _table_rows(target)
            assert {r[headers.index("source")] for r in rows} == {"math", "web", "traces"}, rows  # traces: 0 of 0
            assert all(r[headers.index("within")] == "ok" for r in rows), rows
            shard_dir = _value(page, "shard_dir", column=2)
            expect(shard_dir).to_be_visible()
            shown = shard_dir.inner_text().strip()
            assert Path(shown).is_dir() and shown.startswith(str(tmp_path / "data")), shown
            _shot(page, "ui-shards-target.png", focus=target.get_by_role("columnheader", name="within"))
            shots.append("ui-shards-target.png")
            page.goto(f"{base}/assets/mixed_shards?view=checks", wait_until="networkidle")
            page.get_by_text("mixture_on_target", exact=True).first.click(timeout=WAIT)
            expect(page.get_by_text("Passed", exact=True).first).to_be_visible(timeout=WAIT)
            expect(_value(page, "worst")).to_have_text(
                re.compile(r"^\w+/(math|web): [+-][\d,]+ tokens, \d+% of its tolerance$"), timeout=WAIT)
            _shot(page, "ui-shards-checks.png")
            shots.append("ui-shards-checks.png")
        finally:
            browser.close()
    for name in shots:
        assert (SCREENSHOTS / name).stat().st_size > 10_000, name
    assert len(shots) == 8
