"""Shared by the benchmark scripts: where the dev corpus is, and a spec over it."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPUS = REPO.parent / "shared" / "corpus"
GPT2 = REPO.parent / "shared" / "tokenizers" / "gpt2" / "tokenizer.json"
SOURCES = {"wiki": "prose", "web": "web", "books": "prose", "code": "code", "math": "math", "dialogue": "dialogue"}


def write_spec(root: Path, sources: dict[str, str], workers: int, raw: Path = CORPUS) -> Path:
    """A spec over ``raw/<source>/*.jsonl.gz`` with the GPT-2 tokenizer, storage under ``root``."""
    spec = {
        "name": "bench",
        "storage": {"root": str(root / "data"), "manifests": str(root / "manifests")},
        "execution": {"workers": workers},
        "sources": [{"name": n, "kind": k, "paths": [str(raw / n / "*.jsonl.gz")]} for n, k in sources.items()],
        "tokenizer": {"path": str(GPT2)},
        "mixture": {"total_tokens": 1_000_000, "seq_len": 1024,
                    "schedule": {"type": "static", "weights": {n: 1 for n in sources}}},
    }
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


STAGES = ("ingest", "dedup", "cross_source_dedup", "quality", "tokenizer", "tokenize", "mixture_plan")


def build_through(loaded, last: str) -> None:
    """Run the engine's stages in build order up to and including ``last`` (a benchmark's untimed setup)."""
    from corpusmix.dedup import cross_source_dedup, dedup_source
    from corpusmix.ingest import ingest_source
    from corpusmix.plan import plan_stage
    from corpusmix.quality import quality_source
    from corpusmix.tokenize import tokenize_source
    from corpusmix.tokenizer import tokenizer_stage

    quiet = lambda m: None  # noqa: E731
    per_source = {"ingest": ingest_source, "dedup": dedup_source, "quality": quality_source,
                  "tokenize": tokenize_source}
    once = {"cross_source_dedup": cross_source_dedup, "tokenizer": tokenizer_stage, "mixture_plan": plan_stage}
    for stage in STAGES[:STAGES.index(last) + 1]:
        if stage in per_source:
            for s in loaded.source_names:
                per_source[stage](loaded, s, progress=quiet)
        else:
            once[stage](loaded, progress=quiet)
