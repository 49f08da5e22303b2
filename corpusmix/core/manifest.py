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

import contextlib
import functools
import hashlib
import importlib.metadata
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson

from corpusmix import __version__
from corpusmix.core.spec import LoadedSpec, SpecError, SpecIssue
from corpusmix.core.storage import atomic_write_bytes, create_exclusive, file_record, sha256_file
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


# --------------------------------------------------------------------------- which spec owns a manifests folder

OWNER_FILE = ".owner.json"  # a dot file: iter_manifests and audits do not take it for a manifest


class ManifestOwnerError(SpecError):
    """A spec whose ``storage.manifests`` folder belongs to another spec: building it would
    overwrite that spec's manifests (the commit points of its build) with its own."""


def owner_record(loaded: LoadedSpec) -> dict:
    """What a manifests folder records about the spec that writes it: the spec's name and
    storage root (together they say whose outputs its manifests name), where the folder was
    when claimed (a copied or moved folder is claimed again), the spec file, and when."""
    return {"spec": loaded.spec.name, "storage_root": str(loaded.storage_root),
            "manifests": str(loaded.manifest_root), "spec_file": str(loaded.path), "claimed_at": utc_now()}


def read_owner(manifest_root: Path) -> dict | None:
    """The owner record of a manifests folder, or None when none was written (nothing built
    since owners were recorded) or it cannot be read."""
    try:
        return orjson.loads((manifest_root / OWNER_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def owner_conflict(owner: dict, loaded: LoadedSpec) -> str | None:
    """Why ``loaded`` must not write a folder ``owner`` owns (None: it may). Another spec name
    always conflicts; another storage root conflicts unless the folder itself has moved since it
    was claimed (a copy of a whole build, data and manifests, under a new root)."""
    diffs = []
    if owner.get("spec") != loaded.spec.name:
        diffs.append(f"name {owner.get('spec')!r} here, {loaded.spec.name!r} in this spec")
    moved = owner.get("manifests") != str(loaded.manifest_root)
    if owner.get("storage_root") != str(loaded.storage_root) and not moved:
        diffs.append(f"storage root {owner.get('storage_root')} here, {loaded.storage_root} in this spec")
    return "; ".join(diffs) or None


def ownership_problem(loaded: LoadedSpec) -> str | None:
    """The refusal (and ``verify``'s finding) when another spec owns ``loaded``'s manifests folder,
    naming both specs and the fix; None when this spec owns it or nobody has claimed it."""
    owner = read_owner(loaded.manifest_root)
    if owner is None or (why := owner_conflict(owner, loaded)) is None:
        return None
    return (f"the manifests folder {loaded.manifest_root} belongs to spec {owner.get('spec')!r} "
            f"(storage root {owner.get('storage_root')}, spec file {owner.get('spec_file')}, recorded in "
            f"{loaded.manifest_root / OWNER_FILE}), not to spec {loaded.spec.name!r} ({loaded.path}, storage root "
            f"{loaded.storage_root}): {why}. Building this spec there would overwrite the other build's manifests")


def check_owner(loaded: LoadedSpec) -> None:
    """Refuse (``ManifestOwnerError``) when another spec owns ``loaded``'s manifests folder. A folder
    written before owners were recorded belongs to the corpus its manifests name."""
    root = loaded.manifest_root
    if read_owner(root) is None:
        others = sorted({c for c in _corpora(root) if c != loaded.spec.name})
        if others:
            _refuse(loaded, f"the manifests folder {root} holds manifests of corpus {others[0]!r}, not of spec "
                            f"{loaded.spec.name!r} ({loaded.path}): building it there would overwrite them",
                    f"if that corpus is this spec under its old name, delete its manifests in {root} first")
    elif (problem := ownership_problem(loaded)) is not None:
        _refuse(loaded, problem)


def claim_manifests(loaded: LoadedSpec) -> None:
    """Record ``loaded`` as the owner of its manifests folder if nobody is (created atomically and
    exclusively: of two specs racing to a new folder one wins, and the other is refused here), or
    again if the folder was moved or copied since it was claimed."""
    root = loaded.manifest_root
    record = orjson.dumps(owner_record(loaded), option=orjson.OPT_INDENT_2) + b"\n"
    if read_owner(root) is None and create_exclusive(root / OWNER_FILE, record):
        return
    check_owner(loaded)
    if read_owner(root).get("manifests") != str(root):  # a moved or copied build: claim the copy
        atomic_write_bytes(root / OWNER_FILE, record)


@contextlib.contextmanager
def owning_manifests(loaded: LoadedSpec) -> Iterator[None]:
    """Around a stage run: refuse before any work when another spec owns the manifests folder;
    claim the folder once the run has written (or found current) its manifest, so a failed
    first run leaves nothing behind."""
    check_owner(loaded)
    yield
    claim_manifests(loaded)


def _corpora(root: Path) -> set[str]:
    """The corpus names the manifests in a folder carry (unreadable ones skipped)."""
    names = set()
    for p in iter_manifests(root) if root.is_dir() else []:
        try:
            names.add(orjson.loads(p.read_bytes())["corpus"])
        except Exception:  # noqa: BLE001 - verify reports unreadable manifests; here they decide nothing
            continue
    return names


def _refuse(loaded: LoadedSpec, problem: str, otherwise: str | None = None) -> None:
    otherwise = otherwise or (f"if this folder's build really is this spec's (renamed, or its data moved on "
                              f"purpose), delete {loaded.manifest_root / OWNER_FILE} and build again")
    raise ManifestOwnerError(str(loaded.path), [SpecIssue(
        "storage.manifests", problem,
        f"give spec {loaded.spec.name!r} its own manifests folder: set storage.manifests in {loaded.path} to "
        f"another path (e.g. manifests/{loaded.spec.name}); {otherwise}")])


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


def output_files(loaded, manifest: dict) -> dict[str, Path]:
    """A manifest's output files by kind (the last of a kind with several), as paths under the storage root."""
    return {o["kind"]: loaded.storage_root / o["path"] for o in manifest["outputs"]}


def manifest_refs(loaded, upstream: list[tuple[Path, dict]]) -> list[dict]:
    """Upstream manifests a stage read as a whole (not one file of theirs), as its ``inputs``."""
    return [{"path": str(p.relative_to(loaded.manifest_root)), "sha256": m["content_hash"], "bytes": 0,
             "upstream_manifest": str(p.relative_to(loaded.manifest_root))} for p, m in upstream]


def staged_ref(staging: Path, path: str, kind: str, rows: int = 0, tokens: int = 0) -> dict:
    """A manifest ``outputs`` entry for a file the stage wrote at ``staging / path`` (its checksum read back)."""
    return output_ref(file_record(staging / path, rows) | {"name": path}, kind, tokens)


def output_ref(out: dict, kind: str, tokens: int = 0) -> dict:
    """A manifest ``outputs`` entry for a file written by ``write_parquet`` or the like (path relative
    to the version directory: the stage runner adds where that is)."""
    return {"path": out["name"], "kind": kind, "sha256": out["sha256"], "bytes": out["bytes"],
            "rows": out["rows"], "tokens": tokens}
