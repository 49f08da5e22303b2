"""Eval-set index: the normalised word n-grams of every eval item, built once per build.

Decontamination (``decontaminate``) asks of every training n-gram whether an eval item
holds it. The items come from the spec's ``eval_sets``: local files (JSONL, Parquet or
plain text, read by the same readers as ingest, so the same limits and errors apply),
or a source's own ingested records whose metadata fields have given values (GSM8K's test
split inside the math source). An item's text is its ``fields`` joined by newlines.

Text is normalised as GPT-3's decontamination did: lowercase, punctuation and whitespace
folded (the dedup normaliser with those settings, see NORMALIZE), then cut into words; an
n-gram is ``ngram`` consecutive words, hashed to 64 bits (``hashing.ngram_hashes``). The
index is an exact hash set: one sorted row per (n-gram, item), 12 bytes each. A 64-bit
hash makes a chance collision negligible (about n-grams scanned x index size / 2^64:
1e-7 for 10^6 x 10^6); 32-bit shingle hashes, fine for MinHash, would flag one document
in five. An n-gram found in more than ``max_items_per_ngram`` items is dropped as too
common to mean contamination (boilerplate such as a benchmark's instructions). Items
shorter than ``ngram`` words cannot be checked at that length: they are counted.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpusmix.core.globs import find_files
from corpusmix.core.hashing import mix64, ngram_hashes, word_hashes
from corpusmix.core.manifest import output_files, output_ref, require_manifest
from corpusmix.core.parquet_io import write_parquet
from corpusmix.core.spec import EvalSet, LoadedSpec, Normalize, Source, Spec, SpecError, SpecIssue, file_format
from corpusmix.core.stage import Built, Stage, StageRun
from corpusmix.core.storage import sha256_file
from corpusmix.readers import FileReadResult, UnreadableFileError, read_unit
from corpusmix.stages.minhash import blank_unicode_punct, normalize
from schemas.tables import ARROW_SCHEMAS, EVAL_ITEMS, EVAL_NGRAMS, validate_table

NAME = "eval_index"
# Lowercase, punctuation (ASCII and Unicode) folded, as GPT-3's decontamination. Whitespace is
# not folded: words are split at any run of it anyway (``word_hashes``), and the fold (split +
# join) would cost a third of the scan. No Unicode normalisation either: it cost a fifth of the
# scan, and matters only for text that is the same in another Unicode form (fullwidth letters).
NORMALIZE = Normalize(lowercase=True, whitespace=False, punctuation=True, unicode="none", digits="keep")
GROUP_BYTES = 1 << 20  # normalised text hashed per numpy pass: small arrays stay in cache (6x faster than 12 MB)
ITEMS_FILE, NGRAMS_FILE = "eval_items.parquet", "eval_ngrams.parquet"


@dataclass(frozen=True)
class Grams:
    """The n-grams of a batch of texts: hash, owning text, index of the first word in that text."""

    hashes: np.ndarray
    owner: np.ndarray
    first_word: np.ndarray
    words: np.ndarray  # words per text


def text_ngrams(texts: list[str], n: int) -> Grams:
    """Every normalised word n-gram of every text, hashed a group of about GROUP_BYTES at a time."""
    norms = [normalize(t, NORMALIZE, unicode_punct=False) for t in texts]  # Unicode punctuation: per group
    words = np.zeros(len(norms), np.int64)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    lo = 0
    while lo < len(norms):
        hi, size = lo, 0
        while hi < len(norms) and (hi == lo or size + len(norms[hi]) <= GROUP_BYTES):
            size += len(norms[hi]) + 1
            hi += 1
        group = b" ".join(norms[lo:hi])
        w, starts = word_hashes(group if group.isascii() else blank_unicode_punct(group))
        lengths = np.fromiter((len(x) for x in norms[lo:hi]), np.int64, hi - lo)
        text_start = np.cumsum(lengths + 1) - (lengths + 1)
        owner = np.searchsorted(text_start, starts, side="right") - 1
        words[lo:hi] = np.bincount(owner, minlength=hi - lo)
        hashes, first = ngram_hashes(mix64(w), owner, n)
        first_of_text = np.cumsum(words[lo:hi]) - words[lo:hi]
        parts.append((hashes, owner[first] + lo, first - first_of_text[owner[first]]))
        lo = hi
    if not parts:
        return Grams(np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64), words)
    return Grams(*(np.concatenate([p[i] for p in parts]) for i in range(3)), words)


# ----------------------------------------------------------------------------- reading the eval sets

def _as_source(e: EvalSet) -> Source:
    """The eval set as a source, so ingest's readers (and their limits) read its files."""
    extra = e.fields[1:]
    return Source(name=e.name, kind="prose", paths=e.paths or ["-"], format=e.format, text_field=e.fields[0],
                  id_field=e.id_field, metadata_fields=list(extra) if extra else "none")


def eval_files(loaded: LoadedSpec, e: EvalSet) -> list[Path]:
    files: set[Path] = set()
    for pattern in e.paths or []:
        files.update(f.resolve() for f in find_files(str(loaded.resolve(pattern))))
    return sorted(files)


