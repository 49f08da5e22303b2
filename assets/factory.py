"""One asset per engine stage, built the same way from the stage's declaration and its wiring.

The engine's ``Stage`` says what Dagster needs about the data: name, per source or
global, upstream stages (hence the asset deps and partition mappings) and the code
version (the asset's ``code_version``). ``StageAsset`` adds only what the UI shows:
the description, group, kinds, the metadata drawn from the manifest beyond the
funnel every document stage shows, and any checks beyond the ones every stage has.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    PartitionsDefinition,
    asset,
)

from corpusmix.core.spec import LoadedSpec, Spec
from corpusmix.core.stage import Stage
from corpusmix.pipeline import run_stage
from workflows.resources import CorpusSpec

from .checks import previous_manifest, stage_check_specs, stage_result
from .metadata import FOLLOW_UPSTREAM, column_schema, sources_summary, stage_metadata
from .progress import progress_log


@dataclass(frozen=True)
class StageAsset:
    """How a stage shows in Dagster (what its ``Stage`` does not already say)."""

    description: str
    group: str = "corpus"
    kinds: frozenset[str] = frozenset({"parquet", "python"})
    metadata: Callable[[LoadedSpec, dict, Path], dict] = lambda loaded, manifest, path: {}  # the stage's own
    table: str | None = None  # the pandera schema (schemas.tables) of its main table: the catalog's columns
    rates: bool = True  # documents/tokens in and out: the funnel metadata and the acceptance-drift check apply
    check_specs: Callable[[str], list[AssetCheckSpec]] = lambda name: []
    check_results: Callable[[LoadedSpec, dict], list[AssetCheckResult]] = lambda loaded, manifest: []
    asset_checks: Callable[[AssetsDefinition], list] = field(default=lambda asset_def: [])
    # what the materialization does in the instance besides its events (swarm_design: adds the proxy partitions)
    after: Callable[[AssetExecutionContext, LoadedSpec, dict], None] | None = None


def stage_asset(stage: Stage, wiring: StageAsset, spec: Spec, partitions: PartitionsDefinition,
                upstream: dict[str, AssetsDefinition]) -> AssetsDefinition:
    """The asset of ``stage``: deps from its upstream stages (every partition of a per-source one,
    for a global stage), its code version, the standard checks, and ``wiring``'s metadata."""
    deps = [AssetDep(upstream[d], partition_mapping=AllPartitionMapping())
            if upstream[d].partitions_def is not None and not stage.per_source else AssetDep(upstream[d])
            for d in stage.deps(spec)]

    @asset(
        name=stage.name,
        partitions_def=partitions if stage.per_source else None,
        deps=deps,
        # a stage reading raw files is started by the source-file sensor; every later one follows its upstream
        automation_condition=FOLLOW_UPSTREAM if stage.upstream != () else None,
        group_name=wiring.group,
        kinds=set(wiring.kinds),
        code_version=stage.code_version(),
        tags={"corpusmix/stage": stage.name, "corpusmix/scope": stage.scope},
        owners=list(spec.owners),
        metadata={"dagster/column_schema": column_schema(wiring.table)} if wiring.table else None,
        check_specs=[*stage_check_specs(stage.name, rates=wiring.rates,
                                        partitions=partitions if stage.per_source else None),
                     *wiring.check_specs(stage.name)],
        description=wiring.description,
    )
    def _stage_asset(context: AssetExecutionContext, corpus: CorpusSpec) -> MaterializeResult:
        loaded = corpus.load()
        partition = context.partition_key if stage.per_source else None
        previous = previous_manifest(loaded, stage.name, partition)
        with progress_log(context) as progress:
            manifest, path = run_stage(stage.name, loaded, partition, progress=progress)
        # the runner hands back the manifest untouched when the partition was current: nothing was built
        reused = {"reused": manifest == previous}
        if wiring.after is not None:
            wiring.after(context, loaded, manifest)
        funnel = stage_metadata(manifest, path) if wiring.rates else {}
        if wiring.rates and stage.per_source:  # the page shows one partition: give it every source's line
            funnel["all_sources"] = sources_summary(loaded, stage.name)
        # the funnel (or the stage's own first entry, e.g. the schedule picture) leads the list
        return stage_result(loaded, manifest, path, funnel | wiring.metadata(loaded, manifest, path) | reused,
                            previous if wiring.rates else None, rates=wiring.rates,
                            extra_checks=tuple(wiring.check_results(loaded, manifest)))

    return _stage_asset
