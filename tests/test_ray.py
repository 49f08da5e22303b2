"""Scale-out on Ray: a real Ray cluster, started with ``ray start --head`` on 127.0.0.1, builds a
sample of the corpus through Dagster, and every output file equals a local build's byte for byte."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from corpusmix.core.executor import open_executor
from corpusmix.core.spec import Execution, load_spec
from workflows.build import run_build
from workflows.resources import CorpusSpec

from .conftest import CORPUS, REPO

pytestmark = pytest.mark.slow  # starts a Ray cluster

# Ray reads RAY_AUTH_MODE and the token once, when it is imported: the cluster this module starts and
# its driver share a token of their own, in a private file of this test's (never ~/.ray: a fresh
# machine has none, and a user's own must not be touched).
_TOKEN_DIR = Path(tempfile.mkdtemp(prefix="ray-token-"))
_TOKEN = _TOKEN_DIR / "auth_token"
_TOKEN.touch(mode=0o600)
_TOKEN.write_text(secrets.token_hex(32))
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN_PATH"] = str(_TOKEN)
os.environ.pop("RAY_AUTH_TOKEN", None)
ray = pytest.importorskip("ray")
RAY_CLI = Path(sys.executable).with_name("ray")
SAMPLE = {"web": ["web-0000-of-0003", "web-0001-of-0003"], "math": ["math-0000-of-0002", "math-0001-of-0002"],
          "code": ["code-0001-of-0004"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address():
    """A one-node Ray cluster of 2 CPUs, as on a cluster's head node; stopped afterwards.

    Token authentication stays on, as it should on a cluster (see RAY_AUTH_MODE
    above). Ray advertises the node's own IP even when given 127.0.0.1; the
    driver connects through 127.0.0.1.
    """
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    for attempt in range(3):  # a loaded machine can make the head miss its start-up deadline
        port = _free_port()
        r = subprocess.run([str(RAY_CLI), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                            "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                            f"--temp-dir={temp}"], env=env, capture_output=True, text=True, timeout=180)
        if r.returncode == 0:
            break
        _stop_cluster(temp, port)
    else:
        pytest.fail(f"ray start failed 3 times; last output:\n{r.stdout}\n{r.stderr}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        ray.shutdown()
        _stop_cluster(temp, port)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_cluster(temp: str, port: int) -> None:
    """Stop the processes of the cluster this module started (their command lines name its temp
    dir or its head's port), not every Ray process of the machine as `ray stop --force` would."""
    marks = (temp.encode(), f":{port}\0".encode(), f":{port} ".encode(), f"--gcs-address=127.0.0.1:{port}".encode())
    mine = []
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmd.read_bytes()
            if any(m in line for m in marks) and int(cmd.parent.name) != os.getpid():
                mine.append(int(cmd.parent.name))
        except OSError:
            continue
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    todo = list(mine)
    while todo:  # and their descendants, whose titles (ray::DashboardAgent ...) no longer name the cluster
        parent = todo.pop()
        kids = [c for c, pp in parents.items() if pp == parent and c not in mine]
        mine += kids
        todo += kids
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{p}").exists() for p in mine) and time.monotonic() < deadline:
            time.sleep(0.2)


def _sample_spec(make_spec, tmp_path: Path, name: str, execution: dict) -> Path:
    raw = tmp_path / "raw"
    for source, files in SAMPLE.items():
        (raw / source).mkdir(parents=True, exist_ok=True)
        for f in files:
            if not (raw / source / f"{f}.jsonl.gz").exists():
                shutil.copy(CORPUS / source / f"{f}.jsonl.gz", raw / source)
    sources = [{"name": s, "kind": s, "paths": [str(raw / s / "*.jsonl.gz")]} for s in SAMPLE]
    spec = make_spec(sources, name=f"{name}.yaml", execution=execution,
                     ingest={"part_bytes": 1 << 20},  # several parts per source: several tasks per stage
                     output={"shard_tokens": 200_000},
                     mixture={"total_tokens": 600_000, "seq_len": 512,
                              "schedule": {"type": "static", "weights": {s: 1 for s in SAMPLE}}})
    text = spec.read_text().replace(str(tmp_path / "data"), str(tmp_path / name / "data"))
    spec.write_text(text.replace(str(tmp_path / "manifests"), str(tmp_path / name / "manifests")))
    return spec


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_ray_cluster_build_is_byte_identical_to_a_local_build(ray_address, make_spec, tmp_path):
    local = load_spec(_sample_spec(make_spec, tmp_path, "local", {"backend": "processes", "workers": 2}))
    on_ray = load_spec(_sample_spec(make_spec, tmp_path, "ray", {"backend": "ray", "ray_address": ray_address}))
    log_local: list[str] = []
    log_ray: list[str] = []
    assert run_build(local.path, echo=log_local.append), "\n".join(log_local)
    assert run_build(on_ray.path, echo=log_ray.append), "\n".join(log_ray)

    assert ray.is_initialized()  # joined the cluster started above, not a private local instance
    assert ray.get_runtime_context().gcs_address.endswith(f":{ray_address.rsplit(':', 1)[1]}")
    a, b = _files(local.storage_root), _files(on_ray.storage_root)
    assert a == b
    # the whole way down to the trainer's shards, with several parts per source
    assert any(p.startswith("mixed_shards/") and p.endswith(".bin") for p in a)
    assert sum(p.startswith("ingest/web/") and "/part-" in p for p in a) >= 2
    assert sum(p.startswith("dedup/math/") and "/part-" in p for p in a) >= 2
    # same content keys, so the two manifest trees name the same versions and output hashes
    for stage in ("ingest", "dedup", "quality", "tokenize"):
        for s in SAMPLE:
            ma = (local.manifest_root / stage / f"{s}.json").read_text()
            mb = (on_ray.manifest_root / stage / f"{s}.json").read_text()
            assert _versions(ma) == _versions(mb)


def _versions(manifest_text: str):
    import orjson

    m = orjson.loads(manifest_text)
    return m["version"], [(o["path"], o["sha256"]) for o in m["outputs"]], m["counts"]


def test_lsh_shuffle_on_ray_gives_the_same_pairs_as_one_process(ray_address):
    """The banding shuffle, with more buckets than workers, against the one-process group-by."""
    from corpusmix.stages.minhash import band_pairs, lsh_candidate_pairs

    rng = np.random.default_rng(5)
    sigs = rng.integers(0, 10, size=(3000, 32), dtype=np.uint32)  # small values: many shared bands
    positions = np.arange(len(sigs))
    chunks = [(sigs[i:i + 500], positions[i:i + 500]) for i in range(0, len(sigs), 500)]
    with open_executor(Execution(backend="ray", ray_address=ray_address)) as ex:
        assert ex.backend == "ray"
        pieces = ex.shuffle(_map_chunk, chunks, 7, band_pairs)
    got = {tuple(p) for r in pieces for p in r.tolist()}
    assert got == lsh_candidate_pairs(sigs, positions, 8, 4) and len(got) > 100
    assert sum(len(r) > 0 for r in pieces) == 7  # every bucket had work


def _map_chunk(chunk):
    """A map task: one chunk's band keys into 7 buckets (runs in a Ray worker)."""
    from corpusmix.stages.minhash import band_keys

    sigs, positions = chunk
    return band_keys(sigs, positions, 8, 4, 7)


def test_launch_config_sends_a_run_to_ray(ray_address, make_spec, tmp_path):
    """A spec that says `processes`, launched with run config naming Ray (as from the Launchpad):
    the run's units go to the cluster, and the outputs equal a run without the override."""
    from dagster import DagsterInstance

    from workflows.definitions import build_definitions

    outputs = {}
    for name, override in (("plain", {}), ("launch", {"backend": "ray", "ray_address": ray_address})):
        spec = _sample_spec(make_spec, tmp_path, name, {"backend": "processes", "workers": 2})
        job = build_definitions(spec).resolve_job_def("ingest_dedup_job")
        with DagsterInstance.ephemeral() as instance:
            result = job.execute_in_process(
                instance=instance, partition_key="web",
                run_config={"resources": {"corpus": {"config": {"spec_path": str(spec), **override}}}})
            assert result.success
            logs = "\n".join(e.user_message for e in instance.all_logs(result.run_id))
        assert ("on ray (2 worker(s))" in logs) == bool(override), logs[-3000:]
        assert ("on processes (2 worker(s))" in logs) == (not override)
        outputs[name] = _files(load_spec(spec).storage_root)
    assert outputs["plain"] == outputs["launch"] and any("/dedup/" in f"/{p}" for p in outputs["plain"])


def test_a_node_without_the_storage_root_is_refused_before_any_unit_runs(ray_address, tmp_path):
    missing = tmp_path / "not-mounted"
    with pytest.raises(RuntimeError, match=f"cannot see the storage root {missing}: mount the same shared"):
        with open_executor(Execution(backend="ray", ray_address=ray_address), shared=missing):
            pass
    with open_executor(Execution(backend="ray", ray_address=ray_address), shared=tmp_path) as ex:
        assert list(ex.map(abs, [-3, 2, -1])) == [3, 2, 1]


def test_dagster_resource_overrides_the_spec_execution(make_spec, tmp_path):
    spec = _sample_spec(make_spec, tmp_path, "cfg", {"backend": "processes", "workers": 2})
    loaded = CorpusSpec(spec_path=str(spec), backend="ray", ray_address="10.0.0.5:6379").load()
    assert loaded.spec.execution == Execution(backend="ray", workers=2, ray_address="10.0.0.5:6379")
    assert CorpusSpec(spec_path=str(spec)).load().spec.execution.backend == "processes"
    with pytest.raises(ValueError, match="resource 'corpus' execution override.*backend"):
        CorpusSpec(spec_path=str(spec), backend="spark").load()
