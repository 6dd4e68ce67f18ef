"""Benchmarks of hybrid_jax against its PyTorch/diffusers peer and against itself.

Entry point: `python -m benchmarks.run --help`. Every figure that is compared is a ratio
measured side by side in one process (the machines are shared and noisy): medians of
several repeats after compilation and warm-up, `block_until_ready` around every JAX call.
"""
