"""The image geometry: one checked value, the layout functions at 32x32 (the brief) and 64x64."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hybrid_jax import config as config_lib
from hybrid_jax import geometry
from hybrid_jax.config import ConfigError, Geometry

BRIEF = Geometry()
BIG = Geometry(image_size=64)  # 8x8 patches -> 64 AR steps, 16x16 blocks -> a 4x4 grid of 16 blocks


def test_the_brief_geometry_and_its_derived_counts():
    assert (BRIEF.image_size, BRIEF.patch_size, BRIEF.block_size, BRIEF.channels) == (32, 8, 16, 3)
    assert BRIEF.image_shape == (32, 32, 3)
    assert (BRIEF.patches_per_side, BRIEF.num_patches, BRIEF.patch_dim) == (4, 16, 192)
    assert (BRIEF.blocks_per_side, BRIEF.num_blocks) == (2, 4)
    assert (BIG.num_patches, BIG.patch_dim, BIG.num_blocks) == (64, 192, 16)
    for name in ("paper", "quick", "test", "paper-shapes"):
        assert config_lib.get_preset(name).geometry == BRIEF, name


@pytest.mark.parametrize("kwargs, message", [
    (dict(patch_size=5), "image_size=32 must be divisible by geometry.patch_size=5"),
    (dict(block_size=24), "image_size=32 must be divisible by geometry.block_size=24"),
    (dict(image_size=48, block_size=32), "image_size=48 must be divisible by geometry.block_size=32"),
    (dict(patch_size=32), "at least 2 patches"),
    (dict(patch_size=0), "sizes must be > 0"),
    (dict(channels=4), "channels must be 3"),
])
def test_inconsistent_geometry_is_a_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Geometry(**kwargs)


def test_the_preset_checks_the_geometry_against_the_rest():
    test = config_lib.get_preset("test")
    big = config_lib.apply_overrides(test, ["geometry.image_size=64"])
    assert big.geometry == BIG and big.model_a == test.model_a
    with pytest.raises(ConfigError, match="prefix_steps=12 must be below the 4 AR steps"):
        config_lib.apply_overrides(test, ["geometry.patch_size=16"])
    # fields that must agree are checked once, all set: in any order, each alone would be refused
    both = config_lib.apply_overrides(test, ["geometry.image_size=40", "geometry.block_size=20", "geometry.patch_size=10",
                                             "router.prefix_steps=4", "early_exit.k_early=2",
                                             "model_a.unet.channel_mults=1", "corrector.unet.channel_mults=1"])
    assert (both.geometry.num_patches, both.geometry.num_blocks, both.router.prefix_steps) == (16, 4, 4)
    with pytest.raises(ConfigError, match="image_size=48 must be divisible by 32, the downsampling of model_a.unet"):
        config_lib.apply_overrides(test, ["model_a.unet.channel_mults=1,2,2,2,2,2", "geometry.image_size=48"])


@pytest.mark.parametrize("g", [BRIEF, BIG, Geometry(image_size=48, patch_size=12, block_size=24)],
                         ids=["32", "64", "48"])
def test_patchify_roundtrip_and_raster_layout(g):
    x = np.random.default_rng(0).normal(size=(2, 3, *g.image_shape)).astype(np.float32)
    p = geometry.patchify(x, g)
    assert p.shape == (2, 3, g.num_patches, g.patch_dim)
    np.testing.assert_array_equal(geometry.unpatchify(p, g), x)
    s = g.patch_size
    for i in range(g.num_patches):
        r, c = s * (i // g.patches_per_side), s * (i % g.patches_per_side)
        np.testing.assert_array_equal(p[..., i, :], x[..., r:r + s, c:c + s, :].reshape(2, 3, g.patch_dim))
    np.testing.assert_array_equal(jax.jit(lambda v: geometry.patchify(v, g))(x), p)
    np.testing.assert_array_equal(jax.vmap(lambda v: geometry.unpatchify(v, g))(p), x)
    with pytest.raises(AssertionError):
        geometry.patchify(x[..., :-1, :], g)


@pytest.mark.parametrize("g", [BRIEF, BIG], ids=["32", "64"])
def test_block_and_context_masks(g):
    blocks, context = geometry.block_masks(g), geometry.context_masks(g)
    assert blocks.shape == context.shape == (g.num_blocks, g.image_size, g.image_size, 1)
    assert blocks.dtype == context.dtype == np.float32
    np.testing.assert_array_equal(blocks.sum(0), 1.0)  # disjoint, union is everything
    s = g.block_size
    for b in range(g.num_blocks):  # raster order
        r, c = s * (b // g.blocks_per_side), s * (b % g.blocks_per_side)
        assert blocks[b].sum() == s * s and blocks[b, r:r + s, c:c + s].all()
        np.testing.assert_array_equal(context[b], blocks[:b].sum(0))
    assert not context[0].any()


def test_brief_blocks_are_the_four_quadrants():
    blocks = geometry.block_masks(BRIEF)
    for b, (r, c) in enumerate([(0, 0), (0, 16), (16, 0), (16, 16)]):  # TL, TR, BL, BR
        assert blocks[b, r:r + 16, c:c + 16].all()


@pytest.mark.parametrize("g", [BRIEF, BIG], ids=["32", "64"])
def test_visible_mask_is_the_first_k_patches(g):
    for k in (1, g.patches_per_side + 1, g.num_patches):
        mask = geometry.visible_mask(k, g)
        assert mask.shape == (g.image_size, g.image_size, 1)
        expected = geometry.unpatchify((np.arange(g.num_patches) < k)[:, None].repeat(g.patch_dim, 1)
                                       .astype(np.float32), g)[..., :1]
        np.testing.assert_array_equal(mask, expected)


# ----------------------------------------------------------------------------- 64x64: 64 AR steps, 16 blocks


@pytest.fixture(scope="module")
def big_preset():
    return config_lib.apply_overrides(config_lib.get_preset("test"), ["geometry.image_size=64"])


def test_samplers_and_probe_features_at_64(big_preset):
    """Model A over 16 blocks, Model B over 64 AR steps (prefix + finish = one run), the probe's features and
    the cost table's pass counts, all from the geometry."""
    from hybrid_jax import routing
    from hybrid_jax.probe import features
    from hybrid_jax.generators import model_a, model_b
    from hybrid_jax.study import cost

    cfg, g = big_preset, big_preset.geometry
    pa = model_a.init_params(cfg.model_a, jax.random.key(0), geometry=g)
    pb = model_b.init_params(cfg.model_b, cfg.corrector, jax.random.key(0), geometry=g)
    sa = model_a.make_sampler(cfg.model_a, geometry=g)
    sb = model_b.make_sampler(cfg.model_b, cfg.corrector, geometry=g)
    assert sa.passes == 16 * cfg.model_a.steps_per_block and sb.passes == 64 + cfg.corrector.start_step
    keys_a, keys_b = routing.seed_keys([1, 2], cfg.seeds.base_seed)
    images_a = np.asarray(sa.sample_keys(pa, keys_a))
    assert images_a.shape == (2, 64, 64, 3) and np.abs(images_a).max() <= 1
    prefix = sb.ar_prefix(pb, keys_b, cfg.router.prefix_steps)
    assert prefix.attn.shape[-1] == 64 and prefix.state.patches.shape == (2, 64, g.patch_dim)
    np.testing.assert_array_equal(np.asarray(sb.finish(pb, prefix)), np.asarray(sb.sample_keys(pb, keys_b)))
    feats = np.asarray(features.compute(prefix, g))
    assert feats.shape == (2, len(features.feature_names(cfg.model_b.decoder.num_layers)))
    assert np.isfinite(feats).all()
    with pytest.raises(ValueError, match="2 to 64 AR steps"):
        features.compute(sb.ar_prefix(pb, keys_b, 1), g)
    units = cost.unit_work(cfg, dict.fromkeys(("a_unet", "b_ar_step", "b_teacher_forcing", "corrector_unet"), 1.0))
    assert units["B"]["passes"] == 64 + cfg.corrector.start_step and units["A"]["passes"] == sa.passes


