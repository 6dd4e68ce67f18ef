"""The A/B label rule on a quality score, its calibration on real images, and the Frechet distance.

Absolute rule (default): A_needed iff quality(A) - quality(B) > tau, where tau is the
`margin_quantile` q-quantile of |quality(r_i) - quality(r_j)| over all pairs of distinct held-out
real images. Two real images are of "about the same" quality by construction, so a gap larger
than a share q of real-vs-real gaps is "clearly worse". For A and B of equal quality the rule
marks about (1 - q) / 2 of seeds A_needed (a share 1 - q of gaps exceed tau in absolute value,
half of them in B's favour).

Rank rule (`a_needed_share` > 0): the seeds with the largest gaps, that share of them, are
A_needed, whatever the absolute gap. Only for models too weak for the absolute scale to mean
much; the report says which rule made the labels (`label_rule`).

With several classes the rule applies within each class (`label_by_class`): a seed's tau comes
from the held-out real images of its own class, and the rank rule's share holds in every class,
so a class whose images score lower or spread wider is judged against its own real images.
"""

from __future__ import annotations

import numpy as np

from hybrid_jax.config import LabelerConfig
from hybrid_jax.stats import frechet_distance  # noqa: F401  (the rule's distance, one implementation)


def real_pair_gaps(real_scores: np.ndarray) -> np.ndarray:
    """|score(r_i) - score(r_j)| over all n (n - 1) / 2 pairs i < j of distinct real images."""
    s = np.asarray(real_scores, np.float64).ravel()
    i, j = np.triu_indices(len(s), 1)
    return np.abs(s[i] - s[j])


def calibrate_tau(real_scores: np.ndarray, quantile: float) -> float:
    """The absolute rule's threshold: the `quantile` quantile of the real-vs-real gaps (`real_pair_gaps`)."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    s = np.asarray(real_scores, np.float64).ravel()
    if len(s) < 2:
        raise ValueError(f"calibrating tau needs at least 2 held-out real images, got {len(s)}")
    if not np.isfinite(s).all():
        raise ValueError("calibrating tau needs finite real-image scores")
    return float(np.quantile(real_pair_gaps(s), quantile))


def label_rule(cfg: LabelerConfig, real_scores: np.ndarray) -> tuple[float | None, str]:
    """(tau, one-line description) of the rule `label_pairs` applies with this config.

    tau is None under the rank rule, whose cut depends on the gaps of the seeds, not on real images.
    """
    if cfg.a_needed_share > 0:
        return None, (f"rank rule (for weak models only): the {cfg.a_needed_share:.1%} of seeds where "
                      f"quality(A) - quality(B) is largest are A_needed, whatever the absolute gap")
    n = int(np.size(real_scores))
    tau = calibrate_tau(real_scores, cfg.margin_quantile)
    return tau, (f"absolute rule: A_needed iff quality(A) - quality(B) > tau = {tau:.4f}, the "
                 f"q = {cfg.margin_quantile:g} quantile of |quality gap| over the {n * (n - 1) // 2} pairs of "
                 f"{n} held-out real images (smaller gaps count as 'about the same': cheap_ok)")


def label_pairs(score_a: np.ndarray, score_b: np.ndarray, real_scores: np.ndarray, cfg: LabelerConfig) -> list[str]:
    """The documented rule: "A_needed" iff score_A - score_B > tau, else "cheap_ok" (see the module docstring)."""
    score_a, score_b = np.asarray(score_a, np.float64).ravel(), np.asarray(score_b, np.float64).ravel()
    if score_a.shape != score_b.shape:
        raise ValueError(f"score_a and score_b differ in length: {len(score_a)} vs {len(score_b)}")
    gap = score_a - score_b
    if cfg.a_needed_share > 0:  # rank rule: the largest gaps, round(share * n) of them
        need = np.zeros(len(gap), bool)
        need[np.argsort(-gap, kind="stable")[: round(cfg.a_needed_share * len(gap))]] = True
    else:
        tau, _ = label_rule(cfg, real_scores)
        need = gap > tau
    return ["A_needed" if n else "cheap_ok" for n in need]


def class_taus(real_scores: np.ndarray, real_classes: np.ndarray, num_classes: int, quantile: float) -> np.ndarray:
    """[num_classes] each class's tau (`calibrate_tau`) from the held-out real images of that class."""
    real_scores, real_classes = np.asarray(real_scores, np.float64).ravel(), np.asarray(real_classes).ravel()
    if real_scores.shape != real_classes.shape:
        raise ValueError(f"{len(real_scores)} real-image scores but {len(real_classes)} classes")
    short = [c for c in range(num_classes) if np.sum(real_classes == c) < 2]
    if short:
        raise ValueError(f"calibrating tau per class needs at least 2 held-out real images of each class; "
                         f"class(es) {short} have fewer: raise data.holdout")
    return np.array([calibrate_tau(real_scores[real_classes == c], quantile) for c in range(num_classes)])


def label_by_class(score_a: np.ndarray, score_b: np.ndarray, real_scores: np.ndarray, cfg: LabelerConfig,
                   seed_classes: np.ndarray, real_classes: np.ndarray) -> list[str]:
    """`label_pairs` within each class: its seeds against its own held-out real images (the rank rule's share
    within each class). One class: exactly `label_pairs`."""
    score_a, score_b = np.asarray(score_a, np.float64).ravel(), np.asarray(score_b, np.float64).ravel()
    seed_classes, real_classes = np.asarray(seed_classes).ravel(), np.asarray(real_classes).ravel()
    real_scores = np.asarray(real_scores, np.float64).ravel()
    out = np.empty(len(score_a), object)
    for c in np.unique(seed_classes):
        m = seed_classes == c
        out[m] = label_pairs(score_a[m], score_b[m], real_scores[real_classes == c], cfg)
    return out.tolist()
