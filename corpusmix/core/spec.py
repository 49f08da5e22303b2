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
import hashlib
import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from corpusmix.core.globs import find_files

SOURCE_KINDS = ("prose", "web", "code", "math", "dialogue", "reasoning_traces")
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
    max_expansion: float = Field(200.0, ge=10.0, description="A compressed file that expands more than this many "
                                                             "times (past 256 MiB) is refused as a decompression bomb.")
    max_quarantined_fraction: float = Field(
        1.0, gt=0.0, le=1.0, description="A source's ingest fails when at least this fraction of its records is "
                                         "quarantined (1.0: only when every record is, e.g. a wrong text_field).")
    token_id_cache: bool = Field(
        True, description="With a tokenizer file, keep the ids ingest encodes to count tokens (token-ids-*.parquet, "
                          "~2 bytes per token for a vocabulary under 65,536, 4 above) so tokenize does not encode "
                          "the same text again; false saves that disk and tokenize encodes every document.")


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


class EvalSet(_Strict):
    """A benchmark whose items must not be trained on: from local files (nothing is downloaded),
    from a source's own records whose metadata fields have given values (e.g. GSM8K's test
    split inside the math source: ``source: math, where: {split: test}``), or a source's own
    held-out split (``source: wiki, heldout: true``: the split then holds out only documents
    that share no n-gram with any document left in train, in any source; see heldout_split)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_\-]{0,63}$")
    paths: list[str] | None = Field(None, min_length=1, description="JSONL, Parquet or plain-text files (globs).")
    format: Literal["auto", "jsonl", "parquet", "text"] = "auto"
    source: str | None = Field(None, description="Take the items from this source's ingested records ...")
    where: dict[str, str | int | float | bool] = Field({}, description="... whose metadata fields equal these.")
    heldout: bool = Field(False, description="The items are the source's held-out documents (no paths, no where).")
    fields: list[str] = Field(["text"], min_length=1, description="Fields joined (newline) into an item's text, "
                                                                 "e.g. [question, answer] or [context, question].")
    id_field: str | None = "id"

    @model_validator(mode="after")
    def _one_origin(self) -> EvalSet:
        if (self.paths is None) == (self.source is None):
            raise ValueError(f"eval set {self.name!r} needs exactly one of 'paths' (files) or 'source' (a source's "
                             "records, with 'where', or its held-out split, with 'heldout: true')")
        if self.heldout and (self.source is None or self.where):
            raise ValueError(f"eval set {self.name!r}: 'heldout: true' takes the items from a source's held-out split: "
                             "give 'source' and no 'where'")
        return self

    @property
    def from_records(self) -> bool:
        """Items read from a source's ingested records (not files, not its held-out split)."""
        return self.source is not None and not self.heldout


class Decontamination(_Strict):
    """Training documents that share a normalised word n-gram with an eval item (GPT-3's method)."""

    ngram: int = Field(13, ge=8, le=50, description="Words per n-gram (after lowercasing and folding punctuation "
                                                   "and whitespace).")
    policy: Literal["drop_document", "remove_span"] = "drop_document"
    span_margin: int = Field(200, ge=0, description="remove_span: characters cut on each side of a matched span.")
    max_cuts: int = Field(10, ge=1, description="remove_span: a document cut more often than this is dropped.")
    min_chars_left: int = Field(200, ge=0, description="remove_span: a document left shorter than this is dropped.")
    max_items_per_ngram: int = Field(10, ge=1, description="An n-gram found in more eval items than this is too "
                                                          "common to mean contamination, and is ignored.")
    audit_samples: int = Field(5, ge=0, le=100)


class Quality(_Strict):
    audit_samples: int = Field(5, ge=0, le=100)


DEFAULT_HELDOUT_FRACTION = 0.01


