"""The swarm_design stage: the candidate mixtures proxy models should be trained on.

A mixing law is only as good as the mixtures it was fitted on: they must spread over the
simplex (sparse ones too), around what the build can actually supply. The prior is the
natural token shares of the train stores (tokenize's exact counts) tempered by
``mixing.swarm.temperature``; each run's mixture is a Dirichlet draw around it with its own
concentration (``propose.swarm``), and every mixture is held under the repetition caps of the
target budget (a source's weight <= its available tokens x ``mixture.max_epochs`` /
``mixture.total_tokens``), so no proxy learns from a mixture the target could not be built on.

Written in the layout the fit reads back (``runs.OURS``): ``swarm.parquet`` with ``index`` and
one ``train_<source>`` column per source; a proxy runner adds a losses table on the same
``index``.
"""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from corpusmix.core.manifest import manifest_refs, staged_ref
from corpusmix.core.spec import LoadedSpec
from corpusmix.core.stage import Built, Stage, StageRun
from corpusmix.mixing.propose import swarm
from corpusmix.mixing.runs import OURS
from corpusmix.mixture.plan import availability
from corpusmix.mixture.schedules import Availability

NAME = "swarm_design"
SWARM_FILE = "swarm.parquet"


def prior_and_caps(loaded: LoadedSpec, avail: Availability) -> tuple[np.ndarray, np.ndarray]:
    """The natural token shares of the sources (spec order) and each one's repetition cap as a share
    of the budget (at most 1): what every swarm and proposal is built around and held under."""
    mix = loaded.spec.mixture
    n = np.array([avail.tokens[s] for s in loaded.source_names], np.float64)
    if not n.sum() > 0:
        raise ValueError("no source has any training tokens: nothing to mix")
    return n / n.sum(), np.minimum(n * mix.max_epochs / mix.total_tokens, 1.0)


def swarm_config(loaded: LoadedSpec, partition: None) -> dict:
    mix = loaded.spec.mixture
    return {"swarm": loaded.spec.mixing.swarm.model_dump(mode="json"), "seed": loaded.spec.mixing.seed,
            "total_tokens": mix.total_tokens, "max_epochs": mix.max_epochs, "sources": loaded.source_names}


def swarm_table(sources: list[str], x: np.ndarray) -> pa.Table:
    """Mixtures (runs x sources) as a table in our runs layout, indexed from 0."""
    cols = {"index": pa.array(np.arange(len(x), dtype=np.int64))}
    cols |= {f"{OURS['mixture_prefix']}{s}": pa.array(x[:, j]) for j, s in enumerate(sources)}
    return pa.table(cols)


def build_swarm(ctx: StageRun) -> Built:
    loaded = ctx.loaded
    cfg = loaded.spec.mixing.swarm
    sources = loaded.source_names
    avail = availability(loaded, exact_only=True)
    prior, caps = prior_and_caps(loaded, avail)
    runs = cfg.runs or 4 * len(sources)
    x = swarm(prior, runs, loaded.spec.mixing.seed, caps, temperature=cfg.temperature,
              strengths=tuple(cfg.strengths), min_weight=cfg.min_weight)
    pq.write_table(swarm_table(sources, x), ctx.staging / SWARM_FILE, compression="zstd")
    spread = {s: {"min": float(x[:, j].min()), "mean": float(x[:, j].mean()), "max": float(x[:, j].max()),
                  "runs_without": int((x[:, j] == 0).sum()), "at_cap": int((x[:, j] >= caps[j] - 1e-9).sum())}
              for j, s in enumerate(sources)}
    details = {"prior": dict(zip(sources, map(float, prior))), "caps": dict(zip(sources, map(float, caps))),
               "spread": spread, "mean_sources_per_run": float((x > 0).sum(axis=1).mean()),
               "layout": OURS | {"mixtures": SWARM_FILE}}
    (ctx.staging / "swarm.json").write_bytes(orjson.dumps(details, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
    ctx.say(f"{runs} candidate mixtures over {len(sources)} sources, {details['mean_sources_per_run']:.1f} "
            "sources per run on average")
    ups = [ctx.upstream("tokenize", s) for s in sources]
    return Built(inputs=manifest_refs(loaded, ups), outputs=[staged_ref(ctx.staging, SWARM_FILE, "swarm", rows=runs),
                                     staged_ref(ctx.staging, "swarm.json", "design", rows=1)],
                 counts={"runs": runs, "sources": len(sources)}, token_counting={"method": avail.method},
                 details=details, summary=f"{runs} mixtures")


STAGE = Stage(name=NAME, scope="global", upstream=("tokenize",), config=swarm_config, build=build_swarm,
              module=__name__)
