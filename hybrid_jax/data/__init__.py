"""Training images and the fixed image geometry shared by both generators.

Images are float32 NHWC in [-1, 1], `IMAGE_SIZE` (32) pixels square. Sources (`sources`): the
official CIFAR-10 files, any image data set of tensorflow-datasets (`tfds:NAME`) and an offline
stand-in cut from scikit-learn's sample photographs. `resolve_source` picks one when none is
given: `$HYBRID_JAX_CIFAR10`, CIFAR-10 prepared in tfds, the official tarball downloaded once
into a cache directory and checked by MD5 (`download`), else the stand-in (offline, or no
network). `load_images` reads one class of it. `batching` holds the 8x8 patch layout
(Model B), the four 16x16 blocks (Model A) and deterministic, resumable batching.
"""

from hybrid_jax.data.batching import (GRID, NUM_BLOCKS, PATCH, batch_at, batches, block_masks, context_masks,
                                      holdout_split, patchify, steps_per_epoch, unpatchify)
from hybrid_jax.data.download import (CIFAR10_MD5, CIFAR10_URL, NetworkUnreachable, cached_cifar10,
                                      default_cache_dir, download_cifar10)
from hybrid_jax.data.images import IMAGE_SHAPE, IMAGE_SIZE, DataError, Images, check_images
from hybrid_jax.data.sources import (CIFAR10_CLASSES, ENV_VAR, OFFLINE_ENV_VAR, SPLITS, STAND_IN, TFDS_PREFIX,
                                     _stand_in_crops, is_offline, load_images, resolve_source)

__all__ = ["CIFAR10_CLASSES", "CIFAR10_MD5", "CIFAR10_URL", "ENV_VAR", "GRID", "IMAGE_SHAPE", "IMAGE_SIZE",
           "NUM_BLOCKS", "OFFLINE_ENV_VAR", "PATCH", "SPLITS", "STAND_IN", "TFDS_PREFIX", "DataError", "Images",
           "NetworkUnreachable", "batch_at", "batches", "block_masks", "cached_cifar10", "check_images",
           "context_masks", "default_cache_dir", "download_cifar10", "holdout_split", "is_offline", "load_images",
           "patchify", "resolve_source", "steps_per_epoch", "unpatchify"]