class HeldOut(_Strict):
    """A source's held-out split (stage ``heldout_split``): evaluation text carved out of the kept
    documents before tokenize, never trained on. Give ``fraction`` or ``tokens`` (neither: fraction 0.01)."""

    fraction: float | None = Field(None, ge=0.0, le=0.5, description="Share of the source's kept documents held out.")
    tokens: int | None = Field(None, ge=0, description="Held-out token budget: the documents' n_tokens (EOS not "
                                                       "counted) reach at least this many.")
    min_documents: int = Field(20, ge=0, description="At least this many documents held out, whatever the fraction "
                                                     "or budget gives (at most half the source's documents).")
    seed: int = Field(0, description="Chooses the documents; same seed and documents, same split.")

    @property
    def target(self) -> tuple[str, float]:
        """("fraction", f) or ("tokens", n): what the stage sizes the split by."""
        return ("tokens", self.tokens) if self.tokens is not None else (
            "fraction", DEFAULT_HELDOUT_FRACTION if self.fraction is None else self.fraction)


class Vote(_Strict):
    """The majority vote that judges a problem's traces when it has no reference answer."""

    min_agree: int | float = Field(0.5, description="Votes the largest answer group needs: an int is a count of "
                                                    "independent traces, a float in (0, 1] a fraction of them "
                                                    "(rounded up: 0.8 of 5 is 4). The default is a plain majority.")
    min_traces: int = Field(3, ge=1, description="Fewer independent traces than this: no vote, nothing kept.")

    @field_validator("min_agree")
    @classmethod
    def _count_or_fraction(cls, value: int | float) -> int | float:
        if isinstance(value, bool) or (isinstance(value, int) and value < 1) or (
                isinstance(value, float) and not 0 < value <= 1):
            raise ValueError(f"min_agree is a count (an int >= 1, e.g. 4 of 5) or a fraction in (0, 1] (e.g. 0.8), "
                             f"not {value!r}")
        return value


