"""Shared fixtures for the test suite.

Keep this file small and general: fixtures used by one test file belong in that file.
"""

from __future__ import annotations

import os
import shutil
import tempfile

# Compile ~2.5x faster on CPU; set before JAX starts, and inherited by the tests' subprocesses so
# that in-process and subprocess runs produce the same bits.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

os.environ["HYBRID_JAX_OFFLINE"] = "1"  # tests never download CIFAR-10 (hybrid_jax.data.resolve_source)
# Runs in tests keep no compilation cache in their work dir (tests/test_pipeline.py tests that one, cold, in a
# subprocess of its own) ...
os.environ["HYBRID_JAX_COMPILE_CACHE"] = "0"
# ... they share one instead: JAX's persistent cache in a folder made for this pytest session, inherited by
# every worker and subprocess of it (the same programs compile once per session, not once per process) and
# removed at its end, so no cache is ever carried to another host or session. Every program is cached, however
# fast it compiled. A cache hit loads the same executable, so cached and fresh runs give the same bits.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="hybrid_jax-tests-xla-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hybrid_jax import data  # noqa: E402
from hybrid_jax.config import Preset, get_preset  # noqa: E402
from hybrid_jax.generators import model_a, model_b


def pytest_unconfigure(config):
    if _OWN_CACHE and not hasattr(config, "workerinput"):  # the process that made the cache (not an xdist worker)
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def preset() -> Preset:
    """The tiny `test` preset (whole pipeline in seconds)."""
    return get_preset("test")


@pytest.fixture(scope="session")
def stand_in_images() -> np.ndarray:
    """64 smooth natural images [64, 32, 32, 3] in [-1, 1]: the embedded stand-in data, offline.

    `$HYBRID_JAX_CIFAR10` is ignored so that every machine gets the same images.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(data.ENV_VAR, raising=False)
        return data.load_images(use_tfds=False, max_images=64).images


def perturb_params(params, seed: int, scale: float = 0.05):
    """`params` plus N(0, scale^2) noise on every leaf (NumPy noise: no per-shape RNG compiles).

    Fresh U-Nets end in a zero-initialised conv, so they output exactly zero; tests that need
    the network's output to depend on its inputs use perturbed params instead.
    """
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: x + jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype), params)


@pytest.fixture(scope="session")
def model_a_params(preset):
    """Fresh Model A U-Net params of the test preset (key 0). Initialising compiles for ~15 s on a
    small CPU, hence once per session; never donate or mutate them (copy first)."""
    return model_a.init_params(preset.model_a, jax.random.key(0))


@pytest.fixture(scope="session")
def model_b_params(preset):
    """Fresh Model B params `{"ar", "corrector"}` of the test preset (key 0); see `model_a_params`."""
    return model_b.init_params(preset.model_b, preset.corrector, jax.random.key(0))


@pytest.fixture(scope="session")
def model_a_sampler(preset) -> model_a.Sampler:
    """Model A's jitted sampler for the test preset, shared so that its compilations are too."""
    return model_a.make_sampler(preset.model_a)


@pytest.fixture(scope="session")
def model_b_sampler(preset) -> model_b.Sampler:
    """Model B's jitted sampler for the test preset, shared so that its compilations are too."""
    return model_b.make_sampler(preset.model_b, preset.corrector)


@pytest.fixture(scope="session")
def perturb():
    """The `perturb_params(params, seed, scale=0.05)` helper, as a fixture."""
    return perturb_params
