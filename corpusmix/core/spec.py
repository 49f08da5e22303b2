"""The corpus spec: one YAML file that declares a whole build, validated before any work.

Validation runs in two passes so that every message can name a field path, the
bad value, the YAML line and a fix:

1. structure and types (pydantic models with ``extra="forbid"``; an unknown
   key gets the nearest valid key as a suggestion);
2. meaning (globs that match no file, a tokenizer file that is missing,
   weights naming unknown sources, negative or all-zero weights, phase
   boundaries that do not increase).

Relative paths in a spec are resolved against the directory of the spec file,
so a spec and its data can move together.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import glob
import hashlib
import math
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SOURCE_KINDS = ("prose", "web", "code", "math", "dialogue")
FORMATS = ("auto", "jsonl", "parquet", "text")
MiB = 1 << 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Storage(_Strict):
    root: str = Field("data", description="Directory that holds stage outputs (Parquet parts, quarantine).")
    manifests: str = Field("manifests", description="Directory that receives one JSON manifest per materialization.")


class Execution(_Strict):
    """Where shard-level work runs. It never changes an output: every backend gives the same bytes."""

    backend: Literal["inline", "processes", "ray"] = Field(
        "processes", description="inline: this process; processes: a local pool; ray: Ray tasks on a cluster.")
    workers: int = Field(2, ge=0, description="Pool size (processes), or Ray tasks at a time (0: every CPU of "
                                              "the cluster); with processes, 0 or 1 runs in-process.")
    ray_address: str | None = Field(None, description="Ray cluster to join: 'auto', 'host:6379' or "
                                                      "'ray://host:10001'; unset starts Ray on this machine.")


class Automation(_Strict):
    """When Dagster rebuilds on its own (needs the Dagster daemon: `dagster dev` starts one)."""

    rebuild_cron: str | None = Field(None, description="Cron for a scheduled rebuild of stale sources, e.g. '0 3 * * *'.")
    timezone: str = "UTC"
    watch_sources: bool = Field(False, description="Start the source-file sensor running (else: off until switched on).")
    sensor_interval_s: int = Field(60, ge=5, description="How often the sensor looks at the source files.")


class Ingest(_Strict):
    block_bytes: int = Field(8 * MiB, ge=64 * 1024, description="Decompressed bytes parsed per batch.")
    part_bytes: int = Field(256 * MiB, ge=MiB, description="Text bytes per output Parquet part before rolling over.")
    max_text_bytes: int = Field(64 * MiB, ge=1, description="Longer documents are quarantined as text_too_long.")
    snippet_chars: int = Field(200, ge=0, le=10_000, description="Raw characters kept per quarantined record.")


class Normalize(_Strict):
    """How text is normalised before hashing for dedup (the stored text is never changed)."""

    lowercase: bool = True
    whitespace: bool = True
    punctuation: bool = True
    unicode: Literal["none", "NFC", "NFKC"] = "NFKC"
    digits: Literal["keep", "zero"] = "keep"


class NearDedup(_Strict):
    enabled: bool = True
    num_perm: int = Field(128, ge=16, le=1024)
    shingle_words: int = Field(5, ge=1, le=64)
    threshold: float = Field(0.8, gt=0.0, lt=1.0)
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    false_negative_weight: float = Field(0.95, gt=0.0, lt=1.0)
    verify: bool = True
    seed: int = 1


class CrossSource(_Strict):
    """Duplicates across sources enter the corpus once, from the source listed first."""

    exact: bool = True
    near: bool = False


class Dedup(_Strict):
    normalize: Normalize = Normalize()
    cross_source: CrossSource = CrossSource()
    exact: bool = True
    near: NearDedup = NearDedup()
    representative: Literal["longest", "shortest", "first"] = "longest"
    audit_pairs: int = Field(20, ge=0, le=1000)


class SourceFilters(_Strict):
    """Which quality rules judge a source: its kind's defaults unless listed, with overrides."""

    rules: list[str] | None = None
    overrides: dict[str, dict[str, bool | float]] = {}


