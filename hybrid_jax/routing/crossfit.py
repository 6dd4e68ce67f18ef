"""Cross-fitted router study: the brief's whole recipe inside every resampling fold.

The recipe (`RouterRecipe`) is leave-one-out feature ablation on the training rows only
(pooled out-of-fold precision over `ablation_folds` inner folds, decided by
`router.ablation_kept`) followed by the final gradient boosting on the kept columns.
`run_study` runs it inside each of cfg.cv_folds stratified folds (one out-of-sample
P(cheap_ok) per seed, and the CV table from the same fits), inside each of cfg.n_splits
random stratified splits (best split by test precision, threshold sweep on it) and once
on all seeds (the deployed router). No reported test number comes from a model whose
feature selection saw its test seeds.

Every fit is an independent task. Wave 1 holds every recipe's screening fits; wave 2 every
recipe's kept-set screen and final fit. Tasks run in parallel (joblib, loky processes) and
each result is written atomically to `cache_dir/<sha256>.npz`, keyed by the content of the
fit (training rows, labels, columns, GB parameters, evaluated rows, sklearn version): a
killed run resumes where it stopped, an identical rerun fits nothing, and the results are
bitwise the same from the cache or from fresh fits, and for any n_jobs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sklearn
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.utils.validation import check_is_fitted

from hybrid_jax import io, progress
from hybrid_jax.config import ConfigError, RouterConfig
from hybrid_jax.routing import router

log = logging.getLogger("hybrid_jax.routing.crossfit")

CACHE_FORMAT = 1  # part of every cache key: bump when a cached result changes meaning
LOG_EVERY_S = progress.LOG_EVERY_S  # at most one progress log line per this many seconds
MIN_SUPPORT = 10  # the best split warns when its test metrics rest on fewer seeds routed to B / cheap_ok
RECIPE_FIELDS = ("n_estimators", "max_depth", "learning_rate", "threshold", "ablation", "ablation_folds",
                 "ablation_estimators", "seed")  # the RouterConfig fields a recipe uses
_GB_FIELDS = ("n_estimators", "max_depth", "learning_rate", "seed")  # the ones a single fit's result depends on
_DEFAULT = RouterConfig()


# ----------------------------------------------------------------------------- fit tasks

@dataclass(frozen=True, eq=False)
class FitTask:
    """One gradient-boosting fit: train on rows `train` of X restricted to `cols`, predict rows `evaluate`.

    `cfg` supplies the GB parameters (_GB_FIELDS). `export` also returns the fitted trees as
    `router.export_arrays` (the deployed router). Tasks compare by identity.
    """

    train: np.ndarray
    evaluate: np.ndarray
    cols: tuple[int, ...]
    cfg: RouterConfig
    export: bool = False


Targets = Callable[[np.ndarray], np.ndarray]  # training rows -> the labels a fit on them learns


def label_targets(y: np.ndarray) -> Targets:
    """The brief's training labels: the labels themselves."""
    return lambda rows: y[rows]


def denoised_targets(y: np.ndarray, quality: np.ndarray) -> Targets:
    """Training labels read off `quality` [n] instead of the labels: the mean quality of each seed's prefix finishes
    (`hybrid_jax.routing.ceiling`), from which the noise after the probe is averaged out. On any training rows the
    round(share x rows) seeds of highest quality are cheap_ok, `share` being those rows' cheap_ok share under the
    labels (ties in row order), so a fit learns the same prior; everything is still evaluated on the labels."""
    def targets(rows: np.ndarray) -> np.ndarray:
        out = np.zeros(len(rows), np.int64)
        out[np.argsort(-quality[rows], kind="stable")[: round(float(y[rows].mean()) * len(rows))]] = 1
        return out
    return targets


