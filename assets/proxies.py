"""Proxy runs as Dagster assets: one dynamic partition per mixture of the swarm design, each a small
model trained on that mixture at the proxy budget (``corpusmix.proxies``), its held-out loss per source
added to the runs tables the fit reads. Not a stage of ``corpusmix build``: a swarm is trained on
purpose (from the UI, or ``corpusmix proxies``), not on every rebuild."""

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from corpusmix.core.spec import LoadedSpec, Spec
from workflows.resources import CorpusSpec

from .metadata import lines_svg, text_table
from .progress import progress_log

PROXY_PARTITIONS = DynamicPartitionsDefinition(name="proxy_runs")


def add_swarm_partitions(context: AssetExecutionContext, loaded: LoadedSpec, manifest: dict) -> None:
    """After swarm_design: one proxy_run partition per mixture (new ones only; none is removed, so a
    trained run's materializations stay visible when the swarm changes)."""
    from corpusmix.proxies.runs import swarm_runs

    names = [name for name, _ in swarm_runs(loaded)]
    have = set(context.instance.get_dynamic_partitions(PROXY_PARTITIONS.name))
    new = [n for n in names if n not in have]
    if new:
        context.instance.add_dynamic_partitions(PROXY_PARTITIONS.name, new)
        context.log.info(f"{len(new)} proxy_run partition(s) added: {new[0]} ... {new[-1]}")


def proxy_run_asset(spec: Spec, swarm: AssetsDefinition, tokenize: AssetsDefinition) -> AssetsDefinition:
    @asset(name="proxy_run", partitions_def=PROXY_PARTITIONS, group_name="mixing", kinds={"pytorch"},
           deps=[AssetDep(swarm), AssetDep(tokenize, partition_mapping=AllPartitionMapping())],
           owners=list(spec.owners), tags={"corpusmix/stage": "proxy_run"},
           description="One proxy model trained on one swarm mixture at the proxy budget (mixing.proxy), each "
                       "source subsampled to repeat as in the target run; held-out loss per source, into "
                       "proxy_runs/mixtures.parquet and losses.parquet. Resumes from its checkpoint.")
    def proxy_run(context: AssetExecutionContext, corpus: CorpusSpec) -> MaterializeResult:
        from corpusmix.ops.report import svg_markdown
        from corpusmix.proxies.runs import collect, run_dir, run_proxy, swarm_runs, train_config

        loaded = corpus.load()
        runs = dict(swarm_runs(loaded))
        name = context.partition_key
        if name not in runs:
            raise ValueError(f"{name} is not a mixture of the current swarm design ({len(runs)} runs): "
                             "materialize swarm_design, or pick a current partition")
        cfg, budget = train_config(loaded)
        with progress_log(context) as progress:
            result = run_proxy(loaded, name, runs[name], budget, cfg, progress)
        mixtures, losses, n = collect(loaded)
        return MaterializeResult(metadata={
            "heldout_loss": text_table(["source", "weight", "nats per token", "bits per token", "tokens evaluated"],
                                       [[s, f"{runs[name][s]:.4f}", f"{r['loss_nats']:.4f}",
                                         f"{r['bits_per_token']:.4f}", f"{r['tokens']:,}"]
                                        for s, r in result["eval"].items() if r["loss_nats"] is not None]),
            "curve": MetadataValue.md(svg_markdown(lines_svg(
                {"loss": result["curve"]}, f"step {result['curve'][0][0]}-{result['curve'][-1][0]}: training loss "
                "(nats per token)", width=480, height=200), "training loss")),
            "final_train_loss": f"{result['final_train_loss']:.4f}",
            "tokens_trained": f"{result['tokens_trained']:,}", "steps": result["steps"],
            "elapsed_s": f"{result['elapsed_s']:.1f}", "resumed_from": result["resumed_from"] or 0,
            "run_dir": MetadataValue.path(str(run_dir(loaded, name))),
            "runs_tables": f"{n} finished run(s): {mixtures}, {losses}"})

    return proxy_run
