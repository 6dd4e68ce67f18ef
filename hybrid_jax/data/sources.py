"""Where training images come from, and loading one class from there.

`resolve_source` picks the source once (it may download); `load_images` reads one class and
split from it. A source is a string, the `path` of `load_images` and the `data.path` config field:

* a path to the official `cifar-10-python.tar.gz` or its extracted `cifar-10-batches-py/` folder;
* `tfds:NAME`: any image classification data set in tensorflow-datasets (`tfds:cifar10`,
  `tfds:imagenet_resized/64x64`, ...) prepared in the tfds data dir, read with `tfds.data_source`
  (no TensorFlow, never downloads), classes named by the data set's label names;
* `stand-in`: the embedded offline images (crops of scikit-learn's sample photographs, not CIFAR-10).

Every image is centre-cropped to a square and resized to `image_size` (default `IMAGE_SIZE`)
where it is not that size already.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import os
import pickle
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from hybrid_jax.config import ALL_CLASSES, CIFAR10_CLASSES, DataConfig
from hybrid_jax.data import download as _download
from hybrid_jax.data.images import IMAGE_SIZE, DataError, Images, fit_image, fit_images, to_float

log = logging.getLogger("hybrid_jax.data")

ENV_VAR = "HYBRID_JAX_CIFAR10"  # path of the official tarball or folder, used when no path is given
OFFLINE_ENV_VAR = "HYBRID_JAX_OFFLINE"  # "1": never download (as --offline), e.g. in tests
SPLITS = ("train", "test")
STAND_IN = "stand-in"  # the source of the embedded offline images
TFDS_PREFIX = "tfds:"

_FOLDER = "cifar-10-batches-py"
_TARBALL = _download.TARBALL
_BATCH_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_WHAT_TO_DO = (f"pass the official {_TARBALL} or its extracted {_FOLDER}/ folder (--data PATH or "
               f"${ENV_VAR}), use --data tfds:cifar10 where tensorflow-datasets has it prepared, or run once "
               f"with network access (without --offline) to download it")


def is_offline(offline: bool = False) -> bool:
    """`offline`, or $HYBRID_JAX_OFFLINE set to 1/true/yes/on."""
    return offline or os.environ.get(OFFLINE_ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")


# ----------------------------------------------------------------------------- resolve_source


def resolve_source(path: str | os.PathLike | None = "", *, offline: bool = False,
                   class_name: str | tuple[str, ...] | None = None,
                   cache_dir: str | os.PathLike | None = None, tfds_data_dir: str | None = None,
                   url: str | None = None, md5: str | None = None) -> str:
    """The source `load_images` should read, chosen once: the first of

    1. `path` when given (a tarball or folder, `tfds:NAME` or `stand-in`), then `$HYBRID_JAX_CIFAR10`;
    2. CIFAR-10 prepared in tensorflow-datasets (`tfds:cifar10`);
    3. the official tarball in `cache_dir` (default `default_cache_dir()`), downloaded there once
       from `url` (default the official address) and checked against `md5` unless offline;
    4. `stand-in`, with a warning: offline (`offline` or `$HYBRID_JAX_OFFLINE=1`) with nothing
       local, or no network connection.

    A download that starts and then fails (HTTP error, cut transfer, wrong checksum) raises
    DataError and keeps no file. `class_name` (one name or a tuple), when given, is checked before any download.
    """
    path = os.fspath(path) if path else ""
    if path:
        return path
    if env := os.environ.get(ENV_VAR):
        return env
    for name in (class_name,) if isinstance(class_name, str) else class_name or ():
        _cifar10_label(name)
    if _tfds_ready("cifar10", tfds_data_dir):
        return f"{TFDS_PREFIX}cifar10"
    if (cached := _download.cached_cifar10(cache_dir, md5)) is not None:
        return str(cached)
    if is_offline(offline):
        log.info("offline (--offline / $%s): CIFAR-10 is not downloaded", OFFLINE_ENV_VAR)
        return STAND_IN
    try:
        return str(_download.download_cifar10(url, md5, cache_dir))
    except _download.NetworkUnreachable as e:
        log.warning("%s Using the embedded STAND-IN images instead (NOT CIFAR-10).", e)
        return STAND_IN


# ----------------------------------------------------------------------------- load_images


def load_images(class_name: str = "dog", split: str = "train", path: str | os.PathLike | None = None, *,
                max_images: int | None = None, use_tfds: bool = True, tfds_data_dir: str | None = None,
                cache_dir: str | os.PathLike | None = None, download: bool = False,
                image_size: int = IMAGE_SIZE) -> Images:
    """The first `max_images` images of one class and split, float32 [N, image_size, image_size, 3].

    `path` is a source (module docstring). None or "": the first of CIFAR-10 prepared in tfds
    (when `use_tfds`), `$HYBRID_JAX_CIFAR10`, a one-time download (only when `download`) and the
    stand-in; `resolve_source` makes that choice with the download cache and the network. A
    source that is given must work: problems with it raise DataError instead of silently
    falling back to another source.
    """
    path = os.fspath(path) if path else None
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
    if max_images is not None and max_images < 1:
        raise DataError(f"max_images must be >= 1 or None, got {max_images}.")
    if image_size < 1:
        raise DataError(f"image_size must be >= 1, got {image_size}.")
    if path is not None and path.startswith(TFDS_PREFIX):
        return _load_tfds(path[len(TFDS_PREFIX):].strip(), class_name, split, tfds_data_dir, max_images, image_size)
    label = _cifar10_label(class_name)
    if path == STAND_IN:
        return _stand_in(class_name, max_images, image_size)
    what = f"class {class_name!r}, split {split}"
    found = None
    if path is None and use_tfds:
        found = _from_tfds(label, split, tfds_data_dir, max_images, image_size)
    if found is None:
        path = path or os.environ.get(ENV_VAR) or None
        if path is None and download:
            path = _download.download_cifar10(cache_dir=cache_dir)
        if path is not None:
            found = _from_official(Path(path).expanduser(), label, split, max_images)
    if found is None:
        return _stand_in(class_name, max_images, image_size)
    images, origin = found
    if len(images) == 0:
        raise DataError(f"no images of {what} in CIFAR-10 ({origin}); the files look cut or filtered. "
                        f"Use the complete data set ({_WHAT_TO_DO}) or another class.")
    source = f"CIFAR-10 ({origin}), {what}"
    log.info("loaded %d images from %s", len(images), source)
    return Images(to_float(fit_images(images, image_size)), source, stand_in=False)


def _cifar10_label(class_name: str) -> int:
    if class_name not in CIFAR10_CLASSES:
        raise DataError(f"unknown class {class_name!r}; choose one of {', '.join(CIFAR10_CLASSES)}.")
    return CIFAR10_CLASSES.index(class_name)


def _keep(images: np.ndarray, labels: Iterable[int], label: int) -> np.ndarray:
    """The images whose label is `label`, in order."""
    return images[np.asarray(list(labels)) == label]


# --- tensorflow-datasets


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    return tfds


@contextlib.contextmanager
def _quiet_absl():
    """tfds warns through absl about every empty folder it looks into ("Variant folder ... has no
    dataset_info.json"); while we only ask whether a data set is there, that is noise."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(level)


def _tfds_ready(name: str, data_dir: str | None) -> bool:
    """Whether `name` can be read with `tfds.data_source` from `data_dir` (never downloads)."""
    tfds = _import_tfds()
    if tfds is None:
        return False
    try:
        with _quiet_absl():
            return len(tfds.data_source(name, split="train", data_dir=data_dir, download=False)) > 0
    except Exception as e:  # tfds raises many types here; every one means "not usable"
        _log_tfds_unusable(tfds, name, data_dir, e)
        return False


def _tfds_prepared(tfds, name: str, data_dir: str | None) -> bool:
    """Whether `name` is prepared in the tfds data dir (in any file format)."""
    try:
        with _quiet_absl():
            return tfds.builder(name, data_dir=data_dir).is_prepared()
    except Exception:
        return False


def _log_tfds_unusable(tfds, name: str, data_dir: str | None, e: Exception) -> None:
    where = f"the tensorflow-datasets data dir {data_dir or '(default)'}"
    if _tfds_prepared(tfds, name, data_dir):  # prepared, but not readable as array_record: worth a warning
        log.warning("%s is prepared in %s but cannot be read without TensorFlow (%s); prepare it with "
                    "file_format='array_record' to use it. Trying the other sources.", name, where,
                    (str(e).splitlines() or [""])[0])
    else:
        log.info("%s is not prepared in %s; trying the other sources", name, where)


def _from_tfds(label: int, split: str, data_dir: str | None, max_images: int | None,
               size: int) -> tuple[np.ndarray, str] | None:
    """One CIFAR-10 class from tfds where it is already prepared (never downloads); None otherwise."""
    tfds = _import_tfds()
    if tfds is None:
        return None
    try:
        with _quiet_absl():
            source = tfds.data_source("cifar10", split=split, data_dir=data_dir, download=False)
        kept, _ = _scan_tfds(source, "image", "label", label, max_images, size)
    except Exception as e:  # tfds raises many types here; every one means "not usable"
        _log_tfds_unusable(tfds, "cifar10", data_dir, e)
        return None
    return kept, f"tfds, data dir {data_dir or 'default'}"


def _load_tfds(name: str, class_name: str, split: str, data_dir: str | None, max_images: int | None,
               size: int) -> Images:
    """One class of any tfds image classification data set `name` (`name[/config][:version]`)."""
    if not name:
        raise DataError(f"{TFDS_PREFIX} needs a data set name, e.g. {TFDS_PREFIX}cifar10 or "
                        f"{TFDS_PREFIX}imagenet_resized/64x64.")
    tfds = _import_tfds()
    if tfds is None:
        raise DataError(f"{TFDS_PREFIX}{name} needs tensorflow-datasets: pip install tensorflow-datasets.")
    where = data_dir or "the default tfds data dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        info = getattr(source, "dataset_info", None) or tfds.builder(name, data_dir=data_dir).info
    except Exception as e:  # tfds raises many types here
        first = (str(e).splitlines() or [""])[0]
        if type(e).__name__ == "DatasetNotFoundError":
            raise DataError(f"tensorflow-datasets has no data set {name!r} ({first}); see "
                            f"https://www.tensorflow.org/datasets/catalog for the names.") from None
        build = f"`tfds build {name} --file_format=array_record`"
        if not _tfds_prepared(tfds, name, data_dir):
            raise DataError(f"{TFDS_PREFIX}{name} is not prepared in {where} (tfds data sources never download); "
                            f"prepare it once on a machine with network access, e.g. {build}, or use another "
                            f"--data.") from None
        raise DataError(f"cannot read split {split!r} of {TFDS_PREFIX}{name} from {where} ({type(e).__name__}: "
                        f"{first}). tfds data sources need the data set prepared as array_record ({build}) "
                        f"and the split to exist; otherwise use another --data.") from None
    image_key, label_key = _tfds_keys(info, name)
    base, names = _tfds_base(name), _class_names(info, name)
    if class_name not in names:
        listed = ", ".join(names[:30]) + (f", ... ({len(names)} in all)" if len(names) > 30 else "")
        raise DataError(f"unknown class {class_name!r} for {TFDS_PREFIX}{name}; choose one of its label names: "
                        f"{listed}.")
    kept, shapes = _scan_tfds(source, image_key, label_key, names.index(class_name), max_images, size)
    title = "CIFAR-10" if base == "cifar10" else name
    what = f"class {class_name!r}, split {split}"
    if len(kept) == 0:
        raise DataError(f"no images of {what} in {TFDS_PREFIX}{name} ({where}); choose another class or split.")
    resized = sorted(f"{h}x{w}" for h, w in shapes if (h, w) != (size, size))
    note = f", {', '.join(resized[:3])}{' ...' if len(resized) > 3 else ''} images cropped/resized to {size}x{size}"
    source_text = f"{title} (tfds {name}, data dir {data_dir or 'default'}), {what}{note if resized else ''}"
    log.info("loaded %d images from %s", len(kept), source_text)
    return Images(to_float(kept), source_text, stand_in=False)


def tfds_label_names(name: str, data_dir: str | None = None) -> tuple[str, ...]:
    """The class names of the tfds data set `name`, in label order (CIFAR-10's own for cifar10)."""
    if _tfds_base(name) == "cifar10":
        return CIFAR10_CLASSES
    tfds = _import_tfds()
    if tfds is None:
        raise DataError(f"{TFDS_PREFIX}{name} needs tensorflow-datasets: pip install tensorflow-datasets.")
    try:
        info = tfds.builder(name, data_dir=data_dir).info
    except Exception as e:  # tfds raises many types here
        raise DataError(f"cannot read the label names of {TFDS_PREFIX}{name} ({type(e).__name__}: "
                        f"{(str(e).splitlines() or [''])[0]}); name the classes with --class instead of all.") from None
    return _class_names(info, name)


def _tfds_base(name: str) -> str:
    """The data set of `name[/config][:version]`."""
    return name.split("/")[0].split(":")[0]


def _class_names(info, name: str) -> tuple[str, ...]:
    """Label names of a tfds data set in label order (CIFAR-10's own for cifar10)."""
    return CIFAR10_CLASSES if _tfds_base(name) == "cifar10" else tuple(info.features[_tfds_keys(info, name)[1]].names)


def resolve_all_classes(cfg: DataConfig, data_dir: str | None = None) -> DataConfig:
    """`--class all` on a `tfds:NAME` source -> every label name of that data set (comma-separated, so the
    config and its fingerprint name them); any other config unchanged (`all` elsewhere: CIFAR-10's ten)."""
    if cfg.class_name.strip() != ALL_CLASSES or not cfg.path.startswith(TFDS_PREFIX):
        return cfg
    names = tfds_label_names(cfg.path[len(TFDS_PREFIX):], data_dir)
    bad = [n for n in names if "," in n or not n.strip()]
    if bad:
        raise DataError(f"{cfg.path} has label names that cannot be listed comma-separated ({bad[:3]}); "
                        "name the classes with --class instead of all.")
    return dataclasses.replace(cfg, class_name=",".join(names))


def _tfds_keys(info, name: str) -> tuple[str, str]:
    """(image feature, label feature) of a tfds data set: its supervised keys, else "image" and "label"."""
    keys = getattr(info, "supervised_keys", None)
    if not (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)):
        keys = ("image", "label")
    features = info.features
    if any(k not in features for k in keys) or not hasattr(features[keys[1]], "names"):
        raise DataError(f"{TFDS_PREFIX}{name} is not an image classification data set (no image feature with a "
                        f"class label: features {sorted(features.keys())}); choose one that is.")
    return keys


