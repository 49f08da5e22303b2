"""Which stage partitions are out of date, without building anything.

Every stage's output directory and manifest carry a content key: the stage's spec
section, what it reads (input file checksums for ingest, upstream versions after
that) and the code version. A partition is current when its manifest has the key
the stage would compute now and its outputs are intact; then the stage skips
itself, and ``corpusmix build`` (or a sensor) need not start a run for it.
"""

from __future__ import annotations

from corpusmix.core.spec import LoadedSpec, canonical_hash
from corpusmix.pipeline import active_stages, is_current
from corpusmix.stages.ingest import source_files_rel


def stale_sources(loaded: LoadedSpec, stages: list[str], sources: list[str]) -> list[str]:
    """The sources for which any of ``stages`` (in order) is not current."""
    return [s for s in sources if not all(is_current(loaded, st, s) for st in stages)]


def everything_current(loaded: LoadedSpec) -> bool:
    """Every stage of every source, and every global stage, would skip itself."""
    stages = active_stages(loaded.spec)
    return all(is_current(loaded, s.name, src) for src in loaded.source_names for s in stages if s.per_source) \
        and all(is_current(loaded, s.name) for s in stages if not s.per_source)


def source_fingerprint(loaded: LoadedSpec, source: str) -> str:
    """A cheap fingerprint of a source's files (names, sizes, modification times) for a sensor to poll;
    a change is then confirmed with the content key (checksums) before anything is rebuilt."""
    return canonical_hash([(rel, f.stat().st_size, f.stat().st_mtime_ns)
                           for f, rel in source_files_rel(loaded, loaded.source(source))])
