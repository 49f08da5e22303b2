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
