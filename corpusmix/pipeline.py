"""The build, in order: the one place that names the stages and their sequence.

Everything that walks the stages derives from ``STAGES``: ``run_stage`` and
``build`` here, the order ``corpusmix build`` runs them in (``waves``), the
Dagster assets and jobs, freshness, the report, the planner's availability
lookup and the benchmarks. A stage is added by declaring its ``Stage`` in its
own module and listing it here; its position must come after every stage it
reads (checked at import). A spec's build has the stages it asks something of
(``active_stages``): without eval sets there is no eval_index or decontaminate
(quality reads dedup), without held-out splits no heldout_split (tokenize reads
quality), without proxy-run tables no mixing_fit or mixing_proposal, without a
reasoning_traces source no trace_validation (dedup reads ingest), and
mds_shards only with ``handoff.mds.enabled``. trace_validation, when present,
sits between ingest and dedup (not drawn): a reasoning_traces source's dedup reads
the traces it kept, any other source's reads ingest.

    raw files ─► ingest ─► dedup ─► decontaminate ─► quality ─► heldout_split ─► tokenize ─► mixture_plan ─► mixed_shards
                                                                                     │         ▲     ├─► megatron_blends
                                                                                     │         │     └─► mds_shards
                  │          └─► cross_source_dedup ─┘ (drop list)                ▲  │  mixing_proposal (when named)
                  └─► eval_index (eval sets: files, or a source's records)        │  │         ▲
                                                                  tokenizer ──────┘  └► swarm_design ─► mixing_fit
                                                     (from a file, or trained on quality)     (proxy-run tables)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from corpusmix.core import stage as contract
from corpusmix.core.executor import Executor
from corpusmix.core.manifest import owning_manifests
from corpusmix.core.spec import LoadedSpec, Spec
from corpusmix.core.stage import Stage
from corpusmix.handoff import mds_shards, megatron_blends
from corpusmix.mixing import design, fit, proposal
from corpusmix.mixture import plan, shards
from corpusmix.stages import (
    cross_source_dedup,
    decontaminate,
    dedup,
    eval_index,
    heldout_split,
    ingest,
    quality,
    tokenize,
    tokenizer,
    trace_validation,
)

STAGES: tuple[Stage, ...] = (
    ingest.STAGE,
    trace_validation.STAGE,
    dedup.STAGE,
    cross_source_dedup.STAGE,
    eval_index.STAGE,
    decontaminate.STAGE,
    quality.STAGE,
    heldout_split.STAGE,
    tokenizer.STAGE,
    tokenize.STAGE,
    design.STAGE,
    fit.STAGE,
    proposal.STAGE,
    plan.STAGE,
    shards.STAGE,
    megatron_blends.STAGE,
    mds_shards.STAGE,
)
REGISTRY: dict[str, Stage] = {s.name: s for s in STAGES}


def _check_order(spec: Spec | None = None) -> None:
    """Every stage comes after the stages it reads (for a spec-dependent upstream: all it may read)."""
    seen: set[str] = set()
    for s in STAGES:
        deps = s.deps(spec) if spec is not None else (s.upstream if not callable(s.upstream) else ())
        missing = [d for d in deps if d not in seen]
        if missing:
            raise RuntimeError(f"stage {s.name!r} reads {missing}, declared after it (or not at all) in STAGES")
        seen.add(s.name)


_check_order()


def stage(name: str) -> Stage:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"no stage {name!r}; the stages are {list(REGISTRY)}") from None


def active_stages(spec: Spec) -> tuple[Stage, ...]:
    """The stages this spec's build has, in order: ``STAGES`` less those it asks nothing of
    (``Stage.active``); each stage's upstream then names what it reads instead."""
    stages = tuple(s for s in STAGES if s.is_active(spec))
    names = {s.name for s in stages}
    for s in stages:
        if missing := [d for d in s.deps(spec) if d not in names]:
            raise RuntimeError(f"stage {s.name!r} reads {missing}, which this spec leaves out of the build")
    return stages


def run_stage(name: str, loaded: LoadedSpec, partition: str | None = None, *,
              progress: Callable[[str], None] | None = None, executor: Executor | None = None) -> tuple[dict, object]:
    """Build one stage (one source's partition of a per-source stage); returns (manifest, manifest path).

    ``executor`` lets a caller share one worker pool across stages and sources. Every build (the
    CLI's, the UI's, a test's) comes through here, so this is where a spec claims its manifests
    folder, or is refused when another spec owns it (``manifest.owning_manifests``).
    """
    with owning_manifests(loaded):
        return contract.run(stage(name), loaded, partition, REGISTRY, progress, executor)


def is_current(loaded: LoadedSpec, name: str, partition: str | None = None) -> bool:
    """Would the stage (partition) skip itself: same content key, outputs intact?"""
    return contract.is_current(stage(name), loaded, partition, REGISTRY)


@dataclass(frozen=True)
class Wave:
    """Stages that run together: per source, one run per source doing all of them in order;
    global, one run doing all of them in order."""

    scope: str
    stages: tuple[str, ...]

    @property
    def name(self) -> str:
        return "_".join(self.stages) + "_job"


def waves(spec: Spec) -> list[Wave]:
    """The build as the fewest runs that respect every dependency.

    Alternate: every per-source stage whose inputs are ready joins the current
    per-source wave (chained: a stage reading one just added joins too), then
    every ready global stage joins one global wave. A tokenizer from a file
    reads nothing, so it joins the first global wave and quality and tokenize
    then share one run per source.
    """
    done: set[str] = set()
    out: list[Wave] = []
    pending = list(active_stages(spec))
    while pending:
        progressed = False
        for scope in ("source", "global"):
            wave: list[str] = []
            for s in list(pending):
                if s.scope == scope and all(d in done or d in wave for d in s.deps(spec)):
                    wave.append(s.name)
                    pending.remove(s)
            if wave:
                out.append(Wave(scope, tuple(wave)))
                done.update(wave)
                progressed = True
        if not progressed:
            raise RuntimeError(f"stages {[s.name for s in pending]} can never run: a dependency cycle")
    return out


def build(loaded: LoadedSpec, until: str | None = None, sources: list[str] | None = None,
          progress: Callable[[str], None] | None = None) -> Iterator[tuple[str, str | None, dict]]:
    """Run the engine's stages without Dagster, in wave order, up to and including ``until``;
    yields (stage, partition, manifest) as each finishes (a benchmark's setup, a test's build)."""
    last = [s.name for s in STAGES].index(until) if until else len(STAGES) - 1
    wanted = {s.name for s in STAGES[:last + 1]}
    for wave in waves(loaded.spec):
        names = [n for n in wave.stages if n in wanted]
        if wave.scope == "source":
            for src in sources or loaded.source_names:
                for n in names:
                    yield n, src, run_stage(n, loaded, src, progress=progress)[0]
        else:
            for n in names:
                yield n, None, run_stage(n, loaded, progress=progress)[0]


def build_all(loaded: LoadedSpec, until: str | None = None, progress: Callable[[str], None] | None = None) -> None:
    """``build`` run to the end (``until`` included), for callers that only want the outputs."""
    for _ in build(loaded, until, progress=progress or (lambda m: None)):
        pass


def stage_modules() -> list[str]:
    """The engine modules the stages run (what a pool worker imports to be warm)."""
    return sorted({m for s in STAGES for m in s.code_modules()})
