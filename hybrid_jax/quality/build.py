"""The labeler end to end, on arrays: train the classifier, fit the score, validate it.

The labels stage (`hybrid_jax.study.stages.labels`) runs exactly this on a work dir; the tests and
`benchmarks/labeler.py` run it on the development CIFAR-10 copy.

    others = other_classes(...)                       # nine other classes, split train / held out
    content = train_content_classifier(reference, others.train, class_name, cfg, ckpt_dir)
    fitted = fit_quality(reference, cfg, class_name, content, others.train)
    suite = validate(fitted, held_out, wrong_class_images(class_name, others.held))
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hybrid_jax import config as config_lib
from hybrid_jax import data as data_lib
from hybrid_jax.checkpoint import Checkpointer
from hybrid_jax.config import Geometry, JudgeConfig, LabelerConfig
from hybrid_jax.quality import classifier as clf_lib
from hybrid_jax.quality import degradations, inception, realism, trees, validation
from hybrid_jax.quality import score as score_lib


@dataclasses.dataclass(frozen=True)
class OtherClasses:
    train: dict[str, np.ndarray]  # {class: images the classifier and the discriminator may train on}
    held: dict[str, np.ndarray]  # {class: images held out of all training (the wrong-class check)}


def split_other_classes(images: dict[str, np.ndarray], holdout: int) -> OtherClasses:
    """The last `holdout` images of each class held out (at most half of them)."""
    train, held = {}, {}
    for c, x in images.items():
        if len(x) < 2:
            raise data_lib.DataError(f"{len(x)} image(s) of class {c!r}; the labeler's classifier needs at least 2 "
                                     "per class. Use the complete CIFAR-10.")
        n = min(holdout, len(x) // 2)
        train[c], held[c] = x[:-n], x[-n:]
    return OtherClasses(train, held)


def load_other_classes(class_name: str, source: str, cfg: LabelerConfig,
                       image_size: int = data_lib.IMAGE_SIZE) -> OtherClasses:
    """The nine other CIFAR-10 classes of `source` (a `data.load_images` source) at `image_size`, split as
    configured."""
    n = cfg.images_per_class + cfg.other_holdout
    images = {c: data_lib.load_images(c, "train", source, max_images=n, image_size=image_size).images
              for c in data_lib.CIFAR10_CLASSES if c != class_name}
    return split_other_classes(images, cfg.other_holdout)


def wrong_class_images(class_name: str, images: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """{level of `wrong class`: images of its classes, as many from each (shuffled, seeded)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for level, classes in degradations.wrong_class_levels(class_name).items():
        per = min(len(images[c]) for c in classes)
        x = np.concatenate([images[c][:per] for c in classes])
        out[level] = x[rng.permutation(len(x))]
    return out


# ----------------------------------------------------------------------------- the classifier

@dataclasses.dataclass(frozen=True)
class Content:
    net: clf_lib.Classifier
    params: Any
    class_index: int
    summary: dict


def classifier_guard(cfg: LabelerConfig, data_fingerprint: str) -> dict:
    """What a classifier checkpoint depends on (its directory refuses another config)."""
    keys = ("classifier_widths", "embed_dim", "images_per_class", "other_holdout", "train")
    return {"labeler": {k: config_lib.to_dict(cfg)[k] for k in keys}, "data": data_fingerprint}


def judge_guard(cfg: JudgeConfig, data_fingerprint: str) -> dict:
    """What the premise judge's checkpoint depends on."""
    return {"judge": config_lib.to_dict(cfg), "data": data_fingerprint}


def train_content_classifier(reference: np.ndarray, others_train: dict[str, np.ndarray], class_name: str,
                             cfg: LabelerConfig, ckpt_dir: str | Path, data_fingerprint: str = "") -> Content:
    """The ten-class classifier, trained (or resumed, or read back when finished) in `ckpt_dir`."""
    net = clf_lib.make_net(cfg.classifier_widths, cfg.embed_dim)
    ckpt = Checkpointer(ckpt_dir, classifier_guard(cfg, data_fingerprint))
    return _train_ten_classes(net, cfg.train, reference, others_train, class_name, ckpt, "train labeler classifier")


def train_judge(reference: np.ndarray, others_train: dict[str, np.ndarray], class_name: str, cfg: JudgeConfig,
                ckpt_dir: str | Path, data_fingerprint: str = "") -> Content:
    """The premise's second judge (`config.JudgeConfig`) on the labeler's images, trained (or resumed, or read
    back) in `ckpt_dir`."""
    net = clf_lib.make_net(cfg.widths, cfg.embed_dim, cfg.norm_groups)
    return _train_ten_classes(net, cfg.train, reference, others_train, class_name,
                              Checkpointer(ckpt_dir, judge_guard(cfg, data_fingerprint)), "train premise judge")


def _train_ten_classes(net: clf_lib.Classifier, train_cfg, reference: np.ndarray, others_train: dict[str, np.ndarray],
                       class_name: str, ckpt: Checkpointer, desc: str) -> Content:
    cls = data_lib.CIFAR10_CLASSES
    images = score_lib.to_8bit(np.concatenate([reference, *others_train.values()]))
    labels = np.concatenate([np.full(len(reference), cls.index(class_name))]
                            + [np.full(len(v), cls.index(c)) for c, v in others_train.items()])
    result = clf_lib.train_classifier(net, images, labels, train_cfg, ckpt, desc=desc)
    params = jax.device_get(result.params)
    summary = {"steps": len(result.losses), "images": len(images), "resumed_from": result.resumed_from,
               "final_loss": float(np.nanmean(result.losses[-10:])), "seconds": result.seconds}
    return Content(net, params, cls.index(class_name), summary)


def held_out_accuracy(content: Content, held_out: np.ndarray, others_held: dict[str, np.ndarray]) -> float:
    """Ten-way accuracy on held-out images of every class (none of them trained on)."""
    cls = data_lib.CIFAR10_CLASSES
    images = np.concatenate([held_out, *others_held.values()])
    labels = np.concatenate([np.full(len(held_out), content.class_index)]
                            + [np.full(len(v), cls.index(c)) for c, v in others_held.items()])
    _, logits = clf_lib.make_featurizer(content.net)(content.params, score_lib.to_8bit(images))
    return clf_lib.accuracy(logits, labels)


# ----------------------------------------------------------------------------- the score

def featurizer(content: Content | None, cfg: LabelerConfig, geometry: Geometry = Geometry()) -> score_lib.Featurize:
    """images -> score.Raw (classifier and Inception parts where present), memoised on the images' bytes:
    the suite scores the held-out images once per family."""
    class_feats = None
    if content is not None:
        class_feats = clf_lib.class_features(content.net, content.params, content.class_index)
    pool = None
    if cfg.inception_weights:
        pool_params = inception.load_params(cfg.inception_weights, cfg.inception_width, cfg.inception_size)
        pool = functools.partial(inception.pool_features, pool_params, width=cfg.inception_width,
                                 input_size=cfg.inception_size)
    featurize = score_lib.make_featurizer(class_feats, pool, geometry=geometry)
    memo: dict[str, score_lib.Raw] = {}

    def cached(images: np.ndarray) -> score_lib.Raw:
        images = np.ascontiguousarray(images, np.float32)
        key = hashlib.sha1(images.tobytes()).hexdigest() + str(images.shape)
        if key not in memo:
            memo[key] = featurize(images)
        return memo[key]
    return cached


def tree_config(cfg: LabelerConfig) -> trees.TreeConfig:
    return trees.TreeConfig(iterations=cfg.trees, depth=cfg.tree_depth, learning_rate=cfg.tree_lr, seed=cfg.seed)


@dataclasses.dataclass(frozen=True)
class Fitted:
    model: score_lib.QualityModel  # the deployed score
    reference_log_odds: np.ndarray  # out-of-fold L of every reference image (the calibration's sample)
    lofo: dict[str, score_lib.QualityModel]  # {family: the score refitted without that family}
    featurize: score_lib.Featurize
    families: list[str]  # the families the suite validates
    seconds: float
    content: Content | None = None
    cfg: LabelerConfig | None = None
    geometry: Geometry = Geometry()  # the grids its structure statistics and degradations used

    @property
    def reference_scores(self) -> np.ndarray:
        return self.model.from_log_odds(self.reference_log_odds)

    def score(self, images: np.ndarray) -> np.ndarray:
        return self.model.score(self.featurize(images))


def fit_quality(reference: np.ndarray, cfg: LabelerConfig, content: Content | None = None,
                others_train: dict[str, np.ndarray] | None = None, class_name: str = "dog",
                geometry: Geometry = Geometry()) -> Fitted:
    """The score (discriminator + calibration) and its leave-one-family-out refits; the structure statistics
    and degradations on `geometry`'s grids."""
    t0 = time.perf_counter()
    featurize = featurizer(content, cfg, geometry)
    wrong_train = wrong_class_images(class_name, others_train, cfg.seed + 1) if content and others_train else None
    ts = score_lib.build_training_set(featurize, reference, cfg.negatives_per_cell, wrong_train,
                                      seed=1000 + cfg.seed, geometry=geometry)
    tcfg = tree_config(cfg)
    model, oof = score_lib.fit(ts, featurize(reference), tcfg, content_weight=cfg.content_weight,
                               folds=cfg.calibration_folds, quantile=cfg.calibration_quantile,
                               temperature=cfg.temperature)
    families = [f for f in degradations.FAMILIES if f != "wrong class" or wrong_train is not None]
    lofo = score_lib.leave_one_family_out(ts, model, tcfg, families)
    return Fitted(model, oof, lofo, featurize, families, time.perf_counter() - t0, content, cfg, geometry)


def validate(fitted: Fitted, held_out: np.ndarray, wrong_held: dict[str, np.ndarray] | None = None,
             seed: int = 0) -> dict:
    """The suite on held-out real images, each family scored by the score refitted without it."""
    return validation.run_suite(
        None, held_out, other_classes=wrong_held if "wrong class" in fitted.families else None, seed=seed,
        score_for_family=lambda f: (lambda x, m=fitted.lofo[f]: m.log_odds(fitted.featurize(x))),
        geometry=fitted.geometry)


def validate_baseline(reference: np.ndarray, held_out: np.ndarray, k: int, families: list[str],
                      wrong_held: dict[str, np.ndarray] | None = None, seed: int = 0,
                      geometry: Geometry = Geometry()) -> dict:
    """The same suite for the previous labeler's score (k-NN realism on eleven statistics)."""
    return validation.run_suite(realism.baseline_scorer(reference, k, geometry), held_out,
                                other_classes=wrong_held if "wrong class" in families else None, seed=seed,
                                geometry=geometry)