def _fail(loaded: LoadedSpec, i: int, e: EvalSet, message: str, fix: str) -> None:
    raise SpecError(str(loaded.path), [SpecIssue(f"eval_sets[{i}]", f"eval set {e.name!r}: {message}", fix)])


def _file_items(loaded: LoadedSpec, i: int, e: EvalSet) -> Iterator[tuple[str, str]]:
    """(item id, text) of a file-based eval set; any unusable record or file stops the build
    with the file, the line and the field, since a silently partial eval set hides leaks."""
    src = _as_source(e)
    files = eval_files(loaded, e)
    if not files:
        _fail(loaded, i, e, f"its paths {e.paths} match no file", "correct the paths (relative to the spec file)")
    for path in files:
        info = FileReadResult()
        n = 0
        try:
            for batch in read_unit(file_format(src, path), [path], [path.name], src, loaded.spec.ingest, info):
                if batch.bad:
                    b = batch.bad[0]
                    _fail(loaded, i, e, f"{path}:{b.record_no}: {b.reason} ({b.detail})",
                          "repair the file, or drop it from the eval set's paths")
                rows = batch.candidates.to_pylist()
                for r in rows:
                    meta = orjson.loads(r["metadata"]) if r["metadata"] else {}
                    parts = [r["text"], *(meta.get(f) for f in e.fields[1:])]
                    missing = [f for f, v in zip(e.fields, parts) if not isinstance(v, str) or not v.strip()]
                    if missing:
                        _fail(loaded, i, e, f"{path}:{r['record_no']}: field {missing[0]!r} is missing or empty",
                              f"set eval_sets[{i}].fields to the fields its records have")
                    n += 1
                    yield (r["doc_id"] or f"{path.name}:{r['record_no']}"), "\n".join(parts)
        except UnreadableFileError as err:
            _fail(loaded, i, e, f"{path} cannot be read: {err.detail}", "repair or replace the file")
        if n == 0:
            _fail(loaded, i, e, f"{path} holds no item", "remove the empty file from the eval set's paths")


def _source_items(loaded: LoadedSpec, i: int, e: EvalSet) -> Iterator[tuple[str, str]]:
    """(item id, text) of the source's ingested records whose metadata has the ``where`` values."""
    _, m = require_manifest(loaded.manifest_root, "ingest", e.source)
    n = 0
    for o in m["outputs"]:
        if o["kind"] != "documents":
            continue
        t = pq.read_table(loaded.storage_root / o["path"], columns=["doc_id", "text", "metadata"])
        for doc_id, text, meta_s in zip(*(t.column(c).to_pylist() for c in ("doc_id", "text", "metadata"))):
            meta = orjson.loads(meta_s) if meta_s else {}
            if any(meta.get(k) != v for k, v in e.where.items()):
                continue
            parts = [text if f == "text" else meta.get(f) for f in e.fields]
            if any(not isinstance(v, str) for v in parts):
                _fail(loaded, i, e, f"record {doc_id} of source {e.source!r} has no string field "
                            f"{e.fields[[isinstance(v, str) for v in parts].index(False)]!r}",
                      f"set eval_sets[{i}].fields to fields the source's records have")
            n += 1
            yield doc_id, "\n".join(parts)
    if n == 0:
        _fail(loaded, i, e, f"no record of source {e.source!r} has metadata {e.where}",
              f"check eval_sets[{i}].where against the source's fields (`corpusmix audit SPEC sql`)")


def eval_items(loaded: LoadedSpec) -> pa.Table:
    """Every item of every eval set, in spec order then file/record order (the index's row ids)."""
    rows = []
    for i, e in enumerate(loaded.spec.eval_sets):
        if e.heldout:  # its items are decided by the held-out split, which keeps them out of train itself
            continue
        items = _source_items(loaded, i, e) if e.source else _file_items(loaded, i, e)
        rows += [{"eval_set": e.name, "item_id": item_id, "text": text} for item_id, text in items]
    schema = ARROW_SCHEMAS["eval_items"]
    return pa.Table.from_pylist(rows, schema=schema.remove(schema.get_field_index("n_ngrams")))  # added by the index


def check_eval_files(loaded: LoadedSpec) -> None:
    """Read every file-based eval set once (raises SpecError naming the file, line, field and fix):
    ``corpusmix build`` and ``validate`` call it before any work."""
    for i, e in enumerate(loaded.spec.eval_sets):
        if e.paths:
            for _ in _file_items(loaded, i, e):
                pass


# ----------------------------------------------------------------------------- the stage

