"""The mds_shards stage: the plan as MosaicML streaming reads it, phase by phase.

Per phase, one MDS directory per source holding exactly the samples that phase takes from
it, and a ``streams.json`` (``Stream(local=..., choose=n)`` per source, ``epoch_size`` = the
phase's samples): one epoch of ``StreamingDataset`` over a phase's streams is that phase, in
the plan's proportions. Phases never share a sample, so the curriculum survives whatever
order streaming shuffles a phase into.

* Samples: ``seq_len`` tokens each, packed across documents (each document's ids then EOS).
  A phase's samples are ``round(end / seq_len) - round(start / seq_len)``, shared among the
  sources by the plan's quotas (largest remainder), so they add up to the budget's samples.
* What a source gives: its train store read in the seeded permutation our own stream uses
  (``shards.epoch_permutation``), phase after phase, a new permutation per epoch. A store
  read past ``mixture.max_epochs`` is refused before anything is written.
* Columns: ``tokens`` (``ndarray:<store dtype>:<seq_len>``), ``source``, ``doc_ids`` (the
  documents the sample's tokens come from, in order) and ``first_offset`` (where in the
  first of them the sample starts): the lineage of every sample.

Off by default (``handoff.mds.enabled``): it writes one more copy of the budget's tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

from corpusmix.core.indexed import IndexedReader
from corpusmix.core.manifest import input_refs, staged_ref
from corpusmix.core.mds import INDEX, MdsWriter
from corpusmix.core.spec import LoadedSpec
from corpusmix.core.stage import Built, Stage, StageRun
from corpusmix.mixture.plan import load_plan
from corpusmix.mixture.shards import epoch_permutation

NAME = "mds_shards"
README = "mds.md"
WINDOWS = 4096  # samples cut from a source at a time (bounds memory at WINDOWS x seq_len tokens)


class MdsError(ValueError):
    """The plan cannot be written as these shards (the message names the source and the fix)."""


def phase_samples(plan: dict, seq_len: int) -> list[dict[str, int]]:
    """Samples per phase and source: the phase's whole samples, shared by its quotas (largest remainder)."""
    out = []
    for ph in plan["phases"]:
        n = round(ph["end"] / seq_len) - round(ph["start"] / seq_len)
        q = np.array([ph["quotas"][s] for s in plan["sources"]])
        exact = q / q.sum() * n if q.sum() > 0 else np.zeros(len(q))
        take = np.floor(exact).astype(np.int64)
        for i in np.argsort(-(exact - take), kind="stable")[: n - int(take.sum())]:
            take[i] += 1
        out.append({s: int(k) for s, k in zip(plan["sources"], take)})
    return out


