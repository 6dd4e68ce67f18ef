"""`jit`: `jax.jit` with the XLA compiler options this library's executables are built with.

XLA:CPU in jaxlib 0.10 hands convolutions, dots and reductions to YNNPACK by default. On the
AVX-512 x86 CPU measured here, its 3x3 convolutions at batch >= 16 run at about half the speed
of XLA's own (Eigen) path: one U-Net pass of the quick preset at batch 16 takes 1.4x
diffusers' time with YNNPACK and 0.85x without (BENCHMARKS.md). So executables compiled for
the CPU turn it off. The options are per executable (`jax.jit(compiler_options=...)`): nothing
in the process changes, other code's jits are untouched, and an XLA_FLAGS setting of the same
option by the user wins. Other backends get no options.
"""

from __future__ import annotations

import functools
import os

import jax

# Option -> value, per backend. "" = no YNNPACK fusion of any kind (XLA's own CPU kernels).
OPTIONS: dict[str, dict[str, str]] = {"cpu": {"xla_cpu_experimental_ynn_fusion_type": ""}}


@functools.cache
def _supported(name: str, value: str) -> bool:
    """Whether this jaxlib's compiler accepts the option (older ones may not know it)."""
    try:
        jax.jit(lambda: 0, compiler_options={name: value}).lower().compile()
        return True
    except Exception:  # noqa: BLE001 - an unknown option is reported in several exception types
        return False


def compiler_options() -> dict[str, str]:
    """The options for JAX's default backend that this jaxlib accepts and that the user has
    not set through XLA_FLAGS."""
    user_flags = os.environ.get("XLA_FLAGS", "")
    return {name: value for name, value in OPTIONS.get(jax.default_backend(), {}).items()
            if f"--{name}" not in user_flags and _supported(name, value)}


class Jitted:
    """`jax.jit(fn, **kwargs)`, compiled with `compiler_options()` when called from Python.

    jax accepts compiler options only on a top-level jit, so inside another trace (the caller's
    own jit, scan, ...) this is the plain nested jit and the caller's compile decides the
    options: the function composes like any jitted function. `lower` / `trace` use the options.
    """

    def __init__(self, fn, **kwargs):
        functools.update_wrapper(self, fn)
        self._plain = jax.jit(fn, **kwargs)
        options = compiler_options()
        self._top = jax.jit(fn, compiler_options=options, **kwargs) if options else self._plain

    def __call__(self, *args, **kwargs):
        if self._top is not self._plain:
            try:
                return self._top(*args, **kwargs)
            except ValueError as e:  # raised while staging into an enclosing trace, before any work
                if "compiler_options" not in str(e):
                    raise
        return self._plain(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self._top.lower(*args, **kwargs)

    def trace(self, *args, **kwargs):
        return self._top.trace(*args, **kwargs)

    def eval_shape(self, *args, **kwargs):
        return self._plain.eval_shape(*args, **kwargs)

    def cache_size(self) -> int:
        """How many executables this function has compiled (each input shape / static value its own)."""
        return self._top._cache_size() + (self._plain._cache_size() if self._plain is not self._top else 0)


def jit(fn, **kwargs) -> Jitted:
    """The library's `jax.jit`: see `Jitted` (options decided when this is called)."""
    return Jitted(fn, **kwargs)
