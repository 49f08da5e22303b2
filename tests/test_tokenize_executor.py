"""The tokenize stage on the spec's executor: a source of several parts gives the same files, byte for byte,
run inline or on a process pool, and documents at part boundaries keep their exact ids."""

from __future__ import annotations

import re
import shutil

import pyarrow.parquet as pq

from corpusmix.manifest import manifest_path, read_manifest
from corpusmix.spec import load_spec
from corpusmix.storage import sha256_file
from corpusmix.tokenize import tokenize_source
from corpusmix.tokenizer import load_tokenizer, tokenizer_stage

from .conftest import GPT2, write_spec
from .test_tokenize import QUIET, _build_to_quality, _store

SOURCE = ("code", "code", "code-000[01]-of-0004")  # two files, ~9 MB of text, long documents among it
FILES = ("tokens.bin", "tokens.idx", "documents.parquet")


def _with_execution(loaded, root, backend: str, workers: int):
    """The same build (same storage) with another ``execution`` section."""
    spec = loaded.spec.model_dump(mode="json") | {"execution": {"backend": backend, "workers": workers}}
    return load_spec(write_spec(root / f"{backend}.yaml", spec))


def test_parts_run_inline_or_in_processes_to_the_same_bytes(tmp_path):
    # parts roll over after a parsed block, so small blocks too: several 1 MiB parts
    base = _build_to_quality(tmp_path, sources=[SOURCE], ingest={"part_bytes": 1 << 20, "block_bytes": 1 << 16})
    tokenizer_stage(base, **QUIET)
    name = SOURCE[0]
    quality = read_manifest(manifest_path(base.manifest_root, "quality", name))
    parts = [base.storage_root / o["path"] for o in quality["outputs"] if o["kind"] == "documents"]
    assert len(parts) > 2  # more parts than workers

    digests, messages = {}, {}
    for backend, workers in (("inline", 1), ("processes", 2)):
        loaded = _with_execution(base, tmp_path, backend, workers)
        messages[backend] = []
        manifest, _ = tokenize_source(loaded, name, progress=messages[backend].append)
        out_dir = (loaded.storage_root / manifest["outputs"][0]["path"]).parent
        digests[backend] = {f: sha256_file(out_dir / f) for f in FILES}
        assert {o["path"].rsplit("/", 1)[1]: o["sha256"] for o in manifest["outputs"]} == digests[backend]
        assert re.findall(r"tokenize: part (\d+)/(\d+),", "\n".join(messages[backend])) == \
            [(str(i), str(len(parts))) for i in range(1, len(parts) + 1)]  # one per part, in order
        if backend == "inline":  # the next run must build again, not find this one up to date
            shutil.rmtree(out_dir)
            manifest_path(loaded.manifest_root, "tokenize", name).unlink()
    assert digests["inline"] == digests["processes"]

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
