"""The megatron_blends stage: the plan as a Megatron run follows it, phase by phase.

Megatron's ``GPTDataset`` shuffles documents and samples across a whole prefix, so our
ordered mixed shards lose the curriculum there. What keeps it is a blend per stretch of
the schedule over the per-source train stores (tokenize's ``tokens`` prefixes), switched
at the right iterations. This stage writes, from ``plan.json`` only (``plan.slices``):

* per slice (a phase, or an equal part of a phase whose shares move: ``sub_phases``) the
  blend's ``--per-split-data-args-path`` JSON ({"train": [w, prefix, ...], "valid": [...],
  "test": []}; ``valid``: the held-out stores, weighted as train) and the flat
  ``--data-args-path`` text; the weights are the slice's quotas as shares, so the samples
  Megatron's blend draws (greedily, within one sample of weight x size) match the plan;
* the iteration where each slice starts, for ``--global-batch-size`` and ``--seq-length``
  (``--phase-transition-iterations``), each rounded to a whole iteration;
* per prefix the epochs Megatron will make of it: every slice's blend draws ceil(w N) samples
  of ``seq_len`` tokens from it (and builds 0.5 % more, megatron-core's surplus, never
  drawn); a blend that would read a store more than ``mixture.max_epochs`` times (beyond the
  rounding: one sample per slice) is refused before any file is written, naming the source
  and the fix. Within a current build the plan already holds every source to the cap; the
  check catches a store that changed under a plan (a source rebuilt, the plan not);
* ``blends.json`` (all of it, machine-readable), the checksums of every ``.bin``/``.idx`` a
  blend names, and ``megatron.md``: the command-line arguments, per slice.

Prefixes are relative to the storage root (run Megatron there, or prefix them), so the
files are the same bytes wherever the storage lives. Each slice's datasets are built
afresh by Megatron: repetition across slices is Megatron's random draw from the whole
store, not our stream's sequential reading; the epochs above count it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson

from corpusmix.core.manifest import input_refs, staged_ref
from corpusmix.core.spec import LoadedSpec
from corpusmix.core.stage import Built, Stage, StageRun
from corpusmix.mixture.plan import load_plan, slices

NAME = "megatron_blends"
SURPLUS = 0.005  # megatron-core's BlendedMegatronDatasetConfig.mid_level_dataset_surplus default
BLENDS_FILE, README = "blends.json", "megatron.md"


class BlendError(ValueError):
    """A blend Megatron must not be given (the message names the source and the fix)."""


@dataclass(frozen=True)
class Store:
    """One source's train (or held-out) store as Megatron sees it."""

    prefix: str  # relative to the storage root, no suffix
    tokens: int
    documents: int

    def samples_per_epoch(self, seq_len: int) -> int:
        """GPTDataset's: each sample reads seq_len + 1 tokens and moves on by seq_len."""
        return max(0, (self.tokens - 1) // seq_len)


def _stores(ctx: StageRun) -> tuple[dict[str, Store], dict[str, Store], list[dict], list]:
    """Train and held-out stores per source, the checksums of their files, and the input refs."""
    loaded = ctx.loaded
    train, valid, sums, refs = {}, {}, [], []
    for s in loaded.source_names:
        path, m = ctx.upstream("tokenize", s)
        refs += input_refs(loaded, path, m, kinds=("token_bin", "token_index", "valid_bin", "valid_index"))
        outs = {o["kind"]: o for o in m["outputs"]}
        train[s] = Store(outs["token_bin"]["path"][: -len(".bin")], m["counts"]["tokens_stored"],
                         m["counts"]["documents_out"])
        if m["counts"].get("valid_documents"):
            valid[s] = Store(outs["valid_bin"]["path"][: -len(".bin")], m["counts"]["valid_tokens_stored"],
                             m["counts"]["valid_documents"])
        kinds = ("token_bin", "token_index") + (("valid_bin", "valid_index") if s in valid else ())
        sums += [{"path": outs[k]["path"], "sha256": outs[k]["sha256"], "bytes": outs[k]["bytes"]} for k in kinds]
    return train, valid, sums, refs


def _weights(quotas: dict[str, float], among: list[str], least: float) -> dict[str, float]:
    """Shares of the quotas over ``among``; a source with less than ``least`` tokens in the slice
    (half a sample: e.g. the few tokens of a phase's tail that an edge moved onto a whole iteration
    brings in) is left out, or Megatron would build it a dataset to draw a sample or none from."""
    kept = {s: quotas[s] for s in among if quotas[s] >= least}
    total = sum(kept.values())
    return {s: q / total for s, q in kept.items()} if total > 0 else {}


def _args(weights: dict[str, float], stores: dict[str, Store]) -> list[str]:
    """Megatron's [weight, prefix, weight, prefix, ...], the weights written exactly (repr)."""
    return [x for s, w in weights.items() for x in (repr(w), stores[s].prefix)]


def blend_table(plan: dict, train: dict[str, Store], seq_len: int, batch: int, sub_phases: int,
                max_epochs: float) -> dict:
    """Every slice's blend, iterations and draws, and per store the epochs Megatron will make;
    raises BlendError for a store over ``max_epochs`` (nothing is written before this returns)."""
    tokens_per_iter = batch * seq_len
    rows, drawn, built = [], dict.fromkeys(plan["sources"], 0), dict.fromkeys(plan["sources"], 0)
    for sl in slices(plan, sub_phases, align=tokens_per_iter):  # edges on whole iterations
        first, last = round(sl.start / tokens_per_iter), round(sl.end / tokens_per_iter)
        n = (last - first) * batch
        w = _weights(sl.quotas, plan["sources"], seq_len / 2)
        for s, ws in w.items():  # megatron-core's _get_size_per_split_per_dataset, without and with surplus
            drawn[s] += math.ceil(n * ws)
            built[s] += math.ceil(math.ceil(n * ws) * (1 + SURPLUS))
        rows.append({"phase": sl.phase, "name": sl.name, "part": sl.part, "parts": sl.parts,
                     "start_token": sl.start, "end_token": sl.end, "start_iteration": first, "end_iteration": last,
                     "samples": n, "weights": w, "quotas": sl.quotas, "drift_tokens": sl.drift,
                     "expected_tokens": {s: n * ws * seq_len for s, ws in w.items()}})
    per_store, over = {}, []
    for s, st in train.items():
        per_epoch = st.samples_per_epoch(seq_len)
        epochs = drawn[s] * seq_len / st.tokens if st.tokens else (math.inf if drawn[s] else 0.0)
        per_store[s] = {"prefix": st.prefix, "tokens": st.tokens, "documents": st.documents,
                        "samples_per_epoch": per_epoch, "samples_drawn": drawn[s], "samples_built": built[s],
                        "epochs": epochs, "plan_epochs": plan["per_source"][s]["epochs"]}
        if drawn[s] > max_epochs * st.tokens / seq_len + len(rows):
            over.append(s)
    if over:
        lines = [f"source {s!r}: Megatron would draw {per_store[s]['samples_drawn']:,} samples of {seq_len} tokens "
                 f"from its train store of {per_store[s]['tokens']:,} tokens, {per_store[s]['epochs']:.3f} epochs, "
                 f"over mixture.max_epochs {max_epochs:g} (the plan counted {per_store[s]['plan_epochs']:.3f}: "
                 "has the store changed since the plan was made?)" for s in over]
        raise BlendError("\n".join(lines) + "\nfix: materialize mixture_plan again for the current stores; if it "
                         "then fails, lower those sources' weights, raise mixture.max_epochs, or add data; "
                         "no blend was written")
    phases = {ph["name"]: {"samples": 0, "expected_tokens": dict.fromkeys(plan["sources"], 0.0), "quotas": ph["quotas"]}
              for ph in plan["phases"]}
    for r in rows:  # what the phase's draws add up to, against the plan's quotas for it (edges not moved)
        ph = phases[r["name"]]
        ph["samples"] += r["samples"]
        for s, t in r["expected_tokens"].items():
            ph["expected_tokens"][s] += t
    for ph in phases.values():
        drawn, planned = sum(ph["expected_tokens"].values()), sum(ph["quotas"].values())
        ph["share_error"] = {s: ph["expected_tokens"][s] / drawn / (ph["quotas"][s] / planned) - 1
                             for s in plan["sources"] if ph["quotas"][s] > 0 and drawn > 0}
    return {"seq_len": seq_len, "global_batch_size": batch, "train_iters": round(plan["budget"] / tokens_per_iter),
            "sub_phases": sub_phases, "phase_transition_iterations": [r["start_iteration"] for r in rows[1:]],
            "slices": rows, "phases": phases, "stores": per_store}


def _slice_name(i: int, r: dict) -> str:
    return f"slice-{i:02d}-{r['name']}" + (f"-{r['part'] + 1}of{r['parts']}" if r["parts"] > 1 else "")


def _readme(table: dict, names: list[str]) -> str:
    """megatron.md: what to pass to Megatron, slice by slice, and what the numbers mean."""
    t = table
    lines = [
        "# This corpus in Megatron", "",
        "Run from the storage root (the prefixes below are relative to it), with megatron-core's index cache "
        "outside the stores: `--data-cache-path <a folder of yours>`.", "",
        f"Common arguments: `--seq-length {t['seq_len']} --global-batch-size {t['global_batch_size']} "
        f"--train-iters {t['train_iters']} --split 100,0,0` (the held-out text has its own stores: see `valid`).", "",
        "One blend per slice; a Megatron-LM that takes `--phase-transition-iterations` gets "
        f"`{','.join(map(str, t['phase_transition_iterations'])) or '(none: one slice)'}` and the slices' "
        "`--per-split-data-args-path` files in order. Otherwise run the slices as consecutive runs "
        "(`--load`/`--save` the same checkpoint), each with its own file and `--train-iters` set to its end iteration.",
        "Give each slice its own `--seed` (e.g. the spec's seed + slice number): a slice's datasets are built afresh, "
        "and with one seed every slice would draw the same first samples.", "",
        "| slice | iterations | per-split data args | flat data args | weights |", "|---|---|---|---|---|"]
    for name, r in zip(names, t["slices"]):
        weights = ", ".join(f"{s} {w:.4f}" for s, w in r["weights"].items())
        lines.append(f"| {name} | {r['start_iteration']}-{r['end_iteration']} | `{name}.json` | "
                     f"`{name}.txt` | {weights} |")
    lines += ["", "Epochs Megatron will make of each train store (samples drawn x seq_len / store tokens, over every "
              f"slice; megatron-core builds {SURPLUS:.1%} more samples than it draws), against the plan's:", "",
              "| source | store tokens | samples drawn | samples built | epochs | plan epochs |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {s} | {v['tokens']:,} | {v['samples_drawn']:,} | {v['samples_built']:,} | {v['epochs']:.3f} | "
              f"{v['plan_epochs']:.3f} |" for s, v in t["stores"].items()]
    lines += ["", "Checksums of every file the blends name: `blends.json` (`checksums`)."]
    return "\n".join(lines) + "\n"


def blends_config(loaded: LoadedSpec, partition: None) -> dict:
    return {"megatron": loaded.spec.handoff.megatron.model_dump(mode="json"), "seq_len": loaded.spec.mixture.seq_len,
            "max_epochs": loaded.spec.mixture.max_epochs}


def build_blends(ctx: StageRun) -> Built:
    loaded, cfg = ctx.loaded, ctx.loaded.spec.handoff.megatron
    if loaded.spec.mixture.subsample < 1:
        raise BlendError(f"mixture.subsample is {loaded.spec.mixture.subsample:g} (a proxy run's subset of each "
                         "source), and Megatron reads whole stores, so its blends would not repeat sources as the "
                         "plan does; fix: hand off a spec with subsample 1")
    plan, plan_m = load_plan(loaded)
    train, valid, sums, refs = _stores(ctx)
    table = blend_table(plan, train, loaded.spec.mixture.seq_len, cfg.global_batch_size, cfg.sub_phases,
                        loaded.spec.mixture.max_epochs)
    names = [_slice_name(i, r) for i, r in enumerate(table["slices"])]
    outputs = []

    def write(name: str, body: bytes, kind: str) -> None:
        (ctx.staging / name).write_bytes(body)
        outputs.append(staged_ref(ctx.staging, name, kind, rows=1 if name.endswith(".json") else 0))

    for name, r in zip(names, table["slices"]):
        per_split = {"train": _args(r["weights"], train),
                     "valid": _args(_weights(r["quotas"], [s for s in plan["sources"] if s in valid],
                                             loaded.spec.mixture.seq_len / 2), valid),
                     "test": []}
        write(f"{name}.json", orjson.dumps(per_split, option=orjson.OPT_INDENT_2), "per_split_data_args")
        write(f"{name}.txt", (" ".join(per_split["train"]) + "\n").encode(), "data_args")
    table["slice_files"] = names
    table["checksums"] = sums
    table["plan_sha256"] = plan_m["outputs"][0]["sha256"]
    write(BLENDS_FILE, orjson.dumps(table, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2), "blends")
    write(README, _readme(table, names).encode(), "readme")
    worst = max((abs(e) for ph in table["phases"].values() for e in ph["share_error"].values()), default=0.0)
    drift = max((d for r in table["slices"] for d in r["drift_tokens"].values()), default=0.0)
    return Built(
        inputs=refs, outputs=outputs,
        counts={"slices": len(names), "train_iters": table["train_iters"], "prefixes": len(train) + len(valid)},
        details={"phase_transition_iterations": table["phase_transition_iterations"],
                 "epochs": {s: v["epochs"] for s, v in table["stores"].items()},
                 "worst_share_error": worst,
                 "worst_drift_tokens": drift},
        summary=f"{len(names)} blend(s) over {len(train)} train and {len(valid)} held-out stores, "
                f"{table['train_iters']} iterations of {cfg.global_batch_size} x {loaded.spec.mixture.seq_len}; "
                f"phase shares within {worst:.2%} of the plan; README {README}")


STAGE = Stage(name=NAME, scope="global", upstream=("mixture_plan", "tokenize"), config=blends_config,
              build=build_blends, module=__name__)
