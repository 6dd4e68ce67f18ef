"""Progressive distillation (Salimans & Ho 2022): a student that takes one deterministic DDIM step where its
teacher takes two, halving a sampler's steps per round.

A round trains on the teacher's grid of timesteps g_0 > g_1 > ... > g_{N-1} (the last step lands on the clean
image); the student's grid is every other one, `halve(g)`, its step j covering the teacher's steps 2j and 2j + 1
(an odd N leaves the student's last step one teacher step). The target is the x0 that makes one DDIM step of the
student land where the teacher's two steps land (`two_step_target`). The student predicts v = alpha eps -
sigma x0 (x0 = alpha x_t - sigma v) and starts from the teacher's weights: predicting eps would divide its error
by alpha, which the linear schedule drives to 0.0055 at T = 200 (`FAMILIES.md`). Its loss is the x0 error weighted
by max(SNR, 1), the paper's "truncated SNR" weighting.
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax import data as data_lib
from hybrid_jax import diffusion

# (params, x_t, t [b], cond) -> the network's raw output, which a parameterisation below reads as eps or v
NetFn = Callable[[Any, jax.Array, jax.Array, Any], jax.Array]


def halve(grid) -> np.ndarray:
    """The student's grid of a teacher's grid (descending timesteps): every other one, from the first."""
    grid = np.asarray(grid, np.int32)
    if len(grid) < 2:
        raise ValueError(f"a grid of {len(grid)} step cannot be halved")
    return grid[::2]


def grids(teacher_grid, halvings: int) -> tuple[np.ndarray, ...]:
    """The teacher's grid (descending timesteps; the corrector's `depth` consecutive steps, or A's chain respaced),
    then each round's student grid: `halvings + 1` grids, each about half the last (30 -> 15 -> 8 -> 4)."""
    out = [np.asarray(teacher_grid, np.int32)]
    for _ in range(halvings):
        out.append(halve(out[-1]))
    return tuple(out)


