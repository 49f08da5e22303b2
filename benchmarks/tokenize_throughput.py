"""Tokenize stage throughput against raw ``Tokenizer.encode_batch_fast`` on the same text, same run.

Usage:  python benchmarks/tokenize_throughput.py [--repeats 5] [--sources wiki,code]

Builds ../shared/corpus up to the quality stage once (untimed), publishes the GPT-2
tokenizer, then per repeat and source, alternating which goes first:
  raw    one ``encode_batch_fast`` call over all of the source's kept texts, already in
         memory (the best case for the library: maximal batch, nothing read or written);
  stage  ``tokenize_source``: read Parquet, split long documents, encode in batches,
         append EOS, write .bin/.idx and the documents table, checksum, manifest.
Every stage run rebuilds (its previous output and manifest are removed first, so the
content key cannot skip it). Prints medians, the ratio stage/raw (target >= 0.90), and
the error of the token estimate the earlier stages reported, per source.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SOURCES, build_through, write_spec  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from corpusmix.manifest import manifest_path, read_manifest  # noqa: E402
from corpusmix.spec import load_spec  # noqa: E402
from corpusmix.tokenize import tokenize_source  # noqa: E402
from corpusmix.tokenizer import load_tokenizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sources", default=",".join(SOURCES))
    args = ap.parse_args()
    names = args.sources.split(",")
    quiet = lambda m: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_spec(write_spec(Path(tmp), SOURCES, 2))
        build_through(loaded, "tokenizer")
        tok = load_tokenizer(str(loaded.resolve(loaded.spec.tokenizer.path)))
        times: dict[str, dict[str, list[float]]] = {s: {"raw": [], "stage": []} for s in names}
        info: dict[str, dict] = {}
        for r in range(args.repeats):
            for s in names:
                up = read_manifest(manifest_path(loaded.manifest_root, "quality", s))
                texts = pa.concat_tables([pq.read_table(loaded.storage_root / o["path"], columns=["text"])
                                          for o in up["outputs"] if o["kind"] == "documents"]).column("text").to_pylist()

                runs = {"raw": lambda: tok.encode_batch_fast(texts, add_special_tokens=False),  # noqa: B023
                        "stage": lambda: info.__setitem__(s, tokenize_source(loaded, s, progress=quiet)[0])}  # noqa: B023
                for kind in (("raw", "stage") if r % 2 == 0 else ("stage", "raw")):
                    if kind == "stage":  # else the stage finds its own output current and skips itself
                        manifest_path(loaded.manifest_root, "tokenize", s).unlink(missing_ok=True)
                        shutil.rmtree(loaded.storage_root / "tokenize" / s, ignore_errors=True)
                    t = time.perf_counter()
                    runs[kind]()
                    times[s][kind].append(time.perf_counter() - t)
        print(f"{'source':9} {'docs':>7} {'MB':>7} {'tokens':>11} {'raw MB/s':>9} {'stage MB/s':>10} {'ratio':>6} "
              f"{'estimate error':>15}")
        tot = {"raw": 0.0, "stage": 0.0, "mb": 0.0}
        for s in names:
            m = info[s]
            mb = m["counts"]["bytes_in"] / 1e6
            raw_t, stage_t = statistics.median(times[s]["raw"]), statistics.median(times[s]["stage"])
            tot["raw"] += raw_t
            tot["stage"] += stage_t
            tot["mb"] += mb
            err = m["details"]["estimate_check"]["relative_error"]
            print(f"{s:9} {m['counts']['documents_out']:7} {mb:7.1f} {m['counts']['tokens_stored']:11,} "
                  f"{mb / raw_t:9.2f} {mb / stage_t:10.2f} {raw_t / stage_t:6.3f} {100 * err:+14.2f}%")
        print(f"{'all':9} {'':7} {tot['mb']:7.1f} {'':11} {tot['mb'] / tot['raw']:9.2f} "
              f"{tot['mb'] / tot['stage']:10.2f} {tot['raw'] / tot['stage']:6.3f}")
        print(f"\nmedians of {args.repeats} alternating repeats; ratio = stage throughput / raw encode_batch_fast")


if __name__ == "__main__":
    main()
