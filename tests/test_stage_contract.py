"""The stage contract: one registry drives the build order, per-stage code versions decide what a
code change rebuilds, and the engine imports no Dagster."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from corpusmix.core import stage as contract
from corpusmix.core.manifest import iter_manifests, read_manifest
from corpusmix.core.spec import load_spec
from corpusmix.pipeline import REGISTRY, STAGES, active_stages, run_stage, waves

from .conftest import CORPUS, REPO

ENGINE = ("corpusmix", "schemas")


def test_the_registry_is_in_dependency_order_and_names_each_stage_once():
    names = [s.name for s in STAGES]
    assert len(set(names)) == len(names)
    spec = load_spec(REPO / "specs" / "shared-corpus.yaml", check_files=False).spec
    for i, s in enumerate(STAGES):
        assert set(s.deps(spec)) <= set(names[:i]), s.name


def test_waves_run_every_stage_once_after_its_inputs(make_spec):
    """Tokenizer from a file: it joins cross-source dedup, so quality, the held-out split and tokenize
    share a run per source (4 waves); a trained tokenizer reads quality, which splits them (6 waves).
    A stage the spec asks nothing of is not in the build (no eval sets: no eval index, no
    decontamination; no proxy runs: no fit, no proposal; MDS off; no held-out split anywhere; no
    reasoning_traces source: no trace validation), and
    the stages after it read what it would have passed on."""
    sources = [{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "math-0000-of-0002.jsonl.gz")]}]
    from_file = load_spec(make_spec(sources)).spec
    trained = load_spec(make_spec(sources, name="trained.yaml", tokenizer={"train": {"vocab_size": 512}})).spec
    lean = load_spec(make_spec([{**sources[0], "heldout": False}], name="lean.yaml")).spec
    everything = load_spec(make_spec(
        [*sources, {"name": "traces", "kind": "reasoning_traces", "paths": ["traces.jsonl"]}], name="all.yaml", eval_sets=[{"name": "gsm8k_test", "source": "math", "where": {"split": "test"}}],
        mixing={"runs": {"mixtures": "runs.csv", "losses": "runs.csv"}}, handoff={"mds": {"enabled": True}}),
        check_files=False).spec
    last = ("swarm_design", "mixture_plan", "mixed_shards", "megatron_blends")
    for spec, expected in ((from_file, [("ingest", "dedup"), ("cross_source_dedup", "tokenizer"),
                                        ("quality", "heldout_split", "tokenize"), last]),
                           (trained, [("ingest", "dedup"), ("cross_source_dedup",), ("quality", "heldout_split"),
                                      ("tokenizer",), ("tokenize",), last]),
                           (lean, [("ingest", "dedup"), ("cross_source_dedup", "tokenizer"), ("quality", "tokenize"),
                                   last]),
                           (everything, [("ingest", "trace_validation", "dedup"),
                                         ("cross_source_dedup", "eval_index", "tokenizer"),
                                         ("decontaminate", "quality", "heldout_split", "tokenize"),
                                         ("swarm_design", "mixing_fit", "mixing_proposal", "mixture_plan", "mixed_shards",
                                          "megatron_blends", "mds_shards")])):
        got = waves(spec)
        assert [w.stages for w in got] == expected
        seen: set[str] = set()
        for w in got:
            for name in w.stages:
                assert set(REGISTRY[name].deps(spec)) <= seen | set(w.stages[:w.stages.index(name)])
                seen.add(name)
        assert seen == {s.name for s in active_stages(spec)}
    assert {s.name for s in active_stages(everything)} == set(REGISTRY)
    assert REGISTRY["quality"].deps(lean) == ("dedup", "cross_source_dedup")  # what decontaminate passes on
    assert REGISTRY["dedup"].deps(lean) == ("ingest",) and REGISTRY["dedup"].deps(everything) == ("ingest", "trace_validation")
    assert REGISTRY["tokenize"].deps(lean) == ("quality", "tokenizer")  # what the split passes on


def test_code_versions_cover_what_a_stage_runs_and_nothing_else():
    closure = {s.name: set(s.code_modules()) for s in STAGES}
    rules = "corpusmix.stages.quality_rules"
    assert rules in closure["quality"]
    assert all(rules not in closure[s] for s in ("ingest", "dedup", "cross_source_dedup", "tokenizer", "tokenize"))
    assert "corpusmix.readers" in closure["ingest"] and "corpusmix.readers" not in closure["dedup"]
    assert "corpusmix.stages.minhash" in closure["dedup"]
    # the held-out split reuses dedup's MinHash machinery, and no quality rule decides its bytes
    assert "corpusmix.stages.minhash" in closure["heldout_split"] and rules not in closure["heldout_split"]
    never = {"corpusmix.ops.report", "corpusmix.cli", "corpusmix.ops.audit", "corpusmix.ops.verify",
             "corpusmix.trainer.loader", "corpusmix.core.spec", "corpusmix.core.manifest", "corpusmix.pipeline"}
    assert all(not (never & mods) for mods in closure.values()), closure
    assert len({s.code_version() for s in STAGES}) == len(STAGES)


def test_a_docstring_or_comment_does_not_change_a_digest_and_code_does(tmp_path, monkeypatch):
    pkg = tmp_path / "corpusmix" / "stages"
    pkg.mkdir(parents=True)
    (tmp_path / "corpusmix" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    mod = pkg / "probe.py"
    monkeypatch.setattr(contract, "REPO", tmp_path)

    def digest(source: str) -> str:
        mod.write_text(source)
        for f in (contract._scanned, contract.import_closure, contract.code_digest):
            f.cache_clear()
        return contract.code_digest("corpusmix.stages.probe")

    base = digest('"""Doc."""\n\ndef f(x):\n    """Why."""\n    return x + 1\n')
    assert digest('"""Another doc."""\n# a comment\n\ndef f(x):\n    """Other words."""\n    return x + 1\n') == base
    assert digest('"""Doc."""\n\ndef f(x):\n    return x + 2\n') != base
    for f in (contract._scanned, contract.import_closure, contract.code_digest):
        f.cache_clear()


def test_a_stage_is_run_with_the_scope_it_declares(make_spec):
    loaded = load_spec(make_spec([{"name": "math", "kind": "math",
                                   "paths": [str(CORPUS / "math" / "math-0000-of-0002.jsonl.gz")]}]))
    with pytest.raises(ValueError, match="name a source"):
        run_stage("ingest", loaded)
    with pytest.raises(ValueError, match="give no source"):
        run_stage("mixture_plan", loaded, "math")
    with pytest.raises(FileNotFoundError, match="materialize ingest"):
        run_stage("dedup", loaded, "math")


def test_the_engine_imports_no_dagster():
    """No module of the engine or the schemas imports dagster, at top level or inside a function."""
    offenders = []
    for pkg in ENGINE:
        for f in (REPO / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n.split(".")[0] in ("dagster", "workflows", "assets") for n in names):
                    offenders.append(f"{f.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_the_dagster_assets_carry_the_stage_code_versions(tmp_path):
    from dagster import AssetKey

    from workflows.definitions import build_definitions

    spec = REPO / "specs" / "shared-corpus.yaml"
    graph = build_definitions(spec).resolve_asset_graph()
    active = active_stages(load_spec(spec, check_files=False).spec)
    for s in active:
        assert graph.get(AssetKey(s.name)).code_version == s.code_version()
    # a stage this spec asks nothing of (no proxy runs to fit) has no asset
    assert {k.path[0] for k in graph.get_all_asset_keys()} == {s.name for s in active} | {"proxy_run"}


def _versions(manifest_root: Path) -> dict[tuple, str]:
    return {(m["asset"], m["partition"]): m["version"] for m in map(read_manifest, iter_manifests(manifest_root))}


def _runs() -> int:
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        return instance.get_runs_count()


@pytest.mark.slow
def test_editing_the_report_rebuilds_nothing_and_a_quality_rule_rebuilds_from_quality_on(make_spec, tmp_path):
    """A copy of the code is built, then edited as a maintainer would: (a) a docstring in the
    report module, (b) a quality rule's default threshold. The manifests' versions say what rebuilt."""
    code = tmp_path / "code"
    for pkg in ("corpusmix", "schemas", "workflows", "assets"):
        shutil.copytree(REPO / pkg, code / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    sources = [{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "math-0000-of-0002.jsonl.gz")]},
               {"name": "web", "kind": "web", "paths": [str(CORPUS / "web" / "web-0000-of-0003.jsonl.gz")]}]
    spec = make_spec(sources)
    loaded = load_spec(spec)
    env = os.environ | {"PYTHONPATH": str(code)}

    def build() -> str:
        r = subprocess.run([sys.executable, "-m", "workflows.cli", "build", str(spec)], cwd=code, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    build()
    first, runs = _versions(loaded.manifest_root), _runs()
    stages = active_stages(loaded.spec)
    per_source = sum(s.per_source for s in stages)
    assert len(first) == 2 * per_source + len(stages) - per_source and runs > 0  # every stage, per source or once

    report = code / "corpusmix" / "ops" / "report.py"
    report.write_text(report.read_text().replace('"""What a build produced, for people:',
                                                 '"""What a build produced, for the people who read it:', 1))
    out = build()
    assert "up to date" in out and "no run started" in out
    assert _runs() == runs and _versions(loaded.manifest_root) == first

    rules = code / "corpusmix" / "stages" / "quality_rules.py"
    text = rules.read_text()
    assert "min_words=50," in text
    rules.write_text(text.replace("min_words=50,", "min_words=60,", 1))
    build()
    after = _versions(loaded.manifest_root)
    changed = sorted({asset for key, v in after.items() if first[key] != v for asset in [key[0]]})
    assert changed == ["heldout_split", "megatron_blends", "mixed_shards", "mixture_plan", "quality", "swarm_design",
                       "tokenize"]  # not ingest, dedup or cross-source dedup
    assert all(after[("quality", s)] != first[("quality", s)] for s in ("math", "web"))