@dataclass
class _Reading:
    """Where a source's reading stands: epoch, place in that epoch's permutation, offset in the document."""

    store: IndexedReader
    doc_ids: list[str]
    seed: int
    source: str
    epoch: int = 0
    place: int = 0
    offset: int = 0
    order: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    tokens_read: int = 0

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The next ``n`` tokens; and per piece (a document's part) its store sequence, first token in
        the document, and start in the returned tokens."""
        parts, seqs, offs, starts, got = [], [], [], [], 0
        while got < n:
            if self.place >= len(self.order):
                self.order = epoch_permutation(self.seed, self.source, self.epoch, len(self.store))
                self.epoch, self.place = self.epoch + 1, 0
            seq = int(self.order[self.place])
            doc = self.store[seq]
            piece = doc[self.offset: self.offset + (n - got)]
            parts.append(piece)
            seqs.append(seq)
            offs.append(self.offset)
            starts.append(got)
            got += len(piece)
            self.offset += len(piece)
            if self.offset >= len(doc):
                self.place, self.offset = self.place + 1, 0
        self.tokens_read += n
        return np.concatenate(parts), np.array(seqs), np.array(offs), np.array(starts)


def _write_phase_source(reading: _Reading, samples: int, seq_len: int, out, shard_bytes: int) -> list[dict]:
    dtype = reading.store.index.dtype
    writer = MdsWriter(out, {"tokens": f"ndarray:{dtype.name}:{seq_len}", "source": "str", "doc_ids": "json",
                             "first_offset": "int64"}, shard_bytes)
    done = 0
    while done < samples:
        k = min(WINDOWS, samples - done)
        tokens, seqs, offs, starts = reading.take(k * seq_len)
        for w in range(k):
            lo, hi = w * seq_len, (w + 1) * seq_len
            first = int(np.searchsorted(starts, lo, side="right")) - 1
            last = int(np.searchsorted(starts, hi, side="left"))
            writer.write({"tokens": tokens[lo:hi], "source": reading.source,
                          "doc_ids": [reading.doc_ids[s] for s in seqs[first:last]],
                          "first_offset": int(offs[first] + lo - starts[first])})
        done += k
    return writer.close()


def _readme(streams: list[dict]) -> str:
    lines = ["# This corpus in MosaicML streaming", "",
             "One folder per phase; in it one MDS dataset per source and `streams.json`. Train each phase for one "
             "epoch of:", "",
             "```python",
             "import json",
             "from streaming import Stream, StreamingDataset",
             "cfg = json.load(open(f'{root}/<phase>/streams.json'))",
             "streams = [Stream(local=f\"{root}/{s['local']}\", choose=s['choose']) for s in cfg['streams']]",
             "dataset = StreamingDataset(streams=streams, epoch_size=cfg['epoch_size'], shuffle=True, batch_size=...)",
             "```", "",
             "| phase | samples | per source |", "|---|---|---|"]
    lines += [f"| {p['phase']} | {p['epoch_size']:,} | "
              + ", ".join(f"{s['source']} {s['choose']:,}" for s in p["streams"]) + " |" for p in streams]
    return "\n".join(lines) + "\n"


def mds_config(loaded: LoadedSpec, partition: None) -> dict:
    return {"mds": loaded.spec.handoff.mds.model_dump(mode="json"), "seq_len": loaded.spec.mixture.seq_len,
            "seed": loaded.spec.mixture.seed, "max_epochs": loaded.spec.mixture.max_epochs}


def build_mds(ctx: StageRun) -> Built:
    loaded, cfg, mix = ctx.loaded, ctx.loaded.spec.handoff.mds, ctx.loaded.spec.mixture
    plan, _ = load_plan(loaded)
    if not cfg.enabled:
        (ctx.staging / README).write_text("# MosaicML streaming\n\nNot written: set `handoff.mds.enabled: true`.\n")
        return Built(inputs=[], outputs=[staged_ref(ctx.staging, README, "readme")], counts={"samples": 0},
                     details={"enabled": False}, summary="disabled (handoff.mds.enabled)")
    per_phase = phase_samples(plan, mix.seq_len)
    readings, refs = {}, []
    for s in plan["sources"]:
        path, m = ctx.upstream("tokenize", s)
        refs += input_refs(loaded, path, m, kinds=("token_bin", "token_index", "token_documents"))
        outs = {o["kind"]: o for o in m["outputs"]}
        store = IndexedReader(loaded.storage_root / outs["token_bin"]["path"][: -len(".bin")])
        needed = sum(p[s] for p in per_phase) * mix.seq_len
        available = int(store.tokens.size)
        if needed > (available * mix.max_epochs if available else 0):
            raise MdsError(f"source {s!r}: the phases take {needed:,} tokens of its {available:,}, over "
                           f"mixture.max_epochs {mix.max_epochs:g}; fix: lower its weights, raise max_epochs or add "
                           "data; nothing was written")
        doc_ids = pq.read_table(loaded.storage_root / outs["token_documents"]["path"],
                                columns=["doc_id"]).column("doc_id").to_pylist()
        readings[s] = _Reading(store, doc_ids, mix.seed, s)
    outputs, streams = [], []
    for p, (ph, counts) in enumerate(zip(plan["phases"], per_phase)):
        folder = f"phase-{p:02d}-{ph['name']}"
        entry = {"phase": ph["name"], "epoch_size": sum(counts.values()), "seq_len": mix.seq_len, "streams": []}
        for s, n in counts.items():
            if n == 0:
                continue
            shards = _write_phase_source(readings[s], n, mix.seq_len, ctx.staging / folder / s, cfg.shard_bytes)
            outputs += [staged_ref(ctx.staging, f"{folder}/{s}/{sh['raw_data']['basename']}", "mds_shard",
                                   sh["samples"], sh["samples"] * mix.seq_len) for sh in shards]
            outputs.append(staged_ref(ctx.staging, f"{folder}/{s}/{INDEX}", "mds_index", n))
            entry["streams"].append({"source": s, "local": f"{folder}/{s}", "choose": n})
        (ctx.staging / folder / "streams.json").write_text(json.dumps(entry, indent=2, sort_keys=True))
        outputs.append(staged_ref(ctx.staging, f"{folder}/streams.json", "streams", len(entry["streams"])))
        streams.append(entry)
        ctx.say(f"{ph['name']}: {entry['epoch_size']:,} samples from {len(entry['streams'])} source(s)")
    (ctx.staging / README).write_text(_readme(streams))
    outputs.append(staged_ref(ctx.staging, README, "readme"))
    samples = sum(e["epoch_size"] for e in streams)
    epochs = {s: r.tokens_read / r.store.tokens.size if r.store.tokens.size else 0.0 for s, r in readings.items()}
    return Built(
        inputs=refs, outputs=outputs,
        counts={"samples": samples, "tokens_out": samples * mix.seq_len, "phases": len(streams)},
        details={"enabled": True, "phases": streams, "epochs": epochs,
                 "phase_shares": [{s: n / e["epoch_size"] for s, n in c.items()} for e, c in zip(streams, per_phase)]},
        summary=f"{samples:,} samples of {mix.seq_len} in {len(streams)} phase(s); README {README}")


STAGE = Stage(name=NAME, scope="global", upstream=("mixture_plan", "tokenize"), config=mds_config, build=build_mds,
              module=__name__, active=lambda spec: spec.handoff.mds.enabled)
