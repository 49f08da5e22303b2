"""The mixing assets (global): the swarm of proxy mixtures, the laws fitted on proxy runs (with the
predicted-vs-observed picture), and the proposals against the baselines."""

from pathlib import Path

import orjson
import pyarrow.parquet as pq
from dagster import MetadataValue

from corpusmix.core.manifest import manifest_path, output_files, read_manifest
from corpusmix.core.spec import LoadedSpec
from corpusmix.ops.report import scatter_svg, svg_markdown

from .factory import StageAsset
from .metadata import pct, text_table

SHOWN_RUNS = 200  # rows of the swarm shown in the UI; the table holds them all


def _swarm_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    d = manifest["details"]
    table = pq.read_table(output_files(loaded, manifest)["swarm"]).to_pylist()
    sources = list(loaded.source_names)
    runs = text_table(["run", *sources], [[r["index"], *(pct(r[f"train_{s}"]) for s in sources)]
                                          for r in table[:SHOWN_RUNS]])
    spread = text_table(["source", "natural share", "cap", "min", "mean", "max", "runs without it", "runs at cap"],
                        [[s, pct(d["prior"][s]), pct(d["caps"][s]), pct(v["min"]), pct(v["mean"]), pct(v["max"]),
                          v["runs_without"], v["at_cap"]] for s, v in d["spread"].items()])
    return {"spread": spread, "runs": manifest["counts"]["runs"],
            "mixtures" if len(table) <= SHOWN_RUNS else f"mixtures_first_{SHOWN_RUNS}": runs,
            "sources_per_run": f"{d['mean_sources_per_run']:.2f}",
            "swarm_table": MetadataValue.path(str(output_files(loaded, manifest)["swarm"])),
            "version": manifest["version"], "manifest": MetadataValue.path(str(path))}


def _add_proxy_partitions(context, loaded: LoadedSpec, manifest: dict) -> None:
    from .proxies import add_swarm_partitions

    add_swarm_partitions(context, loaded, manifest)


SWARM_DESIGN = StageAsset(
    description="Candidate mixtures for proxy runs: Dirichlet draws around the tempered natural token shares, "
                "sparse and spread, each held under the repetition caps of the target budget (swarm.parquet); "
                "each becomes a partition of proxy_run.",
    group="mixing", kinds=frozenset({"parquet"}), metadata=_swarm_metadata, rates=False, after=_add_proxy_partitions)


def _fit_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    d = manifest["details"]
    meta = {"version": manifest["version"], "manifest": MetadataValue.path(str(path))}
    cv = d["cross_validated"]
    runs = pq.read_table(output_files(loaded, manifest)["runs"], columns=["objective", "predicted_out_of_fold"])
    picture = scatter_svg(runs["objective"].to_numpy(), runs["predicted_out_of_fold"].to_numpy(),
                          f"objective of {manifest['counts']['runs']} proxy runs, out of fold: rho {cv['objective']:.3f}")
    return {"predicted_vs_observed": MetadataValue.md(svg_markdown(picture, "predicted vs observed")),
            "regressor": d["regressor"], "runs": manifest["counts"]["runs"],
            "cv_objective_rho": f"{cv['objective']:.3f}", "cv_objective_mae": f"{cv['objective_mae']:.4f}",
            "per_target": text_table(["target", "objective weight", "cross-validated rho"],
                                     [[t, f"{d['objective'][t]:.3f}", f"{r:.3f}"]
                                      for t, r in zip(d["targets"], cv["per_target"])])} | meta


MIXING_FIT = StageAsset(
    description="Mixing laws fitted on proxy-run results (mixing.runs), one per target domain, with their "
                "cross-validated quality and every run's predicted vs observed objective.",
    group="mixing", kinds=frozenset({"json"}), metadata=_fit_metadata, rates=False)


def _proposal_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    meta = {"version": manifest["version"], "manifest": MetadataValue.path(str(path))}
    out = output_files(loaded, manifest)
    result = orjson.loads(out["proposals"].read_bytes())
    natural = result["baselines"]["natural"]["objective"]
    rows = sorted([(f"proposal {n} ({r['description']})", r) for n, r in result["proposals"].items()]
                  + [(f"baseline: {n}", r) for n, r in result["baselines"].items()], key=lambda kv: kv[1]["objective"])
    table = text_table(["mixture", "predicted objective", "vs natural", "weights", "caps binding"],
                       [[label, f"{r['objective']:.4f}", f"{r['objective'] - natural:+.4f}",
                         ", ".join(f"{s} {pct(w)}" for s, w in r["weights"].items()),
                         ", ".join(r["binding_caps"]) or "-"] for label, r in rows])
    fit = read_manifest(manifest_path(loaded.manifest_root, "mixing_fit", None))
    runs = pq.read_table(output_files(loaded, fit)["runs"], columns=["objective", "predicted_out_of_fold"])
    marks = {f"{n} (predicted)": r["objective"] for n, r in result["proposals"].items()} | {"natural": natural}
    picture = scatter_svg(runs["objective"].to_numpy(), runs["predicted_out_of_fold"].to_numpy(),
                          "proxy runs and where the proposals are predicted to land", marks)
    return {"proposals_vs_baselines": table,
            "picture": MetadataValue.md(svg_markdown(picture, "proposals against the proxy runs")), "fit": f"{result['fit']['regressor']} on {result['fit']['runs']} runs, "
            f"cross-validated rho {result['fit']['cv_objective_rho']:.3f}",
            "caps": text_table(["source", "natural share", "cap"],
                               [[s, pct(result["prior"][s]), pct(c)] for s, c in result["caps"].items()]),
            "proposals_md": MetadataValue.path(str(out["readme"]))} | meta


MIXING_PROPOSAL = StageAsset(
    description="Mixtures proposed by the fitted laws under the repetition caps (the spec's mixing.proposals), "
                "scored beside natural, uniform, temperature 0.5, UniMax and the swarm's best run; a schedule "
                "uses one with weights: {proposal: NAME}.",
    group="mixing", kinds=frozenset({"json"}), metadata=_proposal_metadata, rates=False)
