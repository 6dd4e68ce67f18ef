"""Tests of the training loop, checkpoints and data parallelism (test preset, tmp_path)."""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_jax import config as config_lib
from hybrid_jax import train
from hybrid_jax.checkpoint import Checkpointer, CheckpointMismatch
from hybrid_jax.generators import model_b

TESTS = Path(__file__).parent
REPO = TESTS.parent


def _run_python(args: list[str], env_extra: dict | None = None, timeout: int = 300) -> str:
    """Run Python in a fresh process (CPU only); return its stdout, fail with its output otherwise."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env_extra or {})}
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout


# ----------------------------------------------------------------------------- resume


def test_snapshot_steps_are_evenly_spaced_and_end_at_the_last_step():
    assert train.snapshot_steps(12, 3) == (4, 8, 12)
    assert train.snapshot_steps(10, 3) == (4, 7, 10)
    assert train.snapshot_steps(2, 5) == (1, 1, 2, 2, 2)  # few steps: snapshots share steps, the count holds
    assert train.snapshot_steps(7, 0) == ()


def test_snapshots_are_the_sampling_params_at_their_steps_and_survive_a_resume(preset, model_b_params,
                                                                                stand_in_images, tmp_path):
    """The params handed out at each snapshot step are the EMA's (what samples); a run stopped between
    snapshots and resumed hands out the same ones, and the last is the trained result."""
    cfg = dataclasses.replace(preset.model_b.train, epochs=3, ckpt_every=2, log_every=2, ema_decay=0.5)
    images, loss_fn = stand_in_images[:32], model_b.make_ar_loss(preset.model_b)
    cfg_dict, init, steps = config_lib.to_dict(preset.model_b), model_b_params["ar"], (2, 4, 6)

    def collect(into):
        return lambda step, params: into.setdefault(step, params)

    whole, parts = {}, {}
    result = train.train(loss_fn, init, images, cfg, Checkpointer(tmp_path / "whole", cfg_dict), snapshots=steps,
                         on_snapshot=collect(whole))
    train.train(loss_fn, init, images, cfg, Checkpointer(tmp_path / "parts", cfg_dict), snapshots=steps,
                on_snapshot=collect(parts), stop_after=3)
    assert sorted(parts) == [2]
    train.train(loss_fn, init, images, cfg, Checkpointer(tmp_path / "parts", cfg_dict), snapshots=steps,
                on_snapshot=collect(parts))
    assert sorted(whole) == sorted(parts) == list(steps)
    for step in steps:
        for a, b in zip(jax.tree.leaves(whole[step]), jax.tree.leaves(parts[step])):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(whole[6]), jax.tree.leaves(result.params)):
        np.testing.assert_array_equal(a, b)
    differ = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(whole[2]), jax.tree.leaves(whole[6]))]
    assert any(differ)


def test_resumed_training_equals_an_uninterrupted_run(preset, model_b_params, stand_in_images, tmp_path):
    cfg = dataclasses.replace(preset.model_b.train, epochs=3, ckpt_every=2, log_every=2)  # 32 images: 6 steps
    images = stand_in_images[:32]
    loss_fn = model_b.make_ar_loss(preset.model_b)
    cfg_dict = config_lib.to_dict(preset.model_b)
    init = model_b_params["ar"]

    whole = train.train(loss_fn, init, images, cfg, Checkpointer(tmp_path / "whole", cfg_dict))
    assert whole.resumed_from is None and whole.losses.shape == (6,) and np.all(np.isfinite(whole.losses))

    ckpt_dir = tmp_path / "resumed"
    first = train.train(loss_fn, init, images, cfg, Checkpointer(ckpt_dir, cfg_dict), stop_after=4)
    assert first.resumed_from is None
    assert np.all(np.isfinite(first.losses[:4])) and np.all(np.isnan(first.losses[4:]))
    assert Checkpointer(ckpt_dir, cfg_dict).steps()[-1] == 4
    second = train.train(loss_fn, init, images, cfg, Checkpointer(ckpt_dir, cfg_dict))
    assert second.resumed_from == 4

    np.testing.assert_array_equal(second.losses, whole.losses)
    for a, b in zip(jax.tree.leaves(second.params), jax.tree.leaves(whole.params)):
        np.testing.assert_array_equal(a, b)
    assert whole.losses[-1] < whole.losses[0]
    # the caller's init params survive training (the loop donates its own copy)
    assert np.all(np.isfinite(jax.tree.leaves(init)[0]))


# ----------------------------------------------------------------------------- checkpoints

_RESTORE_AND_SAMPLE = textwrap.dedent("""
    import sys
    import jax, numpy as np
    from hybrid_jax import config
    from hybrid_jax.generators import model_a
    from hybrid_jax.checkpoint import Checkpointer
    cfg = config.get_preset("test").model_a
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                            jax.eval_shape(lambda k: model_a.init_params(cfg, k), jax.random.key(0)))
    params, step = Checkpointer(sys.argv[1], config.to_dict(cfg)).restore(template)
    assert step == 1, step
    keys = jax.random.split(jax.random.key(42), 4)
    np.save(sys.argv[2], np.asarray(model_a.make_sampler(cfg).sample_keys(params, keys)))
