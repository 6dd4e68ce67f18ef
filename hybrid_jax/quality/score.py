"""The per-image quality score: what an image shows and how it was formed, against real images of the class.

Per image (rounded to 8 bits first, as every saved or viewed image is, so that no feature can tell
float outputs from 8-bit photographs):

- s: the 27 natural-image statistics of `imagestats` (sharpness, noise floor, exposure, colour,
  quantisation, structure at the generators' patch and block grids, brief: 8x8 and 16x16);
- e: the embedding of the small CIFAR-10 classifier of `classifier` (what the image shows),
  log p(class | x), the classifier's log-probability of the run's class, and its confidence c
  (log-sum-exp of the logits, largest log-probability);
- optionally i: Inception-v3 pool features (`inception`, from a weights file the user provides).

`Space` (fitted on the reference images only) maps them to the discriminator's inputs:

    X = [ s,  d_s,  d_e,  log p(class | x),  c,  d_i ]

where d_s is the Mahalanobis distance of the Yeo-Johnson-transformed, standardised statistics to
their reference mean (Ledoit-Wolf covariance), d_e the same for the embedding, d_i for the first
32 principal components of the pool features. `fd_features` is the standardised space the Frechet
distance uses: [z_s (27), whitened e or i (at most 32)], at most 59 dimensions.

The discriminator D (`trees`, boosted trees) is trained to tell real images of the class (the
reference images and their mirror images) from copies of them under every degradation family of
`degradations` at every strength, under seven training-only corruptions the suite never
validates (`degradations.TRAINING_ONLY`), and from real images of the other classes (classes
balanced by repeating the positives). Its log-odds plus the class term form

    L(x) = logit D(x) + beta * log p(class | x)          (beta = `content_weight`)

and the score is the logistic of L in units of the real images' own spread:

    quality(x) = sigmoid((L(x) - L_q) / (t * IQR_ref(L)))   in [0, 1],

where L_q is the q = `calibration_quantile` quantile of L over the reference images, each scored
by a D that never saw it (cross-fitted over `calibration_folds` folds of the reference), IQR_ref
their interquartile range and t = `temperature`. So 0.5 means "as real-looking as the q-quantile
of real images", real images mostly score above it, failures below. The map is strictly
increasing in L: rankings (and so every AUC) are those of L; it only sets the scale on which the
label rule's tau is calibrated. No division by a distance anywhere: nothing blows up on
near-duplicates.

Stand-in data has no classes: no classifier, no class term, no `wrong class` negatives; the score
then sees the statistics only, and the stage says so.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.preprocessing import PowerTransformer

from hybrid_jax.config import Geometry
from hybrid_jax.quality import degradations, imagestats, trees

CLIP = 50.0  # standardised values are clipped to +-CLIP: no overflow on absurd images
PCA_DIMS = 32  # Inception pool features are reduced to this many principal components


def to_8bit(images: np.ndarray) -> np.ndarray:
    """Round to the 256 levels of an 8-bit image (what a PNG of it holds), float32 in [-1, 1]."""
    x = np.clip(np.asarray(images, np.float32), -1, 1)
    return (np.round((x + 1) * 127.5) / 127.5 - 1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Raw:
    """Per-image features before the fitted space: statistics, classifier, Inception."""

    stats: np.ndarray  # [n, 27]
    embedding: np.ndarray | None = None  # [n, E]
    log_p: np.ndarray | None = None  # [n] log p(class | x)
    confidence: np.ndarray | None = None  # [n, 2] logsumexp of the logits, max log-probability
    pool: np.ndarray | None = None  # [n, P] Inception pool features

    def __len__(self):
        return len(self.stats)

    def take(self, idx) -> "Raw":
        pick = lambda a: None if a is None else a[idx]
        return Raw(self.stats[idx], pick(self.embedding), pick(self.log_p), pick(self.confidence), pick(self.pool))

    @staticmethod
    def concat(parts: list["Raw"]) -> "Raw":
        cat = lambda name: (None if getattr(parts[0], name) is None
                            else np.concatenate([getattr(p, name) for p in parts]))
        return Raw(cat("stats"), cat("embedding"), cat("log_p"), cat("confidence"), cat("pool"))


Featurize = Callable[[np.ndarray], Raw]


def make_featurizer(classifier: Callable[[np.ndarray], tuple] | None = None,
                    pool: Callable[[np.ndarray], np.ndarray] | None = None, batch: int = 512,
                    geometry: Geometry = Geometry()) -> Featurize:
    """images -> Raw. `classifier(images) -> (embedding, log p(class), confidence)` (`classifier.class_features`),
    `pool(images) -> pool features`; the statistics read seams on `geometry`'s grids."""
    def featurize(images: np.ndarray) -> Raw:
        parts = []
        images = np.asarray(images, np.float32)
        for i in range(0, max(len(images), 1), batch):
            x = to_8bit(images[i:i + batch])
            emb, lp, conf = classifier(x) if classifier is not None else (None, None, None)
            parts.append(Raw(imagestats.embed(x, geometry=geometry), emb, lp, conf,
                             pool(x) if pool is not None else None))
        return Raw.concat(parts)
    return featurize


