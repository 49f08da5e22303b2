"""Spec validation with a place and a fix for every problem: YAML line numbers, pydantic's
structural errors turned into messages, and the semantic checks (globs, tokenizer file, weights,
phases, cron) that need more than one field or the file system. ``spec.load_spec`` runs them.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from corpusmix.core.globs import find_files, glob_regex
from corpusmix.core.spec import (
    NEXT_PHASE,
    LoadedSpec,
    ProposalRef,
    Schedule,
    Spec,
    SpecIssue,
    field_path,
    schedule_weights,
)

# ---------------------------------------------------------------------------
# YAML line numbers: map a field path to the line it sits on.

def line_index(root: yaml.Node | None) -> dict[tuple, int]:
    """Field path (tuple of keys/indices) -> 1-based line of that node in the composed YAML."""
    index: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                index[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
                index[path + (key,)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return index


def line_for(index: dict[tuple, int], loc: tuple) -> int | None:
    while loc:
        if loc in index:
            return index[loc]
        loc = loc[:-1]
    return index.get(())


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the mapping at ``loc`` (for unknown-key suggestions)."""
    model: Any = Spec
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        ann = field.annotation
        model = _first_model(ann)
        if model is None:
            return None
    return model


def _first_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        m = _first_model(arg)
        if m is not None:
            return m
    return None


_FIXES = {
    "missing": "add this key; see the README's spec reference for its meaning",
    "literal_error": "use one of the allowed values",
    "int_parsing": "write a whole number",
    "int_type": "write a whole number",
    "float_parsing": "write a number",
    "greater_than": "use a larger value",
    "greater_than_equal": "use a larger value",
    "less_than_equal": "use a smaller value",
    "string_pattern_mismatch": "use lowercase letters, digits, '_' or '-', starting with a letter",
    "too_short": "give at least one entry",
}


def structural_issues(err: ValidationError, index: dict[tuple, int]) -> list[SpecIssue]:
    issues = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = field_path(loc)
        line = line_for(index, loc)
        if e["type"] == "extra_forbidden":
            key = loc[-1]
            owner = _model_at(loc[:-1])
            valid = sorted(owner.model_fields) if owner else []
            near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
            hint = f"did you mean {near[0]!r}?" if near else f"valid keys here: {', '.join(valid)}"
            issues.append(SpecIssue(path, f"unknown key {key!r}", f"{hint}", line))
            continue
        value = e.get("input")
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        fix = _FIXES.get(e["type"], "correct the value")
        if e["type"] == "literal_error":
            fix = f"use one of: {e['ctx']['expected']}"
        issues.append(SpecIssue(path, f"{e['msg']} (got {shown})", fix, line))
    return issues


# ---------------------------------------------------------------------------
# Meaning: cross-field checks that need the whole spec and the file system.

def _weight_issues(weights, loc: tuple, names: list[str]) -> list[SpecIssue]:
    if not isinstance(weights, dict):  # a baseline or a proposal: computed, checked elsewhere
        return []
    issues = []
    for src, w in weights.items():
        if src not in names:
            near = difflib.get_close_matches(src, names, n=1, cutoff=0.5)
            hint = f"did you mean {near[0]!r}?" if near else f"sources are: {', '.join(names)}"
            issues.append(SpecIssue(field_path(loc + (src,)), f"weight names unknown source {src!r}", hint))
        if not math.isfinite(w) or w < 0:
            issues.append(SpecIssue(field_path(loc + (src,)), f"weight {w!r} is negative or not finite",
                                    "weights are token shares: use a number >= 0"))
    if weights and all(w == 0 for w in weights.values()):
        issues.append(SpecIssue(field_path(loc), "all weights are zero", "give at least one source a positive weight"))
    if not weights:
        issues.append(SpecIssue(field_path(loc), "no weights given", "map at least one source name to a positive weight"))
    return issues


def _tokenizer_file_issues(path: Path, eos_token: str) -> list[SpecIssue]:
    """A tokenizer file (the caller found it) must load and know the EOS token every document will end with."""
    st = path.stat()
    return list(_checked_tokenizer(str(path), st.st_mtime_ns, st.st_size, eos_token))


