"""Generator options: A at step budgets, B at corrector depths, one interface; the brief's pair is N = 2."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from hybrid_jax import generators, routing
from hybrid_jax.config import ConfigError, override
from hybrid_jax.generators import model_b
from hybrid_jax.generators import ar_corrector, blockwise


@pytest.fixture(scope="module")
def cfg(preset):
    """The test preset with distillation (B's corrector in two rounds, A in one), so that every kind of option is here
    (the teachers, the students and naive DDIM at their steps)."""
    return override(override(preset, "ar_corrector.halvings", "2"), "blockwise.halvings", "1")


@pytest.fixture(scope="module")
def trained(model_a_params, model_b_params, perturb):
    """Each option's params: A's, B's, and the distilled students' (perturbed apart from their networks per round)."""
    a, b = perturb(model_a_params, 1), perturb(model_b_params, 2)
    students = {"2": perturb(b["corrector"], 3), "1": perturb(b["corrector"], 4)}
    return {"model_a": a, "model_b": b, ar_corrector.DISTILLED: {"family": b, "students": students},
            blockwise.DISTILLED: {"family": a, "students": {"2": perturb(a, 5)}}}


def test_the_binary_pair_is_todays_samplers(preset, trained, model_a_sampler, model_b_sampler):
    a, b = generators.binary(preset)
    keys_a, keys_b = routing.seed_keys(range(3), 0)
    np.testing.assert_array_equal(a.sample_keys(trained["model_a"], keys_a),
                                  model_a_sampler.sample_keys(trained["model_a"], keys_a))
    np.testing.assert_array_equal(b.sample_keys(trained["model_b"], keys_b),
                                  model_b_sampler.sample_keys(trained["model_b"], keys_b))
    assert (a.passes, b.passes) == (model_a_sampler.passes, model_b_sampler.passes)


def test_every_option_gives_a_seed_the_same_image_alone_or_in_a_batch(preset, trained):
    """The test preset's options (the few-step ones are in the mixed-batch test below)."""
    seeds = np.arange(4)
    images = {}
    for g in generators.options(preset):
        keys = generators.stream_keys(seeds, 0, g.stream)
        batch = np.asarray(g.sample_keys(trained[g.model], keys))
        alone = np.asarray(g.sample_keys(trained[g.model], keys[np.array([2, 2, 2, 2])]))[0]  # same batch shape
        np.testing.assert_array_equal(alone, batch[2], err_msg=g.name)
        # At batch 1 XLA may pick other kernels and sum in another order: rounding (1.3e-4 seen on an AVX2-only
        # CPU) that the DDPM steps carry on; another seed's image would differ by O(1).
        single = np.asarray(g.sample_keys(trained[g.model], keys[2:3]))[0]
        np.testing.assert_allclose(single, batch[2], atol=1e-3, err_msg=g.name)
        assert np.isfinite(batch).all() and batch.shape == (4, 32, 32, 3)
        images[g.name] = batch
    names = list(images)
    for i, m in enumerate(names):  # every option makes its own image
        for n in names[i + 1:]:
            assert not np.array_equal(images[m], images[n]), (m, n)


def test_passes_and_flops_follow_from_the_pass_counts(cfg):
    opts = {g.name: g for g in generators.options(cfg)}
    assert [g.passes for g in opts.values()] == [4 * 4, 4 * 2, 4 * 4, 4 * 2, 4 * 2,
                                                 16 + 3, 16 + 0, 16 + 3, 16 + 2, 16 + 2, 16 + 1, 16 + 1]
    assert list(opts)[2:5] == ["A/DDIM 4 steps", "A/distilled 2 steps", "A/DDIM 2 steps"]  # the teacher, the round
    assert list(opts)[7:] == ["B/corrector DDIM 3", "B/corrector distilled 2", "B/corrector DDIM 2",
                              "B/corrector distilled 1", "B/corrector DDIM 1"]  # the teacher, then each round
    f = {"a_unet": 10.0, "b_ar_step": 1.0, "corrector_unet": 3.0}
    assert opts["A/2 steps"].flops(f) == 80.0 and opts["B/corrector 3"].flops(f) == 16.0 + 9.0


def test_options_outside_the_trained_schedules_are_refused(preset):
    with pytest.raises(ConfigError, match="blockwise.budgets"):
        override(preset, "blockwise.budgets", "8,2")
    with pytest.raises(ConfigError, match="ar_corrector.depths"):
        override(preset, "ar_corrector.depths", "0,11")


def test_seed_streams_are_routings_seed_keys():
    ka, kb = routing.seed_keys([3, 8], 5)
    data = jax.random.key_data
    np.testing.assert_array_equal(data(ka), data(generators.seed_stream([3, 8], 5, "model_a")))
    np.testing.assert_array_equal(data(kb), data(generators.seed_stream([3, 8], 5, "model_b")))


def _a_probe(cfg) -> generators.Probe:
    """A's own probe, the one family probe of the test preset."""
    (fam, probe), = generators.probes(cfg)
    assert (fam.name, probe.name) == ("model_a", "A")
    return probe


def test_mixed_budget_generation_gives_each_seed_its_options_image_with_one_shape_per_option(cfg, trained):
    opts = generators.options(cfg) + _a_probe(cfg).options[-1:]
    seeds = np.arange(len(opts) + 3)
    gen = lambda s, c: generators.generate(opts, trained, s, c, base_seed=0, batch_size=4)
    mixed = np.random.default_rng(1).permutation(np.arange(len(seeds)) % len(opts))  # every option, one seed or two
    images = gen(seeds, mixed)
    sizes = [g.sample_keys.cache_size() for g in opts]
    assert sizes == [1] * len(opts)  # one executable per option, however many seeds and groups
    for k in range(len(opts)):  # each seed's image is its option's own image for it
        mine = seeds[mixed == k]
        own = gen(mine[::-1], np.full(len(mine), k))[::-1]  # its seeds alone, in another order: other rows, no others
        # the same executable with the seed in another row beside other seeds: equal up to XLA CPU's rounding, which
        # the DDPM steps carry on (6e-5 seen; as at batch 1 above); another seed's image would differ by O(1)
        np.testing.assert_allclose(images[mixed == k], own, atol=1e-3, err_msg=opts[k].name)
    np.testing.assert_array_equal(gen(seeds[3:4], mixed[3:4])[0], images[3])  # alone
    rng = np.random.default_rng(0)
    for _ in range(3):  # other compositions and sizes compile nothing new
        perm = rng.permutation(len(seeds))[: rng.integers(1, len(seeds) + 1)]
        np.testing.assert_array_equal(gen(seeds[perm], mixed[perm]), images[perm])
    assert [g.sample_keys.cache_size() for g in opts] == sizes


def test_options_continue_the_probes_already_run_and_give_the_same_images(cfg, trained):
    """probe -> allocate -> sample: with B's prefix and A's probe passed in, the options that continue them finish
    from their states (never starting over) and give the same images as from scratch."""
    every = generators.options(cfg)
    opts = (every[0], every[-1], _a_probe(cfg).options[-1])  # A from scratch, B, A after its probe
    seeds = np.arange(7)
    choice = np.arange(len(seeds)) % len(opts)
    ar = model_b.make_sampler(cfg.model_b, cfg.corrector, geometry=cfg.geometry)
    prefix = ar.ar_prefix(trained["model_b"], generators.seed_stream(seeds, 0, "model_b"), cfg.router.prefix_steps)
    probe_a, feats_a = _a_probe(cfg).run(trained["model_a"], generators.seed_stream(seeds, 0, "model_a"))
    assert feats_a.shape[0] == len(seeds) and np.isfinite(np.asarray(feats_a)).all()
    gen = lambda opts, **kw: generators.generate(opts, trained, seeds, choice, base_seed=0, batch_size=2, **kw)
    scratch = gen(opts)

    def never(*_):
        raise AssertionError("started over instead of continuing the probe")

    resuming = [dataclasses.replace(g, sample_keys=never) if g.probe else g for g in opts]
    resumed = gen(resuming, probes={"B": prefix, "A": probe_a})
    for k, g in enumerate(opts):
        rows = choice == k
        # B: the AR scan split at the prefix sums alike (the routed stage's check); A: the same steps, bitwise
        np.testing.assert_allclose(resumed[rows], scratch[rows], atol=1e-5 if g.probe == "B" else 0, err_msg=g.name)
        assert (g.finish is not None) == bool(g.probe), g.name


def test_every_unit_an_option_counts_has_the_flops_of_one_pass_from_its_family(cfg, trained):
    """`cost.pass_flops` is the union of the families' own counts (`Family.pass_flops`): every unit an option's pass
    counts name is there, so an option's FLOPs never miss a network, and each is a real count."""
    from hybrid_jax.study import cost
    f = cost.pass_flops(cfg, trained)
    units = {u for g in generators.options(cfg) + _a_probe(cfg).options for u in g.pass_counts}
    assert units <= set(f) and all(v > 0 for v in f.values()), f
    assert f["b_teacher_forcing"] > cfg.router.prefix_steps * f["b_ar_step"] / 2  # 16 positions against one
    assert f["a_unet"] > f["corrector_unet"]  # the same tiny U-Net, A's with five more input channels


def test_a_preset_adds_families_as_values_after_the_studys_own(preset):
    """`Preset.families` appends families (their options, networks and stages follow); its JSON holds their data, not
    their code; text cannot set them."""
    import _toy_family as toy

    from hybrid_jax import config as config_lib
    from hybrid_jax.generators import registry

    cfg = dataclasses.replace(preset, families=(toy.family(),))
    assert [f.name for f in generators.families(cfg)] == ["model_a", "model_b", "toy"]
    assert [n.name for n in registry.networks(cfg)] == ["model_a", "model_b", "corrector", "toy"]
    assert [g.name for g in generators.options(cfg)][-2:] == ["toy/4 steps", "toy/2 steps"]
    assert [g.name for g in generators.binary(cfg)] == [g.name for g in generators.binary(preset)]
    (added,) = config_lib.to_dict(cfg)["families"]
    assert added == {"name": "toy", "stream": 7, "networks": ({"name": "toy", "version": 0},),
                     "config": config_lib.to_dict(toy.ToyConfig())}
    with pytest.raises(ConfigError, match="holds values made in code"):
        override(preset, "families", "toy")


@pytest.mark.parametrize("change, message", [
    (dict(stream=2), r"seed-key stream: \[2\] used twice"),
    (dict(name="model_b"), r"name: \['model_b'\] used twice"),
    (dict(network="corrector"), r"network name: \['corrector'\] used twice"),
    (dict(network="seeds"), r"network\(s\) \['seeds'\] named as a stage"),
])
def test_families_that_would_collide_are_config_errors(preset, change, message):
    import _toy_family as toy

    f = toy.family(name=change.get("network", change.get("name", "toy")), stream=change.get("stream", 7))
    if "name" in change and "network" not in change:
        f = dataclasses.replace(f, networks=tuple(dataclasses.replace(n, name="toy") for n in f.networks))
    with pytest.raises(ConfigError, match=message):
        generators.families(dataclasses.replace(preset, families=(f,)))
    with pytest.raises(ConfigError, match="must be generators.Family values"):
        generators.families(dataclasses.replace(preset, families=("toy",)))
