"""The demo corpus: harvested from this Python installation, built with the committed demo spec."""

from __future__ import annotations

import pytest
import yaml

from corpusmix.core.spec import load_spec
from corpusmix.ops.demo import harvest
from corpusmix.pipeline import run_stage

from .conftest import REPO, read_outputs

pytestmark = pytest.mark.slow  # harvests and ingests the demo corpus


def test_demo_spec_builds_all_three_readers_on_the_harvest(tmp_path):
    raw = harvest(tmp_path / "raw")
    assert harvest(raw) == raw  # a second harvest is a no-op
    spec = yaml.safe_load((REPO / "specs" / "demo.yaml").read_text())
    spec["storage"] = {"root": str(tmp_path / "data"), "manifests": str(tmp_path / "manifests")}
    spec["execution"] = {"workers": 0}
    for src in spec["sources"]:
        src["paths"] = [p.replace("../data/demo/raw", str(raw)) for p in src["paths"]]
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(spec))
    loaded = load_spec(path)
    counts = {}
    for name in loaded.source_names:
        manifest, _ = run_stage("ingest", loaded, name, progress=lambda m: None)
        docs = read_outputs(manifest, loaded.storage_root, "documents")
        counts[name] = docs.num_rows
        assert manifest["token_counting"]["method"] == "estimate"  # the demo trains its tokenizer
        c = manifest["counts"]
        assert c["records_read"] == c["documents_out"] + c["quarantined"]
    assert counts["code"] > 300 and counts["docs"] > 100 and counts["topics"] > 50
    code = read_outputs(run_stage("ingest", loaded, "code", progress=lambda m: None)[0], loaded.storage_root, "documents")
    assert "stdlib/json/__init__.py" in code.column("doc_id").to_pylist()
