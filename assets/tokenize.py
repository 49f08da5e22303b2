"""The tokenizer asset (global) and the tokenize asset (one partition per source)."""

from pathlib import Path

from dagster import MetadataValue

from corpusmix.core.spec import LoadedSpec

from .factory import StageAsset
from .metadata import count


def _tokenizer_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
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
    return md


def _tokenize_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    d, c = manifest["details"], manifest["counts"]
    return {
        "tokens_stored": count(c["tokens_stored"]),
        "valid_documents": count(c.get("valid_documents", 0)),  # the held-out store: evaluation only
        "valid_tokens_stored": count(c.get("valid_tokens_stored", 0)),
        "dtype": d["dtype"],
        "bytes_per_token": MetadataValue.float(d["bytes_per_token"] or 0.0),
        "estimate_relative_error": MetadataValue.float(d["estimate_check"]["relative_error"] or 0.0),
        "estimate_check": MetadataValue.json(d["estimate_check"]),
    }


TOKENIZER = StageAsset(
    description="The build's tokenizer.json, versioned: the spec's file (sha256 recorded) or a byte-level BPE "
                "trained on a seeded sample of every source's filtered documents.",
    kinds=frozenset({"python"}), metadata=_tokenizer_metadata, rates=False)
TOKENIZE = StageAsset(
    description="Exact tokenization: every kept document + EOS as one sequence of a Megatron indexed dataset "
                "(tokens.bin/.idx) and a doc_id -> sequence, token count table; the held-out documents the same way "
                "into valid.bin/.idx (never mixed into training shards).",
    kinds=frozenset({"python", "numpy"}), metadata=_tokenize_metadata, table="tokenized_documents")
