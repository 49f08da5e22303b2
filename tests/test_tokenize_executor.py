"""The tokenize stage over several parts: the token store does not depend on how the documents were
cut into parts, progress is reported per part, and documents at part boundaries keep their exact ids.
(Byte identity across backends, Ray included, is tests/test_ray.py.)"""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest

from corpusmix.core.manifest import manifest_path, read_manifest
from corpusmix.core.storage import sha256_file
from corpusmix.pipeline import run_stage
from corpusmix.stages.tokenizer import load_tokenizer

from .conftest import GPT2
from .test_tokenize import QUIET, _build_to_quality, _store

pytestmark = pytest.mark.slow  # tokenizes a source on two backends

SOURCE = ("code", "code", "code-000[01]-of-0004")  # two files, ~9 MB of text, long documents among it


def _tokenized(root, **overrides):
    root.mkdir()
    loaded = _build_to_quality(root, sources=[SOURCE], execution={"backend": "processes", "workers": 2}, **overrides)
    run_stage("tokenizer", loaded, **QUIET)
    quality = read_manifest(manifest_path(loaded.manifest_root, "quality", SOURCE[0]))
    parts = [loaded.storage_root / o["path"] for o in quality["outputs"] if o["kind"] == "documents"]
    messages: list[str] = []
    manifest, _ = run_stage("tokenize", loaded, SOURCE[0], progress=messages.append)
    out_dir = (loaded.storage_root / manifest["outputs"][0]["path"]).parent
    assert re.findall(r"tokenize: part (\d+)/(\d+),", "\n".join(messages)) == \
        [(str(i), str(len(parts))) for i in range(1, len(parts) + 1)]  # one per part, in order
    return loaded, manifest, parts, out_dir


def test_token_store_does_not_depend_on_the_parts(tmp_path):
    # parts roll over after a parsed block, so small blocks too: several 1 MiB parts
    loaded, manifest, parts, small = _tokenized(tmp_path / "small", ingest={"part_bytes": 1 << 20,
                                                                           "block_bytes": 1 << 16})
    _, _, whole_parts, whole = _tokenized(tmp_path / "whole")
    assert len(parts) > len(whole_parts) >= 2  # another cut of the same documents, more parts than workers
    for f in ("tokens.bin", "tokens.idx"):
        assert sha256_file(small / f) == sha256_file(whole / f)
    assert pq.read_table(small / "documents.parquet").equals(pq.read_table(whole / "documents.parquet"))

    # The first and last document of every part: the stored ids are a direct encode, then EOS.
    reader, docs = _store(loaded, manifest)
    sequence = dict(zip(docs.column("doc_id").to_pylist(), docs.column("sequence").to_pylist()))
    tok = load_tokenizer(str(GPT2))
    eos = tok.token_to_id("<|endoftext|>")
    texts = {}
    for part in parts:
        table = pq.read_table(part, columns=["doc_id", "text"])
        for row in (0, table.num_rows - 1):
            texts[table.column("doc_id")[row].as_py()] = table.column("text")[row].as_py()
    direct = tok.encode_batch_fast(list(texts.values()), add_special_tokens=False)
    for doc_id, enc in zip(texts, direct):
        assert reader[sequence[doc_id]].tolist() == enc.ids + [eos]
    ids = list(texts)
    assert sequence[ids[0]] == 0 and sequence[ids[-1]] == len(reader) - 1
