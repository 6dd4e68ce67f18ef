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


def jit(fn, **kwargs):
    """`jax.jit(fn, **kwargs)` compiled with `compiler_options()` (decided when called)."""
    return jax.jit(fn, compiler_options=compiler_options() or None, **kwargs)
