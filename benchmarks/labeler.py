"""(h) The labeler: training time, scoring time and its validation, on the development CIFAR-10 copy.

Per preset, on one cold cache (a fresh checkpoint folder): train the CIFAR-10 classifier with
the preset's labeler config (`quality.build.train_content_classifier`), fit the score
(discriminator, cross-fitted calibration, the 15 leave-one-family-out refits), run the validation
suite on 100 held-out dogs, and score 600 seeds' A and B images (1,200 images; real images of
every class stand in for generated ones, which changes nothing in the time). The test preset runs
on the stand-in photographs (no classes: statistics only), as in the tests.

Targets (issue "Quality labels a reviewer can trust"): scoring 600 seeds <= 60 s, training
(classifier + score) <= 5 min at quick scale on this 2-core CPU; the test preset's labels work a
few seconds. The paper preset's classifier (32-64-128 channels, 30 epochs, up to 2,000 images per
class) is GPU work; on a CPU it is not measured.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.timing import Table
from hybrid_jax import data as data_lib
from hybrid_jax.config import get_preset
from hybrid_jax.quality import build, degradations, realism, validation
from hybrid_jax.quality import score as score_lib

DEV_DATA = Path(os.environ.get("HYBRID_JAX_DEV_DATA",
                               Path(__file__).resolve().parents[2] / "shared/data/cifar-10-batches-py"))
N_SEEDS = 600
REFERENCE, HELD_OUT = 375, 100  # the quick preset's data split


def not_measured() -> str | None:
    if not DEV_DATA.exists():
        return f"the development CIFAR-10 copy ({DEV_DATA}, or $HYBRID_JAX_DEV_DATA) is not present"
    return None


def _score_seconds(fitted: build.Fitted, images: np.ndarray, repeats: int) -> tuple[float, float]:
    """(first call incl. compiles, median warm call) seconds to score `images` with a fresh featurizer cache."""
    times = []
    for _ in range(max(repeats, 1) + 1):
        fresh = build.featurizer(fitted.content, fitted.cfg)  # no memo of an earlier call
        t0 = time.perf_counter()
        fitted.model.score(fresh(images))
        times.append(time.perf_counter() - t0)
    return times[0], float(np.median(times[1:]))


def _typicality(train_feats: np.ndarray):
    """Unsupervised Gaussian typicality: minus the Mahalanobis distance (Ledoit-Wolf) to the reference."""
    w = score_lib.Whitening.fit(train_feats)
    return lambda f: -w.distance(f)


def candidates(reference, held_out, others: build.OtherClasses, content: build.Content, fitted: build.Fitted,
               cfg) -> Table:
    """The candidate scores the design chose from, on one suite (docs/labeler.md)."""
    table = Table("Labeler candidates on the development CIFAR-10 copy (mean / lowest AUC over the suite's cells)",
                  ["candidate", "mean AUC", "min AUC", "lowest family at its strongest level", "pass rule"])
    wrong = build.wrong_class_images("dog", others.held)
    feat = fitted.featurize
    ref = feat(reference)
    stats_typ = _typicality(score_lib.Space.fit(ref).z_stats(ref))
    space = score_lib.Space.fit(ref)
    emb_typ = _typicality(ref.embedding)
    knn = realism.fit_scorer(ref.embedding, cfg.k)
    rows = [
        ("previous score: k-NN realism on 11 sharpness statistics", realism.baseline_scorer(reference, cfg.k)),
        ("27 statistics, Gaussian typicality (unsupervised)", lambda x: stats_typ(space.z_stats(feat(x)))),
        ("(b) classifier embedding, k-NN realism", lambda x: knn(feat(x).embedding)),
        ("(b) classifier embedding, Gaussian typicality", lambda x: emb_typ(feat(x).embedding)),
        ("(b) classifier log p(class | image)", lambda x: feat(x).log_p),
    ]
    for name, fn in rows:
        table.add(name, *_summary(validation.run_suite(fn, held_out, other_classes=wrong)))
    stats_only = build.fit_quality(reference, cfg, None)  # never sees another class: wrong class needs no refit
    table.add("discriminator on statistics only (leave-one-family-out)", *_summary(validation.run_suite(
        None, held_out, other_classes=wrong, score_for_family=lambda f: (
            lambda x, m=stats_only.lofo.get(f, stats_only.model): m.log_odds(stats_only.featurize(x))))))
    table.add("chosen: discriminator on statistics + classifier features, + beta log p(class) (leave-one-family-out)",
              *_summary(build.validate(fitted, held_out, wrong)))
    table.notes.append("(a), a discriminator of real against the generators' own images, needs trained generators "
                       "(a work dir): docs/labeler.md gives its figures. (c), Inception-v3 pool features, needs a "
                       "weights file none of the machines here has.")
    return table


def _summary(suite: dict) -> list:
    worst = min(suite["strongest"], key=suite["strongest"].get)
    return [suite["mean"], suite["min"], f"{worst} {suite['strongest'][worst]:.3f}", "yes" if suite["passed"] else "no"]


def _measure(name: str, repeats: int, table: Table, *, dev: bool) -> list[Table]:
    cfg = get_preset(name).labeler
    if dev:
        dogs = data_lib.load_images("dog", "train", str(DEV_DATA), use_tfds=False).images
        reference, held_out = dogs[:REFERENCE], dogs[REFERENCE:REFERENCE + HELD_OUT]
        others = build.load_other_classes("dog", str(DEV_DATA), cfg)
        pool = np.concatenate([reference, *others.train.values()])
        data = "CIFAR-10 dev copy"
    else:
        crops = data_lib.load_images(path=data_lib.STAND_IN, max_images=80).images
        d = get_preset(name).data
        reference, held_out, others, pool = crops[:d.max_images - d.holdout], crops[-d.holdout:], None, crops
        data = "stand-in (no classes)"
    content, t_clf, steps = None, 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        if others is not None:
            t0 = time.perf_counter()
            content = build.train_content_classifier(reference, others.train, "dog", cfg, Path(tmp) / "ckpt")
            t_clf, steps = time.perf_counter() - t0, content.summary["steps"]
    fitted = build.fit_quality(reference, cfg, content, others.train if others else None, "dog")
    wrong = build.wrong_class_images("dog", others.held) if others else None
    t0 = time.perf_counter()
    suite = build.validate(fitted, held_out, wrong)
    t_val = time.perf_counter() - t0
    n = N_SEEDS if dev else get_preset(name).seeds.num_seeds
    images = pool[np.random.default_rng(0).integers(0, len(pool), 2 * n)]
    first, warm = _score_seconds(fitted, images, repeats)
    accuracy = build.held_out_accuracy(content, held_out, others.held) if content else float("nan")
    table.add(name, data, f"{cfg.classifier_widths} x {cfg.train.epochs} ep" if content else "off", steps, t_clf,
              fitted.seconds, t_clf + fitted.seconds, t_val, f"{n} ({2 * n} images)", first, warm,
              accuracy, suite["mean"], suite["min"], "yes" if suite["passed"] else "NO")
    print(table.row_text(), flush=True)
    extra = []
    if name == "quick" and content is not None:
        extra.append(_suite_table(suite, name))
        extra.append(candidates(reference, held_out, others, content, fitted, cfg))
    return extra


def _suite_table(suite: dict, name: str) -> Table:
    table = Table(f"Labeler validation, {name} preset, development CIFAR-10 copy: AUC per family and strength "
                  "(leave-one-family-out)", ["family", "strength parameter", "weak", "medium", "strong"])
    for f, levels in suite["auc"].items():
        fam = degradations.FAMILIES[f]
        table.add(f, f"{fam.unit}: " + " / ".join(str(v) for v in fam.strengths),
                  *[a for _, a in validation.ordered(levels, f)])
    table.notes.append(f"Mean {suite['mean']:.3f}, lowest cell {suite['min']:.3f}; pass rule "
                       f"({validation.PASS_TEXT}): {'passed' if suite['passed'] else 'FAILED'}.")
    return table


def run(presets: list[str], repeats: int) -> list[Table]:
    table = Table("Labeler: training, validation and scoring time; validation on held-out real images",
                  ["preset", "data", "classifier", "classifier steps", "classifier s", "score fit s",
                   "training s (total)", "validation s", "seeds scored", "scoring s (first, compiles)",
                   "scoring s (warm)", "classifier held-out accuracy", "mean AUC", "min AUC", "pass rule"])
    table.notes.append(f"Device: {jax.devices()[0].platform}. Score fit: the discriminator (boosted trees), its "
                       "cross-fitted calibration and the leave-one-family-out refits the suite needs. Scoring: "
                       "8-bit rounding, 27 statistics, the classifier's features, the trees, for A and B of every "
                       "seed. Targets: scoring 600 seeds <= 60 s; training <= 300 s at quick scale on 2 cores; "
                       "the test preset's labels work a few seconds. Pass rule: mean AUC >= 0.9, every family "
                       ">= 0.8 at its strongest level, no cell below 0.5 (leave-one-family-out).")
    dev = not_measured() is None
    extra = []
    for name in ["test", *presets]:
        if name == "paper" and jax.default_backend() == "cpu":
            table.notes.append("paper: not measured on a CPU (its classifier is GPU work).")
            continue
        if name != "test" and not dev:
            table.notes.append(f"{name}: not measured ({not_measured()}).")
            continue
        extra += _measure(name, repeats, table, dev=name != "test" and dev)
    return [table, *extra]