def _inputs(X: np.ndarray, targets: Targets, task: FitTask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cols = list(task.cols)
    return X[task.train][:, cols], targets(task.train), X[task.evaluate][:, cols]


def fit_key(X: np.ndarray, targets: Targets, task: FitTask) -> str:
    """SHA-256 of everything the task's result depends on: its rows' values, labels, columns, GB parameters."""
    head = {"format": CACHE_FORMAT, "sklearn": sklearn.__version__, "cols": list(task.cols),
            "export": task.export, **{f: getattr(task.cfg, f) for f in _GB_FIELDS}}
    h = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
    for a in _inputs(X, targets, task):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _fit(key: str, X_train, y_train, X_eval, cfg: RouterConfig, export: bool,
         path: Path | None) -> tuple[str, dict[str, np.ndarray]]:
    """Run one fit (in a worker process); write its result atomically to `path` when caching."""
    fitted = router.fit(X_train, y_train, cfg)
    out = {"p": router.predict_proba(fitted, X_eval), **(router.export_arrays(fitted) if export else {})}
    if path is not None:
        io.write_npz(path, **out)
    return key, out


def _cache(cache_dir: str | os.PathLike | None) -> Path | None:
    return None if cache_dir is None else Path(cache_dir)


def _jobs(n_jobs: int) -> int:
    if n_jobs < 0:
        raise router.RouterError(f"n_jobs must be >= 0 (0 = all cores), got {n_jobs}")
    return n_jobs or len(os.sched_getaffinity(0))


def _progress(items: Iterable, total: int, desc: str) -> Iterator:
    return progress.track(items, total, desc, "fit", log, LOG_EVERY_S)


@dataclass
class _Fits:
    """Runs FitTasks on one (X, targets): deduplicated by content key, read from / written to the cache, in
    parallel."""

    X: np.ndarray
    targets: Targets
    cache_dir: Path | None
    n_jobs: int
    desc: str
    done: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # content key -> result, this run
    cached: int = 0

    def _path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{key}.npz"

    def _load(self, key: str) -> dict[str, np.ndarray] | None:
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            return io.read_npz(path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # not written by us: refit, overwrite
            log.warning("unreadable cached fit %s (%s); fitting it again", path, e)
            return None

    def run(self, tasks: Sequence[FitTask], what: str) -> dict[FitTask, dict[str, np.ndarray]]:
        """Results of `tasks` (by task): from this run, from the cache, or fitted now (costliest first)."""
        keys = {t: fit_key(self.X, self.targets, t) for t in tasks}
        todo: dict[str, FitTask] = {}
        for t, key in keys.items():
            if key in self.done or key in todo:
                continue
            hit = self._load(key)
            if hit is None:
                todo[key] = t
            else:
                self.done[key], self.cached = hit, self.cached + 1
        desc = f"{self.desc}: {what}"
        log.info("%s: %d fits, %d to run", desc, len(set(keys.values())), len(todo))
        if todo:
            order = sorted(todo, key=lambda k: -todo[k].cfg.n_estimators * len(todo[k].train))
            jobs = (delayed(_fit)(k, *_inputs(self.X, self.targets, todo[k]), todo[k].cfg, todo[k].export,
                                  self._path(k))
                    for k in order)
            parallel = Parallel(n_jobs=min(self.n_jobs, len(todo)), return_as="generator_unordered")
            for key, out in _progress(parallel(jobs), len(todo), desc):
                self.done[key] = out
        return {t: self.done[key] for t, key in keys.items()}

    @property
    def counts(self) -> dict[str, int]:
        return {"total": len(self.done), "cached": self.cached, "ran": len(self.done) - self.cached}


# ----------------------------------------------------------------------------- the recipe, planned

@dataclass(frozen=True, eq=False)
class _Recipe:
    """The recipe on training rows `rows` (indices into the study's X): its ablation screen."""

    rows: np.ndarray
    folds: tuple[tuple[np.ndarray, np.ndarray], ...]  # inner ablation folds, as row indices of X
    screens: tuple[tuple[FitTask, ...], ...]  # per router.ablation_sets column set, one fit per fold; () = off


def _screen(folds, cols: Sequence[int], cfg: RouterConfig) -> tuple[FitTask, ...]:
    screen = router.screen_config(cfg)
    return tuple(FitTask(train, test, tuple(cols), screen) for train, test in folds)


def _plan(rows: np.ndarray, y: np.ndarray, n_features: int, cfg: RouterConfig) -> _Recipe:
    if not cfg.ablation:
        return _Recipe(rows, (), ())
    folds = tuple((rows[tr], rows[te]) for tr, te in router.ablation_folds(y[rows], cfg))
    return _Recipe(rows, folds, tuple(_screen(folds, cols, cfg) for cols in router.ablation_sets(n_features)))


def _precision(screen: Sequence[FitTask], results, y: np.ndarray, cfg: RouterConfig) -> float:
    return router.pooled_precision(y, [(t.evaluate, results[t]["p"]) for t in screen], cfg.threshold)


def _ablate(recipes: Sequence[_Recipe], fits: _Fits, y: np.ndarray, names: tuple[str, ...], cfg: RouterConfig,
            finals: Callable[[list[tuple[int, ...]]], list[FitTask]],
            ) -> tuple[list[tuple[int, ...]], list[dict | None], list[dict[str, np.ndarray]]]:
    """Both waves for `recipes`: screens -> kept columns -> kept-set screens + the tasks `finals(kept)`.

    Returns per recipe its kept columns and ablation report (None when ablation is off), and
    the results of the final tasks in `finals`' order.
    """
    every = tuple(range(len(names)))
    screened = fits.run([t for r in recipes for s in r.screens for t in s], "ablation screen")
    precisions = [[_precision(s, screened, y, cfg) for s in r.screens] for r in recipes]
    kept = [tuple(names.index(n) for n in router.ablation_kept(names, p)) if p else every for p in precisions]
    kept_screens = [_screen(r.folds, k, cfg) if r.screens and k != every else () for r, k in zip(recipes, kept)]
    final_tasks = finals(kept)
    done = fits.run([t for s in kept_screens for t in s] + final_tasks, "final fits")
    reports = [router.ablation_summary(names, p, _precision(ks, done, y, cfg) if ks else p[0], cfg) if p else None
               for p, ks in zip(precisions, kept_screens)]
    return kept, reports, [done[t] for t in final_tasks]


# ----------------------------------------------------------------------------- sklearn estimator

class RouterRecipe(ClassifierMixin, BaseEstimator):
    """The brief's router recipe as one scikit-learn classifier (1 = cheap_ok).

    fit(X, y): leave-one-out ablation on these rows only (`router.ablation`'s decisions:
    pooled out-of-fold precision over `ablation_folds` stratified folds, screening fits of
    `ablation_estimators` trees) -> `router.fit` on the kept columns with `n_estimators`
    trees. It sees nothing but X and y, so sklearn's model selection nests the whole recipe:
    `cross_val_predict(RouterRecipe(...), X, y, cv=..., method="predict_proba")`. Screening
    fits are cached in `cache_dir` when given (same files as `run_study`'s). ClassifierMixin
    comes first so that sklearn sees a classifier (stratified CV by default).
    Fitted: `kept_` (names), `kept_idx_`, `ablation_` (None when off), `router_`, `classes_`, `fits_`.
    """

    def __init__(self, n_estimators: int = _DEFAULT.n_estimators, max_depth: int = _DEFAULT.max_depth,
                 learning_rate: float = _DEFAULT.learning_rate, threshold: float = _DEFAULT.threshold,
                 ablation: bool = _DEFAULT.ablation, ablation_folds: int = _DEFAULT.ablation_folds,
                 ablation_estimators: int = _DEFAULT.ablation_estimators, seed: int = _DEFAULT.seed,
                 feature_names: Sequence[str] | None = None, cache_dir: str | os.PathLike | None = None):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.threshold = threshold
        self.ablation = ablation
        self.ablation_folds = ablation_folds
        self.ablation_estimators = ablation_estimators
        self.seed = seed
        self.feature_names = feature_names
        self.cache_dir = cache_dir

    def config(self) -> RouterConfig:
        """The RouterConfig of these parameters (other fields at their defaults)."""
        try:
            return RouterConfig(**{f: getattr(self, f) for f in RECIPE_FIELDS})
        except ConfigError as e:
            raise router.RouterError(f"bad RouterRecipe parameter: {e}") from None

    def fit(self, X, y) -> RouterRecipe:
        cfg = self.config()
        X, y = router._check_xy(X, y)
        names = router._check_names(self.feature_names, X.shape[1])
        fits = _Fits(X, label_targets(y), _cache(self.cache_dir), 1, "router recipe")
        kept, reports, _ = _ablate([_plan(np.arange(len(y)), y, X.shape[1], cfg)], fits, y, names, cfg,
                                   lambda kept: [])
        self.kept_idx_ = np.asarray(kept[0], np.int64)
        self.kept_ = [names[j] for j in kept[0]]
        self.ablation_ = reports[0]
        self.router_ = router.fit(X[:, self.kept_idx_], y, cfg, self.kept_)
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        self.fits_ = fits.counts
        return self

    def predict_proba(self, X) -> np.ndarray:
        """[n, 2]: P(A_needed), P(cheap_ok) from the kept columns of X (all candidate columns, in order)."""
        check_is_fitted(self, "router_")
        X = router._check_X(X, self.n_features_in_)
        p = router.predict_proba(self.router_, X[:, self.kept_idx_])
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        """1 (send to B) iff P(cheap_ok) >= threshold."""
        return (self.predict_proba(X)[:, 1] >= self.threshold).astype(np.int64)


def recipe_from_config(cfg: RouterConfig, feature_names: Sequence[str] | None,
                       cache_dir: str | os.PathLike | None = None) -> RouterRecipe:
    """The RouterRecipe of a RouterConfig (its RECIPE_FIELDS)."""
    return RouterRecipe(**{f: getattr(cfg, f) for f in RECIPE_FIELDS},
                        feature_names=None if feature_names is None else tuple(feature_names), cache_dir=cache_dir)


# ----------------------------------------------------------------------------- the study

def _support_warning(test: dict, n_positive: int) -> str | None:
    if test["n_to_B"] >= MIN_SUPPORT and n_positive >= MIN_SUPPORT:
        return None
    return (f"the best split's test precision rests on {test['n_to_B']} seeds routed to B and its recall on "
            f"{n_positive} cheap_ok seeds (fewer than {MIN_SUPPORT}), and it is the best of several splits: "
            "quote the cross-fitted out-of-fold numbers ('oof', 'cv') instead")


def run_study(X, y, names: Sequence[str], cfg: RouterConfig, cache_dir: Path | None, n_jobs: int | None = None,
              desc: str = "router", quality: np.ndarray | None = None
              ) -> tuple[dict, router.Router | router.TreeEnsemble]:
    """The router study of the brief with the whole recipe (ablation -> fit) cross-fitted.

    With `quality` [n] every fit learns `denoised_targets(y, quality)` instead of the labels (what is
    evaluated, and how folds are stratified, stays the labels).

    Recipes: one per cfg.cv_folds stratified fold (shuffled with cfg.seed), one per
    cfg.n_splits stratified split (test share cfg.test_fraction), one on all seeds (deployed).
    Returns a JSON-serialisable dict ("oof", "folds", "cv", "best_split", "sweep", "ablation",
    "kept", "fits"; see the module docstring and README) and the deployed router as a
    TreeEnsemble, always rebuilt from the fit's exported arrays so that it is the same
    whether the fit ran now or came from the cache. n_jobs: None = cfg.n_jobs, 0 = all cores.
    """
    X, y = router._check_xy(X, y)
    names = router._check_names(names, X.shape[1])
    n, t = len(y), cfg.threshold
    everything = np.arange(n)
    cv = router._kfold(y, cfg.cv_folds, cfg, "cross-fitting")
    splits = list(StratifiedShuffleSplit(cfg.n_splits, test_size=cfg.test_fraction,
                                         random_state=cfg.seed).split(np.zeros(n), y))
    recipes = [_plan(train, y, len(names), cfg) for train, _ in cv + splits] + [_plan(everything, y, len(names), cfg)]
    targets = label_targets(y) if quality is None else denoised_targets(y, np.asarray(quality, np.float64))
    fits = _Fits(X, targets, _cache(cache_dir), _jobs(cfg.n_jobs if n_jobs is None else n_jobs), desc)
    kept, reports, outs = _ablate(
        recipes, fits, y, names, cfg,
        lambda kept: [FitTask(r.rows, everything, k, cfg, export=i == len(recipes) - 1)
                      for i, (r, k) in enumerate(zip(recipes, kept))])
    kept_names = [[names[j] for j in k] for k in kept]
    p = [out["p"] for out in outs]  # each final fit's P(cheap_ok) on every seed

    oof, fold_of, cv_rows = np.empty(n), np.empty(n, np.int64), []
    for i, (train, test) in enumerate(cv):
        oof[test], fold_of[test] = p[i][test], i
        cv_rows.append({"fold": i, "n_train": len(train), "n_test": len(test), "kept": kept_names[i],
                        "train": router.metrics(y[train], p[i][train], t),
                        "test": router.metrics(y[test], p[i][test], t)})

    k = len(cv)
    split_tests = [router.metrics(y[test], p[k + j][test], t) for j, (_, test) in enumerate(splits)]
    b = router.best_index(split_tests)
    b_train, b_test = splits[b]
    n_positive = int(y[b_test].sum())
    best = {"index": b, "train_idx": b_train.tolist(), "test_idx": b_test.tolist(),
            "train": router.metrics(y[b_train], p[k + b][b_train], t), "test": split_tests[b], "splits": split_tests,
            "kept": kept_names[k + b], "n_positive_test": n_positive,
            "warning": _support_warning(split_tests[b], n_positive)}
    if best["warning"]:
        log.warning("%s: %s", desc, best["warning"])

    deployed = router.ensemble_from_arrays({**outs[-1], "threshold_route": np.asarray(t, np.float32)},
                                           kept_names[-1])
    results = {
        "n_seeds": n, "features": list(names), "threshold": t,
        "oof": {"p_cheap": oof.tolist(), "fold": fold_of.tolist(), "threshold": t,
                "metrics": router.metrics(y, oof, t)},
        "folds": [{"test_idx": test.tolist(), "train_idx": train.tolist(), "kept": kept_names[i]}
                  for i, (train, test) in enumerate(cv)],
        "cv": {**router.cv_table(cv_rows, t), "in_sample": ["train"]},
        "best_split": best,
        "sweep": router.threshold_sweep(y[b_test], p[k + b][b_test], cfg.sweep),
        "ablation": reports[-1], "kept": kept_names[-1], "fits": fits.counts,
    }
    log.info("%s: %d fits (%d from the cache, %d run); out-of-fold precision %.3f, kept %d of %d features",
             desc, *fits.counts.values(), results["oof"]["metrics"]["precision"], len(kept[-1]), len(names))
    return results, deployed
