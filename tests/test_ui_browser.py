"""The UI in a real browser (Debian's Chromium, driven by Playwright): open the asset, launch a
materialization from the UI, wait for it, and see the acceptance rates and passing checks."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from .conftest import CORPUS, REPO
from .dagster_dev import dagster_dev, graphql

pytestmark = pytest.mark.slow  # drives Chromium against dagster dev

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = REPO / "test-artifacts"


def test_materialize_from_the_ui_and_see_the_rates(make_spec, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package (apt-get)")
    from playwright.sync_api import sync_playwright

    spec = make_spec([{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "math-0000-of-0002.jsonl.gz")]}])
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = os.environ | {"DAGSTER_HOME": str(home), "CORPUSMIX_SPEC": str(spec)}
    SCREENSHOTS.mkdir(exist_ok=True)
    with dagster_dev(env) as port, sync_playwright() as pw:
        graphql(port, "mutation { setNuxSeen }")  # the first-visit dialog would cover the page
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            base = f"http://127.0.0.1:{port}"
            page.goto(f"{base}/assets/ingest?view=lineage", wait_until="networkidle")  # the asset graph around it
            page.get_by_text("dedup", exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(SCREENSHOTS / "ui-lineage.png"))
            page.goto(f"{base}/assets/ingest", wait_until="networkidle")
            page.get_by_role("button", name="Materialize…").click()
            page.get_by_role("button", name="All", exact=True).click()  # the spec's one partition: math
            page.get_by_role("button", name="Launch 1 run").click()
            deadline, status = time.time() + 180, None
            while time.time() < deadline:  # the UI's run is the first; the automation sensor may add more after it
                runs = graphql(port, "{ runsOrError { ... on Runs { results { status } } } }")["runsOrError"]["results"]
                status = runs[-1]["status"] if runs else None
                if status in ("SUCCESS", "FAILURE", "CANCELED"):
                    break
                time.sleep(1)
            assert status == "SUCCESS"
            page.goto(f"{base}/assets/ingest", wait_until="networkidle")
            page.get_by_text("token_acceptance_rate", exact=True).wait_for(timeout=60_000)
            assert page.get_by_text("document_acceptance_rate", exact=True).is_visible()
            assert page.get_by_text("funnel", exact=True).is_visible()
            page.screenshot(path=str(SCREENSHOTS / "ui-ingest-materialized.png"), full_page=True)
            page.goto(f"{base}/assets/ingest?view=checks", wait_until="networkidle")
            page.get_by_text("outputs_match_manifest").first.wait_for(timeout=60_000)
            page.screenshot(path=str(SCREENSHOTS / "ui-ingest-checks.png"))
        finally:
            browser.close()
    assert (SCREENSHOTS / "ui-ingest-materialized.png").stat().st_size > 10_000
