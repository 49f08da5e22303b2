"""``corpusmix verify``: every output against its manifest, and every manifest where it belongs."""

from __future__ import annotations

from corpusmix.core.manifest import GLOBAL_PARTITION as GLOBAL
from corpusmix.core.manifest import iter_manifests, read_manifest
from corpusmix.core.spec import load_spec
from corpusmix.ops.checks import integrity_problems


def verify(spec_path: str) -> list[str]:
    """Every mismatch between a build's manifests and the files on disk (empty = verified).

    Also every stage that has manifests must have one per source of the spec,
    and none for a source the spec no longer has.
    """
    loaded = load_spec(spec_path, check_files=False)
    manifests = iter_manifests(loaded.manifest_root)
    if not manifests:
        return [f"{loaded.manifest_root}: no manifests (nothing built yet?)"]
    problems = []
    for m in manifests:
        problems += integrity_problems(loaded, m)
    stages: dict[str, set[str]] = {}
    for m in manifests:
        if m.stem != GLOBAL:  # per-source stages: one manifest per source
            stages.setdefault(m.parent.name, set()).add(m.stem)
    for stage, found in sorted(stages.items()):
        for src in sorted(set(loaded.source_names) - found):
            problems.append(f"{loaded.manifest_root / stage}: no manifest for source {src!r} "
                            f"(never built, or the manifest was deleted)")
        for src in sorted(found - set(loaded.source_names)):
            problems.append(f"{loaded.manifest_root / stage / (src + '.json')}: stale: the spec has no source {src!r}")
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
