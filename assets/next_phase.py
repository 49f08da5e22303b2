"""The next-phase proposal as a Dagster asset: per-source loss curves from the trainer's monitor log, each
source's verdict with its reason, and the weights to accept (``corpusmix.mixing.next_phase``). Not a stage
of ``corpusmix build``: the next-phase sensor materializes it when the run reaches a restart point."""

from dagster import AssetDep, AssetExecutionContext, AssetsDefinition, MaterializeResult, MetadataValue, asset

from corpusmix.core.spec import Spec
from workflows.resources import CorpusSpec

from .metadata import fmt, text_table


def loss_curves_svg(records: list[dict], sources: list[str], boundaries: list[float], width: int = 560,
                    height: int = 240) -> str:
    """Each source's loss EMA against tokens seen, with the phase boundaries as dashed lines."""
    from corpusmix.ops.report import PALETTE

    series = {s: [(r["tokens"], r["sources"][s]["ema"]) for r in records
                  if s in r["sources"] and r["sources"][s]["ema"] is not None] for s in sources}
    points = [p for line in series.values() for p in line]
    if not points:
        return ""
    x0 = min(p[0] for p in points)
    x1 = max(max(p[0] for p in points), x0 + 1)
    lo, hi = min(p[1] for p in points), max(p[1] for p in points)
    span, pad, right = (hi - lo) or 1.0, 44, 110
    px = lambda x: pad + (width - pad - right) * (x - x0) / (x1 - x0)  # noqa: E731
    py = lambda v: 10 + (height - 40) * (1 - (v - lo) / span)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             'font-size="11"><rect width="100%" height="100%" fill="white"/>']
    for b in boundaries:
        if x0 < b <= x1:
            parts.append(f'<line x1="{px(b):.1f}" x2="{px(b):.1f}" y1="10" y2="{height - 30}" stroke="#999" '
                         'stroke-dasharray="4 3"/>')
    for i, (s, line) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        if line:
            pts = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in line)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>')
        parts.append(f'<text x="{width - right + 8}" y="{20 + 14 * i}" fill="{colour}">{s}</text>')
    parts += [f'<text x="{pad - 4}" y="{py(hi) + 4:.1f}" text-anchor="end">{hi:.2f}</text>',
              f'<text x="{pad - 4}" y="{py(lo) + 4:.1f}" text-anchor="end">{lo:.2f}</text>',
              f'<text x="{(width - right) / 2:.0f}" y="{height - 8}" text-anchor="middle">tokens seen {x0:,}-{x1:,}: '
              'loss EMA per source (nats per token); dashed: phase boundaries</text></svg>']
    return "".join(parts)


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