def build_index(items: pa.Table, n: int, max_items: int) -> tuple[pa.Table, dict]:
    """Sorted (hash, item) rows without the too-common n-grams; and what was left out."""
    grams = text_ngrams(items.column("text").to_pylist(), n)
    pairs = np.unique(np.stack([grams.hashes, grams.owner.astype(np.uint64)], axis=1), axis=0)  # sorted
    hashes, item = pairs[:, 0], pairs[:, 1].astype(np.int32)
    _, start, count = np.unique(hashes, return_index=True, return_counts=True)
    common = np.repeat(count > max_items, count)
    table = pa.table({"hash": pa.array(hashes[~common]), "item": pa.array(item[~common])},
                     schema=ARROW_SCHEMAS["eval_ngrams"])
    per_item = np.bincount(item[~common], minlength=items.num_rows)
    stats = {"ngrams": int((~common).sum()), "distinct_ngrams": int(len(np.unique(hashes[~common]))),
             "too_common_ngrams": int((count > max_items).sum()),
             "items_too_short": int((grams.words < n).sum()) if items.num_rows else 0,
             "per_item": per_item}
    return table, stats


def index_config(loaded: LoadedSpec, partition: None) -> dict:
    d = loaded.spec.decontamination
    return {"eval_sets": [e.model_dump(mode="json") for e in loaded.spec.eval_sets],
            "ngram": d.ngram, "max_items_per_ngram": d.max_items_per_ngram}


def index_inputs(loaded: LoadedSpec, partition: None) -> list:
    """The eval files' checksums (by set and file name: moving them changes nothing), and the
    ingest versions of the sources items are taken from."""
    out = []
    for e in loaded.spec.eval_sets:
        if e.from_records:
            out.append((f"ingest/{e.source}", require_manifest(loaded.manifest_root, "ingest", e.source)[1]["version"]))
        out += [(f"{e.name}/{p.name}", _sha(str(p))) for p in eval_files(loaded, e)]
    return out


def _input_refs(loaded: LoadedSpec) -> list[dict]:
    """The manifest's ``inputs``: every eval file, and the ingest outputs items were read from."""
    from corpusmix.core.manifest import input_refs

    refs = []
    for e in loaded.spec.eval_sets:
        if e.from_records:
            refs += input_refs(loaded, *require_manifest(loaded.manifest_root, "ingest", e.source))
        refs += [{"path": f"{e.name}/{p.name}", "sha256": _sha(str(p)), "bytes": p.stat().st_size,
                  "upstream_manifest": None} for p in eval_files(loaded, e)]
    return refs


@functools.lru_cache(maxsize=64)
def _sha(path: str) -> str:
    return sha256_file(path)


def upstream(spec: Spec) -> tuple[str, ...]:
    """Ingest, when an eval set is taken from a source's records; else nothing (files only)."""
    return ("ingest",) if any(e.from_records for e in spec.eval_sets) else ()


def build_eval_index(ctx: StageRun) -> Built:
    loaded, d = ctx.loaded, ctx.loaded.spec.decontamination
    items = eval_items(loaded)
    ctx.say(f"{items.num_rows} eval items in {len(loaded.spec.eval_sets)} set(s); {d.ngram}-grams")
    table, stats = build_index(items, d.ngram, d.max_items_per_ngram)
    items = items.append_column("n_ngrams", pa.array(stats.pop("per_item"), pa.int64()))
    validate_table(items, EVAL_ITEMS)
    validate_table(table, EVAL_NGRAMS)
    outs = [("eval_items", write_parquet(items, ctx.staging / ITEMS_FILE)),
            ("eval_ngrams", write_parquet(table, ctx.staging / NGRAMS_FILE))]
    per_set = {e.name: int(pc.sum(pc.equal(items.column("eval_set"), e.name)).as_py() or 0)
               for e in loaded.spec.eval_sets if not e.heldout}
    return Built(inputs=_input_refs(loaded),
                 outputs=[output_ref(o, kind) for kind, o in outs],
                 counts={"items": items.num_rows, **stats, "index_bytes": table.nbytes},
                 details={"items_per_set": per_set, "ngram": d.ngram,
                          "max_items_per_ngram": d.max_items_per_ngram},
                 summary=f"{items.num_rows} items, {stats['distinct_ngrams']:,} distinct {d.ngram}-grams "
                         f"({stats['too_common_ngrams']} too common, dropped)")


def item_names(items_file: Path) -> tuple[list[str], list[str]]:
    """Each item row's eval set and id (what a match is reported as), without the texts."""
    t = pq.read_table(items_file, columns=["eval_set", "item_id"])
    return t.column("eval_set").to_pylist(), t.column("item_id").to_pylist()


def load_index(loaded: LoadedSpec) -> tuple[np.ndarray, np.ndarray, tuple[list[str], list[str]]]:
    """The published index: sorted hashes, the item row of each, and the items' sets and ids."""
    files = output_files(loaded, require_manifest(loaded.manifest_root, NAME, None)[1])
    ngrams = pq.read_table(files["eval_ngrams"])
    return ngrams.column("hash").to_numpy(), ngrams.column("item").to_numpy(), item_names(files["eval_items"])


STAGE = Stage(name=NAME, scope="global", upstream=upstream, config=index_config, inputs=index_inputs,
              build=build_eval_index, module=__name__, active=Spec.decontaminates)
