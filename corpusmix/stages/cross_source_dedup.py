"""Cross-source dedup: a duplicate enters the mixture once, from the source ranked first (spec order).

This is a global stage over the per-source dedup outputs rather than a change
to them: each source's partition stays independent (editing one source does
not rebuild the others' dedup), and the result is a small drop list,
``cross_source_duplicates.parquet``, that the quality stage applies
(``quality.cross_source_drops``). Exact matching always (if ``cross_source.exact``);
MinHash near matching across sources on request (``cross_source.near``), with
the same machinery as dedup (``dedup.find_duplicates``).
"""

from __future__ import annotations

import shutil
from collections import Counter

from corpusmix.core.manifest import input_refs, output_ref
from corpusmix.core.parquet_io import write_parquet
from corpusmix.core.spec import LoadedSpec
from corpusmix.core.stage import Built, Stage, StageRun
from corpusmix.stages.dedup import SCRATCH, DedupResult, audit_pairs, duplicates_table, empty_index, find_duplicates

NAME = "cross_source_dedup"


def cross_source_config(loaded: LoadedSpec, partition: None) -> dict:
    """Its settings and the source order (the ranking)."""
    cfg = loaded.spec.dedup
    return {"dedup": cfg.cross_source.model_dump(mode="json") | {"normalize": cfg.normalize.model_dump(mode="json"),
                                                                 "near": cfg.near.model_dump(mode="json")},
            "sources": loaded.source_names}


def build_cross_source_dedup(ctx: StageRun) -> Built:
    loaded, cfg = ctx.loaded, ctx.loaded.spec.dedup
    ups, parts, part_source = [], [], []
    for name in loaded.source_names:
        up_path, up = ctx.upstream("dedup", name)
        ups.append((name, up_path, up))
        for o in up["outputs"]:
            if o["kind"] == "documents":
                parts.append(loaded.storage_root / o["path"])
                part_source += [name] * o["rows"]
    cross = cfg.model_copy(update={"representative": "first", "exact": cfg.cross_source.exact,
                                   "near": cfg.near.model_copy(update={"enabled": cfg.cross_source.near})})
    with ctx.executor(len(parts)) as executor:
        if cross.exact or cross.near.enabled:
            idx, res = find_duplicates(parts, cross, ctx.say, executor, ctx.staging / SCRATCH)
        else:
            idx, res = empty_index(), DedupResult({}, Counter(), 0, 0, 0)
        audit = audit_pairs(parts, idx, res, cfg.audit_pairs, executor)
    shutil.rmtree(ctx.staging / SCRATCH, ignore_errors=True)
    out = write_parquet(duplicates_table(idx, res, part_source.__getitem__),
                        ctx.staging / "cross_source_duplicates.parquet")
    rows = sorted(res.removed.items())
    pairs = Counter((part_source[p], part_source[r[0]]) for p, r in rows)
    n_in, bytes_in = sum(u["counts"]["documents_out"] for _, _, u in ups), sum(u["counts"]["bytes_out"] for _, _, u in ups)
    removed_bytes = int(sum(idx.sizes[p] for p, _ in rows))
    tokens_in = sum(u["counts"]["tokens_out"] for _, _, u in ups)
    tokens_removed = int(sum(idx.tokens[p] for p, _ in rows))
    return Built(
        inputs=[ref for _, up_path, up in ups for ref in input_refs(loaded, up_path, up)],
        outputs=[output_ref(out, "cross_source_duplicates")],
        counts={"documents_in": n_in, "documents_out": n_in - len(rows), "bytes_in": bytes_in,
                "bytes_out": bytes_in - removed_bytes, "tokens_in": tokens_in, "tokens_out": tokens_in - tokens_removed,
                "removed_exact": sum(r[1] == "exact" for _, r in rows),
                "removed_near": sum(r[1] == "near" for _, r in rows)},
        rates={"document_acceptance": (n_in - len(rows)) / n_in if n_in else None,
               "token_acceptance": (tokens_in - tokens_removed) / tokens_in if tokens_in else None},
        token_counting=ups[0][2]["token_counting"] if ups else {"method": "none"},
        reasons={f"duplicate_of_{kept}": {"records": sum(n for (_, k), n in pairs.items() if k == kept),
                                          "bytes": int(sum(idx.sizes[p] for p, r in rows
                                                           if part_source[r[0]] == kept)),
                                          "tokens": int(sum(idx.tokens[p] for p, r in rows
                                                            if part_source[r[0]] == kept))}
                 for kept in sorted({k for _, k in pairs})},
        details={"pairs_removed_from_kept": [{"removed_from": a, "kept_in": b, "documents": n}
                                             for (a, b), n in sorted(pairs.items())],
                 "audit_pairs": audit},
        summary=f"{len(rows)} document(s) already present in a higher-ranked source")


STAGE = Stage(name=NAME, scope="global", upstream=("dedup",), config=cross_source_config,
              build=build_cross_source_dedup, module=__name__)
