"""hybrid_jax: adaptive routing between two hybrid AR/diffusion image generators, in pure JAX.

Modules: `config` (presets), `data`, `diffusion`, `models` (U-Net, causal decoder), `model_a` (blockwise DDPM),
`model_b` (KV-cached AR + corrector), `generators` (the families and their options), `train`, `checkpoint`,
`features`, `labeler`, `quality` (the labeler and the labels), `routing` (router, cross-fitting, allocation and
policy, early exit, evaluation, and the routed sampler), `timing`, `sharding`, `study` (the resumable pipeline and
its stages, the cost of every strategy, the report's figures; nothing else imports it), `labeling` (the labeling
page).
"""

__version__ = "0.1.0"
