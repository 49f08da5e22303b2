"""The eval-set index (global) and the decontaminate asset (one partition per source)."""

from pathlib import Path

from dagster import MetadataValue

from corpusmix.core.spec import LoadedSpec
from corpusmix.stages.decontaminate import contamination_summary

from .factory import StageAsset
from .metadata import count, text_table


def _index_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    c, d = manifest["counts"], manifest["details"]
    return {
        "items_per_set": text_table(["eval set", "items"], [[k, count(v)] for k, v in d["items_per_set"].items()]),
        "distinct_ngrams": count(c["distinct_ngrams"]), "ngram": d["ngram"],
        "too_common_ngrams": count(c["too_common_ngrams"]), "items_too_short": count(c["items_too_short"]),
        "index_bytes": count(c["index_bytes"]),
        "version": manifest["version"], "manifest": MetadataValue.path(str(path)),
    }


def _decontaminate_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    audit = manifest["details"]["audit"]
    return {
        "contamination": text_table(["source", "eval set", "documents dropped", "documents cut", "items found"],
                                    [[r["source"], r["eval_set"], count(r["documents_dropped"]),
                                      count(r["documents_cut"]), count(r["items_found"])] if r["built"] else
                                     [r["source"], r["eval_set"], "not built", "", ""]
                                     for r in contamination_summary(loaded)]),
        "policy": manifest["details"]["policy"],
        "audit_samples": text_table(["doc_id", "eval set", "item", "offset", "n-grams", "action", "first n-gram"],
                                    [[a["doc_id"], a["eval_set"], a["item_id"], a["offset"], a["ngrams_matched"],
                                      a["action"], a["ngram"]] for a in audit]),
    }


EVAL_INDEX = StageAsset(
    description="The eval sets' items (local files, or a source's records by field value) and the exact set of "
                "their normalised word n-grams that decontamination looks up.",
    kinds=frozenset({"parquet", "python"}), metadata=_index_metadata, rates=False, table="eval_items")
DECONTAMINATE = StageAsset(
    description="Training documents sharing a normalised word n-gram with an eval item: dropped, or the matched "
                "spans cut out (spec decontamination.policy); every match recorded with its eval item and offset.",
    metadata=_decontaminate_metadata, table="ingest_documents")
