"""A manifests folder belongs to one spec (name + storage root): another spec writing there is
refused with a message naming both and the fix, and `verify` names the conflict as the cause."""

from __future__ import annotations

import shutil
import subprocess
import sys

import orjson
import pytest

from corpusmix.core.manifest import OWNER_FILE, ManifestOwnerError, manifest_path, read_owner
from corpusmix.core.spec import SpecError, load_spec
from corpusmix.core.storage import create_exclusive
from corpusmix.ops.verify import verify
from corpusmix.pipeline import run_stage

from .conftest import CORPUS, base_spec, write_spec

MATH = [{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "math-0000-of-0002.jsonl.gz")]}]
QUIET = {"progress": lambda m: None}


def _spec(tmp_path, file: str, name: str, data: str, manifests: str = "shared_manifests"):
    spec = base_spec(MATH, tmp_path, name=name,
                     storage={"root": str(tmp_path / data), "manifests": str(tmp_path / manifests)})
    return load_spec(write_spec(tmp_path / file, spec))


def test_a_second_spec_is_refused_naming_both_specs_and_the_fix(tmp_path):
    first = _spec(tmp_path, "first.yaml", "first", "data_first")
    m, path = run_stage("ingest", first, "math", **QUIET)
    owner = read_owner(first.manifest_root)
    assert owner["spec"] == "first" and owner["storage_root"] == str(first.storage_root)
    before = path.read_bytes()

    second = _spec(tmp_path, "second.yaml", "second", "data_second")
    with pytest.raises(ManifestOwnerError) as e:
        run_stage("ingest", second, "math", **QUIET)
    msg = str(e.value)
    assert isinstance(e.value, SpecError) and "storage.manifests" in msg
    for part in ("spec 'first'", "spec 'second'", str(first.storage_root), str(second.storage_root),
                 str(first.path), str(second.path), str(first.manifest_root / OWNER_FILE),
                 "would overwrite the other build's manifests", "set storage.manifests in",
                 "to another path (e.g. manifests/second)"):
        assert part in msg, (part, msg)
    assert path.read_bytes() == before  # the first build's manifest is untouched
    assert not second.storage_root.exists()  # refused before any work

    # the same name with another storage root is another build too
    same_name = _spec(tmp_path, "same_name.yaml", "first", "data_elsewhere")
    with pytest.raises(ManifestOwnerError, match="storage root"):
        run_stage("ingest", same_name, "math", **QUIET)
    # the same spec from another file (same name and storage root) is the same build
    copy = _spec(tmp_path, "first_copy.yaml", "first", "data_first")
    assert run_stage("ingest", copy, "math", **QUIET)[0]["version"] == m["version"]

    # verify names the ownership conflict first, as the cause of the missing manifests after it
    problems = verify(str(second.path), until="ingest")
    assert problems[0].startswith(f"{second.manifest_root / OWNER_FILE}: another spec owns this folder")
    assert "spec 'first'" in problems[0] and "spec 'second'" in problems[0]
    assert verify(str(first.path), until="ingest") == []
    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "verify", str(second.path), "--until", "ingest"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "another spec owns this folder" in r.stderr.splitlines()[1], r.stderr


def test_a_moved_build_is_claimed_again_and_an_unowned_folder_of_another_corpus_is_refused(tmp_path):
    first = _spec(tmp_path, "first.yaml", "first", "data", "manifests")
    m, _ = run_stage("ingest", first, "math", **QUIET)
    moved = tmp_path / "moved"
    shutil.copytree(first.storage_root, moved / "data")
    shutil.copytree(first.manifest_root, moved / "manifests")
    again = _spec(moved, "first.yaml", "first", "data", "manifests")
    assert run_stage("ingest", again, "math", **QUIET)[0]["version"] == m["version"]  # current, not refused
    assert read_owner(again.manifest_root)["storage_root"] == str(again.storage_root)
    assert read_owner(first.manifest_root)["storage_root"] == str(first.storage_root)

    # a folder written before owners were recorded: its manifests say whose it is
    (first.manifest_root / OWNER_FILE).unlink()
    other = _spec(tmp_path, "other.yaml", "other", "data", "manifests")
    with pytest.raises(ManifestOwnerError, match="holds manifests of corpus 'first'"):
        run_stage("ingest", other, "math", **QUIET)
    assert not (first.manifest_root / OWNER_FILE).exists()
    run_stage("ingest", first, "math", **QUIET)  # its own spec claims it
    assert read_owner(first.manifest_root)["spec"] == "first"
    assert manifest_path(first.manifest_root, "ingest", "math").is_file()


def test_create_exclusive_writes_once(tmp_path):
    target = tmp_path / "d" / OWNER_FILE
    assert create_exclusive(target, b'{"spec": "a"}')
    assert not create_exclusive(target, b'{"spec": "b"}')
    assert orjson.loads(target.read_bytes()) == {"spec": "a"}
    assert [p.name for p in target.parent.iterdir()] == [OWNER_FILE]  # no temporary file left


def test_corpusmix_build_refuses_another_specs_folder_before_any_run(tmp_path):
    """Through the CLI the refusal comes before Dagster starts: exit 2, the message, no run."""
    first = _spec(tmp_path, "first.yaml", "first", "data_first")
    run_stage("ingest", first, "math", **QUIET)
    second = _spec(tmp_path, "second.yaml", "second", "data_second")
    home = tmp_path / "home"
    r = subprocess.run([sys.executable, "-m", "workflows.cli", "build", str(second.path)], capture_output=True,
                       text=True, env={**__import__("os").environ, "DAGSTER_HOME": str(home)}, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "belongs to spec 'first'" in r.stderr and "storage.manifests" in r.stderr
    assert not home.exists() and not second.storage_root.exists()  # no instance, no run, no output
