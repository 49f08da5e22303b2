"""Proxy runs: a candidate mixture built into shards by the normal mixture stages at a proxy budget,
a proxy model trained on them, its held-out loss per source appended to the table the fit reads.

A proxy run is the spec itself with its mixture replaced: a static schedule of the run's weights,
``total_tokens`` the proxy budget, and ``subsample`` = proxy budget / target budget, so each source
is drawn from a seeded subset of its documents and repeats as often as the target run would make
it repeat (a proxy that saw a small source once while the target sees it four times would learn
from a repetition the target never has). The run's ``mixture_plan`` and ``mixed_shards`` are built
by the ordinary stages into the same storage (content-keyed: a run built before is found current),
with their manifests in the run's own folder, next to which the upstream manifests they read
(tokenize, tokenizer) are copied.

Layout under ``<storage.root>/proxy_runs/``: ``<run>/spec.yaml``, ``<run>/manifests/``,
``<run>/train/`` (checkpoint and train.json: resumable), and ``mixtures.parquet`` /
``losses.parquet``, rewritten after every finished run in our runs layout (``index``,
``train_<source>``; ``index``, ``val_loss_<source>`` in nats per token): what ``mixing.runs``
names to fit laws on them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from corpusmix.core.manifest import manifest_path
from corpusmix.core.spec import LoadedSpec, load_spec
from corpusmix.core.storage import atomic_write_bytes
from corpusmix.mixing.runs import OURS

if TYPE_CHECKING:  # torch is imported by the functions that train, not here: the build's swarm_design
    from corpusmix.proxies.train import TrainConfig  # hook and the Dagster definitions import this module

PROXY_DIR = "proxy_runs"
READS = ("tokenizer", "tokenize")  # the upstream manifests a run's plan and shards read


def run_name(index: int) -> str:
    """A swarm member's run (and Dagster partition) name."""
    return f"swarm-{index:04d}"


def swarm_runs(loaded: LoadedSpec) -> list[tuple[str, dict[str, float]]]:
    """(run name, weights) of every mixture of the published swarm design, in its order."""
    from corpusmix.core.manifest import require_manifest

    design = require_manifest(loaded.manifest_root, "swarm_design", None)[1]
    rows = pq.read_table(loaded.storage_root / design["outputs"][0]["path"]).to_pylist()
    return [(run_name(int(r["index"])), {s: r[f"{OURS['mixture_prefix']}{s}"] for s in loaded.source_names})
            for r in rows]


def train_config(loaded: LoadedSpec, **overrides) -> tuple[TrainConfig, int]:
    """The spec's proxy settings (``mixing.proxy``, with ``overrides`` not None) as a training
    configuration for one pass over the proxy budget, and that budget."""
    from corpusmix.proxies.train import TrainConfig

    p = loaded.spec.mixing.proxy.model_dump() | {k: v for k, v in overrides.items() if v is not None}
    budget = min(p.pop("budget"), loaded.spec.mixture.total_tokens)
    steps = budget // p["seq_len"] // p["batch"]
    return TrainConfig(steps=steps, **p), budget


def run_dir(loaded: LoadedSpec, run: str) -> Path:
    return loaded.storage_root / PROXY_DIR / run


def proxy_spec(loaded: LoadedSpec, run: str, weights: dict[str, float], budget: int, seq_len: int) -> LoadedSpec:
    """The spec of one proxy run (written to its folder, paths absolute), its upstream manifests copied."""
    target = loaded.spec.mixture.total_tokens
    if budget > target:
        raise ValueError(f"a proxy budget of {budget:,} tokens is larger than the target's {target:,}")
    spec = loaded.spec.model_dump(mode="json", exclude_defaults=False)
    folder = run_dir(loaded, run)
    spec["storage"] = {"root": str(loaded.storage_root), "manifests": str(folder / "manifests")}
    for src in spec["sources"]:
        src["paths"] = [str(loaded.resolve(p)) for p in src["paths"]]
    if spec["tokenizer"].get("path"):
        spec["tokenizer"]["path"] = str(loaded.resolve(spec["tokenizer"]["path"]))
    for e in spec["eval_sets"]:
        e["paths"] = [str(loaded.resolve(p)) for p in e["paths"]] if e.get("paths") else None
    if spec["mixing"].get("runs"):
        spec["mixing"]["runs"] = None  # a proxy run does not fit laws
    spec["mixture"] |= {"total_tokens": budget, "seq_len": seq_len, "subsample": budget / target,
                        "schedule": {"type": "static", "weights": {s: float(w) for s, w in weights.items() if w > 0}}}
    spec["handoff"]["mds"]["enabled"] = False
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    atomic_write_bytes(path, yaml.safe_dump(spec, sort_keys=False).encode())
    proxy = load_spec(path, check_files=False)
    for stage in READS:
        parts = loaded.source_names if stage == "tokenize" else [None]
        for part in parts:
            src, dst = manifest_path(loaded.manifest_root, stage, part), manifest_path(proxy.manifest_root, stage, part)
            if not src.is_file():
                raise FileNotFoundError(f"no {stage} manifest at {src}: build the spec through tokenize first")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    return proxy