@functools.lru_cache(maxsize=16)
def _checked_tokenizer(path: str, mtime_ns: int, size: int, eos_token: str) -> tuple[SpecIssue, ...]:
    """The check itself, once per file version and process: a build loads the spec in every run and
    asset, and parsing a GPT-2 tokenizer.json costs ~0.1 s each time."""
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001 - the tokenizers error text is the useful part
        return (SpecIssue("tokenizer.path", f"{path} is not a loadable tokenizer.json: {e}",
                          "point tokenizer.path at a Hugging Face tokenizer.json (tokenizer.save() writes one)"),)
    if tok.token_to_id(eos_token) is None:
        return (SpecIssue("tokenizer.eos_token", f"EOS token {eos_token!r} is not in the vocabulary of {path}",
                          "set tokenizer.eos_token to the tokenizer's end-of-text token (GPT-2: '<|endoftext|>')"),)
    return ()


# The shapes of the files a build writes, under each of its roots (see the stages and Dagster's home).
_OWN_FILES = {
    "outputs": ("ingest/s/0123456789abcdef0123/part-00000-000.parquet", "tokenize/s/0123456789abcdef0123/tokens.bin",
                "mixed_shards/0123456789abcdef0123/shard-00000.json", "tokenizer/0123456789abcdef0123/tokenizer.json"),
    "manifests": ("ingest/s.json", "mixed_shards/_all.json", "REPORT.md"),
    "Dagster instance (DAGSTER_HOME)": ("dagster.yaml", "history/runs.db", "storage/run/compute_logs/step.out"),
}


def _own_files_matched(loaded: LoadedSpec, pattern: str) -> list[tuple[str, Path, Path]]:
    """The roots the build writes whose files the source glob would match: (what, root, example)."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster").resolve()
    roots = {"outputs": loaded.storage_root, "manifests": loaded.manifest_root, "Dagster instance (DAGSTER_HOME)": home}
    regex = glob_regex(str(loaded.resolve(pattern)))
    found = []
    for what, root in roots.items():
        example = next((root / f for f in _OWN_FILES[what] if regex.match(str(root / f))), None)
        if example is not None:
            found.append((what, root, example))
    return found


def _augments_issues(spec) -> list[SpecIssue]:
    """A trace source's ``augments`` must name a source that is not itself a trace source."""
    kinds = {s.name: s.kind for s in spec.sources}
    others = [n for n, k in kinds.items() if k != "reasoning_traces"]
    return [SpecIssue(f"sources[{i}].traces.augments",
                      f"names {s.traces.augments!r}, which is "
                      + ("a reasoning_traces source itself" if s.traces.augments in kinds else "not a source"),
                      f"name the source these traces make up for, one of {others}, or drop augments")
            for i, s in enumerate(spec.sources)
            if s.traces is not None and s.traces.augments is not None
            and kinds.get(s.traces.augments, "reasoning_traces") == "reasoning_traces"]