class Checks(_Strict):
    drift_threshold: float = Field(0.05, gt=0, le=1, description="Warn when an acceptance rate moves more than this "
                                                                  "(absolute) since the previous materialization.")


class Quality(_Strict):
    audit_samples: int = Field(5, ge=0, le=100)


class Source(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_\-]{0,63}$")
    kind: Literal["prose", "web", "code", "math", "dialogue"]
    paths: list[str] = Field(min_length=1)
    format: Literal["auto", "jsonl", "parquet", "text"] = "auto"
    text_field: str = "text"
    id_field: str | None = "id"
    metadata_fields: Literal["all", "none"] | list[str] = "all"
    quality: float = Field(1.0, gt=0)
    on_unreadable: Literal["fail", "skip"] = "fail"
    filters: SourceFilters = SourceFilters()


class TrainTokenizer(_Strict):
    """A byte-level BPE trained by the pipeline on a seeded sample of the filtered documents."""

    vocab_size: int = Field(ge=257, le=1 << 20)
    special_tokens: list[str] = Field(default_factory=lambda: ["<|endoftext|>"])
    sample_bytes: int = Field(64 * MiB, ge=MiB, description="Text the trainer sees, drawn from every source.")
    min_frequency: int = Field(2, ge=1, description="A pair seen fewer times is never merged.")
    seed: int = Field(0, description="Chooses the sample; same seed and documents, same tokenizer bytes.")


class Tokenizer(_Strict):
    path: str | None = None
    train: TrainTokenizer | None = None
    eos_token: str = "<|endoftext|>"
    encoder: Literal["auto", "huggingface"] = Field(
        "auto", description="'auto': tiktoken's faster BPE where it is checked to give the same ids as the "
                            "tokenizers library (see corpusmix.stages.fast_bpe); 'huggingface': always the tokenizers library.")


BASELINES = ("equal", "tokens", "documents", "temperature", "unimax")


class Baseline(_Strict):
    """Weights computed from the data instead of written by hand (see ``corpusmix.mixture.plan``)."""

    baseline: Literal["equal", "tokens", "documents", "temperature", "unimax"]
    temperature: float = Field(1.0, gt=0, description="For 'temperature': weights n_i^(1/T) over source sizes.")


# Hand-tuned token shares per source, or a baseline by name ("unimax") or with parameters.
Weights = dict[str, float] | Literal["equal", "tokens", "documents", "temperature", "unimax"] | Baseline


class Phase(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-.]{1,64}$")
    end: float = Field(description="Where the phase ends, as a fraction of total_tokens (0 < end <= 1).")
    weights: Weights


class Schedule(_Strict):
    """How token shares move over training; see corpusmix/plan.py for the exact semantics."""

    type: Literal["static", "phases", "linear", "temperature"]
    transition: Literal["step", "linear"] = "step"
    weights: Weights | None = None
    phases: list[Phase] | None = None
    start_weights: Weights | None = None
    end_weights: Weights | None = None
    t_start: float = Field(1.0, gt=0, description="temperature schedule: T at the first token")
    t_end: float = Field(1.0, gt=0, description="temperature schedule: T at the last token")


class Mixture(_Strict):
    total_tokens: int
    seq_len: int
    max_epochs: float = 4.0
    on_over_cap: Literal["error", "cap_and_renormalize"] = "error"
    seed: int = 0
    schedule: Schedule


class Output(_Strict):
    shard_tokens: int = 1 << 27