def test_every_funnel_adds_up_and_hands_its_tokens_to_the_next_stage(built_corpus):
    """On the dev corpus, every stage's manifest funnel is additive (in - every removed row = out,
    documents and tokens), and a stage's tokens in are exactly its upstream's tokens out: ingest
    counted every document with the tokenizer file, so tokenize finds the same total."""
    manifests = {(m["asset"], m["partition"]): m for m in map(read_manifest, iter_manifests(built_corpus.manifest_root))}
    funnels = 0
    for (asset, part), m in manifests.items():
        c = m["counts"]
        if "documents_in" not in c:
            continue
        funnels += 1
        for unit, field in (("documents", "records"), ("tokens", "tokens")):
            removed = sum(r[field] for r in m["reasons"].values())
            assert c[f"{unit}_in"] - removed == c[f"{unit}_out"], (asset, part, unit)
    # ingest, dedup, quality, heldout_split, tokenize (no eval sets: no decontaminate); cross-source
    stages = ("ingest", "dedup", "quality", "heldout_split", "tokenize")
    assert [s.name for s in active_stages(built_corpus.spec) if s.per_source] == list(stages)
    assert funnels == len(stages) * len(built_corpus.source_names) + 1
    for s in built_corpus.source_names:
        chain = [manifests[(a, s)]["counts"] for a in stages]
        assert [c["tokens_out"] for c in chain[:-1]] == [c["tokens_in"] for c in chain[1:]], s
        assert chain[-2]["tokens_out"] == chain[-1]["tokens_out"], s  # the train side's count = tokenize's exact count
        split, tok = manifests[("heldout_split", s)], manifests[("tokenize", s)]
        assert split["reasons"]["heldout"]["records"] == split["counts"]["heldout_documents"] > 0, s
        # the held-out documents went to their own store, counted exactly the same way
        assert tok["details"]["valid"]["documents"] == split["counts"]["heldout_documents"], s
        assert tok["details"]["valid"]["text_tokens"] == split["counts"]["heldout_tokens"], s
    cross = manifests[("cross_source_dedup", None)]["counts"]
    assert cross["tokens_in"] == sum(manifests[("dedup", s)]["counts"]["tokens_out"] for s in built_corpus.source_names)
