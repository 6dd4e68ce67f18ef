"""Deterministic, resumable batching (the image layout is `hybrid_jax.geometry`'s)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from hybrid_jax.data.images import DataError


# ----------------------------------------------------------------------------- batching


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Full batches per epoch (at least 1: a too-small set is wrapped around)."""
    if n_images < 1 or batch_size < 1:
        raise DataError(f"need at least one image and batch_size >= 1, got {n_images} images, "
                        f"batch_size {batch_size}; load more images or lower the batch size.")
    return max(1, n_images // batch_size)


def _epoch_indices(n_images: int, batch_size: int, key: int, epoch: int) -> np.ndarray:
    """int [steps_per_epoch, batch_size]: the shuffled image indices of every batch of `epoch`."""
    steps = steps_per_epoch(n_images, batch_size)
    order = np.random.default_rng([key, epoch]).permutation(n_images)
    return np.resize(order, steps * batch_size).reshape(steps, batch_size)


def batches(images: np.ndarray, batch_size: int, key: int, epoch: int) -> Iterator[np.ndarray]:
    """One epoch of shuffled full batches; the same (key, epoch) always gives the same batches."""
    for idx in _epoch_indices(len(images), batch_size, key, epoch):
        yield images[idx]


def batch_at(images: Any, batch_size: int, key: int, step: int) -> Any:
    """The batch of global step `step`, identical to an uninterrupted run over `batches`.

    `images` is an array or a pytree of arrays sharing the leading axis (e.g. (images, labels)),
    batched alike."""
    if step < 0:
        raise DataError(f"step must be >= 0, got {step}.")
    n = num_examples(images)
    epoch, index = divmod(step, steps_per_epoch(n, batch_size))
    idx = _epoch_indices(n, batch_size, key, epoch)[index]
    return jax.tree.map(lambda a: a[idx], images)


def num_examples(data: Any) -> int:
    """Length of the leading axis of an array or of a pytree of arrays that share it."""
    return len(jax.tree.leaves(data)[0])


def images_and_labels(batch: Any) -> tuple[Any, Any]:
    """(images, class labels or None) of a training batch: images [b, H, W, 3], or a pair (images, labels [b])."""
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch, None)


def holdout_split(images: np.ndarray, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out): the last `holdout` images are kept out of training."""
    n_train = len(images) - holdout
    if holdout < 0 or n_train < 1:
        raise DataError(f"holdout={holdout} with {len(images)} images leaves {n_train} for training; "
                        f"lower data.holdout or load more images (data.max_images).")
    return images[:n_train], images[n_train:]


def fixed_batches(items: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(start, chunk, chunk padded to exactly `batch_size` by repeating its entries) over `items` (seeds or
    indices): one shape whatever the length, so one compilation; results keep their first len(chunk) rows."""
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        yield start, chunk, np.resize(chunk, batch_size)


def bucket_size(n: int, cap: int) -> int:
    """Smallest 2^j or 3 x 2^j that is >= n, at most max(cap, n) (0 stays 0)."""
    if n <= 0:
        return 0
    p = 1 << (n - 1).bit_length()  # smallest power of two >= n
    return min(3 * p // 4 if 3 * p // 4 >= n else p, max(cap, n))


def option_batches(choice: np.ndarray, batch_size: int | None = None, multiple: int = 1
                   ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(option, rows, rows padded) over the rows of `choice` ([n]: each row's option index), option by option: each
    option's rows in batches of exactly `batch_size` (`fixed_batches`), or, with None, in one batch padded to its
    bucket size (`bucket_size`: 2^j or 3 x 2^j, so a mix of n compiles about 2 log2(n) shapes per option) rounded up
    to a multiple of `multiple` (a mesh's size). Padding repeats the rows; results keep their first len(rows) rows,
    and work is charged per real row. The routed pipeline, the allocation and the cost stage all batch by it."""
    choice = np.asarray(choice)
    for k in np.unique(choice):
        idx = np.flatnonzero(choice == k)
        if batch_size is not None:
            yield from ((int(k), part, padded) for _, part, padded in fixed_batches(idx, batch_size))
        else:
            yield int(k), idx, np.resize(idx, -(-bucket_size(len(idx), len(choice)) // multiple) * multiple)
