"""Runnable experiments: `python -m experiments.run` (the study), `python -m experiments.label` (labeling page)."""
