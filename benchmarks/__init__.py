"""Benchmarks of hybrid_jax against its PyTorch/diffusers peer and against itself.

Entry point: `python -m benchmarks.run --help`. Every figure that is compared is a ratio
measured side by side in one process (the machines are shared and noisy): medians of
several repeats after compilation and warm-up, `block_until_ready` around every JAX call.
"""

import os

# torch's OpenMP threads spin-wait after each op by default. On a shared 2-core machine that
# steals the cores from JAX's threads in the same process and, under load, makes torch with 2
# threads 5-40x slower than with 1 (measured here). Passive waiting gives the peer its best
# time. It must be set before torch (libgomp) is loaded; an explicit setting is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
