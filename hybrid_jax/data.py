"""Training images and the fixed image geometry shared by both generators.

`load_images` finds one CIFAR-10 class, trying in order: tensorflow-datasets where
CIFAR-10 is already prepared, the official `cifar-10-python.tar.gz` (or its extracted
folder) at a given path or `$HYBRID_JAX_CIFAR10`, a one-time verified download, and
finally an offline stand-in cut from scikit-learn's sample photographs. Images are
float32 NHWC in [-1, 1]. The rest of the module holds the 8x8 patch layout (Model B),
the four 16x16 blocks (Model A) and deterministic, resumable batching.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import logging
import os
import pickle
import tarfile
import urllib.request
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from hybrid_jax.io import write_bytes

log = logging.getLogger("hybrid_jax.data")

CIFAR10_CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer",
                                    "dog", "frog", "horse", "ship", "truck")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ENV_VAR = "HYBRID_JAX_CIFAR10"
SPLITS = ("train", "test")
IMAGE_SHAPE = (32, 32, 3)

_FOLDER = "cifar-10-batches-py"
_TARBALL = "cifar-10-python.tar.gz"
_BATCH_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_WHAT_TO_DO = (f"pass the official {_TARBALL} or its extracted {_FOLDER}/ folder "
               f"(path argument or ${ENV_VAR}), or use download=True")


class DataError(ValueError):
    """A data problem; the message says what is wrong and what to do."""


@dataclasses.dataclass(frozen=True, eq=False)
class Images:
    """Images of one class plus where they came from."""

    images: np.ndarray  # float32 [N, 32, 32, 3] in [-1, 1], NHWC
    source: str  # human-readable origin, shown in logs and reports
    stand_in: bool  # True for the embedded default (not CIFAR-10)

    def __post_init__(self):
        check_images(self.images, "loaded images")


# ----------------------------------------------------------------------------- checks


def check_images(x, name: str = "images") -> None:
    """Raise DataError unless `x` is float32 [N, 32, 32, 3] (N >= 1) with values in [-1, 1]."""
    x = np.asarray(x)
    expected = f"{name} must be a float32 array [N, 32, 32, 3] with values in [-1, 1]"
    if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE or x.shape[0] < 1:
        raise DataError(f"{expected}; got shape {x.shape}. Resize/convert the images to 32x32 RGB, NHWC.")
    if x.dtype != np.float32:
        raise DataError(f"{expected}; got dtype {x.dtype}. Convert with x.astype(np.float32) "
                        f"(uint8 pixels: x / 127.5 - 1).")
    if not np.all((x >= -1.0) & (x <= 1.0)):
        nans = int(np.isnan(x).sum())
        raise DataError(f"{expected}; got min {np.nanmin(x):.4g}, max {np.nanmax(x):.4g}, {nans} NaN values. "
                        f"Scale uint8 pixels as x / 127.5 - 1 and clip model outputs to [-1, 1].")


def _check_request(class_name: str, split: str) -> int:
    """Validate the class name and split; return the CIFAR-10 label."""
    if class_name not in CIFAR10_CLASSES:
        raise DataError(f"unknown class {class_name!r}; choose one of {', '.join(CIFAR10_CLASSES)}.")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
    return CIFAR10_CLASSES.index(class_name)


def _to_float(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images_uint8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


# ----------------------------------------------------------------------------- load_images


def load_images(class_name: str = "dog", split: str = "train", path: str | os.PathLike | None = None, *,
                max_images: int | None = None, use_tfds: bool = True, tfds_data_dir: str | None = None,
                cache_dir: str | os.PathLike | None = None, download: bool = False) -> Images:
    """Images of one CIFAR-10 class from the first available source (see module docstring).

    A `path` (or `$HYBRID_JAX_CIFAR10`) that is given must work: problems with it raise
    DataError instead of silently falling back to another source. "" means no path.
    """
    path = path or None
    label = _check_request(class_name, split)
    if max_images is not None and max_images < 1:
        raise DataError(f"max_images must be >= 1 or None, got {max_images}.")
    what = f"class {class_name!r}, split {split}"
    found = None
    if path is None and use_tfds:
        found = _from_tfds(label, split, tfds_data_dir, max_images)
    if found is None:
        path = path or os.environ.get(ENV_VAR) or None
        if path is None and download:
            path = download_cifar10(cache_dir=cache_dir)
        if path is not None:
            found = _from_official(Path(path).expanduser(), label, split, max_images)
    if found is None:
        return _stand_in(class_name, max_images)
    images, origin = found
    if len(images) == 0:
        raise DataError(f"no images of {what} in CIFAR-10 ({origin}); the files look cut or filtered. "
                        f"Use the complete data set ({_WHAT_TO_DO}) or another class.")
    source = f"CIFAR-10 ({origin}), {what}"
    log.info("loaded %d images from %s", len(images), source)
    return Images(_to_float(images), source, stand_in=False)


def _keep(images: np.ndarray, labels: Iterable[int], label: int) -> np.ndarray:
    """The images whose label is `label`, in order."""
    return images[np.asarray(list(labels)) == label]


# --- source 1: tensorflow-datasets


def _from_tfds(label: int, split: str, data_dir: str | None,
               max_images: int | None) -> tuple[np.ndarray, str] | None:
    """CIFAR-10 from tfds where it is already prepared (never downloads); None otherwise."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    try:
        source = tfds.data_source("cifar10", split=split, data_dir=data_dir, download=False)
        kept = _tfds_class(source, label, max_images)
    except Exception as e:  # tfds raises many types here; every one means "not usable"
        level = logging.WARNING if _tfds_prepared(tfds, data_dir) else logging.INFO
        log.log(level, "CIFAR-10 via tfds not usable (%s: %s); trying the other sources. Data sources "
                "need CIFAR-10 prepared with file_format='array_record'.",
                type(e).__name__, (str(e).splitlines() or [""])[0])
        return None
    return kept, f"tfds, data dir {data_dir or 'default'}"


