"""Training images of the study, fitted to the configured image size.

Images are float32 NHWC in [-1, 1], square (`IMAGE_SIZE`: the brief's default side). Sources (`sources`): the
official CIFAR-10 files, any image data set of tensorflow-datasets (`tfds:NAME`) and an offline
stand-in cut from scikit-learn's sample photographs. `resolve_source` picks one when none is
given: `$HYBRID_JAX_CIFAR10`, CIFAR-10 prepared in tfds, the official tarball downloaded once
into a cache directory and checked by MD5 (`download`), else the stand-in (offline, or no
network). `load_images` reads one class of it, fitted to the image size asked for. `batching`
holds deterministic, resumable batching; the patch and block layout is `hybrid_jax.geometry`.
"""

from hybrid_jax.data.batching import (batch_at, batches, bucket_size, fixed_batches, holdout_split, images_and_labels,
                                     num_examples, option_batches, steps_per_epoch)
from hybrid_jax.data.download import (CIFAR10_MD5, CIFAR10_URL, NetworkUnreachable, cached_cifar10,
                                      default_cache_dir, download_cifar10)
from hybrid_jax.data.images import IMAGE_SHAPE, IMAGE_SIZE, DataError, Images, check_images
from hybrid_jax.data.sources import (CIFAR10_CLASSES, ENV_VAR, OFFLINE_ENV_VAR, SPLITS, STAND_IN, TFDS_PREFIX,
                                     _stand_in_crops, is_offline, load_images, resolve_all_classes,
                                     resolve_source, tfds_label_names)

__all__ = ["CIFAR10_CLASSES", "CIFAR10_MD5", "CIFAR10_URL", "ENV_VAR", "IMAGE_SHAPE", "IMAGE_SIZE",
           "OFFLINE_ENV_VAR", "SPLITS", "STAND_IN", "TFDS_PREFIX", "DataError", "Images",
           "NetworkUnreachable", "batch_at", "batches", "bucket_size", "cached_cifar10", "check_images",
           "default_cache_dir", "download_cifar10", "fixed_batches", "holdout_split", "images_and_labels",
           "resolve_all_classes",
           "tfds_label_names",
           "is_offline", "load_images", "num_examples", "option_batches",
           "resolve_source", "steps_per_epoch"]
