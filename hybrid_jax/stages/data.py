"""Stage `data`: training images of the class and real images held out of all training."""

from __future__ import annotations

import logging

import numpy as np

from hybrid_jax import data as data_lib
from hybrid_jax import io
from hybrid_jax.rundir import Run, Stage

log = logging.getLogger("hybrid_jax.stages.data")


def load(run: Run) -> dict[str, np.ndarray]:
    """{"train": [n, 32, 32, 3], "holdout": [m, 32, 32, 3]} in [-1, 1]."""
    return io.read_npz(run.path("data", "images.npz"))


def run_stage(run: Run) -> dict:
    d = run.cfg.data
    path = data_lib.resolve_source(d.path, offline=d.offline, class_name=d.class_name)
    train = data_lib.load_images(d.class_name, "train", path, max_images=d.max_images + d.holdout)
    try:
        if train.stand_in:  # the stand-in has no test split: hold out from the training crops
            raise data_lib.DataError("no test split")
        test = data_lib.load_images(d.class_name, "test", path, max_images=d.holdout)
        held_out, train_images = test.images, train.images[: d.max_images]
        holdout_from = "the test split"
    except data_lib.DataError:
        train_images, held_out = data_lib.holdout_split(train.images, d.holdout)
        holdout_from = f"the last {d.holdout} training images of the class (no test split available)"
    io.write_npz(run.path("data", "images.npz"), train=train_images, holdout=held_out)
    if train.stand_in:
        log.warning("DATA: %s", train.source)
    return {"source": train.source, "stand_in": train.stand_in, "n_train": len(train_images),
            "n_holdout": len(held_out), "holdout_from": holdout_from}


STAGE = Stage("data", run_stage, config=lambda cfg: (cfg.data,))
