"""Deciding per seed which generator makes its image.

`router` (the gradient-boosting router and its in-graph traversal), `crossfit` (its recipe cross-fitted, so every
figure is out of sample), `allocation` and `policy` (per-seed allocation among many options and its deployed
cascade), `early_exit` (Fast-ARDiff's pre-filter), `evaluation` (strategies judged at equal cost beside their
baselines) and `sampler` (the routed sampler that probes, decides in-graph and finishes), whose public names are
re-exported here (`routing.seed_keys`, `routing.make_routed_sampler`, ...).
"""

from hybrid_jax.data import bucket_size  # the routed pipeline's batch shapes (`data.option_batches`)
from hybrid_jax.routing.sampler import (RoutedOutput, RoutedSampler, generate_split, make_decide, make_probe,
                                        make_routed_sampler, seed_keys)

__all__ = ["RoutedOutput", "RoutedSampler", "bucket_size", "generate_split", "make_decide", "make_probe",
           "make_routed_sampler", "seed_keys"]