def test_labeler_statistics_and_degradations_follow_the_grid(big_preset):
    from hybrid_jax import data
    from hybrid_jax.quality import degradations, imagestats

    g = big_preset.geometry
    images = data.load_images("dog", path=data.STAND_IN, max_images=8, image_size=64).images
    stats = imagestats.embed(images, geometry=g)
    assert stats.shape == (8, len(imagestats.STATISTICS)) and np.isfinite(stats).all()
    for name, fam in degradations.families(g).items():
        if fam.apply is not None:
            out = degradations.degrade(images, name, 2, geometry=g)
            assert out.shape == images.shape and out.dtype == np.float32, name
    seams = dict(zip(imagestats.STATISTICS, imagestats.embed(
        degradations.degrade(images, "quadrant seams", 2, geometry=g), geometry=g).T))
    assert np.mean(seams["quadrant_seams"]) > np.mean(stats[:, imagestats.STATISTICS.index("quadrant_seams")])


def test_inconsistent_geometry_is_refused_before_any_work(tmp_path, capsys):
    from experiments import run as run_cli

    rc = run_cli.main(["--preset", "test", "--workdir", str(tmp_path / "w"), "--set", "geometry.image_size=40"])
    assert rc == 2 and "geometry.block_size=16" in capsys.readouterr().err
    assert not (tmp_path / "w" / "data").exists()


@pytest.mark.slow
def test_a_64x64_test_preset_run_end_to_end(tmp_path):
    """Every stage at 64x64 (64 AR steps, 16 blocks) on the stand-in, with fewer seeds, images and options."""
    from experiments import run as run_cli
    from hybrid_jax import io

    workdir = tmp_path / "run64"
    small = ["seeds.num_seeds=12", "seeds.batch_size=12", "cost.num_images=4", "blockwise.budgets=2",
             "ar_corrector.depths=0", "blockwise.probe_budget=2", "data.max_images=32",
             "model_a.train.epochs=1", "model_b.train.epochs=1", "corrector.train.epochs=1"]
    assert run_cli.main(["--preset", "test", "--workdir", str(workdir), "--set", "geometry.image_size=64",
                         *small]) == 0
    seeds = io.read_npz(workdir / "seeds" / "seeds.npz")
    assert [seeds[o].shape for o in seeds["options"]] == [(12, 64, 64, 3)] * 2
    assert io.read_npz(workdir / "data" / "images.npz")["train"].shape[1:] == (64, 64, 3)
    check = io.read_json(workdir / "routed" / "cost.json")["consistency"]
    assert check["max_abs_diff_a"] <= 1e-5 and check["max_abs_diff_b"] <= 1e-5
    assert (workdir / "report" / "report.md").exists()