def _tfds_prepared(tfds, data_dir: str | None) -> bool:
    """Whether CIFAR-10 is prepared in the tfds data dir (in any file format)."""
    try:
        return tfds.builder("cifar10", data_dir=data_dir).is_prepared()
    except Exception:
        return False


def _tfds_class(source, label: int, max_images: int | None) -> np.ndarray:
    """Scan the records in order, keeping images of `label` until `max_images` are found.

    Record by record (not `__getitems__`): every tfds data source and tfds' own mock support it.
    """
    kept: list[np.ndarray] = []
    for record in source:
        if int(record["label"]) == label:
            kept.append(np.asarray(record["image"], np.uint8))
            if len(kept) == max_images:
                break
    return np.stack(kept) if kept else np.zeros((0, *IMAGE_SHAPE), np.uint8)


# --- source 2: the official python-version files


def _from_official(path: Path, label: int, split: str, max_images: int | None) -> tuple[np.ndarray, str]:
    """One class from the official tarball or extracted folder at `path`."""
    if not path.exists():
        raise DataError(f"CIFAR-10 path {path} does not exist; {_WHAT_TO_DO}.")
    if path.is_dir() and (path / _FOLDER).is_dir():
        path = path / _FOLDER
    elif path.is_dir() and (path / _TARBALL).is_file():
        path = path / _TARBALL
    if path.is_dir():
        origin, raw = f"folder {path}", _folder_batches(path, split)
    else:
        origin, raw = f"tarball {path}", _tarball_batches(path, split)
    parts = [_keep(*_parse_batch(name, data, origin), label) for name, data in raw]
    return np.concatenate(parts)[:max_images], origin


