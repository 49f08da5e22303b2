"""Hand-off to other trainers, checked with their own readers: the Megatron blends with megatron-core's
BlendedMegatronDatasetBuilder and GPTDataset, the MDS shards with mosaicml-streaming's StreamingDataset."""

from __future__ import annotations

import collections
import gc
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import tempfile
import types
import warnings

import numpy as np
import pytest
import yaml

from corpusmix.core.manifest import manifest_path, read_manifest
from corpusmix.handoff.megatron_blends import BlendError
from corpusmix.mixture.plan import load_plan
from corpusmix.pipeline import run_stage

from .conftest import GPT2, copy_build, read_outputs

pytestmark = pytest.mark.slow  # builds on the session's corpus
QUIET = {"progress": lambda m: None}
PHASES = {"type": "phases", "transition": "linear", "phases": [
    {"name": "foundation", "end": 0.6, "weights": {"code": 1, "web": 2, "math": 1, "dialogue": 1}},
    {"name": "reasoning", "end": 0.9, "weights": {"code": 2, "web": 1, "math": 2, "dialogue": 0.5}},
    {"name": "final", "end": 1.0, "weights": {"code": 1, "math": 1}}]}
# short samples, so a phase is thousands of them: a source's share is then resolved to well under 1 %
# (each slice's draws are within one sample of weight x size)
HANDOFF = {"megatron": {"global_batch_size": 16, "sub_phases": 2}, "mds": {"enabled": True, "shard_bytes": 1 << 20}}


def _mixture(built, **changes) -> dict:
    return (yaml.safe_load(built.path.read_text())["mixture"]
            | {"schedule": PHASES, "total_tokens": 1_000_000, "seq_len": 64} | changes)


@pytest.fixture(scope="module")
def handoff(built_corpus, tmp_path_factory):
    loaded = copy_build(built_corpus, tmp_path_factory.mktemp("handoff"), mixture=_mixture(built_corpus),
                        handoff=HANDOFF)
    run_stage("mixture_plan", loaded, **QUIET)
    blends = run_stage("megatron_blends", loaded, **QUIET)[0]
    mds = run_stage("mds_shards", loaded, **QUIET)[0]
    return loaded, blends, mds


def _plan_shares(plan: dict, phase: str) -> dict[str, float]:
    q = next(p["quotas"] for p in plan["phases"] if p["name"] == phase)
    return {s: v / sum(q.values()) for s, v in q.items()}


def _within(realised: dict[str, float], planned: dict[str, float], tol: float = 0.01) -> list[str]:
    """Sources with a plan share >= 5 % whose realised share is off by more than ``tol`` (relative)."""
    return [f"{s}: {realised.get(s, 0.0):.4f} vs {p:.4f}" for s, p in planned.items()
            if p >= 0.05 and abs(realised.get(s, 0.0) - p) / p > tol]


# ----------------------------------------------------------------------------- Megatron

class _Ids:
    """What GPTDataset reads of a tokenizer (megatron-core's text tokenizers need transformers)."""

    vocab_size, eod, pad = 50257, 50256, 50256
    unique_identifiers = {"class": "gpt2 ids"}


def _megatron(blend_file, table: dict, slice_row: dict, cache, valid: int | None = None):
    """megatron-core's own builder over one emitted slice file: (train, valid) blended datasets.

    megatron-core 0.16's BlendedDataset asks torch.distributed for its rank whenever it writes an
    index cache (GPTDataset checks first whether a process group exists; BlendedDataset does not),
    so a one-process gloo group stands in for the one every Megatron training run has."""
    import torch.distributed as dist

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
        from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=0, world_size=1, init_method="file://" + tempfile.mktemp())
    args = json.loads(blend_file.read_bytes())

    def blend(split):
        return (args[split][1::2], [float(w) for w in args[split][0::2]]) if args[split] else None

    cfg = GPTDatasetConfig(random_seed=1234, sequence_length=table["seq_len"],
                           blend_per_split=[blend("train"), blend("valid") if valid else None, None],
                           path_to_cache=str(cache), reset_position_ids=False, reset_attention_mask=False,
                           eod_mask_loss=False, tokenizer=_Ids())
    with warnings.catch_warnings():  # "the pad token id collides with another special token": GPT-2 has no pad
        warnings.simplefilter("ignore", UserWarning)
        train, val, _ = BlendedMegatronDatasetBuilder(GPTDataset, [slice_row["samples"], valid, None], lambda: True,
                                                      cfg).build()
    return args, train, val


