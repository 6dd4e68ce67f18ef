"""The generator families of the study, in order: the training stages, the work-dir guard's pinned sections, the
seed-key streams, the allocation's options and the brief's binary pair all iterate over this tuple."""

from __future__ import annotations

from hybrid_jax.generators import ar_corrector, blockwise
from hybrid_jax.generators.base import Family, Network

FAMILIES: tuple[Family, ...] = (blockwise.FAMILY, ar_corrector.FAMILY)
BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}
BRIEF_PAIR: tuple[str, str] = (blockwise.NAME, ar_corrector.NAME)  # the binary study: reference, then candidate
NETWORKS: tuple[Network, ...] = tuple(n for f in FAMILIES for n in f.networks)  # one training stage each
STREAMS: dict[str, int] = {f.name: f.stream for f in FAMILIES}
assert len(set(STREAMS.values())) == len(FAMILIES), "each family needs its own seed-key stream"
assert len({f.section for f in FAMILIES}) == len(FAMILIES), "each family needs its own config section"
