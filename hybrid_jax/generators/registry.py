"""The generator families of a study: the study's own (`BUILTIN`, those whose settings section the preset sets),
then those a preset adds as values (`Preset.families`). The training stages, the work-dir guard's pinned sections,
the stage list, the allocation's options and the cost units all iterate over `families(cfg)`; the brief's binary
pair is two of the study's own."""

from __future__ import annotations

from hybrid_jax.config import ConfigError, Preset
from hybrid_jax.generators import ar_corrector, blockwise, hyperschedule, madformer
from hybrid_jax.generators.base import Family, Network

# the study's own families; one whose settings section is None in a preset (`Preset.madformer`,
# `Preset.hyperschedule`) is not in its study
BUILTIN: tuple[Family, ...] = (blockwise.FAMILY, ar_corrector.FAMILY, madformer.FAMILY, hyperschedule.FAMILY)
BRIEF_PAIR: tuple[str, str] = (blockwise.NAME, ar_corrector.NAME)  # the binary study: reference, then candidate
STREAMS: dict[str, int] = {f.name: f.stream for f in BUILTIN}
# stage names a network's training stage may not take (`hybrid_jax.study.pipeline`)
RESERVED = ("data", "distill", "seeds", "features", "labels", "curves", "router", "routed", "allocate", "report",
            "tb", "cache")


def families(cfg: Preset) -> tuple[Family, ...]:
    """The study's own families, then the preset's; a ConfigError when two share a name, a seed-key stream or a
    network name, or a network is named as a stage."""
    out = (*(f for f in BUILTIN if f.settings(cfg) is not None), *cfg.families)
    bad = [f for f in cfg.families if not isinstance(f, Family)]
    if bad:
        raise ConfigError(f"families must be generators.Family values, got {bad[0]!r}")
    nets = [n.name for f in out for n in f.networks]
    for what, values in (("name", [f.name for f in out]), ("seed-key stream", [f.stream for f in out]),
                         ("network name", nets)):
        twice = sorted({v for v in values if values.count(v) > 1}, key=str)
        if twice:
            raise ConfigError(f"generator families must differ in {what}: {twice} used twice")
    if clash := sorted(set(nets) & set(RESERVED)):
        raise ConfigError(f"network(s) {clash} named as a stage of the study; rename them")
    return out


def networks(cfg: Preset) -> tuple[Network, ...]:
    """Every family's networks, in order: one training stage each."""
    return tuple(n for f in families(cfg) for n in f.networks)


def by_name(cfg: Preset, name: str) -> Family:
    """The family whose options sample with `name`'s params (`Generator.model`)."""
    return {f.name: f for f in families(cfg)}[name]


_OWN = {f.name: f for f in BUILTIN}
BRIEF_NETWORKS: tuple[str, ...] = tuple(n.name for name in BRIEF_PAIR for n in _OWN[name].networks)  # the pair's
