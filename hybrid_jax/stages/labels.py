"""Stage `labels`: automated labels for every seed, plus human labels when imported or written by the page.

A label means what the brief's people meant: A_needed iff B's image is clearly worse than A's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from hybrid_jax import io, labeler, labels as labels_lib
from hybrid_jax.rundir import Run, Stage, file_hash
from hybrid_jax.stages import data as data_stage
from hybrid_jax.stages import seeds as seeds_stage

log = logging.getLogger("hybrid_jax.stages.labels")


def human_labels_path(run: Run) -> Path:
    return run.path("labels", "human.csv")


def run_stage(run: Run) -> dict:
    cfg = run.cfg
    data, seeds = data_stage.load(run), seeds_stage.load(run)
    emb = labeler.embed_all
    scorer = labeler.fit_scorer(emb(data["train"]), cfg.labeler.k)
    feats = {"a": emb(seeds["images_a"]), "b": emb(seeds["images_b"]), "real": emb(data["holdout"])}
    s_a, s_b, s_real = (scorer(feats[k]) for k in ("a", "b", "real"))
    tau, rule = labeler.label_rule(cfg.labeler, s_real)
    auto = dict(zip(map(int, seeds["seeds"]), labeler.label_pairs(s_a, s_b, s_real, cfg.labeler)))
    labels_lib.write_labels(run.path("labels", "auto.csv"), auto)
    z = {k: (v - scorer.mean) / scorer.scale for k, v in feats.items()}  # the scorer's standardised space
    io.write_npz(run.path("labels", "scores.npz"), score_a=s_a, score_b=s_b, score_real=s_real,
                 feats_a=z["a"], feats_b=z["b"], feats_real=z["real"])
    validation = labeler.validate(lambda x: scorer(emb(x)), data["holdout"])
    out = {"rule": rule, "tau": tau, "forced_share": cfg.labeler.a_needed_share > 0,
           "auto_cheap_ok": sum(v == "cheap_ok" for v in auto.values()), "n": len(auto),
           "validation_auc": validation, "mean_score": {"A": float(s_a.mean()), "B": float(s_b.mean()),
                                                        "real": float(s_real.mean())}}
    human = _import_human_labels(run, seeds["seeds"])
    if human:
        out["human_cheap_ok"] = sum(v == "cheap_ok" for v in human.values())
        out["human_n"] = len(human)
        out["agreement"] = labels_lib.agreement(human, auto)
    return out


def _import_human_labels(run: Run, seeds: np.ndarray) -> dict[int, str]:
    path = human_labels_path(run)
    if run.labels_csv:
        labels_lib.write_labels(path, *labels_lib.read_labels_table(run.labels_csv, known_seeds=seeds.tolist()))
    return labels_lib.read_labels(path, known_seeds=seeds.tolist()) if path.exists() else {}


def router_labels(run: Run) -> tuple[dict[int, str], str]:
    """Human labels where the run has a complete set, else the automated ones; and which."""
    seeds = seeds_stage.load_seed_ids(run).tolist()
    path = human_labels_path(run)
    if path.exists():
        human = labels_lib.read_labels(path, known_seeds=seeds)
        if len(human) == len(seeds):
            return human, "human"
        log.warning("human labels cover %d of %d seeds; the router uses the automated labels", len(human), len(seeds))
    return labels_lib.read_labels(run.path("labels", "auto.csv"), known_seeds=seeds), "automated"


def load_scores(run: Run) -> dict[str, np.ndarray]:
    """Per-seed quality of A's and B's image and of held-out real images, and their labeler features."""
    return io.read_npz(run.path("labels", "scores.npz"))


def _inputs(run: Run) -> tuple:
    return (file_hash(human_labels_path(run)), file_hash(run.labels_csv) if run.labels_csv else None)


STAGE = Stage("labels", run_stage, config=lambda cfg: (cfg.labeler,), after=("data", "seeds"), inputs=_inputs)


def score_images(run: Run, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(quality [n] in [0, 1], labeler features [n, D]) of any images, by the labels stage's scorer."""
    scorer = labeler.fit_scorer(labeler.embed_all(data_stage.load(run)["train"]), run.cfg.labeler.k)
    feats = labeler.embed_all(images)
    return scorer(feats), (feats - scorer.mean) / scorer.scale


def tau(run: Run) -> float:
    """The 'about the same' margin on the quality score, calibrated on held-out real images."""
    return labeler.calibrate_tau(load_scores(run)["score_real"], run.cfg.labeler.margin_quantile)
