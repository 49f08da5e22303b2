"""Reliability: concurrent builds on one storage root, and builds killed at random points."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corpusmix.core.manifest import iter_manifests, read_manifest
from corpusmix.core.spec import load_spec
from corpusmix.core.storage import sha256_file
from corpusmix.ops.checks import integrity_problems
from corpusmix.pipeline import run_stage

from .conftest import CORPUS

pytestmark = pytest.mark.slow  # kills and concurrent builds through Dagster

VERSION = re.compile(r"[0-9a-f]{20}")  # a content key: the name of a published version directory


def _sources():
    return [{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "math-0000-of-0002.jsonl.gz")]},
            {"name": "web", "kind": "web", "paths": [str(CORPUS / "web" / "web-0000-of-0003.jsonl.gz")]}]


def test_two_builds_at_once_serialise_and_agree(make_spec, tmp_path):
    spec = make_spec(_sources())
    env = os.environ | {"DAGSTER_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "workflows.cli", "build", str(spec)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    waited = [o for o in outs if "waiting for another build" in o]
    assert len(waited) == 1 and "up to date" in waited[0]  # the second waited, then found nothing to do
    v = subprocess.run([sys.executable, "-m", "corpusmix.cli", "verify", str(spec)], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr


ENGINE_BUILD = """
import sys
from corpusmix.core.spec import load_spec
from corpusmix.pipeline import build_all
build_all(load_spec(sys.argv[1]))
"""


def _stable(manifest_root):
    """Per manifest: its version and every output's path and sha256 (the bytes a build produced;
    the spec hash differs between the two roots, which is why content hashes are not compared)."""
    out = {}
    for p in iter_manifests(manifest_root):
        m = read_manifest(p)
        out[p.relative_to(manifest_root).as_posix()] = (m["version"], sorted((o["path"], o["sha256"])
                                                                            for o in m["outputs"]), m["counts"])
    return out


def _clean_outputs(manifest_root) -> dict[str, str]:
    """Relative path -> sha256 of every output an uninterrupted build published."""
    return {o["path"]: o["sha256"] for p in iter_manifests(manifest_root) for o in read_manifest(p)["outputs"]}


def _visible_outputs_are_complete(loaded, clean: dict[str, str]) -> list[str]:
    """No manifest names a missing or partial file, and every file under a final name is complete.

    The manifest is the commit point; the version directory is published just before it by one
    rename of a fully written staging directory. A kill between the two leaves a complete version
    directory that no manifest names yet, which the next run adopts. Such a directory passes only
    if it holds exactly the files, byte for byte, that the uninterrupted build put under that name."""
    problems = []
    named = set()
    for m in iter_manifests(loaded.manifest_root):
        problems += integrity_problems(loaded, m)
        named |= {str(loaded.storage_root / o["path"]) for o in read_manifest(m)["outputs"]}
    unnamed_dirs = set()
    for f in loaded.storage_root.rglob("*"):
        rel = f.relative_to(loaded.storage_root)
        if f.is_file() and not any(p.startswith(".") for p in rel.parts) and str(f) not in named:
            depth = next((i for i, part in enumerate(rel.parts) if VERSION.fullmatch(part)), None)
            if depth is None:
                problems.append(f"{f}: under a final name, outside any version directory, named by no manifest")
            else:
                unnamed_dirs.add(Path(*rel.parts[:depth + 1]))  # <stage>[/<partition>]/<version>
    for d in sorted(unnamed_dirs):
        want = {p: h for p, h in clean.items() if Path(p).parts[:len(d.parts)] == d.parts}
        have = {f.relative_to(loaded.storage_root).as_posix(): sha256_file(f)
                for f in (loaded.storage_root / d).rglob("*") if f.is_file()}
        if not want or have != want:
            problems.append(f"{d}: under a final name, named by no manifest, and not the complete output "
                            f"({len(have)} file(s) on disk, {len(want)} expected)")
    return problems


def test_killed_builds_leave_nothing_half_written_and_rerun_to_the_same_bytes(make_spec, tmp_path):
    clean = load_spec(make_spec(_sources(), name="clean.yaml"))
    run = [sys.executable, "-c", ENGINE_BUILD]
    t0 = time.perf_counter()
    subprocess.run([*run, str(clean.path)], check=True)
    full = time.perf_counter() - t0
    want = _stable(clean.manifest_root)
    clean_outputs = _clean_outputs(clean.manifest_root)
    rng = random.Random(1234)
    kills = 0
    roots = int(os.environ.get("CORPUSMIX_KILL_ROOTS", "6"))  # raise it for a longer campaign
    for i in range(roots):
        spec = make_spec(_sources(), name=f"k{i}.yaml",
                         storage={"root": str(tmp_path / f"k{i}" / "data"),
                                  "manifests": str(tmp_path / f"k{i}" / "manifests")})
        loaded = load_spec(spec)
        for _ in range(2):  # kill it twice at random points, then let it finish
            p = subprocess.Popen([*run, str(spec)])
            time.sleep(rng.uniform(0.5, full))
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                kills += 1
            p.wait()
            assert _visible_outputs_are_complete(loaded, clean_outputs) == []
        subprocess.run([*run, str(spec)], check=True)
        assert _visible_outputs_are_complete(loaded, clean_outputs) == []
        assert _stable(loaded.manifest_root) == want
    print(f"kill points tried: {2 * roots}, builds actually killed: {kills}")
    assert kills >= roots


def test_bad_input_runs_through_the_whole_build_and_every_record_is_accounted_for(make_spec, tmp_path):
    import gzip
    import shutil

    from corpusmix.ops import audit
    from workflows.build import run_build

    from .test_ingest_bad_input import _jsonl

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "mixed.jsonl").write_bytes(_jsonl(
        {"id": "a", "text": "A first good document with enough words to pass for prose. " * 8},
        b'{"id": "b", "text": "unterminated',
        b'{"id": "c", "text": "bad \xff\xfe utf8"}',
        {"id": "d"}, {"id": "e", "text": None}, {"id": "f", "text": 42}, {"id": "h", "text": ""},
        {"id": "j", "text": "nul \u0000 inside"}, b"[1, 2, 3]", {"text": "no id at all"},
        {"id": "a", "text": "same id as the first record"},
        {"id": "z", "text": "The last good document, also long enough to be judged as prose here. " * 8}))
    good = gzip.decompress((CORPUS / "web" / "web-0001-of-0003.jsonl.gz").read_bytes())
    (raw / "truncated.jsonl.gz").write_bytes(gzip.compress(good)[: len(gzip.compress(good)) // 2])
    shutil.copy(CORPUS / "web" / "web-0000-of-0003.jsonl.gz", raw / "web.jsonl.gz")
    sources = [{"name": "bad", "kind": "web", "paths": [str(raw / "*")], "on_unreadable": "skip"},
               {"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "math-0000-of-0002.jsonl.gz")]}]
    spec = make_spec(sources)
    assert run_build(spec, echo=lambda m: None)
    loaded = load_spec(spec)
    con = audit.connect(loaded)
    for source in ("bad", "math"):
        ingest = read_manifest(loaded.manifest_root / "ingest" / f"{source}.json")
        read = ingest["counts"]["records_read"]
        accounted = sum(con.execute(f"SELECT count(*) FROM {view} WHERE source = ?", [source]).fetchone()[0]
                        for view in ("quarantine", "duplicates", "cross_source", "rejections", "tokenized"))
        accounted += con.execute("SELECT count(DISTINCT doc_id) FROM contamination WHERE source = ? AND action = "
                                 "'dropped'", [source]).fetchone()[0]
        accounted += con.execute("SELECT count(*) FROM split WHERE source = ? AND split = 'heldout'",
                                 [source]).fetchone()[0]  # held out: evaluation text, in the valid store
        assert accounted == read, (source, accounted, read)  # each record in exactly one place
    bad = read_manifest(loaded.manifest_root / "ingest" / "bad.json")
    assert bad["skipped_files"] and bad["skipped_files"][0]["file"] == "truncated.jsonl.gz"
    assert bad["counts"]["quarantined"] >= 9
    for doc in ("a", "z"):  # the good records beside the bad ones went on through the stages
        assert audit.why(con, doc, "bad")[-1]["stage"] in ("quality", "tokenize")
    assert _visible_outputs_are_complete(loaded, {}) == []


def test_disk_full_fails_cleanly_and_keeps_the_previous_build(make_spec, tmp_path, monkeypatch):
    import errno
    import shutil

    import pyarrow.parquet as pq

    from corpusmix.core.manifest import manifest_path
    from corpusmix.ops.checks import integrity_problems

    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(CORPUS / "web" / "web-0000-of-0003.jsonl.gz", raw)
    loaded = load_spec(make_spec([{"name": "web", "kind": "web", "paths": [str(raw / "*.jsonl.gz")]}]))
    before, path = run_stage("ingest", loaded, "web", progress=lambda m: None)
    shutil.copy(CORPUS / "web" / "web-0001-of-0003.jsonl.gz", raw)  # a change, so the next build writes

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    with pytest.raises(OSError, match=r"(?s)No space left on device: ingest\[web\] could not write its outputs under "
                                      rf"storage.root {loaded.storage_root}; .* GB free there now.*Fix: free space"):
        run_stage("ingest", loaded, "web", progress=lambda m: None)
    monkeypatch.undo()
    # no manifest claims the failed build; the previous one still verifies; no staging left behind
    assert read_manifest(manifest_path(loaded.manifest_root, "ingest", "web"))["version"] == before["version"]
    assert integrity_problems(loaded, path) == []
    assert not [p for p in loaded.storage_root.rglob(".staging-*")]
    assert _visible_outputs_are_complete(loaded, {}) == []


@pytest.mark.parametrize("stage, partition", [("ingest", "math"), ("tokenizer", None)])
def test_a_kill_between_publishing_and_the_manifest_leaves_a_complete_directory_the_rerun_adopts(
        make_spec, tmp_path, monkeypatch, stage, partition):
    """The one window the random kills hit only sometimes, made certain: the version directory is
    published and the process dies before the manifest is written (a per-source stage, whose
    directory is <stage>/<source>/<version>, and a global one, <stage>/<version>)."""
    from corpusmix.core import stage as contract
    from corpusmix.core.manifest import manifest_path

    def run(loaded):
        return run_stage(stage, loaded, partition, progress=lambda m: None)

    sources = [{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "math-0000-of-0002.jsonl.gz")]}]
    clean = load_spec(make_spec(sources, name="clean.yaml"))
    run(clean)
    clean_outputs = _clean_outputs(clean.manifest_root)
    loaded = load_spec(make_spec(sources, name="killed.yaml",
                                 storage={"root": str(tmp_path / "k" / "data"),
                                          "manifests": str(tmp_path / "k" / "manifests")}))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the manifest")

    monkeypatch.setattr(contract, "write_manifest", killed)
    with pytest.raises(KeyboardInterrupt):
        run(loaded)
    monkeypatch.undo()
    manifest = manifest_path(loaded.manifest_root, stage, partition)
    assert not manifest.exists()
    published = [f for f in loaded.storage_root.rglob("*") if f.is_file() and ".build" not in f.name]
    assert published  # the directory was published ...
    assert _visible_outputs_are_complete(loaded, clean_outputs) == []  # ... complete, byte for byte
    run(loaded)
    assert _stable(loaded.manifest_root) == _stable(clean.manifest_root)  # the rerun adopted it
    # the check is not vacuous: a truncated file in an unnamed directory is reported
    manifest.unlink()
    victim = max(published, key=lambda f: f.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:100])
    assert _visible_outputs_are_complete(loaded, clean_outputs)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_next_build_collects_what_killed_runs_left(make_spec, tmp_path, monkeypatch):
    """Staging directories of a dead writer are removed (a live one's are not), and a run a killed
    `corpusmix build` left STARTED is marked failed."""
    from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

    from workflows.build import OWNER_TAG, run_build

    spec = make_spec(_sources()[:1])
    loaded = load_spec(spec)
    dead = _dead_pid()
    stale = [loaded.storage_root / "ingest" / "math" / f".staging-{dead}-abc",
             loaded.storage_root / "dedup" / "math" / f".replaced-{dead}-def"]
    live = loaded.storage_root / "ingest" / "math" / f".staging-{os.getpid()}-ghi"
    for d in (*stale, live):
        d.mkdir(parents=True)
        (d / "part-00000-000.parquet").write_bytes(b"x" * 1000)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    with DagsterInstance.get() as instance:
        orphan = instance.add_run(DagsterRun(job_name="ingest_dedup_job", run_id="0" * 36,
                                             status=DagsterRunStatus.STARTED, tags={OWNER_TAG: str(dead)}))
        alive = instance.add_run(DagsterRun(job_name="ingest_dedup_job", run_id="1" * 36,
                                            status=DagsterRunStatus.STARTED, tags={OWNER_TAG: str(os.getppid())}))
    echo: list[str] = []
    assert run_build(spec, echo=echo.append), "\n".join(echo)
    text = "\n".join(echo)
    assert "removed 2 staging directories (0.0 MB)" in text and not any(d.exists() for d in stale) and live.exists()
    assert f"marked run {orphan.run_id}" in text
    with DagsterInstance.get() as instance:
        assert instance.get_run_by_id(orphan.run_id).status == DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive.run_id).status == DagsterRunStatus.STARTED


@pytest.mark.parametrize("sig, code, when", [(signal.SIGINT, 130, "ingest + dedup: ok"),
                                             (signal.SIGTERM, 143, "ingest + dedup: ok"),
                                             (signal.SIGINT, 130, "[web] ingest: "),
                                             (signal.SIGTERM, 143, "[web] ingest: ")])
def test_a_signal_stops_the_build_says_so_and_the_rerun_finishes(make_spec, tmp_path, sig, code, when):
    """Ctrl-C or SIGTERM during `corpusmix build`: the run in progress fails, no later run starts,
    the command says so and exits 128 + signal; no process is left; the next build completes."""
    spec = make_spec(_sources())
    env = os.environ | {"DAGSTER_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "workflows.cli", "build", str(spec)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            start_new_session=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if when in line:  # between two runs (the first source is done), or inside the second source's run
            os.kill(proc.pid, sig)
            break
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=120) == code, out
    assert f"interrupted by {sig.name}" in out and "report:" not in out
    assert "quality + heldout_split + tokenize: ok" not in out  # nothing after the interrupted run started
    time.sleep(1)
    left = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert left == [], left  # its session (pool, forkserver) is gone
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    v = subprocess.run([sys.executable, "-m", "corpusmix.cli", "verify", str(spec)], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
