"""Tokenize stage throughput against raw encoder calls on the same text, same run.

Usage:  python benchmarks/tokenize_throughput.py [--repeats 5] [--sources wiki,code]

Builds ../shared/corpus up to the quality stage once (untimed), publishes the GPT-2
tokenizer, then per repeat and source, alternating which goes first:
  hf     one ``encode_batch_fast`` call over all of the source's kept texts, already in
         memory (the best case for the tokenizers library: maximal batch, nothing read
         or written);
  fast   one ``fast_bpe.encode`` call (tiktoken, all cores) over the same texts: the
         encoder the stage uses for this tokenizer, so the stage's own limit;
  stage  ``tokenize_source``: read Parquet, split long documents, encode in batches
         (with the build-time spot check against the tokenizers library), append EOS,
         write .bin/.idx and the documents table, checksum, manifest.
Every stage run rebuilds (its previous output and manifest are removed first, so the
content key cannot skip it). Prints medians, the ratios stage/fast (target >= 0.90) and
stage/hf, and the error of the token estimate the earlier stages reported, per source.
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
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from common import SOURCES, build_through, write_spec  # noqa: E402

from corpusmix.core.manifest import manifest_path, read_manifest  # noqa: E402
from corpusmix.core.spec import load_spec  # noqa: E402
from corpusmix.pipeline import run_stage
from corpusmix.stages import fast_bpe  # noqa: E402
from corpusmix.stages.tokenizer import load_tokenizer  # noqa: E402


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
        path = str(loaded.resolve(loaded.spec.tokenizer.path))
        tok = load_tokenizer(path)
        kinds = ("hf", "fast", "stage")
        times: dict[str, dict[str, list[float]]] = {s: {k: [] for k in kinds} for s in names}
        info: dict[str, dict] = {}
        for r in range(args.repeats):
            for s in names:
                up = read_manifest(manifest_path(loaded.manifest_root, "quality", s))
                texts = pa.concat_tables([pq.read_table(loaded.storage_root / o["path"], columns=["text"])
                                          for o in up["outputs"] if o["kind"] == "documents"]).column("text").to_pylist()

                runs = {"hf": lambda: tok.encode_batch_fast(texts, add_special_tokens=False),  # noqa: B023
                        "fast": lambda: fast_bpe.encode(path, texts),  # noqa: B023
                        "stage": lambda: info.__setitem__(s, run_stage("tokenize", loaded, s, progress=quiet)[0])}  # noqa: B023
                for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                    if kind == "stage":  # else the stage finds its own output current and skips itself
                        manifest_path(loaded.manifest_root, "tokenize", s).unlink(missing_ok=True)
                        shutil.rmtree(loaded.storage_root / "tokenize" / s, ignore_errors=True)
                    t = time.perf_counter()
                    runs[kind]()
                    times[s][kind].append(time.perf_counter() - t)
        print(f"encoder used by the stage: {info[names[0]]['details']['encoder']}")
        print(f"{'source':9} {'docs':>7} {'MB':>7} {'tokens':>11} {'hf MB/s':>8} {'fast MB/s':>9} {'stage MB/s':>10} "
              f"{'stage/fast':>10} {'stage/hf':>8} {'estimate error':>15}")
        tot = {k: 0.0 for k in (*kinds, "mb")}
        for s in names:
            m = info[s]
            mb = m["counts"]["bytes_in"] / 1e6
            t = {k: statistics.median(times[s][k]) for k in kinds}
            for k in kinds:
                tot[k] += t[k]
            tot["mb"] += mb
            err = m["details"]["estimate_check"]["relative_error"]
            print(f"{s:9} {m['counts']['documents_out']:7} {mb:7.1f} {m['counts']['tokens_stored']:11,} "
                  f"{mb / t['hf']:8.2f} {mb / t['fast']:9.2f} {mb / t['stage']:10.2f} {t['fast'] / t['stage']:10.3f} "
                  f"{t['hf'] / t['stage']:8.3f} {100 * err:+14.2f}%")
        print(f"{'all':9} {'':7} {tot['mb']:7.1f} {'':11} {tot['mb'] / tot['hf']:8.2f} {tot['mb'] / tot['fast']:9.2f} "
              f"{tot['mb'] / tot['stage']:10.2f} {tot['fast'] / tot['stage']:10.3f} {tot['hf'] / tot['stage']:8.3f}")
        print(f"\nmedians of {args.repeats} alternating repeats; stage/fast = stage throughput / one fast_bpe.encode "
              "call (its encoder); stage/hf = against one encode_batch_fast call")


if __name__ == "__main__":
    main()
