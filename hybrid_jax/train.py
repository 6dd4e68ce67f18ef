"""Generic, resumable training loop shared by Model A, Model B and the corrector.

`loss_fn(params, batch, key) -> scalar` is all a model provides. The loop draws the batch
and key of global step s from (seed, s) alone, so a run resumed from a checkpoint at step s
continues exactly as an uninterrupted run would. The loss history lives in the train state
(and so in every checkpoint), which keeps curves consistent across resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from hybrid_jax import data as data_lib
from hybrid_jax import sharding, xla
from hybrid_jax.checkpoint import Checkpointer
from hybrid_jax.config import TrainConfig

log = logging.getLogger("hybrid_jax.train")

LossFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # [] int32
    params: Any
    opt_state: Any
    ema_params: Any  # None when EMA is off
    losses: jax.Array  # [total_steps] f32, NaN where not yet trained


@dataclasses.dataclass(frozen=True)
class TrainResult:
    params: Any  # EMA params when EMA is on, else the raw params
    losses: np.ndarray  # [total_steps]
    resumed_from: int | None  # checkpoint step the run resumed from, None for a fresh start
    seconds: float


_DECAYS = {  # config.LR_DECAYS: the learning rate's factor at fraction f in [0, 1] of the steps after warmup
    "constant": lambda f: jnp.ones_like(f),
    "cosine": lambda f: 0.5 * (1.0 + jnp.cos(jnp.pi * f)),
}
AUGMENT_STREAM = 1 << 16  # fold_in(step key, this): the augmentation's key (the losses fold in 0, 1, 2, ...)


def learning_rate(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    """count -> learning rate of update `count` (0-based): lr (count + 1) / warmup during the warmup steps, then
    lr x the decay (`cfg.decay`) over the remaining steps."""
    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        warm = jnp.minimum(1.0, (count + 1.0) / max(cfg.warmup_steps, 1))
        frac = jnp.clip((count - cfg.warmup_steps) / max(total_steps - cfg.warmup_steps - 1, 1), 0.0, 1.0)
        return cfg.lr * warm * _DECAYS[cfg.decay](frac)
    return schedule


def ema_decay(cfg: TrainConfig, step: jax.Array) -> jax.Array:
    """The EMA's decay at update `step` (1-based): the fixed `ema_decay`, or the power function (1 - 1/step)^(1 +
    ema_power) of EDM2 (Karras et al. 2024), whose average weighs the last steps more as training goes on."""
    if cfg.ema_power > 0:
        return (1.0 - 1.0 / jnp.asarray(step, jnp.float32)) ** (1.0 + cfg.ema_power)
    return jnp.asarray(cfg.ema_decay, jnp.float32)


def hflip(batch, key: jax.Array):
    """Each image of the batch (images, or (images, labels)) flipped left-right with probability 1/2."""
    images, labels = data_lib.images_and_labels(batch)
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    images = jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)
    return images if labels is None else (images, labels)


def make_optimizer(cfg: TrainConfig, total_steps: int = 1) -> optax.GradientTransformation:
    """Clipped Adam at `learning_rate`; a constant rate stays a number, so its optimizer state (and checkpoints
    written before schedules existed) has no schedule count."""
    constant = cfg.warmup_steps == 0 and cfg.decay == "constant"
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                       optax.adam(cfg.lr if constant else learning_rate(cfg, total_steps)))


def init_state(params, cfg: TrainConfig, total_steps: int) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=make_optimizer(cfg, total_steps).init(params),
                      ema_params=jax.tree.map(jnp.array, params) if cfg.ema else None,
                      losses=jnp.full((total_steps,), jnp.nan, jnp.float32))


def make_train_step(loss_fn: LossFn, cfg: TrainConfig, total_steps: int = 1, *, donate: bool = True):
    """jitted `step(state, batch, key) -> state`; data-parallel when its inputs are sharded. `total_steps` sets
    the learning-rate schedule's length. `donate=False` keeps the input state valid (to call the step
    repeatedly on one state)."""
    tx = make_optimizer(cfg, total_steps)

    def step(state: TrainState, batch, key) -> TrainState:
        if cfg.hflip:
            batch = hflip(batch, jax.random.fold_in(key, AUGMENT_STREAM))
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = None if state.ema_params is None else optax.incremental_update(
            params, state.ema_params, 1.0 - ema_decay(cfg, state.step + 1))
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
                          losses=state.losses.at[state.step].set(loss))

    return xla.jit(step, donate_argnums=(0,) if donate else ())


def total_steps(num_images: int, cfg: TrainConfig) -> int:
    return cfg.epochs * data_lib.steps_per_epoch(num_images, cfg.batch_size)


def snapshot_steps(total: int, count: int) -> tuple[int, ...]:
    """`count` evenly spaced training steps ceil(total k / count), k = 1..count, at which a learning curve samples
    the model: the last is `total` (the trained model); with few steps two snapshots may share a step."""
    return tuple(max(1, -(-total * k // count)) for k in range(1, count + 1))


def _check_finite(state: TrainState, since: int, desc: str, ckpt: Checkpointer) -> None:
    upto = int(state.step)
    losses = np.asarray(state.losses[since:upto])
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        kept = ckpt.steps()
        raise TrainingDiverged(
            f"{desc}: loss became {losses[bad[0]]} at step {since + bad[0]}; the last good checkpoint "
            f"(step {kept[-1] if kept else 'none'}) in {ckpt.directory} is kept. Lower the learning rate "
            f"(e.g. --set ...train.lr=1e-4) or check the data, then rerun the same command to resume.")


def _sampling_params(state: TrainState, cfg: TrainConfig):
    return state.ema_params if cfg.ema else state.params


def train(loss_fn: LossFn, init_params, images: Any, cfg: TrainConfig, ckpt: Checkpointer, *,
          desc: str = "train", mesh: jax.sharding.Mesh | None = None,
          stop_after: int | None = None, snapshots: tuple[int, ...] = (),
          on_snapshot: Callable[[int, Any], None] = lambda step, params: None,
          scalars: Callable[[str, float, int], None] = lambda tag, value, step: None) -> TrainResult:
    """Train to `cfg.epochs`, resuming from the newest checkpoint in `ckpt`.

    `images`: an array, or a pytree of arrays sharing the leading axis (e.g. (images, labels)) that
    `data.batch_at` batches alike and `loss_fn` receives as its batch.
    `stop_after` ends the loop early at that step (after checkpointing), for tests of resume.
    `scalars(tag, value, step)` receives, at every log step, the mean loss since the last one, the
    learning rate and the throughput (e.g. `tensorboard.scalar_writer`).
    `on_snapshot(step, params)` receives the sampling params (the EMA's when on) after each step in `snapshots`
    (`snapshot_steps`), before that step's checkpoint, so a resumed run has made every earlier one.
    """
    n_steps = total_steps(data_lib.num_examples(images), cfg)
    state, resumed = ckpt.restore(init_state(init_params, cfg, n_steps))
    state = state if state is not None else init_state(init_params, cfg, n_steps)
    state = sharding.replicate(jax.tree.map(jnp.array, state), mesh)  # a copy: the step donates its input
    if resumed is not None:
        log.info("%s: resumed from checkpoint step %d of %d", desc, resumed, n_steps)
    step_fn = make_train_step(loss_fn, cfg, n_steps)
    lr_at = learning_rate(cfg, n_steps)
    base_key = jax.random.key(cfg.seed)
    start = int(state.step)
    end = n_steps if stop_after is None else min(stop_after, n_steps)
    checked = start
    t0 = t_log = time.perf_counter()
    with tqdm(total=n_steps, initial=start, desc=desc, unit="step", dynamic_ncols=True,
              mininterval=1.0, disable=None) as bar:
        for s in range(start, end):
            batch = data_lib.batch_at(images, cfg.batch_size, cfg.seed, s)
            state = step_fn(state, sharding.shard_batch(batch, mesh), jax.random.fold_in(base_key, s))
            done = s + 1
            if done % cfg.log_every == 0 or done % cfg.ckpt_every == 0 or done == end:
                _check_finite(state, checked, desc, ckpt)
                now = time.perf_counter()
                for tag, value in (("loss", np.mean(np.asarray(state.losses[checked:done]))), ("learning_rate", float(lr_at(done - 1))),
                                   ("images_per_second", (done - checked) * cfg.batch_size / (now - t_log))):
                    scalars(tag, value, done)
                checked, t_log = done, now
                loss = float(state.losses[s])
                bar.set_postfix(loss=f"{loss:.4f}")
                log.info("%s step %d/%d loss %.5f", desc, done, n_steps, loss)
            if done in snapshots:
                on_snapshot(done, jax.device_get(_sampling_params(state, cfg)))
            if done % cfg.ckpt_every == 0 or done == end:
                ckpt.save(done, state)
            bar.update(1)
    return TrainResult(params=jax.device_get(_sampling_params(state, cfg)), losses=np.asarray(state.losses),
                       resumed_from=resumed, seconds=time.perf_counter() - t0)