# ----------------------------------------------------------------------------- the fitted space

def _yeo_johnson(x: np.ndarray, lmbda: np.ndarray) -> np.ndarray:
    """scipy/sklearn's Yeo-Johnson transform, columnwise, in float64."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for j, lam in enumerate(np.asarray(lmbda, np.float64)):
            p, xp, xn = pos[:, j], x[pos[:, j], j], x[~pos[:, j], j]
            out[p, j] = np.log1p(xp) if abs(lam) < 1e-12 else ((xp + 1) ** lam - 1) / lam
            out[~p, j] = -np.log1p(-xn) if abs(lam - 2) < 1e-12 else -((-xn + 1) ** (2 - lam) - 1) / (2 - lam)
    return np.nan_to_num(out, nan=0.0, posinf=1e12, neginf=-1e12)


@dataclasses.dataclass(frozen=True)
class Whitening:
    """z -> (z - mean) @ W with W W^T = inverse Ledoit-Wolf covariance of the fitted rows."""

    mean: np.ndarray
    W: np.ndarray

    @staticmethod
    def fit(Z: np.ndarray) -> "Whitening":
        Z = np.asarray(Z, np.float64)
        cov = LedoitWolf().fit(Z).covariance_ if len(Z) > 1 else np.eye(Z.shape[1])
        w, V = np.linalg.eigh(cov)
        return Whitening(Z.mean(0), V / np.sqrt(np.maximum(w, 1e-9 * max(w.max(), 1e-12))))

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(Z, np.float64) - self.mean) @ self.W, -CLIP, CLIP)

    def distance(self, Z: np.ndarray) -> np.ndarray:
        return np.sqrt((self(Z) ** 2).sum(1))


@dataclasses.dataclass(frozen=True)
class Space:
    """The feature transforms fitted on reference images (see the module docstring)."""

    lmbda: np.ndarray  # [27] Yeo-Johnson exponents
    yj_mean: np.ndarray
    yj_scale: np.ndarray
    stats_w: Whitening
    content_w: Whitening | None
    pool_mean: np.ndarray | None
    pool_basis: np.ndarray | None  # [P, PCA_DIMS]
    pool_w: Whitening | None

    @staticmethod
    def fit(raw: Raw) -> "Space":
        st = np.asarray(raw.stats, np.float64)
        pt = PowerTransformer(method="yeo-johnson", standardize=False).fit(st)
        yj = _yeo_johnson(st, pt.lambdas_)
        mean, scale = yj.mean(0), np.maximum(yj.std(0), 1e-6)
        z = np.clip((yj - mean) / scale, -CLIP, CLIP)
        content = Whitening.fit(raw.embedding) if raw.embedding is not None else None
        pool_mean = basis = pool_w = None
        if raw.pool is not None:
            pool_mean = raw.pool.mean(0)
            _, _, vt = np.linalg.svd(raw.pool - pool_mean, full_matrices=False)
            basis = vt[:min(PCA_DIMS, len(vt))].T
            pool_w = Whitening.fit((raw.pool - pool_mean) @ basis)
        return Space(pt.lambdas_, mean, scale, Whitening.fit(z), content, pool_mean, basis, pool_w)

    def z_stats(self, raw: Raw) -> np.ndarray:
        return np.clip((_yeo_johnson(raw.stats, self.lmbda) - self.yj_mean) / self.yj_scale, -CLIP, CLIP)

    def _pool_pcs(self, raw: Raw) -> np.ndarray:
        return (raw.pool - self.pool_mean) @ self.pool_basis

    def input_names(self) -> list[str]:
        names = list(imagestats.STATISTICS) + ["stats_distance"]
        if self.content_w is not None:
            names += ["content_distance", "log_p_class", "logsumexp_logits", "max_log_p"]
        if self.pool_w is not None:
            names += ["inception_distance"]
        return names

    def inputs(self, raw: Raw) -> np.ndarray:
        """The discriminator's inputs [n, len(input_names())]."""
        cols = [np.asarray(raw.stats, np.float64), self.stats_w.distance(self.z_stats(raw))[:, None]]
        if self.content_w is not None:
            cols += [self.content_w.distance(raw.embedding)[:, None], np.asarray(raw.log_p, np.float64)[:, None],
                     np.asarray(raw.confidence, np.float64)]
        if self.pool_w is not None:
            cols += [self.pool_w.distance(self._pool_pcs(raw))[:, None]]
        return np.nan_to_num(np.concatenate(cols, 1), nan=0.0, posinf=1e6, neginf=-1e6)

    def fd_features(self, raw: Raw) -> np.ndarray:
        """[n, <= 59]: standardised statistics and the whitened content (or Inception) features."""
        cols = [self.z_stats(raw)]
        if self.pool_w is not None:
            cols.append(self.pool_w(self._pool_pcs(raw)))
        elif self.content_w is not None:
            cols.append(self.content_w(raw.embedding)[:, :PCA_DIMS])
        return np.concatenate(cols, 1).astype(np.float32)


