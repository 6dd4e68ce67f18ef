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