def _folder_batches(folder: Path, split: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of the split's batch files present in `folder`, in canonical order."""
    if not any((folder / n).is_file() for names in _BATCH_FILES.values() for n in names):
        raise DataError(f"{folder} is neither a CIFAR-10 tarball nor a folder with batch files "
                        f"(data_batch_1..5, test_batch); {_WHAT_TO_DO}.")
    found = [(n, (folder / n).read_bytes()) for n in _BATCH_FILES[split] if (folder / n).is_file()]
    return _require_split(found, split, f"folder {folder}")


def _tarball_batches(path: Path, split: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of the split's batch files in the tarball, read member by member."""
    wanted, found = _BATCH_FILES[split], {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = Path(member.name).name
                if member.isfile() and name in wanted:
                    found[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path} is not a readable CIFAR-10 tarball (corrupt, truncated or not a "
                        f".tar.gz: {e}); download it again or {_WHAT_TO_DO}.") from None
    return _require_split([(n, found[n]) for n in wanted if n in found], split, f"tarball {path}")


def _require_split(found: list[tuple[str, bytes]], split: str, origin: str) -> list[tuple[str, bytes]]:
    if not found:
        raise DataError(f"the {split} split ({', '.join(_BATCH_FILES[split])}) is not in the {origin}; "
                        f"use the complete data set ({_WHAT_TO_DO}) or another split.")
    return found


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays: batch files cannot run arbitrary code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _parse_batch(name: str, raw: bytes, origin: str) -> tuple[np.ndarray, list[int]]:
    """Decode one official batch file into (uint8 [N, 32, 32, 3], labels)."""
    corrupt = f"{name} in the {origin} is corrupt"
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data, labels = np.asarray(batch[b"data"]), [int(v) for v in batch[b"labels"]]
    except Exception as e:  # unpickling garbage can raise almost anything
        raise DataError(f"{corrupt} ({type(e).__name__}: {e}); replace it with the official file "
                        f"or {_WHAT_TO_DO}.") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape != (len(labels), 3072):
        raise DataError(f"{corrupt}: b'data' is {data.dtype} {data.shape} for {len(labels)} labels, expected "
                        f"uint8 [{len(labels)}, 3072]; replace it with the official file.")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


# --- source 3: one-time download


def default_cache_dir() -> Path:
    """Where downloads are kept: $XDG_CACHE_HOME/hybrid_jax or ~/.cache/hybrid_jax."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hybrid_jax"


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def download_cifar10(url: str | None = None, md5: str | None = None,
                     cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the verified CIFAR-10 tarball in `cache_dir`, downloading it only if absent.

    The checksum is checked before anything is written, so a bad download leaves no file.
    """
    url, md5 = url or CIFAR10_URL, md5 or CIFAR10_MD5
    target = Path(cache_dir or default_cache_dir()).expanduser() / _TARBALL
    if target.is_file() and _md5(target.read_bytes()) == md5:
        log.info("using cached CIFAR-10 tarball %s", target)
        return target
    log.info("downloading CIFAR-10 from %s to %s", url, target)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except OSError as e:  # URLError, HTTPError, timeouts
        raise DataError(f"could not download CIFAR-10 from {url} ({e}); check the network, or download "
                        f"{_TARBALL} yourself and pass its path (or set ${ENV_VAR}).") from None
    if (got := _md5(data)) != md5:
        raise DataError(f"the download from {url} has MD5 {got}, expected {md5} (damaged or wrong file); "
                        f"nothing was kept. Try again, or download {_TARBALL} yourself and pass its path.")
    return write_bytes(target, data)


# --- source 4: the embedded stand-in

_STAND_IN_FACTORS = (2, 3, 4, 6, 8)  # downscale factors of the 427x640 photographs
_STAND_IN_STRIDE = 8


def _stand_in(class_name: str, max_images: int | None) -> Images:
    """Offline default: 32x32 crops of scikit-learn's two sample photographs (not CIFAR-10)."""
    source = (f"STAND-IN, NOT CIFAR-10: 32x32 crops of scikit-learn's sample photographs (china.jpg, "
              f"flower.jpg); the class name {class_name!r} is ignored")
    log.warning("No CIFAR-10 found, using the %s. For real data %s.", source, _WHAT_TO_DO)
    return Images(_to_float(_stand_in_crops()[:max_images]), source, stand_in=True)


@functools.lru_cache(maxsize=1)
def _stand_in_crops() -> np.ndarray:
    """All crops (and their mirror images) at a few scales, in a fixed shuffled order."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    crops = []
    for photo in load_sample_images().images:
        h, w, _ = photo.shape
        for f in _STAND_IN_FACTORS:
            small = np.asarray(Image.fromarray(photo).resize((w // f, h // f), Image.Resampling.LANCZOS))
            crops.append(_grid_crops(small, 32, _STAND_IN_STRIDE))
    crops = np.concatenate(crops)
    crops = np.concatenate([crops, crops[:, :, ::-1]])
    crops = crops[np.random.default_rng(0).permutation(len(crops))]
    crops.flags.writeable = False
    return crops


def _grid_crops(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """All size x size crops of `image` whose corners lie on a stride grid."""
    h, w, _ = image.shape
    return np.stack([image[r:r + size, c:c + size]
                     for r in range(0, h - size + 1, stride) for c in range(0, w - size + 1, stride)])


# ----------------------------------------------------------------------------- patches and blocks

PATCH = 8  # Model B's tokens are 8x8 patches ...
GRID = 32 // PATCH  # ... on a 4x4 grid, 16 in raster order
NUM_BLOCKS = 4  # Model A generates four 16x16 quadrants in raster order


def patchify(x):
    """[..., 32, 32, 3] -> [..., 16, 192]: raster-order 8x8 patches, each flattened (row, col, channel)."""
    lead = x.shape[:-3]
    if tuple(x.shape[-3:]) != IMAGE_SHAPE:
        raise DataError(f"patchify expects [..., 32, 32, 3], got {tuple(x.shape)}.")
    y = jnp.reshape(x, (*lead, GRID, PATCH, GRID, PATCH, 3))
    return jnp.reshape(jnp.swapaxes(y, -4, -3), (*lead, GRID * GRID, PATCH * PATCH * 3))


def unpatchify(p):
    """Exact inverse of `patchify`: [..., 16, 192] -> [..., 32, 32, 3]."""
    lead = p.shape[:-2]
    if tuple(p.shape[-2:]) != (GRID * GRID, PATCH * PATCH * 3):
        raise DataError(f"unpatchify expects [..., 16, 192], got {tuple(p.shape)}.")
    y = jnp.reshape(p, (*lead, GRID, GRID, PATCH, PATCH, 3))
    return jnp.reshape(jnp.swapaxes(y, -4, -3), (*lead, *IMAGE_SHAPE))


def block_masks() -> np.ndarray:
    """float32 [4, 32, 32, 1]: mask b is 1 on the 16x16 quadrant b (0 TL, 1 TR, 2 BL, 3 BR)."""
    masks = np.zeros((NUM_BLOCKS, 32, 32, 1), np.float32)
    for b in range(NUM_BLOCKS):
        r, c = divmod(b, 2)
        masks[b, 16 * r:16 * r + 16, 16 * c:16 * c + 16] = 1.0
    return masks


def context_masks() -> np.ndarray:
    """float32 [4, 32, 32, 1]: mask b is the union of blocks before b (what block b is conditioned on)."""
    blocks = block_masks()
    return np.cumsum(blocks, axis=0) - blocks


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


def batch_at(images: np.ndarray, batch_size: int, key: int, step: int) -> np.ndarray:
    """The batch of global step `step`, identical to an uninterrupted run over `batches`."""
    if step < 0:
        raise DataError(f"step must be >= 0, got {step}.")
    epoch, index = divmod(step, steps_per_epoch(len(images), batch_size))
    return images[_epoch_indices(len(images), batch_size, key, epoch)[index]]


def holdout_split(images: np.ndarray, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out): the last `holdout` images are kept out of training."""
    n_train = len(images) - holdout
    if holdout < 0 or n_train < 1:
        raise DataError(f"holdout={holdout} with {len(images)} images leaves {n_train} for training; "
                        f"lower data.holdout or load more images (data.max_images).")
    return images[:n_train], images[n_train:]
