"""The cluster deployment's Dagster instance: run, event-log and schedule storage in a real
PostgreSQL server (Debian's, started here on 127.0.0.1), with `corpusmix build` recording its
runs and partitioned materializations there, as Dagster on Kubernetes would."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from corpusmix.core.spec import load_spec
from workflows.build import run_build

from .conftest import CORPUS

pytestmark = pytest.mark.slow  # starts PostgreSQL and builds through Dagster


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is missing: `make test` installs Debian's postgresql package")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL cluster (trust auth on 127.0.0.1); the server refuses to run as root,
    so under root it runs as Debian's `postgres` user."""
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
    if as_user:
        shutil.chown(data, "postgres")
    port = _free_port()
    subprocess.run([*as_user, _pg_bin("initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "dagster"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"), "-w", "-o",
                    f"-p {port} -h 127.0.0.1 -k {data}", "start"], check=True, capture_output=True, timeout=120)
    try:
        yield port
    finally:
        subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(data, ignore_errors=True)


def test_build_records_its_runs_in_a_postgres_instance(postgres, make_spec, tmp_path, monkeypatch):
    home = tmp_path / "pg_dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "storage:\n  postgres:\n    postgres_db:\n"
        f"      hostname: 127.0.0.1\n      port: {postgres}\n      username: dagster\n"
        "      password: ''\n      db_name: postgres\n"
        # SQLAlchemy 2.1 maps plain `postgresql` to psycopg 3; dagster-postgres installs psycopg2
        "      scheme: postgresql+psycopg2\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    spec = make_spec([{"name": s, "kind": s, "paths": [str(CORPUS / s / f"{s}-0000-of-0002.jsonl.gz")]}
                      for s in ("math", "dialogue")])
    echo: list[str] = []
    assert run_build(spec, echo=echo.append), "\n".join(echo)

    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
        # per source: ingest_dedup_job, quality_heldout_split_tokenize_job; once:
        # cross_source_dedup_tokenizer_job, swarm_design_mixture_plan_mixed_shards_megatron_blends_job
        assert len(runs) == 2 * 2 + 2
        for stage in ("ingest", "dedup", "quality", "tokenize"):
            assert instance.get_materialized_partitions(AssetKey(stage)) == {"math", "dialogue"}
        assert instance.get_latest_materialization_event(AssetKey("mixed_shards")) is not None
    # nothing went to a SQLite file in the home
    assert not list(home.rglob("*.db"))
    assert (load_spec(spec).storage_root / "mixed_shards").is_dir()
