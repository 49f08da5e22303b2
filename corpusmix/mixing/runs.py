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
                [c[len(loss_prefix):-len(loss_suffix)] for c in tgt_cols], x / x.sum(axis=1, keepdims=True),
                joined[tgt_cols].to_numpy(np.float64))
