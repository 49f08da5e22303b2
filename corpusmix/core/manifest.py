"""Manifests: write them last and atomically, read them back, verify outputs against them.

A stage's outputs live in a content-addressed directory under the storage
root; its manifest, under the manifest root, is what declares them complete.
Because it is written only after every output is published, a run killed at
any point leaves either the previous manifest or the new one, never a manifest
that names half-written files. The manifest is the commit point: a run killed
after publishing its version directory (one rename of a fully written staging
directory) and before its manifest leaves that directory complete but named by
no manifest, and the next run with the same content key adopts it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson

from corpusmix import __version__
from corpusmix.core.storage import atomic_write_bytes, sha256_file
from schemas.manifest import validate_manifest

_VOLATILE = ("started_at", "finished_at", "elapsed_s", "timing", "content_hash")
GLOBAL_PARTITION = "_all"  # file name of the manifest of an unpartitioned (all-source) asset
_TOOLS = ("pyarrow", "duckdb", "orjson", "pandera", "pydantic", "tokenizers", "tiktoken", "zstandard", "datasketch")


@functools.lru_cache(maxsize=1)
def tool_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "corpusmix": __version__}
    for name in _TOOLS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def content_hash(manifest: dict) -> str:
    """Hash of a manifest without its timestamps and timing details (equal for equal builds)."""
    stable = {k: v for k, v in manifest.items() if k not in _VOLATILE}
    return hashlib.sha256(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS)).hexdigest()


def manifest_path(manifest_root: Path, asset: str, partition: str | None) -> Path:
    return manifest_root / asset / f"{partition or GLOBAL_PARTITION}.json"


def write_manifest(manifest_root: Path, manifest: dict) -> tuple[dict, Path]:
    """Validate against the schema (filling its defaults, so every manifest has every field),
    seal with the content hash, and atomically write a manifest."""
    manifest = validate_manifest({**manifest, "content_hash": "0" * 64}).model_dump(mode="json")
    manifest["content_hash"] = content_hash(manifest)
    path = manifest_path(manifest_root, manifest["asset"], manifest["partition"])
    atomic_write_bytes(path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    return manifest, path


def read_manifest(path: Path) -> dict:
    data = orjson.loads(path.read_bytes())
    validate_manifest(data)
    return data


def require_manifest(manifest_root: Path, asset: str, partition: str | None) -> tuple[Path, dict]:
    """The manifest a stage reads from upstream, or an error naming the asset and partition to build first."""
    path = manifest_path(manifest_root, asset, partition)
    if not path.is_file():
        which = f"{asset}[{partition}]" if partition else asset
        raise FileNotFoundError(f"no {asset} manifest at {path}: materialize {which} first")
    return path, read_manifest(path)


def up_to_date(loaded, asset: str, partition: str | None, version: str,
               progress=None) -> tuple[dict, Path] | None:
    """The current manifest when it already has ``version``, is as the stage wrote it (its content
    hash holds) and every output it names is intact (present, recorded size and sha256): then the
    stage has nothing to do, and says so through ``progress``. A damaged or missing output, or an
    edited manifest, makes the stage run again, which repairs it."""
    path = manifest_path(loaded.manifest_root, asset, partition)
    if not path.is_file():
        return None
    try:
        m = read_manifest(path)
    except Exception:  # noqa: BLE001 - an unreadable manifest is simply not up to date
        return None
    if m["version"] != version or content_hash(m) != m["content_hash"]:  # another key, or edited by hand
        return None
    for o in m["outputs"]:
        f = loaded.storage_root / o["path"]
        if not f.is_file() or f.stat().st_size != o["bytes"] or sha256_file(f) != o["sha256"]:
            return None
    if progress:
        progress(f"[{partition or asset}] {asset}: up to date (version {version}: same inputs, spec section and "
                 "code); nothing to do")
    return m, path


def iter_manifests(manifest_root: Path) -> list[Path]:
    return sorted(p for p in manifest_root.rglob("*.json") if not p.name.startswith("."))


@dataclass(frozen=True)
class Mismatch:
    manifest: str
    path: str
    problem: str

    def render(self) -> str:
        return f"{self.manifest}: {self.path}: {self.problem}"


def verify_manifest(path: Path, storage_root: Path, row_count) -> list[Mismatch]:
    """Every way the outputs on disk differ from what ``path`` declares.

    ``row_count(file) -> int`` counts rows of an output (Parquet here), so the
    documents a manifest claims are checked, not only the bytes.
    """
    try:
        data = read_manifest(path)
    except Exception as e:  # noqa: BLE001 - any parse/schema failure is a finding, not a crash
        return [Mismatch(str(path), "", f"manifest unreadable or invalid: {e}")]
    problems = []
    if content_hash(data) != data["content_hash"]:
        problems.append(Mismatch(str(path), "", "content_hash does not match the manifest's content (edited?)"))
    for out in data["outputs"]:
        f = storage_root / out["path"]
        if not f.is_file():
            problems.append(Mismatch(str(path), out["path"], "missing"))
            continue
        size = f.stat().st_size
        if size != out["bytes"]:
            problems.append(Mismatch(str(path), out["path"], f"size {size} != {out['bytes']} recorded"))
        digest = sha256_file(f)
        if digest != out["sha256"]:
            problems.append(Mismatch(str(path), out["path"], f"sha256 {digest[:16]}… != {out['sha256'][:16]}… recorded"))
            continue
        try:
            rows = row_count(f)
        except Exception as e:  # noqa: BLE001
            problems.append(Mismatch(str(path), out["path"], f"unreadable: {e}"))
            continue
        if rows != out["rows"]:
            problems.append(Mismatch(str(path), out["path"], f"{rows} rows != {out['rows']} recorded"))
    return problems


def stage_manifest(*, loaded, asset: str, partition: str | None, version: str, stage_cfg: dict, code_version: str,
                   started: str, t0: float, timing: dict | None = None, **fields) -> dict:
    """A manifest's identity and timing fields around the stage's own ``fields``
    (inputs, outputs, counts, rates, token_counting, reasons, details)."""
    import time

    from corpusmix.core.spec import canonical_hash

    elapsed = round(time.perf_counter() - t0, 4)
    return {
        "corpus": loaded.spec.name, "asset": asset, "partition": partition, "version": version,
        "spec_hash": loaded.spec_hash(), "stage_config_hash": canonical_hash(stage_cfg), "code_version": code_version,
        **fields,
        "tool_versions": tool_versions(), "started_at": started, "finished_at": utc_now(), "elapsed_s": elapsed,
        "timing": {"elapsed_s": elapsed, **(timing or {})},
    }


def input_refs(loaded, upstream_path: Path, upstream: dict, kinds: tuple[str, ...] = ("documents",)) -> list[dict]:
    """The outputs of an upstream manifest that a stage reads, as its ``inputs``."""
    rel = str(upstream_path.relative_to(loaded.manifest_root))
    return [{"path": o["path"], "sha256": o["sha256"], "bytes": o["bytes"], "upstream_manifest": rel}
            for o in upstream["outputs"] if o["kind"] in kinds]


def output_ref(out: dict, kind: str, tokens: int = 0) -> dict:
    """A manifest ``outputs`` entry for a file written by ``write_parquet`` or the like (path relative
    to the version directory: the stage runner adds where that is)."""
    return {"path": out["name"], "kind": kind, "sha256": out["sha256"], "bytes": out["bytes"],
            "rows": out["rows"], "tokens": tokens}