def semantic_issues(loaded: LoadedSpec, check_files: bool) -> list[SpecIssue]:
    spec = loaded.spec
    names = loaded.source_names
    issues: list[SpecIssue] = []
    if check_files:
        for i, src in enumerate(spec.sources):
            for j, pattern in enumerate(src.paths):
                if not find_files(str(loaded.resolve(pattern))):
                    issues.append(SpecIssue(
                        f"sources[{i}].paths[{j}]",
                        f"glob {pattern!r} matches no file (resolved to {loaded.resolve(pattern)})",
                        "paths are relative to the spec file's directory; correct the pattern or remove it"))
    for i, e in enumerate(spec.eval_sets if check_files else []):
        for j, pattern in enumerate(e.paths or []):
            if not find_files(str(loaded.resolve(pattern))):
                issues.append(SpecIssue(f"eval_sets[{i}].paths[{j}]", f"glob {pattern!r} matches no file "
                                        f"(resolved to {loaded.resolve(pattern)})",
                                        "paths are relative to the spec file's directory; nothing is downloaded: "
                                        "put the eval set's files there"))
    for i, src in enumerate(spec.sources):
        for j, pattern in enumerate(src.paths):
            for what, root, example in _own_files_matched(loaded, pattern):
                issues.append(SpecIssue(
                    f"sources[{i}].paths[{j}]", f"glob {pattern!r} would read the build's own {what} ({root}), "
                    f"e.g. {example}: every build would ingest its own outputs and never converge",
                    "narrow the glob, or move storage.root / storage.manifests / DAGSTER_HOME out of it"))
    issues += _augments_issues(spec)
    tok = spec.tokenizer
    if (tok.path is None) == (tok.train is None):
        issues.append(SpecIssue("tokenizer", "give exactly one of 'path' or 'train'",
                                "set tokenizer.path to a tokenizer.json file, or tokenizer.train to train one"))
    elif tok.path is not None and check_files and not loaded.resolve(tok.path).is_file():
        issues.append(SpecIssue("tokenizer.path", f"tokenizer file {tok.path!r} does not exist "
                                f"(resolved to {loaded.resolve(tok.path)})",
                                "point tokenizer.path at a Hugging Face tokenizer.json, or use tokenizer.train"))
    elif tok.path is not None and check_files:
        issues += _tokenizer_file_issues(loaded.resolve(tok.path), tok.eos_token)
    elif tok.train is not None:
        if tok.eos_token not in tok.train.special_tokens:
            issues.append(SpecIssue("tokenizer.eos_token", f"EOS token {tok.eos_token!r} is not among "
                                    f"tokenizer.train.special_tokens {tok.train.special_tokens}",
                                    f"add {tok.eos_token!r} to tokenizer.train.special_tokens"))
        if len(set(tok.train.special_tokens)) != len(tok.train.special_tokens):
            issues.append(SpecIssue("tokenizer.train.special_tokens", "a special token is listed twice",
                                    "list each special token once"))
        if tok.train.vocab_size <= 256 + len(tok.train.special_tokens):
            issues.append(SpecIssue("tokenizer.train.vocab_size",
                                    f"{tok.train.vocab_size} leaves no room for merges after the 256 byte tokens "
                                    f"and {len(tok.train.special_tokens)} special tokens",
                                    "use at least a few thousand, e.g. 32000"))
    mix = spec.mixture
    if mix.total_tokens <= 0:
        issues.append(SpecIssue("mixture.total_tokens", f"budget must be positive (got {mix.total_tokens})",
                                "set the number of tokens to train on, e.g. 1000000000"))
    if mix.seq_len <= 0:
        issues.append(SpecIssue("mixture.seq_len", f"sequence length must be positive (got {mix.seq_len})",
                                "set the trainer's context length, e.g. 2048"))
    if not mix.max_epochs > 0:
        issues.append(SpecIssue("mixture.max_epochs", f"must be positive (got {mix.max_epochs})",
                                "allow at least a fraction of an epoch, e.g. 4"))
    if spec.output.shard_tokens <= 0:
        issues.append(SpecIssue("output.shard_tokens", f"must be positive (got {spec.output.shard_tokens})",
                                "use e.g. 134217728 tokens per shard"))
    from corpusmix.stages.quality_rules import RULES  # the rule catalogue is part of the spec's vocabulary

    for i, src in enumerate(spec.sources):
        if src.heldout and src.heldout.fraction is not None and src.heldout.tokens is not None:
            issues.append(SpecIssue(f"sources[{i}].heldout", "give fraction or tokens, not both",
                                    "keep fraction (a share of the kept documents) or tokens (a token budget); "
                                    "min_documents applies to either"))
        for j, name in enumerate(src.filters.rules or []):
            if name not in RULES:
                near_rule = difflib.get_close_matches(name, list(RULES), n=1, cutoff=0.5)
                issues.append(SpecIssue(f"sources[{i}].filters.rules[{j}]", f"unknown quality rule {name!r}",
                                        f"did you mean {near_rule[0]!r}?" if near_rule else
                                        "see the README's list of rules"))
        for name, params in src.filters.overrides.items():
            if name not in RULES:
                issues.append(SpecIssue(f"sources[{i}].filters.overrides.{name}", f"unknown quality rule {name!r}",
                                        "see the README's list of rules"))
                continue
            for key in params:
                if key not in RULES[name].defaults:
                    issues.append(SpecIssue(f"sources[{i}].filters.overrides.{name}.{key}",
                                            f"rule {name!r} has no parameter {key!r}",
                                            f"its parameters: {', '.join(RULES[name].defaults) or 'none'}"))
    near = spec.dedup.near
    if (near.bands is None) != (near.rows is None):
        issues.append(SpecIssue("dedup.near", "give both bands and rows, or neither",
                                "set bands and rows together (bands * rows <= num_perm), or drop both and use threshold"))
    elif near.bands is not None and near.bands * near.rows > near.num_perm:
        issues.append(SpecIssue("dedup.near.bands", f"bands * rows = {near.bands * near.rows} > num_perm = "
                                f"{near.num_perm}", "lower bands or rows, or raise num_perm"))
    issues += _schedule_issues(spec.mixture.schedule, names)
    issues += _mixing_issues(loaded, check_files)
    issues += _monitor_issues(spec)
    if spec.mixture.subsample < 1 and spec.handoff.mds.enabled:
        issues.append(SpecIssue("mixture.subsample", f"{spec.mixture.subsample:g} draws from a subset of each source, "
                                "and the MDS hand-off (handoff.mds.enabled) writes whole stores' samples",
                                "hand off a spec with subsample 1, or set handoff.mds.enabled: false"))
    if spec.automation.rebuild_cron is not None and not _valid_cron(spec.automation.rebuild_cron):
        issues.append(SpecIssue("automation.rebuild_cron", f"{spec.automation.rebuild_cron!r} is not a cron expression",
                                "use five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *'"))
    if spec.mixture.total_tokens > 0 and 0 < spec.mixture.seq_len and spec.mixture.total_tokens < spec.mixture.seq_len:
        issues.append(SpecIssue("mixture.total_tokens", f"budget {spec.mixture.total_tokens} is shorter than one "
                                f"sequence of seq_len {spec.mixture.seq_len}", "raise total_tokens or lower seq_len"))
    return issues