class Traces(_Strict):
    """How a ``reasoning_traces`` source's records describe their traces: the record's text is the
    trace; these name the metadata fields that carry the rest, and how traces are judged."""

    problem_id: str = Field("problem_id", description="Field naming the seed problem: a problem's traces are "
                                                      "judged together (vote, near-copies).")
    problem: str | None = Field("problem", description="Field with the problem statement (shown in audits).")
    strategy: str | None = Field("strategy", description="Field naming the generation strategy: a funnel per value.")
    reference: str | None = Field("reference_answer", description="Field with the ground-truth answer; a problem "
                                                                   "without one is judged by majority vote.")
    difficulty: str | None = Field("difficulty", description="Field with the problem's difficulty: a funnel per value.")
    answer_pattern: str | None = Field(None, description="A regex whose last match's first group is the final "
                                                         "answer, tried before #### / \\boxed{} / 'the answer is'.")
    augments: str | None = Field(None, description="The source these traces make up for (e.g. math): when it is "
                                                   "short of its share, the plan says how many problems x traces "
                                                   "would close the gap, at this source's measured pass rate.")
    vote: Vote = Vote()
    max_per_problem: int = Field(256, ge=1, description="A problem with more traces is not judged (too_many_traces): "
                                                        "the near-copy search is quadratic in a problem's traces.")
    duplicate_threshold: float = Field(0.9, gt=0, description="5-gram Jaccard at which two traces of one problem "
                                                              "are near-copies and vote once (above 1: off).")

    @field_validator("answer_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                if re.compile(value).groups < 1:
                    raise ValueError(f"answer_pattern {value!r} has no group: put the answer in ( ), e.g. "
                                     "'Final answer: (.+)'")
            except re.error as e:
                raise ValueError(f"answer_pattern {value!r} is not a regular expression: {e}") from None
        return value


class Source(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_\-]{0,63}$")
    kind: Literal["prose", "web", "code", "math", "dialogue", "reasoning_traces"]
    paths: list[str] = Field(min_length=1)
    format: Literal["auto", "jsonl", "parquet", "text"] = "auto"
    text_field: str = "text"
    id_field: str | None = "id"
    metadata_fields: Literal["all", "none"] | list[str] = "all"
    quality: float = Field(1.0, gt=0)
    on_unreadable: Literal["fail", "skip"] = "fail"
    filters: SourceFilters = SourceFilters()
    # every source gets a small held-out split unless it opts out with ``heldout: false``
    heldout: HeldOut | None = HeldOut()
    # a reasoning_traces source's fields and judging (defaults when the kind is given alone)
    traces: Traces | None = None

    @model_validator(mode="before")
    @classmethod
    def _trace_defaults(cls, data: Any) -> Any:
        """A reasoning_traces source without a ``traces`` block gets the default field names."""
        if isinstance(data, dict) and data.get("kind") == "reasoning_traces" and data.get("traces") is None:
            return {**data, "traces": {}}
        return data

    @model_validator(mode="after")
    def _traces_for_trace_sources(self) -> Source:
        if self.traces is not None and self.kind != "reasoning_traces":
            raise ValueError(f"source {self.name!r}: 'traces' applies only to kind reasoning_traces (this source is "
                             f"kind {self.kind}); drop 'traces' or set kind: reasoning_traces")
        if self.traces is None:
            return self
        t = self.traces
        named = [f for f in (t.problem_id, t.reference, t.strategy, t.difficulty, t.problem) if f is not None]
        kept = named if self.metadata_fields == "all" else [] if self.metadata_fields == "none" else self.metadata_fields
        if left_out := [f for f in named if f not in kept]:
            raise ValueError(f"source {self.name!r}: a reasoning_traces source reads its traces' {left_out} from "
                             "their metadata, which metadata_fields leaves out (a reference left out would turn "
                             "every problem into a vote); use metadata_fields: all, or list the trace fields, or set "
                             "the traces field to null")
        return self

    @field_validator("heldout", mode="before")
    @classmethod
    def _heldout_off(cls, value: Any) -> Any:
        """``heldout: false`` opts a source out, as ``null`` does."""
        return None if value is False else value


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


class ProposalRef(_Strict):
    """Weights proposed from evidence: one of ``mixing.proposals`` by name (stage ``mixing_proposal``: a
    mixing law), or ``next_phase/<id>``, a next-phase proposal from the training run's monitor log."""

    proposal: str


# Hand-tuned token shares per source, a baseline by name ("unimax") or with parameters, or a proposal.
Weights = dict[str, float] | Literal["equal", "tokens", "documents", "temperature", "unimax"] | Baseline | ProposalRef


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
    subsample: float = Field(1.0, gt=0, le=1, description="Mix from a seeded subset of each source's documents "
                                                          "holding about this share of its train tokens: a proxy "
                                                          "run at budget b standing for a target budget B sets b/B, "
                                                          "so each source repeats as often as in the target run.")


class Output(_Strict):
    shard_tokens: int = 1 << 27


class MegatronHandoff(_Strict):
    """The plan as Megatron runs it (stage ``megatron_blends``): blends over the train stores."""

    global_batch_size: int = Field(256, ge=1, description="Samples per iteration of the Megatron run: phase "
                                                          "transitions are given in its iterations.")
    sub_phases: int = Field(8, ge=1, le=256, description="Constant blends per phase whose shares move (a linear "
                                                        "transition or schedule); the error left is reported.")


class MdsHandoff(_Strict):
    """The plan as MosaicML streaming runs it (stage ``mds_shards``): packed samples per phase and source."""

    enabled: bool = Field(False, description="Write MDS shards (one copy of the budget's tokens on disk).")
    shard_bytes: int = Field(1 << 26, ge=1 << 16, description="Bytes per .mds shard file before a new one starts.")


class ProxyRuns(_Strict):
    """Results of proxy runs to fit mixing laws on: a table of mixtures and a table of losses (CSV or
    Parquet) joined on their ``index`` column. The defaults read RegMix's published layout."""

    mixtures: str = Field(description="Mixture weights per run: ``index`` and ``<mixture_prefix><domain>`` columns.")
    losses: str = Field(description="Losses per run: ``index`` and ``<loss_prefix><target><loss_suffix>`` columns.")
    mixture_prefix: str = "train_the_pile_"
    loss_prefix: str = "metric/the_pile_"
    loss_suffix: str = "_val_loss"
    domains: dict[str, str] = Field({}, description="Table domain -> source, where the table names a training "
                                                    "domain otherwise; every training domain must be a source.")


class SwarmDesign(_Strict):
    """Candidate mixtures for proxy runs (stage ``swarm_design``), around the natural token shares."""

    runs: int | None = Field(None, ge=2, le=100_000, description="How many (default: 4 x the number of sources).")
    temperature: float = Field(0.5, gt=0, le=1, description="The prior is the natural shares ** temperature, "
                                                            "renormalised: small sources get tried.")
    strengths: tuple[float, float] = Field((0.1, 5.0), description="Dirichlet concentration per run, log-uniform "
                                                                   "over this range x the number of sources.")
    min_weight: float = Field(1e-3, ge=0, lt=0.5, description="Smaller weights are set to 0 (sparse mixtures).")


class ProposalMethod(_Strict):
    """One proposal of stage ``mixing_proposal``, named so a schedule's weights can use it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-.]{1,64}$")
    method: Literal["convex", "simulate", "best_observed"] = "convex"
    kl: float = Field(0.1, ge=0, description="convex: weight of KL(x || natural shares), how far to trust the law.")
    samples: int = Field(100_000, ge=100, le=10_000_000, description="simulate: Dirichlet samples scored.")
    top_k: int = Field(100, ge=1, description="simulate: the best this many are averaged.")


def _default_proposals() -> list[ProposalMethod]:
    return [ProposalMethod(name=m, method=m) for m in ("convex", "simulate", "best_observed")]


class ProxySettings(_Strict):
    """How proxy runs train (``corpusmix proxies``, the ``proxy_run`` asset): a small model per mixture."""

    budget: int = Field(1 << 18, ge=1024, description="Tokens per proxy run (at most mixture.total_tokens); each "
                                                      "source subsampled by budget / total_tokens.")
    preset: Literal["tiny", "small", "base", "large"] = "tiny"
    seq_len: int = Field(256, ge=8, le=8192)
    batch: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0)
    seed: int = 0
    eval_tokens: int = Field(16_384, ge=64, description="Held-out tokens evaluated per source, the same for every run.")
    threads: int = Field(2, ge=1, description="CPU threads: fixed, as part of what makes a run repeatable.")
    device: str = Field("cpu", description="cpu, or cuda where present.")


class Mixing(_Strict):
    """Choosing the mixture from evidence: the swarm of proxy mixtures, mixing laws fitted per target on
    proxy results (``runs``), and proposals under the repetition caps (see ``corpusmix.mixing``)."""

    seed: int = Field(0, description="Seeds the swarm, the fits' starts, the folds and the samplers.")
    swarm: SwarmDesign = SwarmDesign()
    runs: ProxyRuns | None = None
    regressor: Literal["log_linear", "ridge", "lightgbm"] = "log_linear"
    objective: dict[str, float] = Field({}, description="Target -> weight of its loss in the objective (empty: "
                                                        "every target of the runs, equally).")
    cv_folds: int = Field(5, ge=2, le=100, description="Folds of the cross-validated quality the fit reports.")
    proposals: list[ProposalMethod] = Field(default_factory=_default_proposals)
    proxy: ProxySettings = ProxySettings()


class Monitor(_Strict):
    """Per-source loss during training, and the next phase's weights proposed from it at a restart
    (``corpusmix.mixing.next_phase``; the trainer side is ``corpusmix.trainer.monitor``)."""

    log: str | None = Field(None, description="The trainer's monitor log (JSON Lines, one record per logging "
                                              "interval), relative to the spec: watched by the next-phase sensor.")
    policy: Literal["mixmonitor", "doremi"] = Field(
        "mixmonitor", description="mixmonitor: EMA thresholds per source; doremi: excess loss over a reference run.")
    ema_alpha: float = Field(0.1, gt=0, le=1, description="EMA of each source's interval loss: "
                                                          "e = alpha x loss + (1 - alpha) x e.")
    window: int = Field(5, ge=1, description="Logged intervals per window; the last two windows are compared.")
    rise: float = Field(0.02, ge=0, description="mixmonitor: 'increase' when the EMA rose more than this "
                                                "(relative) between windows.")
    plateau: float = Field(0.005, ge=0, description="mixmonitor: 'decrease' when the EMA changed less than this "
                                                    "(relative, either way) between windows.")
    adjust: float = Field(0.2, gt=0, lt=1, description="mixmonitor: an increased source's weight x (1 + adjust), "
                                                       "a decreased one's x (1 - adjust), before renormalising.")
    reference: str | None = Field(None, description="doremi: the reference run's monitor log, relative to the spec.")
    eta: float = Field(1.0, gt=0, description="doremi: step size of the exponentiated-gradient update.")
    smoothing: float = Field(1e-3, ge=0, lt=1, description="doremi: weight of the uniform mixture blended in.")


class Handoff(_Strict):
    megatron: MegatronHandoff = MegatronHandoff()
    mds: MdsHandoff = MdsHandoff()


class Spec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-.]{1,64}$")
    # who answers for this corpus: shown as every asset's owners in the Dagster catalog
    owners: list[Annotated[str, Field(pattern=r"^(team:[A-Za-z0-9_\-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")]] = []
    storage: Storage = Storage()
    execution: Execution = Execution()
    automation: Automation = Automation()
    checks: Checks = Checks()
    ingest: Ingest = Ingest()
    dedup: Dedup = Dedup()
    quality: Quality = Quality()
    eval_sets: list[EvalSet] = []
    decontamination: Decontamination = Decontamination()
    sources: list[Source] = Field(min_length=1)
    tokenizer: Tokenizer
    mixture: Mixture
    output: Output = Output()
    handoff: Handoff = Handoff()
    mixing: Mixing = Mixing()
    monitor: Monitor = Monitor()

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Source]) -> list[Source]:
        seen: set[str] = set()
        for s in sources:
            if s.name in seen:
                raise ValueError(f"source name {s.name!r} is used twice; source names must be unique")
            seen.add(s.name)
        return sources

    @model_validator(mode="after")
    def _eval_sets_name_sources(self) -> Spec:
        names = [s.name for s in self.sources]
        for i, e in enumerate(self.eval_sets):
            if e.source is not None and e.source not in names:
                raise ValueError(f"eval_sets[{i}] ({e.name!r}) takes its items from source {e.source!r}, which the "
                                 f"spec does not declare; the sources are {names}")
        if len({e.name for e in self.eval_sets}) != len(self.eval_sets):
            raise ValueError("two eval sets have the same name; eval set names must be unique")
        for i, e in enumerate(self.eval_sets):
            if e.heldout and next(s for s in self.sources if s.name == e.source).heldout is None:
                raise ValueError(f"eval_sets[{i}] ({e.name!r}) is source {e.source!r}'s held-out split, and that source "
                                 "has none (heldout: false); give it a held-out split, or drop the eval set")
        return self

    def heldout_eval_set(self, source: str) -> EvalSet | None:
        """The eval set made of this source's held-out split, if the spec declares one."""
        return next((e for e in self.eval_sets if e.heldout and e.source == source), None)

    def decontaminates(self) -> bool:
        """Does the build index eval sets and decontaminate against them (any eval set declared)?"""
        return bool(self.eval_sets)

    def fits_laws(self) -> bool:
        """Are there proxy-run results to fit mixing laws on (``mixing.runs``)? Without them the fit
        and the proposal have nothing to do."""
        return self.mixing.runs is not None

    def validates_traces(self) -> bool:
        """Does the build have a reasoning_traces source (hence the trace_validation stage)?"""
        return any(s.kind == "reasoning_traces" for s in self.sources)

    def holds_out(self) -> bool:
        """Does the build split held-out text from train (any source with a held-out split)?"""
        return any(s.heldout is not None for s in self.sources)


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
            files.update(f.resolve() for f in find_files(str(self.resolve(pattern))))
        return sorted(files)

    def spec_hash(self) -> str:
        return canonical_hash(self.spec.model_dump(mode="json"))


def field_path(loc: tuple) -> str:
    """A field's path as a spec author writes it: ``mixture.schedule.phases[1].weights``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def schedule_weights(schedule: Schedule) -> list[tuple[tuple, Weights]]:
    """Every weights entry of a schedule with its path in the spec (the phases' in order)."""
    base = ("mixture", "schedule")
    found = [(base + (f,), getattr(schedule, f)) for f in ("weights", "start_weights", "end_weights")
             if getattr(schedule, f) is not None]
    return found + [(base + ("phases", i, "weights"), ph.weights) for i, ph in enumerate(schedule.phases or [])]


NEXT_PHASE = "next_phase/"  # names of next-phase proposals (``corpusmix.mixing.next_phase``), not mixing laws


def named_proposals(spec: Spec) -> list[str]:
    """The mixing-law proposals (stage ``mixing_proposal``) the mixture's schedule uses, in order of first use."""
    names = [w.proposal for _, w in schedule_weights(spec.mixture.schedule)
             if isinstance(w, ProposalRef) and not w.proposal.startswith(NEXT_PHASE)]
    return list(dict.fromkeys(names))


def next_phase_proposals(spec: Spec) -> list[tuple[tuple, str]]:
    """The accepted next-phase proposals the schedule names, with where (the field's location)."""
    return [(loc, w.proposal) for loc, w in schedule_weights(spec.mixture.schedule)
            if isinstance(w, ProposalRef) and w.proposal.startswith(NEXT_PHASE)]


def with_execution(loaded: LoadedSpec, overrides: dict) -> LoadedSpec:
    """The same spec with some ``execution`` fields replaced (validated like the spec's own)."""
    if not overrides:
        return loaded
    execution = Execution.model_validate(loaded.spec.execution.model_dump() | overrides)
    return dataclasses.replace(loaded, spec=loaded.spec.model_copy(update={"execution": execution}))


def canonical_hash(obj: Any) -> str:
    """sha256 of an object's canonical JSON (sorted keys), for stable config keys."""
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()


MAX_SPEC_NODES = 100_000  # a real spec has hundreds; an alias bomb of 350 bytes has billions


# libyaml's loader when PyYAML has it (~5x faster: a spec is loaded at every step of a build);
# it builds the same nodes, with the same line marks
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _refuse_alias_bombs(file: str, root) -> None:
    """YAML aliases share one node, but everything after parsing (validation, the line index)
    walks them as a tree: count the nodes of that tree first (linear in the graph) and refuse
    a spec that would expand past MAX_SPEC_NODES."""
    sizes: dict[int, int] = {}

    def size(node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 0  # a node on its own path: YAML's recursive aliases count once
            children = ([v for pair in node.value for v in pair] if isinstance(node, yaml.MappingNode)
                        else node.value if isinstance(node, yaml.SequenceNode) else [])
            sizes[id(node)] = min(MAX_SPEC_NODES + 1, 1 + sum(size(c) for c in children))
        return sizes[id(node)]

    if root is not None and size(root) > MAX_SPEC_NODES:
        raise SpecError(file, [SpecIssue("", f"the spec expands to more than {MAX_SPEC_NODES:,} values through "
                                             "YAML aliases (*name) that repeat anchored blocks (&name)",
                                         "write the values out, or anchor and repeat fewer, smaller blocks")])


def load_spec(path: str | os.PathLike, check_files: bool = True) -> LoadedSpec:
    """Read, validate and return a spec, or raise SpecError listing every problem."""
    path = Path(path).resolve()
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(file, [SpecIssue("", f"cannot read the spec: {e}", "check the path and that it is UTF-8")]) from e
    try:
        loader = YAML_LOADER(text)  # parsed once: the node graph gives the data and the line numbers
        try:
            root = loader.get_single_node()
            _refuse_alias_bombs(file, root)
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise SpecError(file, [SpecIssue("", f"not valid YAML: {getattr(e, 'problem', e)}",
                                         "fix the YAML syntax (indentation, quotes, colons)", line)]) from e
    except RecursionError:
        raise SpecError(file, [SpecIssue("", "the YAML is nested too deeply to read",
                                         "flatten the structure: a spec is a few levels deep")]) from None
    if not isinstance(data, dict):
        raise SpecError(file, [SpecIssue("", "the spec must be a YAML mapping",
                                         "start from `corpusmix init` for an example")])
    from corpusmix.core.spec_checks import line_for, line_index, loc_of, semantic_issues, structural_issues

    index = line_index(root)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as e:
        raise SpecError(file, structural_issues(e, index)) from None
    loaded = LoadedSpec(spec=spec, path=path)
    issues = semantic_issues(loaded, check_files)
    if issues:
        issues = [SpecIssue(i.path, i.message, i.fix, i.line or line_for(index, loc_of(i.path))) for i in issues]
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
