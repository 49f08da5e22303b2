"""Harvest a small, real demo corpus from this Python installation (no network, no user data).

Three sources, one per reader, so the demo exercises each:

* ``code``   - standard-library modules as JSON Lines (gzip), one document per file;
* ``docs``   - module docstrings (parsed with ``ast``, nothing imported) as Parquet;
* ``topics`` - the pydoc help topics as plain-text files, one document per file.

The harvest is deterministic for a given Python build (sorted walk, gzip with
mtime 0) and is written to a staging directory renamed into place, so a killed
harvest is simply redone.
"""

from __future__ import annotations

import ast
import gzip
import os
import shutil
import sysconfig
import warnings
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from corpusmix.core.storage import new_staging_dir, publish_dir

SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "lib2to3", "turtledemo"}
CODE_SHARDS = 2


def _stdlib_files(stdlib: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("config-"))
        out += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py")]
    return sorted(out)


def harvest(raw_dir: Path) -> Path:
    """Write the demo's raw sources under ``raw_dir`` (once); returns ``raw_dir``."""
    if (raw_dir / "HARVESTED").exists():
        return raw_dir
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    staging = new_staging_dir(raw_dir.parent)
    files = _stdlib_files(stdlib)
    (staging / "code").mkdir()
    shards = [gzip.GzipFile(staging / "code" / f"code-{i:04d}-of-{CODE_SHARDS:04d}.jsonl.gz", "wb", mtime=0)
              for i in range(CODE_SHARDS)]
    doc_rows: dict[str, list] = {"id": [], "text": [], "module": []}
    for i, f in enumerate(files):
        rel = f.relative_to(stdlib).as_posix()
        data = f.read_bytes()
        text = data.decode("utf-8", "replace")
        rec = {"id": f"stdlib/{rel}", "text": text, "path": rel, "lang": "python"}
        shards[i % CODE_SHARDS].write(orjson.dumps(rec) + b"\n")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                doc = ast.get_docstring(ast.parse(data))
        except (SyntaxError, ValueError):
            doc = None
        if doc:
            module = rel[:-3].replace("/", ".").removesuffix(".__init__")
            doc_rows["id"].append(f"doc/{module}")
            doc_rows["text"].append(doc)
            doc_rows["module"].append(module)
    for s in shards:
        s.close()
    (staging / "docs").mkdir()
    pq.write_table(pa.table(doc_rows), staging / "docs" / "docstrings.parquet", compression="zstd")
    (staging / "topics").mkdir()
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        topics = {}
    for name, body in sorted(topics.items()):
        (staging / "topics" / f"{name}.txt").write_text(body, encoding="utf-8")
    (staging / "HARVESTED").write_text(f"{stdlib}\n{len(files)} modules\n")
    if raw_dir.exists():
        shutil.rmtree(raw_dir)
    publish_dir(staging, raw_dir)
    return raw_dir