def run_proxy(loaded: LoadedSpec, run: str, weights: dict[str, float], budget: int, cfg: TrainConfig,
              progress: Callable[[str], None] = print) -> dict:
    """Build one run's shards (or find them current) and train its proxy (or resume it)."""
    from corpusmix.proxies.train import heldout_stores, train_proxy

    shards = proxy_shards(loaded, run, weights, budget, cfg.seq_len, progress)
    return train_proxy(shards, heldout_stores(loaded), run_dir(loaded, run) / "train", cfg, progress)


def proxy_shards(loaded: LoadedSpec, run: str, weights: dict[str, float], budget: int, seq_len: int,
                 progress: Callable[[str], None]) -> Path:
    """The run's plan and mixed shards, built by the ordinary stages (found current when built before)."""
    from corpusmix.pipeline import run_stage
    from corpusmix.proxies.train import shards_dir

    proxy = proxy_spec(loaded, run, weights, budget, seq_len)
    for stage in ("mixture_plan", "mixed_shards"):
        run_stage(stage, proxy, progress=progress)
    return shards_dir(proxy)


def step_seconds(loaded: LoadedSpec, run: str, weights: dict[str, float], budget: int,
                 cfg: TrainConfig) -> tuple[float, float]:
    """Seconds per training step and for the evaluation, measured: the run's shards built, three
    steps and the evaluation timed in a scratch directory (removed): what a swarm's estimate rests on."""
    import time

    from corpusmix.proxies.train import TrainConfig, heldout_stores, train_proxy

    shards = proxy_shards(loaded, run, weights, budget, cfg.seq_len, lambda m: None)
    probe = TrainConfig(**{**cfg.__dict__, "steps": min(cfg.steps or 3, 3), "checkpoint_every": 10 ** 9})
    scratch = run_dir(loaded, run) / "probe"
    t = time.perf_counter()
    result = train_proxy(shards, heldout_stores(loaded), scratch, probe, lambda m: None)
    total = time.perf_counter() - t
    shutil.rmtree(scratch)
    return result["elapsed_s"] / probe.steps, total - result["elapsed_s"]


def collect(loaded: LoadedSpec) -> tuple[Path, Path, int]:
    """Every finished run's mixture and held-out losses as the two runs tables (rewritten atomically)."""
    from corpusmix.proxies.train import RESULT

    root = loaded.storage_root / PROXY_DIR
    mix_rows, loss_rows = [], []
    for result_file in sorted(root.glob(f"*/train/{RESULT}")):
        run = result_file.parents[1].name
        index = int(run.rsplit("-", 1)[-1])
        spec = yaml.safe_load((root / run / "spec.yaml").read_text())
        weights = spec["mixture"]["schedule"]["weights"]
        total = sum(weights.values())
        result = orjson.loads(result_file.read_bytes())
        mix_rows.append({"index": index} | {f"{OURS['mixture_prefix']}{s}": weights.get(s, 0.0) / total
                                            for s in loaded.source_names})
        loss_rows.append({"index": index} | {f"{OURS['loss_prefix']}{s}": result["eval"][s]["loss_nats"]
                                             for s in loaded.source_names if s in result["eval"]})
    paths = root / "mixtures.parquet", root / "losses.parquet"
    for path, rows in zip(paths, (mix_rows, loss_rows)):
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(sorted(rows, key=lambda r: r["index"])), sink)
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return paths[0], paths[1], len(mix_rows)