def _alpha_sigma(ac: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(alpha, sigma) = (sqrt(a_bar), sqrt(1 - a_bar)) at timesteps t [b]; t < 0 is the clean image (1, 0)."""
    a = jnp.where(t >= 0, ac[jnp.maximum(t, 0)], 1.0)
    return jnp.sqrt(a), jnp.sqrt(1.0 - a)


def _b(v: jax.Array, x: jax.Array) -> jax.Array:
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def x0_from_eps(ac: jax.Array, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    a, s = _alpha_sigma(ac, t)
    return (x_t - _b(s, x_t) * eps) / _b(a, x_t)


def x0_from_v(ac: jax.Array, x_t: jax.Array, t: jax.Array, v: jax.Array) -> jax.Array:
    a, s = _alpha_sigma(ac, t)
    return _b(a, x_t) * x_t - _b(s, x_t) * v


def eps_from_v(ac: jax.Array, x_t: jax.Array, t: jax.Array, v: jax.Array) -> jax.Array:
    """The eps a v-prediction implies (eps = sigma x_t + alpha v), so a v-network runs on the eps chains of
    `diffusion` (`as_eps_fn`)."""
    a, s = _alpha_sigma(ac, t)
    return _b(s, x_t) * x_t + _b(a, x_t) * v


def as_eps_fn(net: NetFn, ac: jax.Array) -> diffusion.EpsFn:
    """A v-predicting network as the eps function of `diffusion.sample_chain`."""
    return lambda params, x, t, cond: eps_from_v(ac, x, t, net(params, x, t, cond).astype(jnp.float32))


def ddim_step(ac: jax.Array, x_t: jax.Array, t: jax.Array, s: jax.Array, x0: jax.Array, clip_x0: bool) -> jax.Array:
    """Deterministic DDIM from t to s (s < 0: the clean image) given the predicted x0 (clipped to [-1, 1] when
    `clip_x0`, eps then re-read from it as `diffusion.ddim_step` does)."""
    x0 = jnp.clip(x0, -1.0, 1.0) if clip_x0 else x0
    a_t, s_t = _alpha_sigma(ac, t)
    a_s, s_s = _alpha_sigma(ac, s)
    eps = (x_t - _b(a_t, x_t) * x0) / _b(s_t, x_t)
    return _b(a_s, x_t) * x0 + _b(s_s, x_t) * eps


def two_step_target(ac: jax.Array, x_t: jax.Array, t: jax.Array, t_mid: jax.Array, t_end: jax.Array,
                    teacher_x0: Callable[[jax.Array, jax.Array], jax.Array], clip_x0: bool = True) -> jax.Array:
    """The x0 whose single DDIM step from t lands on t_end where the teacher's two steps t -> t_mid -> t_end land
    (t_mid = t_end: one teacher step, the last of an odd grid; t_end < 0: the clean image, whose target is the
    teacher's image itself). `teacher_x0(x, t) -> x0`."""
    x_mid = ddim_step(ac, x_t, t, t_mid, teacher_x0(x_t, t), clip_x0)
    two = t_mid != t_end
    x_end = jnp.where(_b(two, x_t), ddim_step(ac, x_mid, t_mid, t_end, teacher_x0(x_mid, t_mid), clip_x0), x_mid)
    a_t, s_t = _alpha_sigma(ac, t)
    a_e, s_e = _alpha_sigma(ac, t_end)
    ratio = s_e / s_t
    return (x_end - _b(ratio, x_t) * x_t) / _b(a_e - ratio * a_t, x_t)


def student_steps(teacher_grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per student step of `halve(teacher_grid)`: (t, t_mid, t_end) of the teacher steps it covers (-1: clean)."""
    g = np.append(np.asarray(teacher_grid, np.int32), [-1, -1])
    j = np.arange(0, len(teacher_grid), 2)
    t_mid = g[j + 1]
    t_end = np.where(t_mid >= 0, g[j + 2], -1)
    return g[j], t_mid, t_end


def truncated_snr(ac: jax.Array, t: jax.Array) -> jax.Array:
    """max(SNR_t, 1), SNR = alpha^2 / sigma^2: the x0 loss's weight per example."""
    a = ac[t]
    return jnp.maximum(a / (1.0 - a), 1.0)


# (images, class labels, key) -> (the network's cond, a loss mask broadcastable to the images or None: every pixel)
Condition = Callable[[jax.Array, jax.Array, jax.Array], tuple[Any, Any]]


def class_condition(images: jax.Array, labels: jax.Array, key: jax.Array) -> tuple[Any, None]:
    """The condition of a network that sees the class label only (B's corrector), its loss on every pixel."""
    del images, key
    return labels, None


def make_loss(student: NetFn, teacher: NetFn, teacher_params, teacher_predicts_v: bool, teacher_grid,
              num_timesteps: int, clip_x0: bool = True, condition: Condition = class_condition) -> Callable:
    """loss(student params, batch, key): one round's distillation loss on real images (batch: images or (images,
    class labels)) noised to a uniformly drawn student step; the teacher's params are fixed (no gradient).
    `teacher_predicts_v`: the first round's teacher is the trained eps-network, later rounds' the students.
    `condition` gives both networks' cond from the batch and the pixels the loss reads (A: a random block given
    the real context, its loss on that block, as A's own training)."""
    sched = diffusion.linear_schedule(num_timesteps)
    ac = sched.alphas_cumprod
    t_all, mid_all, end_all = (jnp.asarray(v) for v in student_steps(teacher_grid))
    read = x0_from_v if teacher_predicts_v else x0_from_eps

    def loss(params, batch, key):
        images, labels = data_lib.images_and_labels(batch)
        k_j, k_noise, k_cond = (jax.random.fold_in(key, i) for i in range(3))
        j = jax.random.randint(k_j, (images.shape[0],), 0, t_all.shape[0])
        t, t_mid, t_end = t_all[j], mid_all[j], end_all[j]
        x_t = diffusion.q_sample(sched, images, t, jax.random.normal(k_noise, images.shape))
        cond, mask = condition(images, labels, k_cond)
        teacher_x0 = lambda x, tt: read(ac, x, tt, teacher(teacher_params, x, tt, cond).astype(jnp.float32))
        target = jax.lax.stop_gradient(two_step_target(ac, x_t, t, t_mid, t_end, teacher_x0, clip_x0))
        x0 = x0_from_v(ac, x_t, t, student(params, x_t, t, cond).astype(jnp.float32))
        chex.assert_equal_shape((x0, target))
        mask = jnp.ones_like(x0[..., :1]) if mask is None else jnp.broadcast_to(mask, x0[..., :1].shape)
        axes = tuple(range(1, x0.ndim))
        per_example = jnp.sum(mask * jnp.square(x0 - target), axis=axes) / (x0.shape[-1] * jnp.sum(mask, axis=axes))
        return jnp.mean(truncated_snr(ac, t) * per_example)

    return loss
