"""Shared fixtures: the real dev corpus and tokenizer in ../shared, and spec writing."""

from __future__ import annotations

import json
import shutil
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


def pytest_collection_modifyitems(items):
    """A test that reads the session's built corpus needs a full build: it is not in `make test-fast`."""
    for item in items:
        if "built_corpus" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


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


# One file of each of four real sources: prose-like web, code, math, and dialogue (with duplicates).
BUILT_SOURCES = [("code", "code", "code-0000-of-0004"), ("web", "web", "web-0000-of-0003"),
                 ("math", "math", "math-0000-of-0002"), ("dialogue", "dialogue", "dialogue-0000-of-0002")]


@pytest.fixture(scope="session")
def built_corpus(tmp_path_factory):
    """``BUILT_SOURCES`` built once per session by the engine, from raw files to mixed shards (the
    default mixture of ``base_spec``). Tests never write here: they take a ``copy_build``."""
    from corpusmix.core.spec import load_spec
    from corpusmix.pipeline import build_all

    root = tmp_path_factory.mktemp("built")
    sources = [{"name": n, "kind": k, "paths": [str(CORPUS / n / f"{f}.jsonl.gz")]} for n, k, f in BUILT_SOURCES]
    loaded = load_spec(write_spec(root / "spec.yaml", base_spec(sources, root)))
    build_all(loaded)
    return loaded


def copy_build(built, dest: Path, **changes):
    """A copy of a build (outputs and manifests) under ``dest``, with its own spec (``changes`` replace
    top-level sections). Manifests name outputs relative to the storage root and content keys do not
    depend on where the storage is, so every stage of the copy is current."""
    from corpusmix.core.spec import load_spec

    shutil.copytree(built.storage_root, dest / "data")
    shutil.copytree(built.manifest_root, dest / "manifests")
    spec = yaml.safe_load(built.path.read_text())
    spec.update(changes, storage={"root": str(dest / "data"), "manifests": str(dest / "manifests")})
    return load_spec(write_spec(dest / "spec.yaml", spec))