# ----------------------------------------------------------------------------- the model

@dataclasses.dataclass(frozen=True)
class QualityModel:
    space: Space
    ensemble: Any  # router.TreeEnsemble of the discriminator
    content_weight: float  # beta
    center: float  # L_q
    scale: float  # t * IQR_ref(L)

    def log_odds(self, raw: Raw) -> np.ndarray:
        """L(x) = logit D(x) + beta log p(class | x)."""
        L = trees.log_odds(self.ensemble, self.space.inputs(raw))
        if raw.log_p is not None and self.space.content_w is not None:
            L = L + self.content_weight * np.asarray(raw.log_p, np.float64)
        return L

    def from_log_odds(self, L: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip((np.asarray(L) - self.center) / self.scale, -60, 60)))

    def score(self, raw: Raw) -> np.ndarray:
        """quality(x) in [0, 1] (module docstring)."""
        return self.from_log_odds(self.log_odds(raw))


# ----------------------------------------------------------------------------- training data

@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """Positives (real images of the class) and negatives (degraded copies, other classes).

    `source`: index of the reference image a row comes from (-1: an image of another class), so
    cross-fitting can leave out every row made from a held-out reference image.
    """

    raw: Raw
    label: np.ndarray  # 1 real, 0 degraded / other class
    family: np.ndarray  # "" for positives, else the degradation family (or "wrong class")
    source: np.ndarray

    def subset(self, keep: np.ndarray) -> "TrainingSet":
        return TrainingSet(self.raw.take(keep), self.label[keep], self.family[keep], self.source[keep])


def build_training_set(featurize: Featurize, reference: np.ndarray, per_cell: int,
                       other_classes: dict[str, np.ndarray] | None = None, seed: int = 1000,
                       training_only: bool = True, geometry: Geometry = Geometry()) -> TrainingSet:
    """Reference images and their mirror images; `per_cell` degraded copies of random reference images for
    every (family, strength) of the suite; up to 3 x `per_cell` images of other classes (each level of
    `wrong class` alike). Seeds differ from the validation suite's (which uses its own, below 1000)."""
    reference = np.asarray(reference, np.float32)
    m = len(reference)
    rng = np.random.default_rng(seed)
    images, family, source = [reference, reference[:, :, ::-1]], [""] * (2 * m), list(range(m)) * 2
    fams = degradations.families(geometry) | (degradations.TRAINING_ONLY if training_only else {})
    for f, fam in fams.items():
        if fam.apply is None:
            continue
        for level in range(len(fam.strengths)):
            idx = rng.choice(m, size=min(per_cell, m), replace=False)
            images.append(degradations.degrade_any(reference[idx], f, level, seed=seed + 1 + level, geometry=geometry))
            family += [f] * len(idx)
            source += idx.tolist()
    for imgs in (other_classes or {}).values():
        take = np.asarray(imgs, np.float32)[rng.permutation(len(imgs))[:per_cell]]
        images.append(take)
        family += ["wrong class"] * len(take)
        source += [-1] * len(take)
    raw = featurize(np.concatenate(images))
    family = np.asarray(family)
    return TrainingSet(raw, (family == "").astype(np.int64), family, np.asarray(source))


