"""Shared by the benchmark scripts: where the dev corpus is, and a spec over it."""

from __future__ import annotations

import os
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


def build_through(loaded, last: str) -> None:
    """Run the engine's stages in build order up to and including ``last`` (a benchmark's untimed setup)."""
    from corpusmix.pipeline import build_all

    build_all(loaded, until=last)


def resolved_spec(spec_path: str | Path) -> dict:
    """A spec file as a dict with its source and tokenizer paths made absolute, so it can be
    written elsewhere (e.g. ``executors.write_spec`` into fresh storage)."""
    from corpusmix.core.spec import load_spec

    loaded = load_spec(spec_path)
    base = yaml.safe_load(Path(spec_path).read_text())
    for s in base["sources"]:
        s["paths"] = [str(loaded.resolve(p)) for p in s["paths"]]
    if base.get("tokenizer", {}).get("path"):
        base["tokenizer"]["path"] = str(loaded.resolve(base["tokenizer"]["path"]))
    return base


def child_env(venv: Path) -> dict[str, str]:
    """Environment for a subprocess run by ``venv``'s python (the datatrove venv): none of this
    venv's variables, ``venv/bin`` first on PATH, and the Hugging Face libraries kept offline."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env