def _monitor_issues(spec: Spec) -> list[SpecIssue]:
    """A next-phase proposal needs a restart point to propose for, and DoReMi a reference run."""
    m, issues = spec.monitor, []
    if m.policy == "doremi" and m.reference is None:
        issues.append(SpecIssue("monitor.reference", "policy doremi weighs each source's excess loss over a "
                                "reference run, and no reference log is named",
                                "set monitor.reference to the reference run's monitor log, or use policy: mixmonitor"))
    if m.log is not None and not (spec.mixture.schedule.type == "phases" and len(spec.mixture.schedule.phases or []) > 1):
        issues.append(SpecIssue("monitor.log", "the schedule has one phase, so a run has no restart point to "
                                "propose the next phase's weights at", "use a phases schedule with two or more phases "
                                "(each boundary is a restart point), or remove monitor.log"))
    return issues


def _mixing_issues(loaded: LoadedSpec, check_files: bool) -> list[SpecIssue]:
    """Proposals named by the schedule exist and can be made; the proxy-run tables exist."""
    spec = loaded.spec
    mixing = spec.mixing
    declared = [p.name for p in mixing.proposals]
    issues = []
    for i, p in enumerate(mixing.proposals):
        if p.name in declared[:i]:
            issues.append(SpecIssue(f"mixing.proposals[{i}].name", f"proposal name {p.name!r} is used twice",
                                    "give every proposal its own name"))
        if p.method == "convex" and mixing.regressor != "log_linear":
            issues.append(SpecIssue(f"mixing.proposals[{i}].method", f"the convex proposer needs log-linear laws, "
                                    f"not {mixing.regressor}", "use method: simulate with this regressor, or "
                                    "mixing.regressor: log_linear"))
    lo, hi = mixing.swarm.strengths
    if not 0 < lo <= hi:
        issues.append(SpecIssue("mixing.swarm.strengths", f"({lo}, {hi}) is not a range of positive strengths",
                                "give (low, high) with 0 < low <= high, e.g. [0.1, 5.0]"))
    for loc, w in schedule_weights(spec.mixture.schedule):
        if not isinstance(w, ProposalRef):
            continue
        if w.proposal.startswith(NEXT_PHASE):
            if loc[2:3] != ("phases",) or loc[3] == 0:
                issues.append(SpecIssue(field_path(loc + ("proposal",)), f"{w.proposal} is a next-phase proposal: "
                                        "it gives the weights of a phase after the first, at a restart",
                                        "name it in mixture.schedule.phases[q].weights for the phase it proposes"))
            continue
        if w.proposal not in declared:
            near = difflib.get_close_matches(w.proposal, declared, n=1, cutoff=0.5)
            issues.append(SpecIssue(field_path(loc + ("proposal",)), f"no proposal {w.proposal!r} in mixing.proposals",
                                    f"did you mean {near[0]!r}?" if near else
                                    f"the proposals are {declared}; declare it there (name, method)"))
        if mixing.runs is None:
            issues.append(SpecIssue(field_path(loc + ("proposal",)), f"proposal {w.proposal!r} needs proxy-run "
                                    "results to fit laws on, and mixing.runs is not set",
                                    "set mixing.runs.mixtures and mixing.runs.losses to the proxy runs' tables "
                                    "(CSV or Parquet), or use weights or a baseline"))
    if mixing.runs is not None and check_files:
        for field_ in ("mixtures", "losses"):
            path = loaded.resolve(getattr(mixing.runs, field_))
            if not path.is_file():
                issues.append(SpecIssue(f"mixing.runs.{field_}", f"file {getattr(mixing.runs, field_)!r} does not "
                                        f"exist (resolved to {path})", "paths are relative to the spec file's "
                                        "directory; point it at a CSV or Parquet table of proxy runs"))
    return issues


