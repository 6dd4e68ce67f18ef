"""Automated quality labels: the names the rest of the code and older scripts import.

The implementation lives in `hybrid_jax.quality` (docs/labeler.md): the score (`quality.score`),
its validation suite (`quality.degradations`, `quality.validation`), the label rule and the
Frechet distance (`quality.rule`), and the previous k-NN realism score on eleven statistics,
kept as the validation baseline (`quality.realism`).
"""

from hybrid_jax.quality.degradations import DEGRADATIONS, add_noise, blur, shuffle_patches
from hybrid_jax.quality.realism import STATISTICS, RealismScorer, embed_all, fit_scorer, image_statistics
from hybrid_jax.quality.rule import calibrate_tau, frechet_distance, label_pairs, label_rule, real_pair_gaps
from hybrid_jax.quality.validation import validate

__all__ = ["DEGRADATIONS", "STATISTICS", "RealismScorer", "add_noise", "blur", "calibrate_tau", "embed_all",
           "fit_scorer", "frechet_distance", "image_statistics", "label_pairs", "label_rule", "real_pair_gaps",
           "shuffle_patches", "validate"]