""")


def test_checkpoint_restored_in_a_fresh_process_samples_the_same_images(
        preset, model_a_params, model_a_sampler, perturb, tmp_path):
    params = perturb(model_a_params, 7)
    Checkpointer(tmp_path / "ckpt", config_lib.to_dict(preset.model_a)).save(1, params)
    mine = np.asarray(model_a_sampler.sample_keys(params, jax.random.split(jax.random.key(42), 4)))
    _run_python(["-c", _RESTORE_AND_SAMPLE, str(tmp_path / "ckpt"), str(tmp_path / "theirs.npy")])
    theirs = np.load(tmp_path / "theirs.npy")
    assert mine.std() > 0.01
    np.testing.assert_array_equal(theirs, mine)


def test_checkpoint_of_another_config_is_refused_naming_the_field(preset, tmp_path):
    cfg = preset.model_a
    Checkpointer(tmp_path, config_lib.to_dict(cfg)).save(1, {"w": np.ones(3, np.float32)})
    Checkpointer(tmp_path, config_lib.to_dict(cfg))  # the same config (tuples stored as lists) is fine
    other = dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, base_channels=16))
    with pytest.raises(CheckpointMismatch, match=r"unet\.base_channels: 8 != 16") as e:
        Checkpointer(tmp_path, config_lib.to_dict(other))
    assert "steps_per_block" not in str(e.value)
    with pytest.raises(CheckpointMismatch, match="steps_per_block"):
        Checkpointer(tmp_path, config_lib.to_dict(dataclasses.replace(cfg, steps_per_block=5)))
    assert Checkpointer(tmp_path, config_lib.to_dict(cfg)).steps() == [1]  # nothing was lost


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    noise = np.random.default_rng(0).standard_normal(1000).astype(np.float32)  # incompressible: the
    tree = lambda v: {"w": noise * v, "b": {"x": np.arange(6.0).reshape(2, 3) * v}}  # largest file holds w
    ckpt = Checkpointer(tmp_path, {"what": "test"})
    ckpt.save(1, tree(1.0))
    ckpt.save(2, tree(2.0))
    arrays = sorted(glob.glob(str(tmp_path / "2" / "**" / "d" / "*"), recursive=True), key=os.path.getsize)
    assert arrays, sorted(map(str, tmp_path.rglob("*")))
    raw = Path(arrays[-1]).read_bytes()  # the largest array file of the newest step
    Path(arrays[-1]).write_bytes(raw[: len(raw) // 2] if damage == "truncate" else bytes(len(raw)))

    with caplog.at_level(logging.WARNING, logger="hybrid_jax.checkpoint"):
        restored, step = Checkpointer(tmp_path, {"what": "test"}).restore(tree(0.0))
    assert step == 1
    np.testing.assert_array_equal(restored["w"], tree(1.0)["w"])
    np.testing.assert_array_equal(restored["b"]["x"], tree(1.0)["b"]["x"])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("step 2" in r.getMessage() and "unreadable" in r.getMessage() for r in warnings), caplog.text
    # the damaged step is set aside, never picked again; saving goes on
    again = Checkpointer(tmp_path, {"what": "test"})
    assert again.steps() == [1]
    again.save(3, tree(3.0))
    assert again.restore(tree(0.0))[1] == 3


# ----------------------------------------------------------------------------- divergence


def test_nan_loss_raises_naming_the_step_and_keeps_the_last_good_checkpoint(stand_in_images, tmp_path):
    """Adam moves w by lr = 0.1 per step (constant gradient), so step s sees w = 0.1 s and the loss
    is NaN from step 5 on. Losses are checked every 2 steps: the check after step 6 fails."""
    cfg = config_lib.TrainConfig(epochs=5, batch_size=16, lr=0.1, ckpt_every=2, log_every=2)  # 10 steps
    loss_fn = lambda p, batch, key: jnp.where(p["w"] > 0.45, jnp.nan, -p["w"]) + 0.0 * jnp.mean(batch)
    ckpt = Checkpointer(tmp_path, {"what": "nan"})
    with pytest.raises(train.TrainingDiverged, match=r"at step 5\b") as e:
        train.train(loss_fn, {"w": jnp.zeros(())}, stand_in_images[:32], cfg, ckpt)
    assert "step 4" in str(e.value)  # names the checkpoint that is kept
    assert ckpt.steps() == [2, 4]
    template = train.init_state({"w": jnp.zeros(())}, cfg, 10)
    state, step = Checkpointer(tmp_path, {"what": "nan"}).restore(template)
    assert step == 4 and int(state.step) == 4
    assert np.all(np.isfinite(np.asarray(state.losses[:4]))) and np.all(np.isnan(np.asarray(state.losses[4:])))
    assert float(state.params["w"]) == pytest.approx(0.4, abs=1e-3)


# ----------------------------------------------------------------------------- data parallelism


def test_data_parallel_step_and_samplers_match_single_device(preset, model_a_params, model_b_params, perturb,
                                                             tmp_path):
    """In a fresh process with 8 host devices (this one already has jax on 1): see _sharding_check.py.

    The backend's LLVM optimisation is off there: it cuts the compile time by a third, and the
    SPMD partitioning under test happens before it; both sides of every comparison share it."""
    Checkpointer(tmp_path / "a", config_lib.to_dict(preset.model_a)).save(1, perturb(model_a_params, 8))
    b_config = {"model_b": config_lib.to_dict(preset.model_b), "corrector": config_lib.to_dict(preset.corrector)}
    Checkpointer(tmp_path / "b", b_config).save(1, perturb(model_b_params, 9))
    flags = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
    out = _run_python([str(TESTS / "_sharding_check.py"), str(tmp_path / "a"), str(tmp_path / "b")],
                      env_extra={"XLA_FLAGS": flags}, timeout=500)
    print(out)
    assert out.strip().endswith("OK")


# ----------------------------------------------------------------------------- the recipe

def _numpy_lr(lr, warmup, decay, total, count):
    warm = min(1.0, (count + 1) / max(warmup, 1))
    frac = min(max((count - warmup) / max(total - warmup - 1, 1), 0.0), 1.0)
    return lr * warm * (0.5 * (1 + np.cos(np.pi * frac)) if decay == "cosine" else 1.0)


@pytest.mark.parametrize("warmup, decay", [(0, "constant"), (5, "constant"), (0, "cosine"), (4, "cosine")])
def test_learning_rate_schedule_matches_its_formula_and_drives_adam(warmup, decay, stand_in_images):
    """Warmup then constant or cosine decay (to 0 at the last step); under a constant gradient Adam moves the
    param by the scheduled rate at every step, so its path is the schedule's running sum."""
    total = 12
    cfg = config_lib.TrainConfig(epochs=6, batch_size=16, lr=0.1, warmup_steps=warmup, decay=decay, grad_clip=10.0)
    schedule = train.learning_rate(cfg, total)
    want = np.array([_numpy_lr(0.1, warmup, decay, total, c) for c in range(total)])
    np.testing.assert_allclose([float(schedule(c)) for c in range(total)], want, rtol=1e-5, atol=1e-8)  # f32
    if decay == "cosine":
        assert want[-1] == pytest.approx(0.0, abs=1e-9) and want.max() == pytest.approx(0.1)
    step = train.make_train_step(lambda p, batch, key: -p["w"] + 0.0 * jnp.mean(batch), cfg, total, donate=False)
    state = train.init_state({"w": jnp.zeros(())}, cfg, total)
    path = []
    for s in range(total):
        state = step(state, stand_in_images[:16], jax.random.key(s))
        path.append(float(state.params["w"]))
    np.testing.assert_allclose(path, np.cumsum(want), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["fixed", "power"])
