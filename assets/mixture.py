"""The mixture_plan and mixed_shards assets (global), and the check that the mixture is on target."""

from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetsDefinition,
    MetadataValue,
    asset_check,
)

from corpusmix.core.spec import LoadedSpec
from corpusmix.mixture.plan import describe_origin, load_plan
from corpusmix.mixture.shards import check_on_target
from corpusmix.ops.checks import epoch_cap_problems
from corpusmix.ops.report import build_report, schedule_svg, svg_markdown
from workflows.resources import CorpusSpec

from .factory import StageAsset
from .metadata import count, pct, text_table


def _plan_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    plan = load_plan(loaded)[0]  # as published, read back for the picture
    d = manifest["details"]
    per_source = text_table(
        ["source", "share", "allocated", "available", "epochs", "over cap", "synthetic needed"],
        [[s, pct(r["share"]), f"{r['allocated']:,.0f}", f"{r['available']:,}", f"{r['epochs']:.3f}",
          "yes" if r["over_cap"] else "no", f"{r['synthetic_tokens_needed']:,.0f}"]
         for s, r in d["per_source"].items()])
    sources = list(d["per_source"])
    quotas = text_table(["phase", "tokens", *sources],
                        [[ph["name"], f"{ph['end'] - ph['start']:,.0f}",
                          *(f"{ph['quotas'][s]:,.0f}" for s in sources)] for ph in d["phases"]])
    return {
        # first in the list: the UI shows markdown behind a click, so the picture leads
        "schedule": MetadataValue.md(svg_markdown(schedule_svg(plan), "mixture schedule")),
        "budget": count(manifest["counts"]["budget"]), "samples": count(manifest["counts"]["samples"]),
        "availability": d["availability"], "renormalized": d["renormalized"],
        "weights_origin": text_table(["weights", "origin"], [[o["field"], describe_origin(o).split(": ", 1)[1]]
                                                              for o in d["weights_origin"]]),
        "per_source": per_source, "phase_quotas": quotas, "version": manifest["version"],
        "manifest": MetadataValue.path(str(path))}


def _epoch_cap_spec(name: str) -> list[AssetCheckSpec]:
    return [AssetCheckSpec("epoch_cap", asset=AssetKey(name), blocking=True,
                           description="No source is read more than mixture.max_epochs times.")]


def _epoch_cap(loaded: LoadedSpec, manifest: dict) -> list[AssetCheckResult]:
    over = epoch_cap_problems(load_plan(loaded)[0])
    return [AssetCheckResult(check_name="epoch_cap", passed=not over, severity=AssetCheckSeverity.ERROR,
                             metadata={"over_cap": MetadataValue.json(over)})]


def _shards_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    rows = [[ph["name"], s, f"{r['target']:,.0f}", f"{r['realised']:,}", f"{r['deviation']:+,.0f}",
             f"{r['tolerance']:,.0f}", "ok" if r["ok"] else "OFF"]
            for ph in manifest["details"]["phases"] for s, r in ph["sources"].items()]
    shard_dir = loaded.storage_root / manifest["outputs"][0]["path"].rsplit("/", 1)[0]
    return {
        "realised_vs_target": text_table(["phase", "source", "target", "realised", "deviation", "tolerance",
                                          "within"], rows),
        "shard_dir": MetadataValue.path(str(shard_dir)),  # what a trainer points at (TokenStream.from_dir)
        "tokens": count(manifest["counts"]["tokens_out"]), "shards": manifest["counts"]["shards"],
        "samples": count(manifest["counts"]["samples"]), "seq_len": manifest["details"]["seq_len"],
        "dtype": manifest["details"]["dtype"],
        "tokens_per_s": f"{manifest['timing'].get('tokens_per_s', 0.0) / 1e6:.1f} M",
        "build_report": MetadataValue.md(build_report(loaded)),
        "version": manifest["version"], "manifest": MetadataValue.path(str(path))}


def _on_target_check(shards: AssetsDefinition) -> list:
    @asset_check(asset=shards, name="mixture_on_target", blocking=True,
                 description="Realised tokens per phase and source, recounted from the lineage, within "
                             "max(0.5 %, one document) of the plan.")
    def mixture_on_target(corpus: CorpusSpec) -> AssetCheckResult:
        off, worst = check_on_target(corpus.load())  # recounted from the lineage, not read from the manifest
        return AssetCheckResult(passed=not off, severity=AssetCheckSeverity.ERROR,
                                metadata={"off_target": MetadataValue.json(off),
                                          "worst": f"{worst['phase']}/{worst['source']}: {worst['deviation']:+,.0f} "
                                                   f"tokens, {worst['of_tolerance']:.0%} of its tolerance"
                                                   if worst else "no quota"})

    return [mixture_on_target]


MIXTURE_PLAN = StageAsset(
    description="The schedule integrated over the token budget on exact token counts: per source allocated "
                "and available tokens, epochs, over-cap flag, synthetic tokens needed; per phase x source quotas.",
    group="mixture", kinds=frozenset({"python"}), metadata=_plan_metadata, rates=False,
    check_specs=_epoch_cap_spec, check_results=_epoch_cap)
MIXED_SHARDS = StageAsset(
    description="The training stream, phase after phase, in exact quotas: Megatron .bin/.idx shards of a fixed "
                "token count, a manifest per shard and a lineage table (sample -> source, doc_id, epoch, span).",
    group="mixture", kinds=frozenset({"numpy"}), metadata=_shards_metadata, rates=False,
    asset_checks=_on_target_check, table="lineage")