class Spec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-.]{1,64}$")
    storage: Storage = Storage()
    execution: Execution = Execution()
    automation: Automation = Automation()
    checks: Checks = Checks()
    ingest: Ingest = Ingest()
    dedup: Dedup = Dedup()
    quality: Quality = Quality()
    sources: list[Source] = Field(min_length=1)
    tokenizer: Tokenizer
    mixture: Mixture
    output: Output = Output()

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Source]) -> list[Source]:
        seen: set[str] = set()
        for s in sources:
            if s.name in seen:
                raise ValueError(f"source name {s.name!r} is used twice; source names must be unique")
            seen.add(s.name)
        return sources


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: where it is, what is wrong, and how to fix it."""

    path: str
    message: str
    fix: str
    line: int | None = None

    def render(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        return f"{where}: {self.path or '<root>'}: {self.message}\n    fix: {self.fix}"


class SpecError(Exception):
    """A spec that must not be built; carries every issue found, not just the first."""

    def __init__(self, file: str, issues: list[SpecIssue]):
        self.file = file
        self.issues = issues
        super().__init__("\n".join(i.render(file) for i in issues))


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec plus where it came from, which relative paths need."""

    spec: Spec
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, p: str) -> Path:
        """Resolve a spec path (relative to the spec file) to an absolute path."""
        q = Path(os.path.expanduser(p))
        return q if q.is_absolute() else (self.base_dir / q).resolve()

    @property
    def storage_root(self) -> Path:
        return self.resolve(self.spec.storage.root)

    @property
    def manifest_root(self) -> Path:
        return self.resolve(self.spec.storage.manifests)

    def source(self, name: str) -> Source:
        for s in self.spec.sources:
            if s.name == name:
                return s
        raise KeyError(f"no source {name!r} in {self.path}; sources are {self.source_names}")

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.spec.sources]

    def source_files(self, source: Source) -> list[Path]:
        """Every file a source's globs match, sorted and de-duplicated (the ingest order)."""
        files: set[Path] = set()
        for pattern in source.paths:
            for m in glob.glob(str(self.resolve(pattern)), recursive=True):
                if os.path.isfile(m):
                    files.add(Path(m).resolve())
        return sorted(files)

    def spec_hash(self) -> str:
        return canonical_hash(self.spec.model_dump(mode="json"))


def with_execution(loaded: LoadedSpec, overrides: dict) -> LoadedSpec:
    """The same spec with some ``execution`` fields replaced (validated like the spec's own)."""
    if not overrides:
        return loaded
    execution = Execution.model_validate(loaded.spec.execution.model_dump() | overrides)
    return dataclasses.replace(loaded, spec=loaded.spec.model_copy(update={"execution": execution}))


def canonical_hash(obj: Any) -> str:
    """sha256 of an object's canonical JSON (sorted keys), for stable config keys."""
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()


# ---------------------------------------------------------------------------
# YAML line numbers: map a field path to the line it sits on.

