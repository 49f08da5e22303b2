"""Shared fixtures: the real dev corpus and tokenizer in ../shared, and spec writing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"
GPT2 = SHARED / "tokenizers" / "gpt2" / "tokenizer.json"


def pytest_configure(config):
    if not CORPUS.is_dir() or not GPT2.is_file():
        raise pytest.UsageError(f"the tests need the shared corpus and tokenizer at {SHARED}")


def base_spec(sources: list[dict], root: Path, **overrides) -> dict:
    spec = {
        "name": "test",
        "storage": {"root": str(root / "data"), "manifests": str(root / "manifests")},
        "execution": {"workers": 0},
        "sources": sources,
        "tokenizer": {"path": str(GPT2)},
        "mixture": {"total_tokens": 1_000_000, "seq_len": 512,
                    "schedule": {"type": "static", "weights": {s["name"]: 1 for s in sources}}},
    }
    for key, value in overrides.items():
        spec[key] = value
    return spec


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def make_spec(tmp_path):
    """make_spec(sources, **overrides) -> path of a spec whose storage lives in tmp_path."""

    def _make(sources: list[dict], name: str = "spec.yaml", **overrides) -> Path:
        return write_spec(tmp_path / name, base_spec(sources, tmp_path, **overrides))

    return _make


def read_outputs(manifest: dict, storage_root: Path, kind: str):
    """Concatenate a manifest's output tables of one kind ('documents' or 'quarantine')."""
    import pyarrow as pa

    tables = [pq.read_table(storage_root / o["path"]) for o in manifest["outputs"] if o["kind"] == kind]
    return pa.concat_tables(tables) if tables else None


def corpus_manifest() -> dict:
    return json.loads((CORPUS / "MANIFEST.json").read_text())


@pytest.fixture(autouse=True)
def isolated_dagster_home(tmp_path, monkeypatch):
    """Every test gets its own Dagster instance directory, never the user's ./.dagster."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home
