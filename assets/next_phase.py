"""The next-phase proposal as a Dagster asset: per-source loss curves from the trainer's monitor log, each
source's verdict with its reason, and the weights to accept (``corpusmix.mixing.next_phase``). Not a stage
of ``corpusmix build``: the next-phase sensor materializes it when the run reaches a restart point."""

from dagster import AssetDep, AssetExecutionContext, AssetsDefinition, MaterializeResult, MetadataValue, asset

from corpusmix.core.spec import Spec
from workflows.resources import CorpusSpec

from .metadata import fmt, lines_svg, text_table


def loss_curves_svg(records: list[dict], sources: list[str], boundaries: list[float]) -> str:
    """Each source's loss EMA against tokens seen, with the phase boundaries as dashed lines."""
    series = {s: [(r["tokens"], r["sources"][s]["ema"]) for r in records
                  if s in r["sources"] and r["sources"][s]["ema"] is not None] for s in sources}
    seen = [x for line in series.values() for x, _ in line]
    caption = (f"tokens seen {min(seen):,}-{max(seen):,}: loss EMA per source (nats per token); "
               "dashed: phase boundaries") if seen else ""
    return lines_svg(series, caption, boundaries)


def next_phase_asset(spec: Spec, plan: AssetsDefinition) -> AssetsDefinition:
    @asset(name="next_phase_proposal", group_name="mixing", kinds={"python"}, deps=[AssetDep(plan)],
           owners=list(spec.owners), tags={"corpusmix/stage": "next_phase_proposal"},
           description="The next phase's weights proposed from the training run's per-source loss (monitor.log) "
                       "at a restart point: each source's verdict (MixMonitor thresholds or DoReMi excess loss) "
                       "with its reason, clipped to the repetition caps. Accept it by naming it as the phase's "
                       "weights; the build then re-plans that phase and keeps the trained phases' shards.")
    def next_phase_proposal(context: AssetExecutionContext, corpus: CorpusSpec) -> MaterializeResult:
        from corpusmix.mixing.next_phase import proposal_path, propose, read_records, render
        from corpusmix.mixture.plan import load_plan
        from corpusmix.ops.report import svg_markdown

        loaded = corpus.load()
        body = propose(loaded)
        context.log.info(render(body))
        plan = load_plan(loaded)[0]
        records = read_records(loaded.resolve(loaded.spec.monitor.log))
        curves = loss_curves_svg(records, plan["sources"], [ph["start"] for ph in plan["phases"][1:]])
        return MaterializeResult(metadata={
            "recommendations": text_table(
                ["source", "action", "trained", "planned", "proposed", "epochs", "reason"],
                [[r["source"], r["action"], f"{body['trained'][r['source']]:.4f}", f"{r['planned']:.4f}",
                  f"{r['weight']:.4f}", fmt(body["epochs_predicted"][r["source"]]), r["reason"]]
                 for r in body["recommendations"]]),
            "loss_curves": MetadataValue.md(svg_markdown(curves, "per-source loss") if curves else "no losses yet"),
            "accept": MetadataValue.md(f"`{body['accept']}`"),
            "proposal": body["name"], "phase": body["phase"], "restart_tokens": int(body["restart_tokens"]),
            "policy": body["policy"], "log_records": body["log"]["records"],
            "attribution": "exact (per token)" if body["log"]["exact"] else "ESTIMATED from per-sample losses",
            "binding_caps": ", ".join(body["binding_caps"]) or "none",
            "keeps_trained_shards": f"{body['keeps_trained_shards']}: {body['keeps_trained_shards_why']}",
            "path": MetadataValue.path(str(proposal_path(loaded, body["id"])))})

    return next_phase_proposal
