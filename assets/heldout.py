"""The held-out split asset: one partition per source, after quality; train and held-out documents."""

from pathlib import Path

from dagster import MetadataValue

from corpusmix.core.spec import LoadedSpec

from .factory import StageAsset
from .metadata import count, pct


def _heldout_metadata(loaded: LoadedSpec, manifest: dict, path: Path) -> dict:
    c, d = manifest["counts"], manifest["details"]
    return {
        "heldout_documents": count(c["heldout_documents"]),
        "heldout_tokens": count(c["heldout_tokens"]),
        "heldout_token_share": pct(d["heldout_token_share"]),
        "target": MetadataValue.json(d["target"]),
        "declared": MetadataValue.json(d["declared"] or {"heldout": False}),
        "clusters_moved_whole": c["clusters_moved_whole"],
        "documents_with_duplicate_elsewhere": c["documents_with_duplicate_elsewhere"],
    } | ({"eval_set": d["eval_set"], "ngram_links": c["ngram_links"],
          "candidates_sharing_ngram_in_train": c["candidates_sharing_ngram_in_train"]} if d.get("eval_set") else {})


HELDOUT_SPLIT = StageAsset(
    description="Seeded split of the source's kept documents into train and held-out (sources[].heldout: a "
                "fraction or a token budget, with a minimum). Near-duplicate clusters (dedup's MinHash) never "
                "straddle it: a cluster reaching another source stays in train. Held-out text is tokenized into "
                "its own valid store and never enters the mixed shards. When the split is an eval set, no held-out "
                "document shares an n-gram with a train document either (links.parquet says which stayed, and why).",
    metadata=_heldout_metadata, table="heldout_split")
