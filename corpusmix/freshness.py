"""Which stage partitions are out of date, without building anything.

Every stage's output directory and manifest carry a content key: the stage's spec
section, what it reads (input file checksums for ingest, upstream versions after
that) and the code version. A partition is current when its manifest has the key
the stage would compute now and its outputs are intact; then the stage skips
itself, and ``corpusmix build`` (or a sensor) need not start a run for it.
"""

from __future__ import annotations

from collections.abc import Callable

from .dedup import CROSS_STAGE, cross_source_key, dedup_key
from .ingest import ingest_key
from .manifest import up_to_date
from .mix import STAGE as MIX_STAGE
from .mix import mix_key
from .plan import STAGE as PLAN_STAGE
from .plan import plan_key
from .quality import quality_key
from .spec import LoadedSpec
from .tokenize import tokenize_key
from .tokenizer import tokenizer_key

PER_SOURCE: dict[str, Callable[[LoadedSpec, str], tuple[dict, str]]] = {
    "ingest": lambda loaded, s: ingest_key(loaded, loaded.source(s)),
    "dedup": dedup_key,
    "quality": quality_key,
    "tokenize": tokenize_key,
}
GLOBAL: dict[str, Callable[[LoadedSpec], tuple[dict, str]]] = {
    CROSS_STAGE: cross_source_key, "tokenizer": tokenizer_key, PLAN_STAGE: plan_key, MIX_STAGE: mix_key,
}


def is_current(loaded: LoadedSpec, stage: str, partition: str | None = None) -> bool:
    """True when the stage (partition) would skip itself: same content key, outputs intact."""
    try:
        _, version = PER_SOURCE[stage](loaded, partition) if partition else GLOBAL[stage](loaded)
    except FileNotFoundError:  # an upstream manifest is missing: certainly not current
        return False
    return version is not None and up_to_date(loaded, stage, partition, version) is not None


def stale_sources(loaded: LoadedSpec, stages: list[str], sources: list[str]) -> list[str]:
    """The sources for which any of ``stages`` (in order) is not current."""
    return [s for s in sources if not all(is_current(loaded, st, s) for st in stages)]


def everything_current(loaded: LoadedSpec) -> bool:
    """Every stage of every source, and every global stage, would skip itself."""
    return (not stale_sources(loaded, list(PER_SOURCE), loaded.source_names)
            and all(is_current(loaded, stage) for stage in GLOBAL))


def source_fingerprint(loaded: LoadedSpec, source: str) -> str:
    """A cheap fingerprint of a source's files (names, sizes, modification times) for a sensor to poll;
    a change is then confirmed with the content key (checksums) before anything is rebuilt."""
    from .ingest import source_files_rel
    from .spec import canonical_hash

    return canonical_hash([(rel, f.stat().st_size, f.stat().st_mtime_ns)
                           for f, rel in source_files_rel(loaded, loaded.source(source))])