def test_ema_follows_its_recursion_and_is_what_training_returns(kind, stand_in_images, tmp_path):
    """EMA_t = d_t EMA_{t-1} + (1 - d_t) w_t, d_t fixed or (1 - 1/t)^(1 + gamma) (EDM2); `train` returns the
    average (which the train stage saves, and the samplers and `restore_params` use), not the raw params."""
    ema = {"fixed": dict(ema_decay=0.8), "power": dict(ema_power=2.0)}[kind]
    cfg = config_lib.TrainConfig(epochs=4, batch_size=16, lr=0.1, ckpt_every=100, log_every=100, **ema)  # 8 steps
    loss_fn = lambda p, batch, key: -p["w"] + 0.0 * jnp.mean(batch)  # Adam: w_t = 0.1 t
    result = train.train(loss_fn, {"w": jnp.zeros(())}, stand_in_images[:32], cfg, Checkpointer(tmp_path, {}))
    avg = 0.0
    for t in range(1, 9):
        d = 0.8 if kind == "fixed" else (1 - 1 / t) ** 3.0
        avg = d * avg + (1 - d) * 0.1 * t
        assert float(train.ema_decay(cfg, t)) == pytest.approx(d, rel=1e-6)
    assert float(result.params["w"]) == pytest.approx(avg, rel=1e-4)
    assert abs(avg - 0.8) > 0.05  # the average is not the last params
    template = train.init_state({"w": jnp.zeros(())}, cfg, 8)
    state, _ = Checkpointer(tmp_path, {}).restore(template)
    assert float(state.ema_params["w"]) == pytest.approx(avg, rel=1e-4)  # checkpointed with the params


