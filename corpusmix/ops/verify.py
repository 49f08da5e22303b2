"""``corpusmix verify``: every output against its manifest, and every manifest where it belongs."""

from __future__ import annotations

from corpusmix.core.manifest import GLOBAL_PARTITION as GLOBAL
from corpusmix.core.manifest import OWNER_FILE, iter_manifests, manifest_path, ownership_problem, read_manifest
from corpusmix.core.spec import load_spec
from corpusmix.ops.checks import integrity_problems
from corpusmix.pipeline import STAGES, active_stages


def verify(spec_path: str, until: str | None = None) -> list[str]:
    """Every mismatch between a build's manifests and the files on disk (empty = verified).

    First, when another spec owns the manifests folder (its owner record names another spec name
    or storage root), that: it explains the missing and mismatched files after it.
    Also every stage of the pipeline (up to and including ``until``, default all) must have its
    manifests, one per source of the spec for a per-source stage, and there is none for a source
    the spec no longer has.
    """
    loaded = load_spec(spec_path, check_files=False)
    owner = ownership_problem(loaded)
    problems = [] if owner is None else [
        f"{loaded.manifest_root / OWNER_FILE}: another spec owns this folder, the likely cause of what follows: "
        f"{owner}; fix: point storage.manifests of {loaded.path} at a folder of its own"]
    manifests = iter_manifests(loaded.manifest_root)
    if not manifests:
        return problems + [f"{loaded.manifest_root}: no manifests (nothing built yet?)"]
    for m in manifests:
        problems += integrity_problems(loaded, m)
    found = {(m.parent.name, m.stem) for m in manifests}
    names = [s.name for s in STAGES]
    expected = [s for s in active_stages(loaded.spec) if not until or names.index(s.name) <= names.index(until)]
    for stage in expected:  # every stage, for every source it runs on: a half-built root is not verified
        for part in (loaded.source_names if stage.per_source else [GLOBAL]):
            if (stage.name, part) not in found:
                which = f"{stage.name}[{part}]" if stage.per_source else stage.name
                problems.append(f"{manifest_path(loaded.manifest_root, stage.name, None if part == GLOBAL else part)}: "
                                f"no manifest: {which} was never built (or its manifest was deleted); "
                                f"fix: corpusmix build {loaded.path}")
    for stage, part in sorted(found):
        if part != GLOBAL and part not in loaded.source_names:
            problems.append(f"{loaded.manifest_root / stage / (part + '.json')}: stale: the spec has no source {part!r}")
    for m in manifests:
        try:
            data = read_manifest(m)
        except Exception:  # noqa: BLE001 - already reported by verify_manifest
            continue
        if data["corpus"] != loaded.spec.name or (data["partition"] or GLOBAL) != m.stem \
                or data["asset"] != m.parent.name:
            problems.append(f"{m}: names corpus {data['corpus']!r}, asset {data['asset']!r}, partition "
                            f"{data['partition']!r}, which is not where it is filed")
    return problems
