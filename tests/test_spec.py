"""The spec is checked before any work: every error names the field path, the line, the bad value and a fix."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from corpusmix.core.spec import SpecError, load_spec

from .conftest import CORPUS, GPT2, REPO, base_spec, write_spec

WIKI = {"name": "wiki", "kind": "prose", "paths": [str(CORPUS / "wiki" / "*.jsonl.gz")]}
CODE = {"name": "code", "kind": "code", "paths": [str(CORPUS / "code" / "*.jsonl.gz")]}


def _good(tmp_path) -> dict:
    spec = base_spec(copy.deepcopy([WIKI, CODE]), tmp_path)
    spec["mixture"]["schedule"] = {"type": "phases", "transition": "linear", "phases": [
        {"name": "a", "end": 0.5, "weights": {"wiki": 1, "code": 1}},
        {"name": "b", "end": 1.0, "weights": {"wiki": 2, "code": 0}}]}
    return spec


def _issues(tmp_path, spec: dict) -> list:
    path = write_spec(tmp_path / "spec.yaml", spec)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    return err.value.issues


def _one(tmp_path, mutate) -> object:
    spec = copy.deepcopy(_good(tmp_path))
    mutate(spec)
    issues = _issues(tmp_path, spec)
    assert len(issues) == 1, [i.render("spec") for i in issues]
    return issues[0]


def test_good_spec_loads(tmp_path):
    loaded = load_spec(write_spec(tmp_path / "spec.yaml", _good(tmp_path)))
    assert loaded.source_names == ["wiki", "code"]
    assert len(loaded.source_files(loaded.source("code"))) == 4


def test_unknown_key_suggests_the_nearest(tmp_path):
    issue = _one(tmp_path, lambda s: s["sources"][0].update({"text_feild": "body"}))
    assert issue.path == "sources[0].text_feild"
    assert "did you mean 'text_field'" in issue.fix
    issue = _one(tmp_path, lambda s: s["mixture"].update({"seqlen": 5}))
    assert issue.path == "mixture.seqlen" and "seq_len" in issue.fix


def test_glob_matching_no_file(tmp_path):
    issue = _one(tmp_path, lambda s: s["sources"][1].update({"paths": [str(CORPUS / "code" / "*.jsonl.bz2")]}))
    assert issue.path == "sources[1].paths[0]" and "matches no file" in issue.message
    assert issue.line is not None


def test_weights_naming_an_unknown_source(tmp_path):
    issue = _one(tmp_path, lambda s: s["mixture"]["schedule"]["phases"][0]["weights"].update({"wikki": 1}))
    assert issue.path == "mixture.schedule.phases[0].weights.wikki"
    assert "unknown source 'wikki'" in issue.message and "did you mean 'wiki'" in issue.fix


def test_negative_and_all_zero_weights(tmp_path):
    issue = _one(tmp_path, lambda s: s["mixture"]["schedule"]["phases"][1]["weights"].update({"code": -1}))
    assert issue.path == "mixture.schedule.phases[1].weights.code" and "negative" in issue.message

    def zero(s):
        s["mixture"]["schedule"]["phases"][0]["weights"] = {"wiki": 0, "code": 0}
    issue = _one(tmp_path, zero)
    assert issue.path == "mixture.schedule.phases[0].weights" and "all weights are zero" in issue.message


def test_phase_boundaries_must_increase(tmp_path):
    def backwards(s):
        s["mixture"]["schedule"]["phases"][0]["end"] = 1.0
        s["mixture"]["schedule"]["phases"][1]["end"] = 1.0
    issue = _one(tmp_path, backwards)
    assert issue.path == "mixture.schedule.phases[1].end" and "does not increase" in issue.message


def test_non_positive_seq_len_and_budget(tmp_path):
    spec = _good(tmp_path)
    spec["mixture"]["seq_len"] = 0
    spec["mixture"]["total_tokens"] = -5
    issues = {i.path: i for i in _issues(tmp_path, spec)}
    assert set(issues) == {"mixture.seq_len", "mixture.total_tokens"}
    assert "context length" in issues["mixture.seq_len"].fix


def test_missing_tokenizer_file(tmp_path):
    issue = _one(tmp_path, lambda s: s["tokenizer"].update({"path": "nope/tokenizer.json"}))
    assert issue.path == "tokenizer.path" and "does not exist" in issue.message


def test_bad_enum_and_type_name_the_value(tmp_path):
    issue = _one(tmp_path, lambda s: s["sources"][0].update({"format": "jsonll"}))
    assert issue.path == "sources[0].format" and "'jsonll'" in issue.message and "jsonl" in issue.fix
    issue = _one(tmp_path, lambda s: s["mixture"].update({"seq_len": "long"}))
    assert issue.path == "mixture.seq_len" and "'long'" in issue.message


def test_all_problems_are_reported_at_once_with_lines(tmp_path):
    spec = _good(tmp_path)
    spec["sources"][0]["kindd"] = "prose"
    spec["sources"][1]["kind"] = "poetry"
    issues = _issues(tmp_path, spec)
    assert {i.path for i in issues} == {"sources[0].kindd", "sources[1].kind"}
    text = (tmp_path / "spec.yaml").read_text().splitlines()
    for i in issues:
        assert i.path.rsplit(".", 1)[-1] in text[i.line - 1]  # the line really holds that key


def test_cli_validate_exit_codes(tmp_path):
    good = write_spec(tmp_path / "good.yaml", _good(tmp_path))
    bad_spec = _good(tmp_path)
    bad_spec["mixture"]["seq_len"] = -1
    bad = write_spec(tmp_path / "bad.yaml", bad_spec)
    ok = subprocess.run([sys.executable, "-m", "corpusmix.cli", "validate", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "valid" in ok.stdout
    ko = subprocess.run([sys.executable, "-m", "corpusmix.cli", "validate", str(bad)], capture_output=True, text=True)
    assert ko.returncode == 2
    assert "mixture.seq_len" in ko.stderr and "fix:" in ko.stderr and "bad.yaml:" in ko.stderr


def test_cli_init_writes_a_spec_that_validates_once_paths_exist(tmp_path):
    target = tmp_path / "corpus.yaml"
    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "init", str(target)], capture_output=True, text=True)
    assert r.returncode == 0
    with pytest.raises(SpecError) as err:
        load_spec(target)
    assert {i.path for i in err.value.issues} == {"sources[0].paths[0]", "sources[1].paths[0]", "tokenizer.path"}
    (tmp_path / "raw" / "wiki").mkdir(parents=True)
    (tmp_path / "raw" / "wiki" / "a.jsonl.gz").write_bytes(b"")
    (tmp_path / "raw" / "code" / "pkg").mkdir(parents=True)
    (tmp_path / "raw" / "code" / "pkg" / "m.py").write_text("x = 1\n")
    (tmp_path / "tokenizer.json").write_bytes((REPO.parent / "shared/tokenizers/gpt2/tokenizer.json").read_bytes())
    assert load_spec(target).source_names == ["wiki", "code"]


def test_committed_specs_are_valid():
    for spec in (REPO / "specs").glob("*.yaml"):
        load_spec(spec, check_files=spec.name != "demo.yaml")


def test_a_yaml_alias_bomb_is_refused_at_once_and_modest_anchors_still_work(tmp_path):
    import time

    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"{c}: &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")  # ~350 bytes, 9^9 values once expanded
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match="expands to more than 100,000 values through YAML aliases"):
        load_spec(bomb)
    assert time.perf_counter() - t0 < 5
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpecError):
        load_spec(deep)
    weights = {"w": 1, "m": 2}
    spec = {"name": "anchors", "sources": [{"name": n, "kind": "web", "paths": [str(CORPUS / "web" / "*.jsonl.gz")]}
                                          for n in weights],
            "tokenizer": {"path": str(GPT2)},
            "mixture": {"total_tokens": 1000, "seq_len": 10, "schedule": {"type": "phases", "phases": [
                {"name": "p1", "end": 0.5, "weights": weights}, {"name": "p2", "end": 1.0, "weights": weights}]}}}
    text = yaml.safe_dump(spec, sort_keys=False)
    assert "&id" in text  # PyYAML anchors the repeated weights map and aliases it
    good = tmp_path / "good.yaml"
    good.write_text(text)
    assert load_spec(good).spec.mixture.schedule.phases[1].weights == weights


def test_a_glob_over_the_builds_own_outputs_manifests_or_dagster_home_is_refused(tmp_path, monkeypatch):
    raw = tmp_path / "work"
    (raw / "in").mkdir(parents=True)
    (raw / "in" / "a.jsonl").write_text('{"id": "1", "text": "x"}\n')
    monkeypatch.setenv("DAGSTER_HOME", str(raw / "home"))

    def spec(paths, **storage):
        s = base_spec([{"name": "s", "kind": "web", "paths": paths}], raw)
        s["storage"] = {"root": str(raw / "data"), "manifests": str(raw / "manifests")} | storage
        return write_spec(tmp_path / "spec.yaml", s)

    load_spec(spec([str(raw / "in" / "*.jsonl")]))  # the sources' own folder: fine
    load_spec(spec([str(raw / "*" / "*.jsonl")]))  # outputs are never .jsonl: fine
    for paths, what in (([str(raw / "**")], "outputs"), ([str(raw / "**" / "*.json")], "manifests"),
                        ([str(raw / "*" / "*.yaml")], "Dagster instance")):
        with pytest.raises(SpecError, match=rf"would read the build's own {what}"):
            load_spec(spec([str(raw / "in" / "*.jsonl"), *paths]))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "elsewhere"))
    load_spec(spec([str(raw / "in" / "*.jsonl"), str(raw / "*" / "*.yaml")], ), check_files=False)  # home moved


def test_symlink_loops_under_a_recursive_glob_are_cut(tmp_path):
    """Links back to an ancestor under `**` sent glob into loops for minutes; each file is found once."""
    import os
    import time

    root = tmp_path / "raw"
    for d in ("a", "a/b", "a/c"):
        (root / d).mkdir(parents=True)
    for i, d in enumerate(("a", "a/b", "a/c")):
        (root / d / f"{i}.jsonl").write_text('{"id": "%d", "text": "x"}\n' % i)
    for i, d in enumerate(("a/b", "a/c", "a/b", "a/c")):
        os.symlink(root, root / d / f"up{i}")  # four loops, each back to the top
    spec = base_spec([{"name": "s", "kind": "web", "paths": [str(root / "**" / "*.jsonl")]}], tmp_path)
    t0 = time.perf_counter()
    loaded = load_spec(write_spec(tmp_path / "spec.yaml", spec))
    files = loaded.source_files(loaded.source("s"))
    assert time.perf_counter() - t0 < 5
    assert sorted(f.name for f in files) == ["0.jsonl", "1.jsonl", "2.jsonl"]


def test_monitor_and_next_phase_mistakes_name_the_field_and_the_fix(tmp_path):
    def doremi_without_reference(spec):
        spec["monitor"] = {"log": "run.jsonl", "policy": "doremi"}

    issue = _one(tmp_path, doremi_without_reference)
    assert issue.path == "monitor.reference" and "set monitor.reference" in issue.fix

    def one_phase(spec):
        spec["monitor"] = {"log": "run.jsonl"}
        spec["mixture"]["schedule"] = {"type": "static", "weights": "equal"}

    issue = _one(tmp_path, one_phase)
    assert issue.path == "monitor.log" and "two or more phases" in issue.fix

    def proposal_for_the_first_phase(spec):
        spec["mixture"]["schedule"]["phases"][0]["weights"] = {"proposal": "next_phase/0123456789abcdef"}

    issue = _one(tmp_path, proposal_for_the_first_phase)
    assert issue.path == "mixture.schedule.phases[0].weights.proposal" and "phases[q]" in issue.fix