def _valid_cron(expr: str) -> bool:
    fields = expr.split()
    return len(fields) == 5 and all(all(c.isdigit() or c in "*/,-" for c in f) for f in fields)


_SCHEDULE_FIELDS = {"static": ("weights",), "phases": ("phases", "transition"),
                    "linear": ("start_weights", "end_weights"), "temperature": ("weights", "t_start", "t_end")}


def _schedule_issues(sched: Schedule, names: list[str]) -> list[SpecIssue]:
    base = ("mixture", "schedule")
    issues = []
    given = {f for f in ("weights", "phases", "start_weights", "end_weights") if getattr(sched, f) is not None}
    for f in sorted(given - set(_SCHEDULE_FIELDS[sched.type])):
        issues.append(SpecIssue(f"mixture.schedule.{f}", f"a {sched.type} schedule takes no {f}",
                                f"remove {f}; a {sched.type} schedule takes {', '.join(_SCHEDULE_FIELDS[sched.type])}"))
    if sched.type == "static":
        if sched.weights is None:
            issues.append(SpecIssue("mixture.schedule.weights", "a static schedule needs weights",
                                    "map source names to token shares, or name a baseline (e.g. weights: unimax)"))
        else:
            issues += _weight_issues(sched.weights, base + ("weights",), names)
    elif sched.type == "temperature":
        if sched.weights is not None:
            issues += _weight_issues(sched.weights, base + ("weights",), names)
    elif sched.type == "linear":
        for f in ("start_weights", "end_weights"):
            if getattr(sched, f) is None:
                issues.append(SpecIssue(f"mixture.schedule.{f}", f"a linear schedule needs {f}",
                                        "give the shares at the first and at the last token"))
            else:
                issues += _weight_issues(getattr(sched, f), base + (f,), names)
    elif not sched.phases:
        issues.append(SpecIssue("mixture.schedule.phases", "a phases schedule needs at least one phase",
                                "list phases with name, end and weights"))
    else:
        prev = 0.0
        for i, ph in enumerate(sched.phases):
            loc = base + ("phases", i)
            issues += _weight_issues(ph.weights, loc + ("weights",), names)
            if not (prev < ph.end <= 1.0):
                issues.append(SpecIssue(field_path(loc + ("end",)),
                                        f"phase boundary {ph.end} does not increase from {prev} (or exceeds 1)",
                                        "phase ends are fractions of total_tokens, strictly increasing, "
                                        "the last one 1.0"))
            prev = max(prev, ph.end)
        if sched.phases[-1].end != 1.0:
            issues.append(SpecIssue(field_path(base + ("phases", len(sched.phases) - 1, "end")),
                                    f"the last phase ends at {sched.phases[-1].end}, not 1.0",
                                    "end the last phase at 1.0 so the schedule covers the whole budget"))
        seen = [ph.name for ph in sched.phases]
        for i, name in enumerate(seen):
            if name in seen[:i]:
                issues.append(SpecIssue(field_path(base + ("phases", i, "name")), f"phase name {name!r} is used twice",
                                        "give every phase its own name"))
    return issues


def loc_of(path: str) -> tuple:
    loc: list = []
    for part in path.replace("]", "").replace("[", ".").split("."):
        if part:
            loc.append(int(part) if part.isdigit() else part)
    return tuple(loc)


