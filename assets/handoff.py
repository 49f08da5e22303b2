"""The hand-off assets (global): the plan as Megatron blends and MosaicML streaming shards, for trainers
that are not ours."""

from pathlib import Path

from corpusmix.core.spec import LoadedSpec

from .factory import StageAsset
from .metadata import pct, text_table


def _blends_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    import orjson
    from dagster import MetadataValue

    out = {o["kind"]: o for o in manifest["outputs"]}
    table = orjson.loads((loaded.storage_root / out["blends"]["path"]).read_bytes())
    slices = text_table(["slice", "iterations", "samples", "weights"],
                        [[name, f"{r['start_iteration']}-{r['end_iteration']}", f"{r['samples']:,}",
                          ", ".join(f"{s} {pct(w)}" for s, w in r["weights"].items())]
                         for name, r in zip(table["slice_files"], table["slices"])])
    epochs = text_table(["source", "store tokens", "samples drawn", "samples built", "epochs", "plan epochs"],
                        [[s, f"{v['tokens']:,}", f"{v['samples_drawn']:,}", f"{v['samples_built']:,}",
                          f"{v['epochs']:.3f}", f"{v['plan_epochs']:.3f}"] for s, v in table["stores"].items()])
    return {"megatron_md": MetadataValue.path(str(loaded.storage_root / out["readme"]["path"])),
            "slices": slices, "epochs": epochs,
            "phase_transition_iterations": ", ".join(map(str, table["phase_transition_iterations"])) or "none",
            "train_iters": table["train_iters"], "worst_share_error": pct(manifest["details"]["worst_share_error"]),
            "version": manifest["version"], "manifest": MetadataValue.path(str(path))}


MEGATRON_BLENDS = StageAsset(
    description="The plan as Megatron follows it: per phase (or part of a phase whose shares move) a blend over "
                "the per-source train stores, the iterations where each starts, the epochs Megatron will make of "
                "each store (refused over the cap), checksums and megatron.md with the arguments.",
    group="mixture", kinds=frozenset({"json"}), metadata=_blends_metadata, rates=False)


def _mds_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    from dagster import MetadataValue

    d = manifest["details"]
    out = {o["kind"]: o for o in manifest["outputs"]}
    meta = {"mds_md": MetadataValue.path(str(loaded.storage_root / out["readme"]["path"])),
            "version": manifest["version"], "manifest": MetadataValue.path(str(path))}
    if not d["enabled"]:
        return meta | {"enabled": False}
    phases = text_table(["phase", "samples", "per source"],
                        [[p["phase"], f"{p['epoch_size']:,}", ", ".join(f"{s['source']} {s['choose']:,}"
                                                                         for s in p["streams"])] for p in d["phases"]])
    return meta | {"enabled": True, "phases": phases, "samples": manifest["counts"]["samples"],
                   "epochs": text_table(["source", "epochs read"], [[s, f"{e:.3f}"] for s, e in d["epochs"].items()])}


MDS_SHARDS = StageAsset(
    description="The plan as MosaicML streaming reads it: per phase one MDS dataset per source holding exactly "
                "that phase's packed samples (with their documents), and streams.json for StreamingDataset.",
    group="mixture", kinds=frozenset({"json"}), metadata=_mds_metadata, rates=False)
