"""hybrid_jax.xla: the library's executables get the per-backend compiler options, and only those."""

import jax
import pytest

from hybrid_jax import model_a, xla
from hybrid_jax.config import get_preset

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
