"""hybrid_jax.xla: the library's executables get the per-backend compiler options, and only those."""

import jax
import jax.numpy as jnp
import pytest

from hybrid_jax import xla
from hybrid_jax.config import get_preset
from hybrid_jax.generators import model_a

YNN = "xla_cpu_experimental_ynn_fusion_type"
needs_cpu = pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU compiler options")


@needs_cpu
def test_cpu_options_are_used(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert xla.compiler_options() == {YNN: ""}


@needs_cpu
def test_user_xla_flags_win(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"--{YNN}=LIBRARY_FUSION_TYPE_REDUCE --xla_backend_optimization_level=0")
    assert xla.compiler_options() == {}


@needs_cpu
def test_options_this_jaxlib_does_not_know_are_dropped(monkeypatch):
    monkeypatch.setitem(xla.OPTIONS, "cpu", {"xla_cpu_no_such_option_anywhere": "", YNN: ""})
    assert xla.compiler_options() == {YNN: ""}


@needs_cpu
def test_samplers_are_compiled_without_ynnpack_fusions():
    cfg = get_preset("test").model_a
    params = model_a.init_params(cfg, jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 2)
    sampler = model_a.make_sampler(cfg)
    ours = sampler.sample_keys.lower(params, keys).compile().as_text()
    assert "__ynn_fusion" not in ours
    plain = jax.jit(sampler.sample_keys.__wrapped__).lower(params, keys).compile().as_text()
    if "__ynn_fusion" not in plain:
        pytest.skip("this jaxlib does not use YNNPACK fusions by default")


def test_library_jits_compose_with_the_callers_jit_vmap_and_scan():
    """Compiler options are top-level only in jax: nested calls must fall back to a plain jit."""
    cfg = get_preset("test").model_a
    params = model_a.init_params(cfg, jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 2)
    sample_keys = model_a.make_sampler(cfg).sample_keys
    direct = sample_keys(params, keys)
    in_jit = jax.jit(lambda p, k: sample_keys(p, k))(params, keys)
    closed_over = jax.jit(lambda: sample_keys(params, keys))()  # no traced argument at all
    in_vmap = jax.jit(jax.vmap(lambda k: sample_keys(params, k[None])[0]))(keys)
    in_scan = jax.lax.scan(lambda c, k: (c, sample_keys(params, k[None])[0]), 0, keys)[1]
    for out in (in_jit, closed_over, in_vmap, in_scan):
        assert jnp.allclose(out, direct, atol=1e-5)
