"""Official-format CIFAR-10 batch files written from arrays, for the tests that read a cifar-10-batches-py/ folder."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def to_pixels(images) -> np.ndarray:
    """Float images [n, S, S, 3] in [-1, 1] -> uint8 pixels."""
    return np.round((np.asarray(images) + 1) * 127.5).clip(0, 255).astype(np.uint8)


def write_batch(path: Path, pixels: np.ndarray, labels) -> None:
    """One batch file laid out as the official ones: uint8 pixels [n, 32, 32, 3] stored as channel-major rows
    [n, 3072] (R, G, B planes), their labels, the batch's name and a file name per image."""
    pixels = np.asarray(pixels, np.uint8)
    path.write_bytes(pickle.dumps({b"batch_label": path.name.encode(), b"labels": [int(y) for y in labels],
                                   b"data": pixels.transpose(0, 3, 1, 2).reshape(len(pixels), -1),
                                   b"filenames": [f"{i}.png".encode() for i in range(len(pixels))]}, protocol=2))
