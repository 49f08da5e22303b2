"""Mixing laws: from a mixture (training-domain weights on the simplex) to a validation loss.

Three regressors behind one interface (``fit(x, y)``, ``predict(x)``), fitted **one per target
domain**; an objective over several domains is the weighted mean of the per-domain predictions
(``predict_objective``), never one law fitted to an averaged loss (on RegMix's runs the averaged
fit ranks mixtures worse: ``benchmarks/mixing_laws.py``).

* ``LogLinear``: y(x) = exp(c) + exp(t . x), the data-mixing law of Ye et al. (2024) for one
  target. Its usual form has exp(b + t . x); on the simplex (sum x = 1) b is a shift of every
  t_j, so it is folded into t. Fitted by ``scipy.optimize.least_squares`` with a Huber loss
  (robust to a diverged proxy run) from ``starts`` seeded starting points; the best fit wins.
* ``Ridge``: a linear model of x with an L2 penalty (closed form): the weak baseline.
* ``LightGBM``: gradient-boosted trees on x, as RegMix fitted them (deterministic, one thread).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EXP_CAP = 50.0  # exponent clip: a start far off the data must not overflow the residuals


@dataclass
class LogLinear:
    """y = exp(c) + exp(t . x), robust least squares from several seeded starts."""

    seed: int = 0
    starts: int = 8
    huber: float = 0.02  # loss units: residuals beyond it count linearly
    c: float = 0.0
    t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    name: str = "log_linear"

    @staticmethod
    def _curve(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.exp(theta[0]) + np.exp(np.clip(x @ theta[1:], -EXP_CAP, EXP_CAP))

    @staticmethod
    def _jacobian_at(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """d curve / d theta, exact: finite differences would cost one more curve per parameter."""
        z = x @ theta[1:]
        e = np.where(np.abs(z) < EXP_CAP, np.exp(np.clip(z, -EXP_CAP, EXP_CAP)), 0.0)  # flat where clipped
        return np.column_stack([np.full(len(x), np.exp(theta[0])), e[:, None] * x])

    def fit(self, x: np.ndarray, y: np.ndarray) -> LogLinear:
        from scipy.optimize import least_squares

        rng = np.random.default_rng(self.seed)
        floor = max(float(y.min()) * 0.8, 1e-6)
        best = None
        for k in range(self.starts):
            # an irreducible part below the smallest loss, the rest reducible; t spread around flat
            c0 = np.log(floor * (0.5 + 0.5 * rng.random()))
            t0 = np.log(max(float(y.mean()) - np.exp(c0), 1e-6)) + rng.normal(0.0, 1.0 if k else 0.0, x.shape[1])
            res = least_squares(lambda th: self._curve(th, x) - y, np.concatenate([[c0], t0]),
                                jac=lambda th: self._jacobian_at(th, x), loss="huber", f_scale=self.huber,
                                method="trf", max_nfev=2000)
            if best is None or res.cost < best.cost:
                best = res
        self.c, self.t = float(best.x[0]), best.x[1:].copy()
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._curve(np.concatenate([[self.c], self.t]), x)

    def params(self) -> dict:
        return {"c": self.c, "t": self.t.tolist()}

    @classmethod
    def from_params(cls, p: dict) -> LogLinear:
        return cls(c=float(p["c"]), t=np.asarray(p["t"], np.float64))


@dataclass
class Ridge:
    """Linear in x with an L2 penalty on standardised weights (closed form)."""

    alpha: float = 1e-2
    seed: int = 0  # unused: one interface
    coef: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scale: np.ndarray = field(default_factory=lambda: np.ones(0))
    intercept: float = 0.0
    name: str = "ridge"

    def fit(self, x: np.ndarray, y: np.ndarray) -> Ridge:
        self.mean, self.scale = x.mean(axis=0), np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        z = (x - self.mean) / self.scale
        self.intercept = float(y.mean())
        self.coef = np.linalg.solve(z.T @ z + self.alpha * len(y) * np.eye(z.shape[1]), z.T @ (y - self.intercept))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + ((x - self.mean) / self.scale) @ self.coef

    def params(self) -> dict:
        return {"alpha": self.alpha, "coef": self.coef.tolist(), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "intercept": self.intercept}

    @classmethod
    def from_params(cls, p: dict) -> Ridge:
        return cls(alpha=p["alpha"], coef=np.asarray(p["coef"]), mean=np.asarray(p["mean"]),
                   scale=np.asarray(p["scale"]), intercept=float(p["intercept"]))


@dataclass
class LightGBM:
    """Gradient-boosted trees (RegMix's regressor): 1,000 rounds at learning rate 0.01, seeded,
    deterministic, one thread, so the same runs give the same model."""

    seed: int = 0
    model: object = None
    name: str = "lightgbm"

    def fit(self, x: np.ndarray, y: np.ndarray) -> LightGBM:
        import lightgbm  # its native API: the scikit-learn wrapper would need scikit-learn

        params = {"objective": "regression", "learning_rate": 0.01, "num_leaves": 31, "min_data_in_leaf": 5,
                  "seed": self.seed, "deterministic": True, "force_col_wise": True, "num_threads": 1, "verbose": -1}
        self.model = lightgbm.train(params, lightgbm.Dataset(x, y, params={"verbose": -1}), num_boost_round=1000)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(x), np.float64)

    def params(self) -> dict:
        return {"model": self.model.model_to_string()}  # LightGBM's own text format, trees included

    @classmethod
    def from_params(cls, p: dict) -> LightGBM:
        import lightgbm

        return cls(model=lightgbm.Booster(model_str=p["model"]))


REGRESSORS = {"log_linear": LogLinear, "ridge": Ridge, "lightgbm": LightGBM}


def fit_per_target(kind: str, x: np.ndarray, losses: np.ndarray, seed: int = 0) -> list:
    """One regressor of ``kind`` per target column of ``losses`` (runs x targets)."""
    if kind not in REGRESSORS:
        raise ValueError(f"no regressor {kind!r}; choose one of {sorted(REGRESSORS)}")
    return [REGRESSORS[kind](seed=seed).fit(x, losses[:, k]) for k in range(losses.shape[1])]


def predict_targets(models: list, x: np.ndarray) -> np.ndarray:
    """Predicted loss per target (mixtures x targets)."""
    return np.stack([m.predict(x) for m in models], axis=1)


def predict_objective(models: list, x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The objective of each mixture: the weighted mean of its per-target predictions (equal weights
    by default), aggregated after fitting, never fitted to the aggregate."""
    pred = predict_targets(models, x)
    w = np.full(pred.shape[1], 1.0 / pred.shape[1]) if weights is None else np.asarray(weights, np.float64)
    return pred @ (w / w.sum())


def from_params(kind: str, params: list[dict]) -> list:
    """The per-target regressors ``[m.params() for m in models]`` describes, ready to predict."""
    return [REGRESSORS[kind].from_params(p) for p in params]


def out_of_fold(kind: str, x: np.ndarray, losses: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Each run's losses predicted by laws fitted without it (``folds`` seeded folds of the runs):
    what the laws say of mixtures they have not seen, run by run (runs x targets)."""
    fold = np.random.default_rng(seed).permutation(len(x)) % folds
    pred = np.empty_like(losses, dtype=np.float64)
    for f in range(folds):
        test = fold == f
        pred[test] = predict_targets(fit_per_target(kind, x[~test], losses[~test], seed=seed), x[test])
    return pred


def cross_validated(kind: str, x: np.ndarray, losses: np.ndarray, objective: np.ndarray | None = None,
                    folds: int = 5, seed: int = 0, predicted: np.ndarray | None = None) -> dict:
    """How well the laws rank runs they were not fitted on: Spearman's rho of the out-of-fold
    predictions (``predicted``, else computed) against the measured losses, per target and for the
    objective (the per-target predictions aggregated, as ``predict_objective`` does), and the
    objective's mean absolute error. This is the quality a proposal reports beside its prediction."""
    from scipy.stats import spearmanr

    pred = out_of_fold(kind, x, losses, folds, seed) if predicted is None else predicted
    w = np.full(losses.shape[1], 1.0 / losses.shape[1]) if objective is None else np.asarray(objective, np.float64)
    w = w / w.sum()
    return {"folds": folds, "runs": len(x),
            "per_target": [float(spearmanr(pred[:, k], losses[:, k])[0]) for k in range(losses.shape[1])],
            "objective": float(spearmanr(pred @ w, losses @ w)[0]),
            "objective_mae": float(np.abs(pred @ w - losses @ w).mean())}