def _line_index(text: str) -> dict[tuple, int]:
    """Field path (tuple of keys/indices) -> 1-based line of that node in the YAML."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
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


def _line_for(index: dict[tuple, int], loc: tuple) -> int | None:
    while loc:
        if loc in index:
            return index[loc]
        loc = loc[:-1]
    return index.get(())


def _fmt_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


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


def _structural_issues(err: ValidationError, index: dict[tuple, int]) -> list[SpecIssue]:
    issues = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = _fmt_path(loc)
        line = _line_for(index, loc)
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
    if not isinstance(weights, dict):  # a baseline: computed from the data, nothing to check here
        return []
    issues = []
    for src, w in weights.items():
        if src not in names:
            near = difflib.get_close_matches(src, names, n=1, cutoff=0.5)
            hint = f"did you mean {near[0]!r}?" if near else f"sources are: {', '.join(names)}"
            issues.append(SpecIssue(_fmt_path(loc + (src,)), f"weight names unknown source {src!r}", hint))
        if not math.isfinite(w) or w < 0:
            issues.append(SpecIssue(_fmt_path(loc + (src,)), f"weight {w!r} is negative or not finite",
                                    "weights are token shares: use a number >= 0"))
    if weights and all(w == 0 for w in weights.values()):
        issues.append(SpecIssue(_fmt_path(loc), "all weights are zero", "give at least one source a positive weight"))
    if not weights:
        issues.append(SpecIssue(_fmt_path(loc), "no weights given", "map at least one source name to a positive weight"))
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


def _semantic_issues(loaded: LoadedSpec, check_files: bool) -> list[SpecIssue]:
    spec = loaded.spec
    names = loaded.source_names
    issues: list[SpecIssue] = []
    if check_files:
        for i, src in enumerate(spec.sources):
            for j, pattern in enumerate(src.paths):
                if not glob.glob(str(loaded.resolve(pattern)), recursive=True):
                    issues.append(SpecIssue(
                        f"sources[{i}].paths[{j}]",
                        f"glob {pattern!r} matches no file (resolved to {loaded.resolve(pattern)})",
                        "paths are relative to the spec file's directory; correct the pattern or remove it"))
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
    if spec.automation.rebuild_cron is not None and not _valid_cron(spec.automation.rebuild_cron):
        issues.append(SpecIssue("automation.rebuild_cron", f"{spec.automation.rebuild_cron!r} is not a cron expression",
                                "use five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *'"))
    if spec.mixture.total_tokens > 0 and 0 < spec.mixture.seq_len and spec.mixture.total_tokens < spec.mixture.seq_len:
        issues.append(SpecIssue("mixture.total_tokens", f"budget {spec.mixture.total_tokens} is shorter than one "
                                f"sequence of seq_len {spec.mixture.seq_len}", "raise total_tokens or lower seq_len"))
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
                issues.append(SpecIssue(_fmt_path(loc + ("end",)),
                                        f"phase boundary {ph.end} does not increase from {prev} (or exceeds 1)",
                                        "phase ends are fractions of total_tokens, strictly increasing, "
                                        "the last one 1.0"))
            prev = max(prev, ph.end)
        if sched.phases[-1].end != 1.0:
            issues.append(SpecIssue(_fmt_path(base + ("phases", len(sched.phases) - 1, "end")),
                                    f"the last phase ends at {sched.phases[-1].end}, not 1.0",
                                    "end the last phase at 1.0 so the schedule covers the whole budget"))
        seen = [ph.name for ph in sched.phases]
        for i, name in enumerate(seen):
            if name in seen[:i]:
                issues.append(SpecIssue(_fmt_path(base + ("phases", i, "name")), f"phase name {name!r} is used twice",
                                        "give every phase its own name"))
    return issues


def _loc_of(path: str) -> tuple:
    loc: list = []
    for part in path.replace("]", "").replace("[", ".").split("."):
        if part:
            loc.append(int(part) if part.isdigit() else part)
    return tuple(loc)


def load_spec(path: str | os.PathLike, check_files: bool = True) -> LoadedSpec:
    """Read, validate and return a spec, or raise SpecError listing every problem."""
    path = Path(path).resolve()
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(file, [SpecIssue("", f"cannot read the spec: {e}", "check the path and that it is UTF-8")]) from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise SpecError(file, [SpecIssue("", f"not valid YAML: {getattr(e, 'problem', e)}",
                                         "fix the YAML syntax (indentation, quotes, colons)", line)]) from e
    if not isinstance(data, dict):
        raise SpecError(file, [SpecIssue("", "the spec must be a YAML mapping",
                                         "start from `corpusmix init` for an example")])
    index = _line_index(text)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as e:
        raise SpecError(file, _structural_issues(e, index)) from None
    loaded = LoadedSpec(spec=spec, path=path)
    issues = _semantic_issues(loaded, check_files)
    if issues:
        issues = [SpecIssue(i.path, i.message, i.fix, i.line or _line_for(index, _loc_of(i.path))) for i in issues]
        raise SpecError(file, issues)
    return loaded


class Format(str, Enum):
    JSONL = "jsonl"
    PARQUET = "parquet"
    TEXT = "text"


def file_format(source: Source, path: Path) -> Format:
    """The reader for one file: the source's explicit format, else the file name decides."""
    if source.format != "auto":
        return Format(source.format)
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson", ".ndjson.gz", ".jsonl.zstd")):
        return Format.JSONL
    if name.endswith(".parquet"):
        return Format.PARQUET
    return Format.TEXT