def test_megatron_draws_each_phase_in_the_plans_shares_with_caches_outside_the_build(handoff, tmp_path):
    loaded, blends, _ = handoff
    plan = load_plan(loaded)[0]
    folder = loaded.storage_root / blends["outputs"][0]["path"].rsplit("/", 1)[0]
    table = json.loads((folder / "blends.json").read_bytes())
    before = sorted(p for p in loaded.storage_root.rglob("*"))
    cwd = os.getcwd()
    os.chdir(loaded.storage_root)  # the prefixes are relative to the storage root, as megatron.md says
    try:
        drawn: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for name, row in zip(table["slice_files"], table["slices"]):
            args, train, _ = _megatron(folder / f"{name}.json", table, row, tmp_path / "cache")
            counts = np.bincount(train.dataset_index[: row["samples"]], minlength=len(args["train"]) // 2)
            sources = [p.split("/")[1] for p in args["train"][1::2]]  # tokenize/<source>/<version>/tokens
            for s, c in zip(sources, counts):
                drawn[row["name"]][s] += int(c) * table["seq_len"]
            assert len(train[0]["tokens"]) == table["seq_len"]  # samples load
        _, _, valid = _megatron(folder / f"{table['slice_files'][0]}.json", table, table["slices"][0],
                                tmp_path / "cache", valid=16)
        assert len(valid) >= 16 and len(valid[0]["tokens"]) == table["seq_len"]  # the held-out stores load
    finally:
        os.chdir(cwd)
    for phase in ("foundation", "reasoning", "final"):
        total = sum(drawn[phase].values())
        realised = {s: t / total for s, t in drawn[phase].items()}
        assert _within(realised, _plan_shares(plan, phase)) == [], phase
    assert table["phase_transition_iterations"] == [r["start_iteration"] for r in table["slices"][1:]]
    assert table["slices"][-1]["end_iteration"] == table["train_iters"]
    # megatron-core's index caches went where we said, never next to the stores
    assert sorted(p for p in loaded.storage_root.rglob("*")) == before
    assert any((tmp_path / "cache").iterdir())
    # every referenced store is listed with its checksum, as the tokenize manifests record it
    for entry in table["checksums"]:
        assert hashlib.sha256((loaded.storage_root / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    referenced = {p for name in table["slice_files"]
                  for split in json.loads((folder / f"{name}.json").read_bytes()).values() for p in split[1::2]}
    assert referenced <= {e["path"][: -len(".bin")] for e in table["checksums"] if e["path"].endswith(".bin")}
    readme = (folder / "megatron.md").read_text()
    assert "--per-split-data-args-path" in readme and "--data-cache-path" in readme


def test_a_blend_over_the_epoch_cap_is_refused_before_anything_is_written(built_corpus, tmp_path):
    """The plan holds every source to the cap; a store that shrank under it (web's held-out split made
    half of it, tokenize rebuilt, the plan not) would be read past the cap: refused, nothing written."""
    loaded = copy_build(built_corpus, tmp_path / "plan", mixture=_mixture(built_corpus), handoff=HANDOFF)
    web = run_stage("mixture_plan", loaded, **QUIET)[0]["details"]["per_source"]["web"]["epochs"]
    spec = yaml.safe_load(built_corpus.path.read_text())
    for src in spec["sources"]:
        if src["name"] == "web":
            src["heldout"] = {"fraction": 0.5, "min_documents": 1}
    shrunk = copy_build(built_corpus, tmp_path / "shrunk", mixture=_mixture(built_corpus, max_epochs=web * 1.5),
                        handoff=HANDOFF, sources=spec["sources"])
    run_stage("mixture_plan", shrunk, **QUIET)  # within the cap on the full store
    for stage in ("heldout_split", "tokenize"):
        run_stage(stage, shrunk, "web", **QUIET)  # half of web held out: its train store halves
    published = manifest_path(shrunk.manifest_root, "megatron_blends", None)
    before = (published.read_bytes(), sorted((shrunk.storage_root / "megatron_blends").iterdir()))
    with pytest.raises(BlendError) as e:
        run_stage("megatron_blends", shrunk, **QUIET)
    assert "source 'web'" in str(e.value) and "fix:" in str(e.value) and "max_epochs" in str(e.value)
    # nothing written: the copied build's blends (of the old plan) and manifest are as they were
    assert (published.read_bytes(), sorted((shrunk.storage_root / "megatron_blends").iterdir())) == before


# ----------------------------------------------------------------------------- MosaicML streaming

def _streaming():
    """mosaicml-streaming's reader classes. Its package ``__init__`` also imports its vision, text and
    DataLoader modules, which need torchvision (CUDA builds only on PyPI) and transformers < 5 (at odds
    with our tokenizers pin); the reader does not use them, so its packages are entered without
    running those ``__init__`` files, and ``streaming.base.dataset`` and ``stream`` load as shipped."""
    if "streaming" not in sys.modules:
        root = importlib.util.find_spec("streaming").submodule_search_locations[0]
        for name, path in (("streaming", root), ("streaming.base", os.path.join(root, "base"))):
            module = types.ModuleType(name)
            module.__path__ = [path]
            module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
            module.__spec__.submodule_search_locations = [path]
            sys.modules[name] = module
    from streaming.base.dataset import StreamingDataset
    from streaming.base.stream import Stream

    return StreamingDataset, Stream


def _phase_dataset(folder, phase_dir: str, seed: int = 7):
    StreamingDataset, Stream = _streaming()
    cfg = json.loads((folder / phase_dir / "streams.json").read_bytes())
    streams = [Stream(local=str(folder / s["local"]), choose=s["choose"]) for s in cfg["streams"]]
    return cfg, StreamingDataset(streams=streams, shuffle=True, shuffle_seed=seed, batch_size=8, num_canonical_nodes=1)


def test_streaming_reads_each_phase_in_the_plans_shares_with_the_documents_named(handoff):
    from tokenizers import Tokenizer

    loaded, _, mds = handoff
    plan = load_plan(loaded)[0]
    folder = loaded.storage_root / mds["outputs"][0]["path"].split("/phase-")[0]
    tok = Tokenizer.from_file(str(GPT2))
    texts, stores = {}, {}
    from corpusmix.core.indexed import IndexedReader

    for s in plan["sources"]:
        t = read_manifest(manifest_path(loaded.manifest_root, "tokenize", s))
        docs = read_outputs(t, loaded.storage_root, "token_documents")
        bin_out = next(o for o in t["outputs"] if o["kind"] == "token_bin")
        stores[s] = (IndexedReader(loaded.storage_root / bin_out["path"][: -len(".bin")]),
                     dict(zip(docs.column("doc_id").to_pylist(), docs.column("sequence").to_pylist())))
    for p, phase in enumerate(plan["phases"]):
        cfg, ds = _phase_dataset(folder, f"phase-{p:02d}-{phase['name']}")
        seen = collections.Counter()
        for i, sample in enumerate(ds):  # one epoch = the phase
            seen[sample["source"]] += 1
            if i % 37 == 0:  # lineage: the sample's ids are its documents' ids from first_offset on, EOS between
                reader, seq_of = stores[sample["source"]]
                ids = np.concatenate([reader[seq_of[d]] for d in sample["doc_ids"]])[sample["first_offset"]:]
                assert np.array_equal(sample["tokens"], ids[: cfg["seq_len"]])
                pieces = np.split(sample["tokens"], np.flatnonzero(sample["tokens"] == _Ids.eod) + 1)
                for piece, doc in zip(pieces, sample["doc_ids"]):
                    text = tok.decode(piece[piece != _Ids.eod].tolist()).strip("\ufffd")
                    full = texts.setdefault(doc, tok.decode(reader[seq_of[doc]][:-1].tolist()))
                    assert text in full  # the text decodes to a part of the document it names
        assert dict(seen) == {st["source"]: st["choose"] for st in cfg["streams"]}
        total = sum(seen.values())
        assert total == cfg["epoch_size"]
        assert _within({s: n / total for s, n in seen.items()}, _plan_shares(plan, phase["name"])) == [], phase["name"]
        del ds
        gc.collect()
    assert sum(json.loads((folder / f"phase-{p:02d}-{ph['name']}" / "streams.json").read_bytes())["epoch_size"]
               for p, ph in enumerate(plan["phases"])) == round(plan["budget"] / plan["seq_len"])


def test_streaming_resumes_mid_phase_from_a_state_dict(handoff):
    loaded, _, mds = handoff
    folder = loaded.storage_root / mds["outputs"][0]["path"].split("/phase-")[0]
    phase = "phase-00-foundation"

    def key(sample) -> str:
        return hashlib.blake2b(sample["tokens"].tobytes(), digest_size=8).hexdigest()

    _, ds = _phase_dataset(folder, phase)
    whole = [key(s) for s in ds]
    del ds
    gc.collect()
    _, ds = _phase_dataset(folder, phase)
    it = iter(ds)
    head = [key(next(it)) for _ in range(100)]
    state = ds.state_dict(100, True)
    del it, ds
    gc.collect()
    _, resumed = _phase_dataset(folder, phase)
    resumed.load_state_dict(state)
    assert head == whole[:100] and [key(s) for s in resumed] == whole[100:]
    del resumed
    gc.collect()


def test_handoff_outputs_are_byte_identical_across_builds(handoff, built_corpus, tmp_path):
    loaded, blends, mds = handoff
    again = copy_build(built_corpus, tmp_path, mixture=_mixture(built_corpus), handoff=HANDOFF)
    run_stage("mixture_plan", again, **QUIET)
    for name, first in (("megatron_blends", blends), ("mds_shards", mds)):
        second = run_stage(name, again, **QUIET)[0]
        assert ([(o["path"], o["sha256"]) for o in second["outputs"]]
                == [(o["path"], o["sha256"]) for o in first["outputs"]])
