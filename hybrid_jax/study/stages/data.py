"""Stage `data`: training images of the chosen classes (with class labels) and real images held out of all training."""

from __future__ import annotations

import logging

import numpy as np

from hybrid_jax import data as data_lib
from hybrid_jax import io
from hybrid_jax.study.rundir import Run, Stage

log = logging.getLogger("hybrid_jax.stages.data")


def load(run: Run) -> dict[str, np.ndarray]:
    """{"train": [n, S, S, 3], "holdout": [m, S, S, 3]} in [-1, 1], S = geometry.image_size, and their class
    labels "train_labels" [n], "holdout_labels" [m] (indices into data.classes; zeros with one class)."""
    return io.read_npz(run.path("data", "images.npz"))


def _load_class(run: Run, path: str, class_name: str) -> tuple[data_lib.Images, np.ndarray, np.ndarray, str]:
    """(the loaded train split, training images, held-out images, where the held-out ones came from) of one class."""
    d, size = run.cfg.data, run.cfg.geometry.image_size
    train = data_lib.load_images(class_name, "train", path, max_images=d.max_images + d.holdout, image_size=size)
    try:
        if train.stand_in:  # the stand-in has no test split: hold out from the training crops
            raise data_lib.DataError("no test split")
        test = data_lib.load_images(class_name, "test", path, max_images=d.holdout, image_size=size)
        return train, train.images[: d.max_images], test.images, "the test split"
    except data_lib.DataError:
        train_images, held_out = data_lib.holdout_split(train.images, d.holdout)
        why = f"the last {d.holdout} training images of the class (no test split available)"
        return train, train_images, held_out, why


def _read(run: Run) -> tuple[dict[str, np.ndarray], dict]:
    """(the arrays `load` returns, the stage's summary): each class's images in the order of data.classes,
    labelled with its index there. Reads the source only; writes nothing."""
    d = run.cfg.data
    path = data_lib.resolve_source(d.path, offline=d.offline, class_name=d.classes)
    if path == data_lib.STAND_IN and d.num_classes > 1:
        raise data_lib.DataError(f"data.class_name={d.class_name!r} asks for {d.num_classes} classes, but the "
                                 f"embedded stand-in images have no classes; give CIFAR-10 (--data PATH or "
                                 f"tfds:cifar10, or run online once to download it) or choose one class.")
    parts = [_load_class(run, path, c) for c in d.classes]
    train = parts[0][0]
    labelled = lambda i: np.concatenate([np.full(len(p[i]), c, np.int32) for c, p in enumerate(parts)])
    train_images, held_out = (np.concatenate([p[i] for p in parts]) for i in (1, 2))
    arrays = {"train": train_images, "holdout": held_out, "train_labels": labelled(1),
              "holdout_labels": labelled(2)}
    return arrays, {"source": "; ".join(p[0].source for p in parts), "stand_in": train.stand_in,
                    "n_train": len(train_images), "n_holdout": len(held_out), "holdout_from": parts[0][3],
                    "classes": list(d.classes)}


def run_stage(run: Run) -> dict:
    arrays, summary = _read(run)
    io.write_npz(run.path("data", "images.npz"), **arrays)
    if summary["stand_in"]:
        log.warning("DATA: %s", summary["source"])
    return summary


def check(run: Run) -> None:
    """The data source, the class names and every image are read and checked (DataError) before any work;
    quietly, since the stage itself then reads them and says what it used."""
    quiet = logging.getLogger(data_lib.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        _read(run)
    finally:
        quiet.setLevel(level)


STAGE = Stage("data", run_stage, config=lambda cfg: (cfg.data, cfg.geometry), check=check)
