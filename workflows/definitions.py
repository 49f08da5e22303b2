"""The code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here.

The spec is chosen by ``CORPUSMIX_SPEC`` (default: the demo spec). Partitions
are the spec's source names. Definitions load without touching the data (the
globs are checked when an asset runs), so the UI opens even before the demo
data is harvested.
"""

import os
from pathlib import Path

from dagster import AssetSelection, Definitions, StaticPartitionsDefinition, define_asset_job

from assets.dedup import build_cross_source_asset, build_dedup_asset
from assets.ingest import build_ingest_asset
from assets.mixture import build_plan_asset, build_shards_asset
from assets.quality import build_quality_asset
from assets.tokenize import build_tokenize_asset, build_tokenizer_asset
from corpusmix.spec import load_spec

from .automation import build_automation_sensor, build_rebuild_schedule, build_source_sensor
from .resources import CorpusSpec

SPEC_ENV = "CORPUSMIX_SPEC"
DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "specs" / "demo.yaml"


def spec_path_from_env() -> Path:
    return Path(os.environ.get(SPEC_ENV) or DEFAULT_SPEC).resolve()


def build_definitions(spec_path: str | os.PathLike) -> Definitions:
    loaded = load_spec(spec_path, check_files=False)
    sources = StaticPartitionsDefinition(loaded.source_names)
    ingest = build_ingest_asset(sources)
    dedup = build_dedup_asset(ingest)
    cross = build_cross_source_asset(dedup)
    quality = build_quality_asset(dedup, cross)
    tokenizer = build_tokenizer_asset(quality, trained=loaded.spec.tokenizer.train is not None)
    tokenize = build_tokenize_asset(quality, tokenizer)
    plan = build_plan_asset(tokenize)
    shards, on_target = build_shards_asset(plan, tokenize)
    jobs = [
        define_asset_job("ingest_job", selection=[ingest], description="Ingest one source partition."),
        define_asset_job("source_job", selection=[ingest, dedup],
                         description="Every per-source stage of one source partition, in order."),
        define_asset_job("corpus_job", selection=[cross],
                         description="The global stages, over every source (run after source_job)."),
        define_asset_job("quality_job", selection=[quality],
                         description="Per-source stages after the global ones (run after corpus_job)."),
        define_asset_job("tokenizer_job", selection=[tokenizer],
                         description="The build's tokenizer (trained ones need every source's quality output)."),
        define_asset_job("tokenize_job", selection=[tokenize],
                         description="Tokenize one source partition (run after tokenizer_job)."),
        define_asset_job("quality_tokenize_job", selection=[quality, tokenize],
                         description="Quality, then tokenize, of one source partition (run after corpus_job and "
                                     "tokenizer_job; for a tokenizer from a file, which needs no source)."),
        define_asset_job("mixture_job", selection=AssetSelection.assets(plan, shards),
                         description="Plan the mixture and write the mixed shards (run after every tokenize)."),
    ]
    source_job = jobs[1]
    schedule = build_rebuild_schedule(str(loaded.path), source_job, loaded)
    return Definitions(
        assets=[ingest, dedup, cross, quality, tokenizer, tokenize, plan, shards],
        asset_checks=[on_target],
        jobs=jobs,
        sensors=[build_source_sensor(str(loaded.path), source_job, loaded), build_automation_sensor(loaded)],
        schedules=[schedule] if schedule else [],
        resources={"corpus": CorpusSpec(spec_path=str(loaded.path))},
    )


defs = build_definitions(spec_path_from_env())