def _balanced_rows(y: np.ndarray) -> np.ndarray:
    """Row indices with every positive repeated round(#negatives / #positives) times: balanced classes
    without sample weights (which take HistGradientBoosting off its fast path, ~10x slower)."""
    n_pos, n_neg = max(int(y.sum()), 1), int((1 - y).sum())
    rep = max(1, int(round(n_neg / n_pos)))
    return np.concatenate([np.repeat(np.flatnonzero(y == 1), rep), np.flatnonzero(y == 0)])


def fit_discriminator(ts: TrainingSet, space: Space, cfg: trees.TreeConfig):
    """Boosted trees on the space's inputs, classes balanced by repeating the positives."""
    rows = _balanced_rows(ts.label)
    return trees.fit(space.inputs(ts.raw)[rows], ts.label[rows], None, cfg)


def fit_space(ts: TrainingSet) -> Space:
    """The space of the reference images among the positives (mirror images excluded)."""
    first = np.zeros(len(ts.label), bool)
    _, idx = np.unique(np.where(ts.label == 1, ts.source, -2), return_index=True)
    first[idx] = True
    return Space.fit(ts.raw.take(first & (ts.label == 1)))


def fit(ts: TrainingSet, reference_raw: Raw, cfg: trees.TreeConfig, *, content_weight: float, folds: int,
        quantile: float, temperature: float) -> tuple[QualityModel, np.ndarray]:
    """(deployed model, out-of-fold L of every reference image).

    The calibration (L_q, IQR) comes from the reference images, each scored by a space and a
    discriminator fitted without it and without any copy made from it (`folds`-fold cross-fitting).
    """
    m = len(reference_raw)
    beta = content_weight if reference_raw.log_p is not None else 0.0
    fold = np.arange(m) % max(2, min(folds, m))
    oof = np.empty(m)
    for k in np.unique(fold):
        held = np.flatnonzero(fold == k)
        keep = ~np.isin(ts.source, held)
        sub = ts.subset(keep)
        sp = fit_space(sub)
        ens = fit_discriminator(sub, sp, cfg)
        part = reference_raw.take(held)
        oof[held] = QualityModel(sp, ens, beta, 0.0, 1.0).log_odds(part)
    space = fit_space(ts)
    ens = fit_discriminator(ts, space, cfg)
    q25, q75 = np.percentile(oof, [25, 75])
    model = QualityModel(space, ens, beta, float(np.quantile(oof, quantile)),
                         float(max(temperature * (q75 - q25), 1e-3)))
    return model, oof


def leave_one_family_out(ts: TrainingSet, model: QualityModel, cfg: trees.TreeConfig,
                         families: list[str]) -> dict[str, QualityModel]:
    """{family: the deployed model with its discriminator refitted without that family's negatives}."""
    out = {}
    for f in families:
        sub = ts.subset(ts.family != f)
        out[f] = dataclasses.replace(model, ensemble=fit_discriminator(sub, model.space, cfg))
    return out


# ----------------------------------------------------------------------------- save / load

def to_arrays(model: QualityModel) -> dict[str, np.ndarray]:
    sp = model.space
    out = {"lmbda": sp.lmbda, "yj_mean": sp.yj_mean, "yj_scale": sp.yj_scale, "stats_mean": sp.stats_w.mean,
           "stats_W": sp.stats_w.W, "content_weight": np.asarray(model.content_weight),
           "center": np.asarray(model.center), "scale": np.asarray(model.scale)}
    if sp.content_w is not None:
        out.update(content_mean=sp.content_w.mean, content_W=sp.content_w.W)
    if sp.pool_w is not None:
        out.update(pool_mean=sp.pool_mean, pool_basis=sp.pool_basis, pool_w_mean=sp.pool_w.mean, pool_W=sp.pool_w.W)
    out.update({f"trees_{k}": v for k, v in trees.to_arrays(model.ensemble).items()})
    return out


def from_arrays(a: dict[str, np.ndarray]) -> QualityModel:
    content = Whitening(a["content_mean"], a["content_W"]) if "content_mean" in a else None
    pool = ("pool_mean" in a)
    space = Space(a["lmbda"], a["yj_mean"], a["yj_scale"], Whitening(a["stats_mean"], a["stats_W"]), content,
                  a["pool_mean"] if pool else None, a["pool_basis"] if pool else None,
                  Whitening(a["pool_w_mean"], a["pool_W"]) if pool else None)
    ens = trees.from_arrays({k: a[f"trees_{k}"] for k in trees.ARRAYS})
    return QualityModel(space, ens, float(a["content_weight"]), float(a["center"]), float(a["scale"]))
