"""Several classes: class-conditional networks, labelled data, a class per seed; one class unchanged."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_jax import data, generators
from hybrid_jax.config import ConfigError, DataConfig
from hybrid_jax.generators import model_a, model_b
from tests.conftest import perturb_params


def _paths(tree) -> list[str]:
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


@pytest.fixture(scope="module")
def two_class_params(preset):
    a = model_a.init_params(preset.model_a, jax.random.key(0), num_classes=2)
    b = model_b.init_params(preset.model_b, preset.corrector, jax.random.key(0), num_classes=2)
    return perturb_params(a, 1), perturb_params(b, 2)


def test_one_class_params_have_no_class_embedding(model_a_params, model_b_params):
    for tree in (model_a_params, model_b_params):
        assert not any("class_embedding" in p for p in _paths(tree))


def test_several_classes_add_only_the_class_embeddings(preset, model_a_params, model_b_params, two_class_params):
    pa, pb = two_class_params
    for one, two in ((model_a_params, pa), (model_b_params["ar"], pb["ar"]),
                     (model_b_params["corrector"], pb["corrector"])):
        extra = sorted(set(_paths(two)) - set(_paths(one)))
        assert extra and all("class_embedding" in p for p in extra), extra
        assert set(_paths(one)) <= set(_paths(two))
    # the other parameters are drawn as with one class: no new RNG draws elsewhere
    fresh = model_a.init_params(preset.model_a, jax.random.key(0), num_classes=2)
    same = jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), model_a_params,
                        {k: v for k, v in fresh.items() if k in model_a_params})
    assert all(jax.tree.leaves(same))


def test_the_class_changes_the_image(preset, two_class_params):
    pa, pb = two_class_params
    keys = jnp.stack([jax.random.key(3)] * 2)
    labels = jnp.array([0, 1])
    sa = model_a.make_sampler(preset.model_a, num_classes=2)
    sb = model_b.make_sampler(preset.model_b, preset.corrector, num_classes=2)
    for images in (sa.sample_keys(pa, keys, labels), sb.sample_keys(pb, keys, labels)):
        assert float(jnp.max(jnp.abs(images[0] - images[1]))) > 1e-4
    # B's corrector alone is conditional too (same AR image, same keys, other class)
    ar = jnp.zeros((2, *preset.geometry.image_shape))
    corrected = sb.correct(pb["corrector"], ar, keys, labels)
    assert float(jnp.max(jnp.abs(corrected[0] - corrected[1]))) > 1e-5
    # finishing from a prefix keeps each example's class
    prefix = sb.ar_prefix(pb, keys, preset.router.prefix_steps, labels)
    np.testing.assert_array_equal(np.asarray(sb.finish(pb, prefix)), np.asarray(sb.sample_keys(pb, keys, labels)))


def test_several_classes_need_labels(preset, two_class_params):
    pa, _ = two_class_params
    with pytest.raises(ValueError, match="needs class labels"):
        model_a.make_sampler(preset.model_a, num_classes=2).sample_keys(pa, jax.random.split(jax.random.key(0), 2))


def test_one_class_ignores_labels(model_b_params, model_b_sampler):
    keys = jax.random.split(jax.random.key(4), 2)
    np.testing.assert_array_equal(np.asarray(model_b_sampler.sample_keys(model_b_params, keys)),
                                  np.asarray(model_b_sampler.sample_keys(model_b_params, keys, jnp.array([0, 0]))))


def test_conditional_losses_take_labelled_batches(preset, stand_in_images, two_class_params):
    pa, pb = two_class_params
    x, y = stand_in_images[:4], np.array([0, 1, 0, 1], np.int32)
    key = jax.random.key(0)
    for loss, params in ((model_a.make_loss(preset.model_a, num_classes=2), pa),
                         (model_b.make_ar_loss(preset.model_b, num_classes=2), pb["ar"]),
                         (model_b.make_corrector_loss(preset.corrector, num_classes=2), pb["corrector"])):
        assert np.isfinite(float(loss(params, (x, y), key)))
        assert float(loss(params, (x, y), key)) != float(loss(params, (x, 1 - y), key))


def test_batches_of_images_with_labels():
    x, y = np.arange(10.0)[:, None], np.arange(10)
    bx, by = data.batch_at((x, y), 4, key=3, step=5)
    np.testing.assert_array_equal(bx[:, 0], by)
    np.testing.assert_array_equal(bx, data.batch_at(x, 4, key=3, step=5))
    assert data.num_examples((x, y)) == 10
    assert data.images_and_labels(x) == (x, None) and data.images_and_labels((x, y)) == (x, y)


def test_class_names_in_the_config():
    assert DataConfig().classes == ("dog",) and DataConfig().num_classes == 1
    assert DataConfig(class_name="dog, cat,horse").classes == ("dog", "cat", "horse")
    assert DataConfig(class_name="all").classes == data.CIFAR10_CLASSES
    for bad in ("dog,dog", "dog,", ""):
        with pytest.raises(ConfigError):
            DataConfig(class_name=bad)


def test_seed_classes_are_balanced_and_from_the_seed_alone():
    seeds = np.arange(12)
    labels = np.asarray(generators.seed_labels(seeds, 3))
    np.testing.assert_array_equal(labels, seeds % 3)
    np.testing.assert_array_equal(np.asarray(generators.seed_labels(seeds[::-1], 3)), labels[::-1])
    assert not np.asarray(generators.seed_labels(seeds, 1)).any()


def test_stand_in_with_several_classes_is_refused(tmp_path):
    from hybrid_jax.config import get_preset
    from hybrid_jax.study import rundir
    from hybrid_jax.study.stages import data as data_stage

    cfg = get_preset("test")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, class_name="dog,cat", path=data.STAND_IN))
    run = rundir.Run(cfg, tmp_path)
    with pytest.raises(data.DataError, match="no classes"):
        data_stage.run_stage(run)


def test_one_class_training_ignores_the_labels(preset, stand_in_images, model_a_params, model_b_params):
    """The train stage always passes (images, labels); with one class that trains bit for bit as images alone."""
    x, key = stand_in_images[:4], jax.random.key(5)
    zeros = np.zeros(len(x), np.int32)
    for loss, params in ((model_a.make_loss(preset.model_a), model_a_params),
                         (model_b.make_ar_loss(preset.model_b), model_b_params["ar"]),
                         (model_b.make_corrector_loss(preset.corrector), model_b_params["corrector"])):
        grad = jax.jit(jax.value_and_grad(loss))
        (l1, g1), (l2, g2) = grad(params, x, key), grad(params, (x, zeros), key)
        assert float(l1) == float(l2)
        assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), g1, g2)))
