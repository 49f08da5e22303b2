"""The tokenizer asset (global) and the tokenize asset (one partition per source)."""

from dagster import (
    AllPartitionMapping, AssetDep, AssetExecutionContext, AssetsDefinition, MaterializeResult,
    MetadataValue, asset,
)

from corpusmix.tokenize import tokenize_source
from corpusmix.tokenizer import tokenizer_stage
from workflows.resources import CorpusSpec

from .checks import previous_manifest, stage_check_specs, stage_result
from .metadata import FOLLOW_UPSTREAM, stage_metadata
from .progress import progress_log


def build_tokenizer_asset(quality: AssetsDefinition, trained: bool):
    """A trained tokenizer reads every source's filtered documents; a tokenizer file depends on nothing."""

    @asset(
        name="tokenizer",
        deps=[AssetDep(quality, partition_mapping=AllPartitionMapping())] if trained else [],
        automation_condition=FOLLOW_UPSTREAM,
        group_name="corpus",
        kinds={"python"},
        check_specs=stage_check_specs("tokenizer", rates=False),
        description="The build's tokenizer.json, versioned: the spec's file (sha256 recorded) or a byte-level BPE "
                    "trained on a seeded sample of every source's filtered documents.",
    )
    def tokenizer(context: AssetExecutionContext, corpus: CorpusSpec) -> MaterializeResult:
        loaded = corpus.load()
        with progress_log(context) as progress:
            manifest, path = tokenizer_stage(loaded, progress=progress)
        d = manifest["details"]
        md = {
            "origin": d["origin"],
            "vocab_size": d["vocab_size"],
            "eos": f"{d['eos_token']} = {d['eos_id']}",
            "dtype": d["dtype"],
            "split_long_documents": d["split_long_documents"],
            "sha256": manifest["outputs"][0]["sha256"],
            "version": manifest["version"],
            "manifest": MetadataValue.path(str(path)),
        }
        if "sample" in d:
            md["training_sample"] = MetadataValue.json(d["sample"])
        return stage_result(loaded, manifest, path, md, rates=False)

    return tokenizer


def build_tokenize_asset(quality: AssetsDefinition, tokenizer: AssetsDefinition):
    @asset(
        name="tokenize",
        partitions_def=quality.partitions_def,
        deps=[quality, AssetDep(tokenizer)],
        automation_condition=FOLLOW_UPSTREAM,
        group_name="corpus",
        kinds={"python", "numpy"},
        check_specs=stage_check_specs("tokenize"),
        description="Exact tokenization: every kept document + EOS as one sequence of a Megatron indexed dataset "
                    "(tokens.bin/.idx) and a doc_id -> sequence, token count table.",
    )
    def tokenize(context: AssetExecutionContext, corpus: CorpusSpec) -> MaterializeResult:
        loaded = corpus.load()
        previous = previous_manifest(loaded, "tokenize", context.partition_key)
        with progress_log(context) as progress:
            manifest, path = tokenize_source(loaded, context.partition_key, progress=progress)
        d, c = manifest["details"], manifest["counts"]
        md = stage_metadata(manifest, path)
        md |= {
            "tokens_stored": c["tokens_stored"],
            "dtype": d["dtype"],
            "bytes_per_token": MetadataValue.float(d["bytes_per_token"] or 0.0),
            "estimate_relative_error": MetadataValue.float(d["estimate_check"]["relative_error"] or 0.0),
            "estimate_check": MetadataValue.json(d["estimate_check"]),
        }
        return stage_result(loaded, manifest, path, md, previous)

    return tokenize