def test_horizontal_flips_flip_about_half_of_a_batch_and_keep_labels():
    images = jnp.asarray(np.random.default_rng(0).standard_normal((400, 4, 4, 3)), jnp.float32)
    labels = jnp.arange(400)
    flipped, same_labels = train.hflip((images, labels), jax.random.key(3))
    is_flipped = np.all(np.asarray(flipped) == np.asarray(images)[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(np.asarray(flipped) == np.asarray(images), axis=(1, 2, 3))
    assert np.all(is_flipped ^ kept) and 150 < is_flipped.sum() < 250
    np.testing.assert_array_equal(same_labels, labels)


def test_recipe_values_are_checked_naming_the_field():
    for key, value, words in (("model_a.train.ema_decay", "1.5", "ema_decay"),
                              ("model_a.train.warmup_steps", "-1", "warmup_steps"),
                              ("corrector.train.decay", "linear", "decay must be one of constant, cosine"),
                              ("model_b.train.grad_clip", "0", "grad_clip"),
                              ("model_a.min_snr_gamma", "-2", "min_snr_gamma"),
                              ("model_a.snapshots", "-1", "model_a.snapshots"),
                              ("model_b.snapshots", "3", "B's learning curve pairs"),
                              ("curves.num_seeds", "1000", "curves.num_seeds=1000 must be <= seeds.num_seeds"),
                              ("judge.norm_groups", "3", "judge.norm_groups=3 must be > 0 and divide every width")):
        with pytest.raises(config_lib.ConfigError, match=words):
            config_lib.override(config_lib.get_preset("test"), key, value)
    with pytest.raises(config_lib.ConfigError, match="two kinds of EMA"):
        config_lib.apply_overrides(config_lib.get_preset("test"), ["model_a.train.ema_decay=0.9",
                                                                  "model_a.train.ema_power=7"])
