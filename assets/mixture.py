"""The mixture_plan and mixed_shards assets (global), and the check that the mixture is on target."""

from dagster import (
    AllPartitionMapping, AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetDep, AssetKey, AssetExecutionContext, AssetsDefinition,
    MaterializeResult, MetadataValue, asset, asset_check,
)

from corpusmix.mix import STAGE as MIX_STAGE
from corpusmix.mix import check_on_target, mix_stage
from corpusmix.checks import epoch_cap_problems
from corpusmix.plan import load_plan, plan_stage
from corpusmix.report import build_report, schedule_svg, svg_markdown
from workflows.resources import CorpusSpec

from .checks import stage_check_specs, stage_result
from .metadata import FOLLOW_UPSTREAM, markdown_table
from .progress import progress_log


def build_plan_asset(tokenize: AssetsDefinition):
    @asset(
        name="mixture_plan",
        deps=[AssetDep(tokenize, partition_mapping=AllPartitionMapping())],
        automation_condition=FOLLOW_UPSTREAM,
        group_name="mixture",
        kinds={"python"},
        check_specs=[*stage_check_specs("mixture_plan", rates=False),
                     AssetCheckSpec("epoch_cap", asset=AssetKey("mixture_plan"), blocking=True,
                                    description="No source is read more than mixture.max_epochs times.")],
        description="The schedule integrated over the token budget on exact token counts: per source allocated "
                    "and available tokens, epochs, over-cap flag, synthetic tokens needed; per phase x source quotas.",
    )
    def mixture_plan(context: AssetExecutionContext, corpus: CorpusSpec) -> MaterializeResult:
        loaded = corpus.load()
        with progress_log(context) as progress:
            manifest, path = plan_stage(loaded, progress=progress)
        plan = load_plan(loaded)[0]  # as published, read back once for the picture and the epoch cap
        d = manifest["details"]
        per_source = markdown_table(
            ["source", "share", "allocated", "available", "epochs", "over cap", "synthetic needed"],
            [[s, f"{r['share']:.4f}", f"{r['allocated']:,.0f}", f"{r['available']:,}", f"{r['epochs']:.3f}",
              "yes" if r["over_cap"] else "no", f"{r['synthetic_tokens_needed']:,.0f}"]
             for s, r in d["per_source"].items()], empty="no sources")
        sources = list(d["per_source"])
        quotas = markdown_table(["phase", "tokens", *sources],
                                [[ph["name"], f"{ph['end'] - ph['start']:,.0f}",
                                  *(f"{ph['quotas'][s]:,.0f}" for s in sources)] for ph in d["phases"]],
                                empty="no phases")
        return stage_result(loaded, manifest, path, {
            "schedule": MetadataValue.md(svg_markdown(schedule_svg(plan), "mixture schedule")),
            "budget": manifest["counts"]["budget"], "samples": manifest["counts"]["samples"],
            "availability": d["availability"], "renormalized": d["renormalized"],
            "per_source": per_source, "phase_quotas": quotas, "version": manifest["version"],
            "manifest": MetadataValue.path(str(path))}, rates=False, extra_checks=(_epoch_cap(plan),))

    return mixture_plan


def _epoch_cap(plan: dict) -> AssetCheckResult:
    over = epoch_cap_problems(plan)
    return AssetCheckResult(check_name="epoch_cap", passed=not over, severity=AssetCheckSeverity.ERROR,
                            metadata={"over_cap": MetadataValue.json(over)})


def build_shards_asset(plan: AssetsDefinition, tokenize: AssetsDefinition):
    @asset(
        name=MIX_STAGE,
        deps=[plan, AssetDep(tokenize, partition_mapping=AllPartitionMapping())],
        automation_condition=FOLLOW_UPSTREAM,
        group_name="mixture",
        kinds={"numpy"},
        check_specs=stage_check_specs(MIX_STAGE, rates=False),
        description="The training stream, phase after phase, in exact quotas: Megatron .bin/.idx shards of a fixed "
                    "token count, a manifest per shard and a lineage table (sample -> source, doc_id, epoch, span).",
    )
    def mixed_shards(context: AssetExecutionContext, corpus: CorpusSpec) -> MaterializeResult:
        loaded = corpus.load()
        with progress_log(context) as progress:
            manifest, path = mix_stage(loaded, progress=progress)
        rows = [[ph["name"], s, f"{r['target']:,.0f}", f"{r['realised']:,}", f"{r['deviation']:+,.0f}",
                 f"{r['tolerance']:,.0f}", "ok" if r["ok"] else "OFF"]
                for ph in manifest["details"]["phases"] for s, r in ph["sources"].items()]
        return stage_result(loaded, manifest, path, {
            "tokens": manifest["counts"]["tokens_out"], "shards": manifest["counts"]["shards"],
            "samples": manifest["counts"]["samples"], "dtype": manifest["details"]["dtype"],
            "realised_vs_target": markdown_table(["phase", "source", "target", "realised", "deviation", "tolerance",
                                                  ""], rows, empty="no phases"),
            "tokens_per_s": MetadataValue.float(manifest["timing"]["tokens_per_s"]),
            "build_report": MetadataValue.md(build_report(loaded)),
            "version": manifest["version"], "manifest": MetadataValue.path(str(path))}, rates=False)

    @asset_check(asset=mixed_shards, name="mixture_on_target", blocking=True,
                 description="Realised tokens per phase and source, recounted from the lineage, within max(0.5 %, one document) of the plan.")
    def mixture_on_target(corpus: CorpusSpec) -> AssetCheckResult:
        off = check_on_target(corpus.load())  # recounted from the lineage files, not read from the manifest
        return AssetCheckResult(passed=not off, severity=AssetCheckSeverity.ERROR,
                                metadata={"off_target": MetadataValue.json(off)})

    return mixed_shards, mixture_on_target
