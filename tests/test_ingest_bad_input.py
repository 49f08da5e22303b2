"""What a real ingester meets: every bad record is quarantined with its reason, the good
records around it are kept, and a file that cannot be read fails naming the file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from corpusmix.core.spec import Source, load_spec
from corpusmix.pipeline import run_stage
from corpusmix.readers.jsonl import _exact_block, _fast_block
from corpusmix.stages.ingest import IngestError

from .conftest import read_outputs


def _jsonl(*records) -> bytes:
    out = b""
    for r in records:
        out += (r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n"
    return out


def _ingest(make_spec, tmp_path, files: dict[str, bytes], **source_kw):
    raw = tmp_path / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (raw / name).write_bytes(data)
    src = {"name": "s", "kind": "web", "paths": [str(raw / "*")]} | source_kw
    loaded = load_spec(make_spec([src]))
    manifest, _ = run_stage("ingest", loaded, "s", progress=lambda m: None)
    docs = read_outputs(manifest, loaded.storage_root, "documents")
    quar = read_outputs(manifest, loaded.storage_root, "quarantine")
    c = manifest["counts"]
    assert c["records_read"] == c["documents_out"] + c["quarantined"]  # nothing lost silently
    return manifest, docs, quar


def _reasons(quar) -> dict[int, str]:
    return dict(zip(quar.column("record_no").to_pylist(), quar.column("reason").to_pylist())) if quar else {}


def test_bad_records_are_quarantined_and_neighbours_kept(make_spec, tmp_path):
    data = _jsonl(
        {"id": "a", "text": "first good"},
        b'{"id": "b", "text": "unterminated',
        b'{"id": "c", "text": "bad \xff\xfe utf8"}',
        {"id": "d"},
        {"id": "e", "text": None},
        {"id": "f", "text": 42},
        {"id": "g", "text": ["a", "list"]},
        {"id": "h", "text": ""},
        {"id": "i", "text": "  \n\t "},
        {"id": "j", "text": "nul \u0000 inside"},
        b"[1, 2, 3]",
        {"id": {"nested": 1}, "text": "id is an object"},
        {"text": "no id at all"},
        {"id": "a", "text": "same id as line 1"},
        {"id": 7, "text": "integer id is fine"},
        b'{"id": "s", "text": "lone surrogate \\ud800"}',
        {"id": "z", "text": "last good", "extra": {"k": [1, 2]}},
    )
    manifest, docs, quar = _ingest(make_spec, tmp_path, {"mixed.jsonl": data})
    assert docs.column("doc_id").to_pylist() == ["a", "7", "z"]
    assert docs.column("record_no").to_pylist() == [1, 15, 17]
    assert json.loads(docs.column("metadata")[2].as_py()) == {"extra": {"k": [1, 2]}}
    assert _reasons(quar) == {
        2: "invalid_json", 3: "invalid_utf8", 4: "missing_text", 5: "missing_text", 6: "non_string_text",
        7: "non_string_text", 8: "empty_text", 9: "empty_text", 10: "nul_byte", 11: "not_an_object",
        12: "invalid_id", 13: "missing_id", 14: "duplicate_id", 16: "invalid_json",
    }
    assert manifest["reasons"]["empty_text"]["records"] == 2
    assert manifest["counts"]["records_read"] == 17
    # the raw record is kept for audit: the unterminated line's snippet shows what was there
    snippets = dict(zip(quar.column("record_no").to_pylist(), quar.column("snippet").to_pylist()))
    assert snippets[2].startswith('{"id": "b", "text": "unterminated')
    assert "\\xff" in snippets[3]


def test_bom_crlf_and_blank_lines(make_spec, tmp_path):
    data = b"\xef\xbb\xbf" + b'{"id": "a", "text": "x"}\r\n\r\n{"id": "b", "text": "y"}\r\n\n{"id": "c", "text": "z"}'
    manifest, docs, quar = _ingest(make_spec, tmp_path, {"crlf.jsonl": data})
    assert docs.column("doc_id").to_pylist() == ["a", "b", "c"]
    assert docs.column("text").to_pylist() == ["x", "y", "z"]
    assert docs.column("record_no").to_pylist() == [1, 3, 5]
    assert quar is None
    assert manifest["counts"]["blank_lines"] == 2


def test_fast_and_exact_paths_agree_on_clean_data():
    src = Source(name="s", kind="web", paths=["x"])
    block = _jsonl(*[{"id": f"d{i}", "text": f"doc {i} ünï", "url": f"u{i}", "n": i} for i in range(50)])
    fast = _fast_block(block, 1, src, 50)
    exact = _exact_block(block.rstrip(b"\n"), 1, src).candidates
    assert fast is not None
    for col in ("doc_id", "text", "record_no"):
        assert fast.column(col).to_pylist() == exact.column(col).to_pylist()
    assert [json.loads(m) for m in fast.column("metadata").to_pylist()] == \
           [json.loads(m) for m in exact.column("metadata").to_pylist()]


def test_fast_path_refuses_invalid_utf8_that_arrow_would_replace():
    src = Source(name="s", kind="web", paths=["x"])
    assert _fast_block(b'{"id": "a", "text": "bad \xff"}\n', 1, src, 1) is None


def test_empty_files_give_empty_outputs(make_spec, tmp_path):
    manifest, docs, quar = _ingest(make_spec, tmp_path, {
        "empty.jsonl": b"", "empty.jsonl.gz": gzip.compress(b""), "one.jsonl": _jsonl({"id": "a", "text": "t"})})
    assert docs.column("doc_id").to_pylist() == ["a"]
    assert manifest["counts"]["input_files"] == 3


def test_zstd_and_gzip_multi_member(make_spec, tmp_path):
    zst = zstandard.ZstdCompressor().compress(_jsonl({"id": "z1", "text": "zstd doc"}))
    gz = gzip.compress(_jsonl({"id": "g1", "text": "m1"})) + gzip.compress(_jsonl({"id": "g2", "text": "m2"}))
    _, docs, _ = _ingest(make_spec, tmp_path, {"a.jsonl.zst": zst, "b.jsonl.gz": gz})
    assert sorted(docs.column("doc_id").to_pylist()) == ["g1", "g2", "z1"]


def test_duplicate_ids_across_files_keep_the_first(make_spec, tmp_path):
    manifest, docs, quar = _ingest(make_spec, tmp_path, {
        "1.jsonl": _jsonl({"id": "x", "text": "from file 1"}, {"id": "y", "text": "y1"}),
        "2.jsonl": _jsonl({"id": "x", "text": "from file 2"}, {"id": "w", "text": "w2"})})
    assert dict(zip(docs.column("doc_id").to_pylist(), docs.column("text").to_pylist())) == \
           {"x": "from file 1", "y": "y1", "w": "w2"}
    assert quar.column("reason").to_pylist() == ["duplicate_id"]
    assert quar.column("file").to_pylist()[0].endswith("2.jsonl")
    assert manifest["counts"]["documents_out"] == 3


def test_content_hash_ids_when_the_source_has_none(make_spec, tmp_path):
    _, docs, quar = _ingest(make_spec, tmp_path, {"a.jsonl": _jsonl({"text": "alpha"}, {"text": "beta"})},
                            id_field=None)
    ids = docs.column("doc_id").to_pylist()
    assert ids[0].startswith("sha1:") and len(set(ids)) == 2


def test_twenty_megabyte_single_line_document(make_spec, tmp_path):
    big = "word " * (4 * 1024 * 1024)  # 20 MiB
    data = _jsonl({"id": "small", "text": "before"}, {"id": "big", "text": big}, {"id": "after", "text": "after"})
    manifest, docs, _ = _ingest(make_spec, tmp_path, {"big.jsonl.gz": gzip.compress(data)},)
    assert docs.column("doc_id").to_pylist() == ["small", "big", "after"]
    assert docs.column("n_bytes").to_pylist()[1] == len(big)


def test_text_too_long_is_quarantined(make_spec, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_bytes(_jsonl({"id": "a", "text": "x" * 2000}, {"id": "b", "text": "ok"}))
    spec = make_spec([{"name": "s", "kind": "web", "paths": [str(raw / "*")]}],
                     ingest={"max_text_bytes": 1000})
    loaded = load_spec(spec)
    manifest, _ = run_stage("ingest", loaded, "s", progress=lambda m: None)
    assert manifest["reasons"] == {"text_too_long": {"records": 1, "bytes": 2000,
                                                     "tokens": manifest["reasons"]["text_too_long"]["tokens"]}}


def _truncated_gzip() -> bytes:
    data = gzip.compress(_jsonl(*[{"id": f"d{i}", "text": f"document number {i} " * 20} for i in range(2000)]))
    return data[: len(data) // 2]


def test_truncated_gzip_fails_naming_the_file(make_spec, tmp_path):
    with pytest.raises(IngestError) as err:
        _ingest(make_spec, tmp_path, {"good.jsonl": _jsonl({"id": "a", "text": "t"}), "cut.jsonl.gz": _truncated_gzip()})
    msg = str(err.value)
    assert "cut.jsonl.gz" in msg and "on_unreadable: skip" in msg
    # nothing was published and no manifest claims success
    assert not list((tmp_path / "manifests").rglob("*.json"))
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_dir() and not p.name.startswith(".")
                and p.parent.name == "s"]


def test_truncated_gzip_skip_policy_keeps_and_flags(make_spec, tmp_path):
    manifest, docs, quar = _ingest(make_spec, tmp_path, {
        "good.jsonl": _jsonl({"id": "a", "text": "t"}), "cut.jsonl.gz": _truncated_gzip()}, on_unreadable="skip")
    flagged = docs.filter(docs.column("truncated_input"))
    assert flagged.num_rows > 100  # the records before the damage are kept ...
    assert set(flagged.column("file").to_pylist()) == {str(Path(manifest["skipped_files"][0]["file"]))}
    assert manifest["skipped_files"][0]["file"].endswith("cut.jsonl.gz")
    assert manifest["skipped_files"][0]["records_kept"] == flagged.num_rows
    assert "truncated_record" in _reasons(quar).values()  # ... and the half record at the cut is quarantined
    unflagged = docs.filter(docs.column("truncated_input").is_null() | ~docs.column("truncated_input").to_numpy(False))
    assert unflagged.column("doc_id").to_pylist() == ["a"]


def test_plain_file_named_gz_fails(make_spec, tmp_path):
    with pytest.raises(IngestError, match=r"notgzip\.jsonl\.gz.*not a valid gz stream"):
        _ingest(make_spec, tmp_path, {"notgzip.jsonl.gz": _jsonl({"id": "a", "text": "plain"})})


def test_parquet_with_wrong_column_types(make_spec, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "text": pa.array([1, None], pa.int64())}), raw / "wrong.parquet")
    pq.write_table(pa.table({"id": ["c", "d"], "text": ["fine", "also fine"], "lang": ["en", "fr"]}),
                   raw / "right.parquet")
    manifest, docs, quar = _ingest(make_spec, tmp_path, {})
    assert docs.column("doc_id").to_pylist() == ["c", "d"]
    assert json.loads(docs.column("metadata")[1].as_py()) == {"lang": "fr"}
    reasons = sorted(quar.column("reason").to_pylist())
    assert reasons == ["missing_text", "non_string_text"]  # the int is wrongly typed, the null is missing
    assert "int64" in " ".join(quar.column("detail").to_pylist())


def test_corrupt_parquet_fails_naming_the_file(make_spec, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["t"]}), raw / "bad.parquet")
    data = bytearray((raw / "bad.parquet").read_bytes())
    data[len(data) // 2: len(data) // 2 + 8] = b"\xde\xad\xbe\xef" * 2
    (raw / "bad.parquet").write_bytes(bytes(data[:-12]))  # damaged body and footer
    with pytest.raises(IngestError, match=r"bad\.parquet"):
        _ingest(make_spec, tmp_path, {})


def test_plain_text_sources_one_document_per_file(make_spec, tmp_path):
    raw = tmp_path / "raw" / "tree"
    (raw / "pkg").mkdir(parents=True)
    (raw / "pkg" / "mod.py").write_text("def f():\n    return 1\n")
    (raw / "pkg" / "empty.py").write_text("")
    (raw / "pkg" / "latin1.py").write_bytes(b"# caf\xe9\n")
    (raw / "top.py").write_bytes(b"\xef\xbb\xbfprint('bom')\r\n")
    src = {"name": "s", "kind": "code", "paths": [str(tmp_path / "raw" / "tree" / "**" / "*.py")], "format": "text"}
    loaded = load_spec(make_spec([src]))
    manifest, _ = run_stage("ingest", loaded, "s", progress=lambda m: None)
    docs = read_outputs(manifest, loaded.storage_root, "documents")
    quar = read_outputs(manifest, loaded.storage_root, "quarantine")
    assert dict(zip(docs.column("doc_id").to_pylist(), docs.column("text").to_pylist())) == {
        "pkg/mod.py": "def f():\n    return 1\n", "top.py": "print('bom')\r\n"}
    assert dict(zip(quar.column("doc_id").to_pylist(), quar.column("reason").to_pylist())) == {
        "pkg/empty.py": "empty_text", None: "invalid_utf8"}
    assert sorted(i["path"] for i in manifest["inputs"]) == ["pkg/empty.py", "pkg/latin1.py", "pkg/mod.py", "top.py"]


def test_inputs_that_crash_or_fool_a_json_reader(make_spec, tmp_path):
    """A first line of null (segfaults pyarrow 26's JSON reader), NaN, a bare CR, two objects on
    a line, a mid-file BOM, an empty id and a 39-digit integer: each is judged, none crashes."""
    data = (b'null\n{"id": "a", "text": "after null"}\n{"id": "b", "text": "nan", "score": NaN}\n'
            b'{"id": "c", "text": "x"}\r{"id": "d", "text": "y"}\n{"id": "e", "text": "1"} {"id": "f", "text": "2"}\n'
            b'\xef\xbb\xbf{"id": "g", "text": "bom again"}\n{"id": "", "text": "empty id"}\n'
            b'{"id": "h", "text": "big", "hash": 340282366920938463463374607431768211455}\n')
    for meta in ("all", "none"):  # "none" skips the metadata parse: the reader must still be strict
        _, docs, quar = _ingest(make_spec, tmp_path / meta, {"tricky.jsonl": data}, metadata_fields=meta)
        assert docs.column("doc_id").to_pylist() == ["a", "g", "h"]
        assert _reasons(quar) == {1: "not_an_object", 3: "invalid_json", 4: "invalid_json", 5: "invalid_json",
                                  7: "missing_id"}
    _, docs, _ = _ingest(make_spec, tmp_path / "big", {"big.jsonl": data})
    assert json.loads(docs.column("metadata")[2].as_py())["hash"] == 2**128 - 1  # exact, not a float


def test_gzip_padding_is_accepted_and_trailing_garbage_named(make_spec, tmp_path):
    good = gzip.compress(_jsonl({"id": "a", "text": "t"}))
    _, docs, _ = _ingest(make_spec, tmp_path / "pad", {"padded.jsonl.gz": good + b"\0" * 512})
    assert docs.column("doc_id").to_pylist() == ["a"] and not any(docs.column("truncated_input").to_pylist())
    with pytest.raises(IngestError, match="trailing data after the last complete compressed member"):
        _ingest(make_spec, tmp_path / "junk", {"junk.jsonl.gz": good + b"garbage!"})


def test_a_line_longer_than_any_acceptable_text_is_skipped_not_held(make_spec, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_bytes(_jsonl({"id": "a", "text": "ok"}, {"id": "b", "text": "x" * 4_000_000},
                                         {"id": "c", "text": "after"}))
    spec = make_spec([{"name": "s", "kind": "web", "paths": [str(raw / "*")]}], ingest={"max_text_bytes": 100})
    manifest, _ = run_stage("ingest", load_spec(spec), "s", progress=lambda m: None)
    assert manifest["reasons"]["line_too_long"]["records"] == 1  # cut at ~1 MiB, never held whole
    assert manifest["counts"]["records_read"] == 3 and manifest["counts"]["documents_out"] == 2


def test_parquet_dictionary_text_binary_metadata_and_invalid_utf8(make_spec, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    bad_utf8 = pa.array([b"fine", b"bad \xff"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ["a", "b"], "text": pa.array(["one", "two"]).dictionary_encode(),
                             "blob": pa.array([b"\x00\x01", None], pa.binary())}), raw / "dict.parquet")
    pq.write_table(pa.table({"id": ["c", "d"], "text": bad_utf8}), raw / "utf8.parquet")
    _, docs, quar = _ingest(make_spec, tmp_path, {})
    assert docs.column("doc_id").to_pylist() == ["a", "b", "c"]
    assert json.loads(docs.column("metadata")[0].as_py()) == {"blob": {"$base64": "AAE="}}
    assert quar.column("reason").to_pylist() == ["invalid_utf8"]


def test_same_file_name_under_two_globs_stays_distinct(make_spec, tmp_path):
    for repo in ("repo1", "repo2"):
        (tmp_path / repo).mkdir()
        (tmp_path / repo / "setup.py").write_text(f"print('{repo}')\n")
    src = {"name": "s", "kind": "code", "format": "text",
           "paths": [str(tmp_path / "repo1" / "*.py"), str(tmp_path / "repo2" / "*.py")]}
    loaded = load_spec(make_spec([src]))
    manifest, _ = run_stage("ingest", loaded, "s", progress=lambda m: None)
    docs = read_outputs(manifest, loaded.storage_root, "documents")
    assert docs.column("doc_id").to_pylist() == ["repo1/setup.py", "repo2/setup.py"]


def test_a_rebuild_repairs_a_damaged_published_output(make_spec, tmp_path):
    from corpusmix.ops.verify import verify

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_bytes(_jsonl({"id": "a", "text": "t"}))
    loaded = load_spec(make_spec([{"name": "s", "kind": "web", "paths": [str(raw / "*")]}]))
    manifest, _ = run_stage("ingest", loaded, "s", progress=lambda m: None)
    (loaded.storage_root / manifest["outputs"][0]["path"]).unlink()
    assert verify(str(loaded.path), until="ingest")
    run_stage("ingest", loaded, "s", progress=lambda m: None)
    assert verify(str(loaded.path), until="ingest") == []


def test_an_unpaired_surrogate_escape_is_quarantined_with_or_without_a_huge_integer(make_spec, tmp_path):
    """A line with an integer over 64 bits goes to the standard library's parser, which accepts
    an unpaired surrogate escape that no UTF-8 text can hold: that record alone is quarantined."""
    data = (b'{"id": "a", "text": "before it"}\n'
            b'{"id": "b", "text": "bad \\ud83d here", "tweet_id": 12345678901234567890}\n'
            b'{"id": "c", "text": "bad \\udc00 alone"}\n'
            b'{"id": "d", "text": "a huge id kept", "tweet_id": 12345678901234567890}\n'
            b'{"id": "e", "text": "a real pair \\ud83d\\ude00", "tweet_id": 12345678901234567890}\n')
    manifest, docs, quar = _ingest(make_spec, tmp_path, {"a.jsonl": data}, on_unreadable="skip")
    assert _reasons(quar) == {2: "invalid_json", 3: "invalid_json"}
    assert "unpaired surrogate" in quar.column("detail")[0].as_py()
    kept = dict(zip(docs.column("doc_id").to_pylist(), docs.column("metadata").to_pylist()))
    assert sorted(kept) == ["a", "d", "e"]
    assert json.loads(kept["d"])["tweet_id"] == 12345678901234567890  # exact, not a float
    assert docs.column("text").to_pylist()[2] == "a real pair \U0001F600"


def test_a_source_that_keeps_nothing_fails_naming_the_fields_it_has(make_spec, tmp_path):
    """A wrong text_field quarantines every record: the ingest fails there, with the reasons and the
    fields the records have, instead of "ok" and a plan without tokens much later."""
    rows = _jsonl(*({"id": f"r{i}", "body": f"text number {i}", "lang": "en"} for i in range(5)))
    with pytest.raises(IngestError, match=r"(?s)5 of its 5 records are quarantined \(missing_text \(5\)\).*"
                                          r"\['id', 'body', 'lang'\].*reads text from 'text'"):
        _ingest(make_spec, tmp_path, {"a.jsonl": rows})
    (tmp_path / "raw" / "a.jsonl").unlink()
    with pytest.raises(IngestError, match="its files hold no records at all"):
        _ingest(make_spec, tmp_path, {"empty.jsonl.gz": gzip.compress(b"")})


def test_the_quarantine_threshold_can_be_lowered(make_spec, tmp_path):
    rows = _jsonl({"id": "a", "text": "kept"}, {"id": "b", "text": ""}, {"id": "c", "text": " "})
    manifest, _, _ = _ingest(make_spec, tmp_path, {"a.jsonl": rows})  # 2 of 3 quarantined: the default allows
    assert manifest["counts"]["quarantined"] == 2
    raw = tmp_path / "raw"
    src = {"name": "s", "kind": "web", "paths": [str(raw / "*")]}
    strict = load_spec(make_spec([src], name="strict.yaml", ingest={"max_quarantined_fraction": 0.5}))
    with pytest.raises(IngestError, match=r"(?s)2 of its 3 records are quarantined.*max_quarantined_fraction \(now 0.5\)"):
        run_stage("ingest", strict, "s", progress=lambda m: None)


@pytest.mark.parametrize("codec, name", [("utf-16", "UTF-16 LE"), ("utf-16-be", None), ("utf-32", "UTF-32 LE")])
def test_a_utf16_or_utf32_file_fails_naming_the_encoding_and_the_fix(make_spec, tmp_path, codec, name):
    text = json.dumps({"id": "a", "text": "héllo wörld"}) + "\n" + json.dumps({"id": "b", "text": "more"}) + "\n"
    data = ("\ufeff" + text).encode(codec) if codec == "utf-16-be" else text.encode(codec)  # Python adds the BOM
    with pytest.raises(IngestError, match=rf"a.jsonl: the text is {name or 'UTF-16 BE'} .*not UTF-8; fix: .*iconv"):
        _ingest(make_spec, tmp_path, {"a.jsonl": data})
    (tmp_path / "raw" / "a.jsonl").unlink()
    with pytest.raises(IngestError, match=r"doc.txt: the text is UTF-"):
        _ingest(make_spec, tmp_path, {"doc.txt": "plain text file".encode(codec if codec != "utf-16-be" else "utf-16")},
                format="text")


def test_a_decompression_bomb_is_an_unreadable_file_and_memory_stays_bounded(make_spec, tmp_path, monkeypatch):
    """64 MiB of blank lines in ~64 KB of gzip members: refused once it has expanded past the judging
    point (256 MiB in builds, 8 MiB here to keep the test short) at more than 200x, named as a bomb;
    decompression hands back bounded pieces all along (benchmarks/bomb_memory.py: the full sizes)."""
    import resource

    from corpusmix.readers import common

    monkeypatch.setattr(common, "BOMB_AFTER", 8 << 20)
    member = gzip.compress(b"\n" * (16 << 20), compresslevel=9)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(IngestError, match=r"bomb.jsonl.gz: expands more than 200 times .*decompression bomb"):
        _ingest(make_spec, tmp_path, {"bomb.jsonl.gz": member * 4})
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 64, grown_mb  # never the 64 MiB it expands to, let alone a copy per line


def test_a_text_file_over_the_limit_is_quarantined_without_being_held(make_spec, tmp_path):
    files = {"small.txt": b"a small document", "huge.txt": b"word " * (1 << 20)}  # 5 MiB
    src = {"format": "text"}
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, data in files.items():
        (raw / name).write_bytes(data)
    loaded = load_spec(make_spec([{"name": "s", "kind": "web", "paths": [str(raw / "*")]} | src],
                                 ingest={"max_text_bytes": 1 << 20}))
    manifest, _ = run_stage("ingest", loaded, "s", progress=lambda m: None)
    quar = read_outputs(manifest, loaded.storage_root, "quarantine")
    assert quar.column("file").to_pylist() == ["huge.txt"] and quar.column("reason").to_pylist() == ["text_too_long"]
    assert manifest["counts"]["documents_out"] == 1
    assert {i["path"] for i in manifest["inputs"]} == {"small.txt", "huge.txt"}  # both checksummed all the same


def test_compression_is_told_by_the_first_bytes_not_only_the_name(make_spec, tmp_path):
    """A gzip file without .gz is read by its magic bytes; plain JSON named .gz fails saying so
    (not "damaged: keep the records read before the damage")."""
    rows = _jsonl({"id": "a", "text": "one"}, {"id": "b", "text": "two"})
    manifest, docs, _ = _ingest(make_spec, tmp_path, {"packed.jsonl": gzip.compress(rows)})
    assert docs.column("doc_id").to_pylist() == ["a", "b"]
    (tmp_path / "raw" / "packed.jsonl").unlink()
    with pytest.raises(IngestError, match=r"plain.jsonl.gz: not a valid gz stream: the file is named .gz but starts "
                                          r"with 7b 22 69 64, which looks like plain text; fix: rename it"):
        _ingest(make_spec, tmp_path, {"plain.jsonl.gz": rows})


def test_quarantine_keeps_known_ids_in_file_order_and_an_empty_gz_is_a_warning(make_spec, tmp_path):
    rows = _jsonl({"id": "a", "text": "fine"}, {"id": "num", "text": 42}, b"{not json", {"id": "c", "text": ""},
                  {"id": "d", "text": "fine too"})
    manifest, _, quar = _ingest(make_spec, tmp_path, {"a.jsonl": rows, "b.jsonl.gz": b""})
    assert quar.column("record_no").to_pylist() == [2, 3, 4]  # file order, whichever check found each
    assert quar.column("doc_id").to_pylist() == ["num", None, "c"]  # the id of a non-string text is kept
    assert manifest["details"]["warnings"] == [
        "b.jsonl.gz is empty (0 bytes, not even a compression header): no records; a copy or a download that "
        "did not finish?"]
