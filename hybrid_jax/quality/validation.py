"""Validation of a quality score: held-out real images must outrank degraded copies, family by family.

For every family of `degradations.FAMILIES` and each of its strengths, the ROC AUC of
"held-out real scores above its degraded copy" (1: always, 0.5: chance, below 0.5: the score
prefers the degraded image). `wrong class` compares held-out real images of the class with
held-out real images of other classes (none of which trained anything).

Pass rule (`PASS_RULE`): mean AUC over all (family, strength) cells >= 0.9; every family >= 0.8
at its strongest level; no cell below 0.5.

A scorer trained with degraded images must not be validated on the families it trained on:
`score_for_family(family)` then returns the scorer to use for that family (leave-one-family-out).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

from hybrid_jax.config import Geometry
from hybrid_jax.quality import degradations

ScoreFn = Callable[[np.ndarray], np.ndarray]
PASS_RULE = {"mean": 0.9, "strongest": 0.8, "min": 0.5}
PASS_TEXT = "mean AUC >= 0.9, every family >= 0.8 at its strongest level, no cell below 0.5"


def auc(real: np.ndarray, fake: np.ndarray) -> float:
    """ROC AUC of real (label 1) against fake (label 0) scores: P(real > fake) + P(tie) / 2."""
    y = np.r_[np.ones(len(real)), np.zeros(len(fake))]
    return float(roc_auc_score(y, np.r_[real, fake]))


def run_suite(score: ScoreFn, held_out: np.ndarray, *, other_classes: dict[str, np.ndarray] | None = None,
              score_for_family: Callable[[str], ScoreFn] | None = None, families: tuple[str, ...] | None = None,
              seed: int = 0, geometry: Geometry = Geometry()) -> dict:
    """AUC per family and strength, the pass rule's three figures and its verdict.

    other_classes: {level of `wrong class`: real images of those classes}; without it that family
    is left out and `omitted` says why. Returns {"auc": {family: {level: AUC}}, "gap": {family:
    {level: mean score(clean) - mean score(degraded)}} (copies only), "mean", "strongest":
    {family: AUC}, "min", "passed", "problems": [str], "omitted": {family: reason}, "n_real"}.
    The local-structure families degrade on `geometry`'s patch and block grids.
    """
    families = tuple(families or degradations.FAMILIES)
    held_out = np.asarray(held_out, np.float32)
    cache: dict[int, np.ndarray] = {}

    def real_scores(fn: ScoreFn) -> np.ndarray:
        if id(fn) not in cache:
            cache[id(fn)] = np.asarray(fn(held_out), np.float64)
        return cache[id(fn)]

    out = {"auc": {}, "gap": {}, "omitted": {}, "n_real": len(held_out)}
    for name in families:
        fam = degradations.FAMILIES[name]
        if fam.apply is None and not other_classes:
            out["omitted"][name] = "no real images of other classes (the data has no classes, e.g. the stand-in)"
            continue
        fn = score_for_family(name) if score_for_family else score
        real = real_scores(fn)
        if fam.apply is None:
            out["auc"][name] = {lvl: auc(real, np.asarray(fn(np.asarray(imgs, np.float32)), np.float64))
                                for lvl, imgs in other_classes.items()}
            continue
        out["auc"][name], out["gap"][name] = {}, {}
        for i, lvl in enumerate(degradations.LEVELS):
            fake = np.asarray(fn(degradations.degrade(held_out, name, i, seed, geometry)), np.float64)
            out["auc"][name][lvl] = auc(real, fake)
            out["gap"][name][lvl] = float(real.mean() - fake.mean())
    out.update(verdict(out["auc"]))
    return out


WRONG_CLASS_LEVELS = ("nearest class", "same kind", "other kind")


def level_names(family: str) -> tuple[str, ...]:
    """The levels of a family, weakest first (JSON files keep dicts sorted by key, not in this order)."""
    return WRONG_CLASS_LEVELS if degradations.FAMILIES[family].apply is None else degradations.LEVELS


def ordered(levels: dict[str, float], family: str) -> list[tuple[str, float]]:
    """(level, value) pairs of one family, weakest first."""
    return [(lvl, levels[lvl]) for lvl in level_names(family) if lvl in levels]


def verdict(aucs: dict[str, dict[str, float]]) -> dict:
    """The pass rule applied to {family: {level: AUC}}."""
    cells = [v for levels in aucs.values() for v in levels.values()]
    strongest = {f: ordered(levels, f)[-1][1] for f, levels in aucs.items()}
    problems = []
    mean = float(np.mean(cells)) if cells else float("nan")
    if not mean >= PASS_RULE["mean"]:
        problems.append(f"mean AUC {mean:.3f} < {PASS_RULE['mean']}")
    problems += [f"{f} at its strongest level: AUC {v:.3f} < {PASS_RULE['strongest']}"
                 for f, v in strongest.items() if not v >= PASS_RULE["strongest"]]
    problems += [f"{f} ({lvl}): AUC {v:.3f} < {PASS_RULE['min']}" for f, levels in aucs.items()
                 for lvl, v in levels.items() if not v >= PASS_RULE["min"]]
    return {"mean": mean, "strongest": strongest, "min": float(min(cells)) if cells else float("nan"),
            "passed": bool(cells) and not problems, "problems": problems}


def validate(score_images: ScoreFn, held_out: np.ndarray) -> dict:
    """The previous labeler's check: AUC of real-above-degraded for the original three degradations
    (`degradations.DEGRADATIONS`: 3x3 blur, noise sigma 0.2, shuffled patches) and their mean."""
    real = score_images(held_out)
    out = {}
    for name, degrade in degradations.DEGRADATIONS.items():
        out[name] = auc(real, score_images(np.asarray(degrade(held_out), np.float32)))
    out["mean"] = float(np.mean(list(out.values())))
    return out