def _scan_tfds(source, image_key: str, label_key: str, label: int, max_images: int | None,
               size: int) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """Scan the records in order, keeping images of `label` (fitted to `size`) until `max_images`.

    Record by record (not `__getitems__`): every tfds data source and tfds' own mock support it.
    Also returns the (height, width) shapes seen.
    """
    kept: list[np.ndarray] = []
    shapes: set[tuple[int, int]] = set()
    for record in source:
        if int(record[label_key]) == label:
            image = np.asarray(record[image_key])
            shapes.add(tuple(image.shape[:2]))
            kept.append(fit_image(image, size))
            if len(kept) == max_images:
                break
    return (np.stack(kept) if kept else np.zeros((0, size, size, 3), np.uint8)), shapes


# --- the official python-version files


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


# --- the embedded stand-in

_STAND_IN_FACTORS = (2, 3, 4, 6, 8)  # downscale factors of the 427x640 photographs
_STAND_IN_CROP = 32  # smallest crop: cut at max(this, the image size), with a stride of a quarter of it, then fitted


def _stand_in(class_name: str, max_images: int | None, size: int = IMAGE_SIZE) -> Images:
    """Offline default: crops of scikit-learn's two sample photographs (not CIFAR-10)."""
    source = (f"STAND-IN, NOT CIFAR-10: {size}x{size} crops of scikit-learn's sample photographs (china.jpg, "
              f"flower.jpg); the class name {class_name!r} is ignored")
    log.warning("No CIFAR-10 found, using the %s. For real data %s.", source, _WHAT_TO_DO)
    crops = _stand_in_crops(max(size, _STAND_IN_CROP))  # larger images are cut at their own size, not upsampled
    return Images(to_float(fit_images(crops[:max_images], size)), source, stand_in=True)


@functools.lru_cache(maxsize=2)
def _stand_in_crops(crop: int = _STAND_IN_CROP) -> np.ndarray:
    """All crop x crop crops (and their mirror images) at the scales that hold one, in a fixed shuffled order."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    crops = []
    for photo in load_sample_images().images:
        h, w, _ = photo.shape
        for f in _STAND_IN_FACTORS:
            if min(h, w) // f < crop:
                continue
            small = np.asarray(Image.fromarray(photo).resize((w // f, h // f), Image.Resampling.LANCZOS))
            crops.append(_grid_crops(small, crop, crop // 4))
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
