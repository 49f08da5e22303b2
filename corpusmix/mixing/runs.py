"""Proxy-run results: the mixtures trained and the per-domain losses measured, as arrays.

A table of runs is two tables joined on ``index``: mixture weights (one column per training
domain, ``<mixture_prefix><domain>``) and losses (one column per evaluated domain,
``<loss_prefix><domain><loss_suffix>``). The defaults read RegMix's published layout
(``train_the_pile_<domain>``, ``metric/the_pile_<domain>_val_loss``); CSV or Parquet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# our own layout (the swarm_design stage's table; proxy runs write losses as val_loss_<source>)
OURS = {"mixture_prefix": "train_", "loss_prefix": "val_loss_", "loss_suffix": ""}
REGMIX = {"mixture_prefix": "train_the_pile_", "loss_prefix": "metric/the_pile_", "loss_suffix": "_val_loss"}


class RunsError(ValueError):
    """A runs table that cannot be read as mixtures and losses (the message names the file and the fix)."""


@dataclass(frozen=True)
class Runs:
    """Proxy runs: ``mixtures`` (runs x training domains, rows summing to 1) and ``losses``
    (runs x evaluated domains), rows in the same order (by ``index``)."""

    index: np.ndarray
    domains: list[str]  # training domains: the columns of ``mixtures``
    targets: list[str]  # evaluated domains: the columns of ``losses``
    mixtures: np.ndarray
    losses: np.ndarray

    def subset(self, rows: np.ndarray) -> Runs:
        return Runs(self.index[rows], self.domains, self.targets, self.mixtures[rows], self.losses[rows])


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise RunsError(f"{path}: cannot be read as CSV or Parquet ({e})") from e


def read_runs(mixtures: str | Path, losses: str | Path, mixture_prefix: str = REGMIX["mixture_prefix"],
              loss_prefix: str = REGMIX["loss_prefix"], loss_suffix: str = REGMIX["loss_suffix"]) -> Runs:
    """Mixtures and losses joined on ``index`` (runs present in both, in index order)."""
    mix_path, loss_path = Path(mixtures), Path(losses)
    mix, loss = _read(mix_path), _read(loss_path)
    for path, table in ((mix_path, mix), (loss_path, loss)):
        if "index" not in table.columns:
            raise RunsError(f"{path}: no 'index' column to join mixtures and losses on; add one (the run's id)")
    dom_cols = [c for c in mix.columns if c.startswith(mixture_prefix)]
    tgt_cols = [c for c in loss.columns if c.startswith(loss_prefix) and c.endswith(loss_suffix)]
    if not dom_cols:
        raise RunsError(f"{mix_path}: no column starts with {mixture_prefix!r}; give mixture_prefix")
    if not tgt_cols:
        raise RunsError(f"{loss_path}: no column looks like {loss_prefix}<domain>{loss_suffix}; give loss_prefix "
                        "and loss_suffix")
    joined = mix[["index", *dom_cols]].merge(loss[["index", *tgt_cols]], on="index").sort_values("index")
    if joined.empty:
        raise RunsError(f"{mix_path} and {loss_path} share no index value")
    x = joined[dom_cols].to_numpy(np.float64)
    if (x < 0).any() or not np.allclose(x.sum(axis=1), 1.0, atol=1e-2):
        raise RunsError(f"{mix_path}: mixture weights must be >= 0 and sum to 1 per run")
    return Runs(joined["index"].to_numpy(), [c[len(mixture_prefix):] for c in dom_cols],
                [c[len(loss_prefix):len(c) - len(loss_suffix)] for c in tgt_cols], x / x.sum(axis=1, keepdims=True),
                joined[tgt_cols].to_numpy(np.float64))


def over_sources(runs: Runs, sources: list[str], rename: dict[str, str], where: str) -> Runs:
    """The runs with their training domains renamed (``rename``: table domain -> source) and put in
    the spec's source order. Every domain must be a source and every source must be trained on by some
    run: a law cannot say what a source it never saw does, nor place a domain the build cannot supply."""
    names = [rename.get(d, d) for d in runs.domains]
    unknown = [f"{d} (as {n})" if n != d else d for d, n in zip(runs.domains, names) if n not in sources]
    if unknown:
        raise RunsError(f"{where}: training domains {unknown} are not sources of the spec ({sources}); map them "
                        "with mixing.runs.domains (table domain: source), or drop those runs' columns")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RunsError(f"{where}: several table domains map to source(s) {twice}; map each to its own source")
    unseen = [s for s in sources if s not in names or not runs.mixtures[:, names.index(s)].any()]
    if unseen:
        raise RunsError(f"{where}: no run trains on source(s) {unseen}, so no law can say what they do; add runs "
                        "that include them (the swarm_design asset proposes mixtures that do)")
    order = [names.index(s) for s in sources]
    return Runs(runs.index, list(sources), runs.targets, runs.mixtures[:, order], runs.losses)
