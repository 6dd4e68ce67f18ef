"""Progressive distillation (`hybrid_jax.distill`): the target against a NumPy two-step DDIM on Gaussian data with
the exact eps, a tiny student that learns it, one round on the test preset's corrector, and the student as a
sampler option."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hybrid_jax import diffusion, distill
from hybrid_jax.generators import model_a, model_b

T = 100  # the corrector's chain length in the paper preset
S2 = 0.25  # variance of the Gaussian data


def exact_eps(ac):
    """E[eps | x_t] for x0 ~ N(0, S2 I): sigma x_t / (alpha^2 S2 + sigma^2)."""
    def eps(params, x, t, cond):
        a = ac[t].reshape(-1, *(1,) * (x.ndim - 1))
        return jnp.sqrt(1.0 - a) * x / (a * S2 + 1.0 - a)
    return eps


def numpy_two_step_target(ac: np.ndarray, x: np.ndarray, t: int, mid: int, end: int) -> np.ndarray:
    """Salimans & Ho's target by hand in float64: two DDIM steps of the exact eps, then the x0 whose single step
    lands there."""
    def alpha_sigma(s):
        a = 1.0 if s < 0 else ac[s]
        return np.sqrt(a), np.sqrt(1.0 - a)

    def step(x, s, s_next):
        a, sig = alpha_sigma(s)
        eps = sig * x / (a * a * S2 + sig * sig)
        x0 = (x - sig * eps) / a
        a_n, sig_n = alpha_sigma(s_next)
        return a_n * x0 + sig_n * (x - a * x0) / sig

    x_end = step(step(x, t, mid), mid, end) if mid != end else step(x, t, mid)
    a, sig = alpha_sigma(t)
    a_e, sig_e = alpha_sigma(end)
    return (x_end - sig_e / sig * x) / (a_e - sig_e / sig * a)


def _fit_lowers_the_loss(loss, params, images, steps: int):
    """`steps` Adam steps on `loss` with its draws held fixed (key 5); asserts the loss fell by a quarter or more and
    returns the fitted params."""
    tx = optax.adam(1e-3)
    key = jax.random.key(5)

    @jax.jit
    def step(p, opt):
        value, g = jax.value_and_grad(loss)(p, images, key)
        updates, opt = tx.update(g, opt)
        return optax.apply_updates(p, updates), opt, value

    fitted, opt = params, tx.init(params)
    for _ in range(steps):
        fitted, opt, _ = step(fitted, opt)
    before, after = (float(loss(p, images, key)) for p in (params, fitted))
    assert after < 0.75 * before, (after, before)
    return fitted


def test_grids_halve_the_corrector_chain_to_four_steps():
    g = distill.grids(np.arange(29, -1, -1), 3)
    assert [len(x) for x in g] == [30, 15, 8, 4]
    assert g[3].tolist() == [29, 21, 13, 5] and g[1][0] == g[0][0] == 29
    t, mid, end = distill.student_steps(g[2])  # 8 -> 4: each student step covers two teacher steps
    assert t.tolist() == [29, 21, 13, 5] and mid.tolist() == [25, 17, 9, 1] and end.tolist() == [21, 13, 5, -1]
    t, mid, end = distill.student_steps(g[0][:3])  # an odd grid: the last student step is one teacher step
    assert mid.tolist() == [28, -1] and end.tolist() == [27, -1]
    with pytest.raises(ValueError, match="cannot be halved"):
        distill.halve([3])


def test_target_equals_a_numpy_two_step_ddim_on_gaussian_data_with_the_exact_eps():
    ac32 = diffusion.linear_schedule(T).alphas_cumprod
    ac = np.asarray(ac32, np.float64)
    rng = np.random.default_rng(0)
    grid = distill.grids(np.arange(29, -1, -1), 1)[0]
    t, mid, end = distill.student_steps(grid)
    b = len(t)
    x = rng.standard_normal((b, 4, 4, 3))
    eps = exact_eps(ac32)
    got = distill.two_step_target(ac32, jnp.asarray(x, jnp.float32), jnp.asarray(t), jnp.asarray(mid),
                                  jnp.asarray(end), lambda xx, tt: distill.x0_from_eps(ac32, xx, tt, eps(None, xx, tt, None)),
                                  clip_x0=False)
    want = np.stack([numpy_two_step_target(ac, x[i], t[i], mid[i], end[i]) for i in range(b)])
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6, rtol=1e-5)
    # and the target is what it is for: one student DDIM step from t lands where the teacher's two land
    one = distill.ddim_step(ac32, jnp.asarray(x, jnp.float32), jnp.asarray(t), jnp.asarray(end), got, clip_x0=False)
    two = np.stack([numpy_two_step_target(ac, x[i], t[i], mid[i], -1) if end[i] < 0 else np.nan * x[i]
                    for i in range(b)])
    np.testing.assert_allclose(np.asarray(one)[end < 0], two[end < 0], atol=1e-5)


def test_a_v_teacher_gives_the_eps_teachers_loss():
    """Rounds after the first distil a v-predicting teacher: the exact teacher read as v gives the same loss as read
    as eps, for any student, batch and draw."""
    ac = diffusion.linear_schedule(T).alphas_cumprod
    eps = exact_eps(ac)

    def exact_v(params, x, t, cond):  # v = alpha eps - sigma x0, x0 = (x - sigma eps) / alpha
        a = jnp.sqrt(ac[t]).reshape(-1, *(1,) * (x.ndim - 1))
        s = jnp.sqrt(1.0 - ac[t]).reshape(a.shape)
        e = eps(params, x, t, cond)
        return a * e - s * (x - s * e) / a

    student = lambda w, x, t, cond: w * x
    grid = distill.grids(np.arange(29, -1, -1), 1)[0]
    data = jnp.asarray(np.sqrt(S2) * np.random.default_rng(4).standard_normal((16, 4, 4, 3)), jnp.float32)
    losses = [distill.make_loss(student, teacher, None, as_v, grid, T, clip_x0=False)(0.3, data, jax.random.key(0))
              for teacher, as_v in ((eps, False), (exact_v, True))]
    np.testing.assert_allclose(*losses, rtol=1e-4)


def test_v_and_eps_parameterisations_agree():
    ac = diffusion.linear_schedule(T).alphas_cumprod
    rng = np.random.default_rng(1)
    x0, eps = (jnp.asarray(rng.standard_normal((3, 2, 2, 3)), jnp.float32) for _ in range(2))
    t = jnp.array([0, 40, 99])
    a, s = np.sqrt(np.asarray(ac)[t]), np.sqrt(1 - np.asarray(ac)[t])
    x_t = a[:, None, None, None] * x0 + s[:, None, None, None] * eps
    v = a[:, None, None, None] * eps - s[:, None, None, None] * x0
    np.testing.assert_allclose(distill.x0_from_v(ac, x_t, t, v), x0, atol=1e-5)
    np.testing.assert_allclose(distill.x0_from_eps(ac, x_t, t, eps), x0, atol=1e-4)
    np.testing.assert_allclose(distill.eps_from_v(ac, x_t, t, v), eps, atol=1e-5)


def test_a_tiny_student_learns_the_two_step_teacher_in_seconds():
    """A student with one scale per timestep (v = w[t] x_t, exact for Gaussian data) distilled from the exact
    eps: the loss falls a hundredfold and its 4-step DDIM sampler lands where the teacher's 8 steps land."""
    ac = diffusion.linear_schedule(T).alphas_cumprod
    teacher_grid = distill.grids(np.arange(29, -1, -1), 2)[1]  # 15 -> 8
    student = lambda w, x, t, cond: w[t].reshape(-1, 1, 1, 1) * x
    loss = distill.make_loss(student, exact_eps(ac), None, False, teacher_grid, T, clip_x0=False)
    data = jnp.asarray(np.sqrt(S2) * np.random.default_rng(2).standard_normal((256, 4, 4, 3)), jnp.float32)
    tx = optax.adam(0.05)
    w = jnp.zeros(T)
    opt = tx.init(w)

    @jax.jit
    def step(w, opt, key):
        batch = data[jax.random.choice(key, 256, (64,))]
        value, g = jax.value_and_grad(loss)(w, batch, key)
        updates, opt = tx.update(g, opt)
        return optax.apply_updates(w, updates), opt, value

    losses = []
    for i in range(400):
        w, opt, value = step(w, opt, jax.random.key(i))
        losses.append(float(value))
    assert np.mean(losses[-20:]) < np.mean(losses[:5]) / 100, (losses[:5], losses[-20:])
    x = jnp.asarray(np.random.default_rng(3).standard_normal((8, 4, 4, 3)), jnp.float32)
    keys = jax.random.split(jax.random.key(0), 8)
    sample = lambda fn, params, grid: diffusion.sample_chain(fn, params, diffusion.ddim_chain(T, grid), x, keys,
                                                             clip_x0=False)
    teacher = sample(exact_eps(ac), None, teacher_grid)
    distilled = sample(distill.as_eps_fn(student, ac), w, distill.halve(teacher_grid))
    naive = sample(exact_eps(ac), None, distill.halve(teacher_grid))
    err = lambda y: float(jnp.mean(jnp.square(y - teacher)))
    assert err(distilled) < 1e-4 and err(distilled) < err(naive) / 10, (err(distilled), err(naive))


def test_one_round_on_the_test_preset_corrector_lowers_the_loss(preset, stand_in_images):
    """One halving of the test preset's corrector (perturbed, untrained: the teacher) from the teacher's own weights,
    on 8 stand-in crops of 16 x 16 (the U-Net is size-agnostic; a quarter of the work), with the draws of t and noise
    held fixed so that 60 Adam steps show it: the loss falls. (The stage's own training loop runs in the pipeline
    tests; that a student learns the real task, the Gaussian test above.) The student then runs as B's corrector
    from the start naive DDIM uses."""
    from tests.conftest import perturb_params
    c = preset.corrector
    unet = model_b.make_corrector_unet(c)
    images = jnp.asarray(stand_in_images[:8, :16, :16])
    params = perturb_params(unet.init(jax.random.key(0), images[:1], jnp.zeros((1,), jnp.int32))["params"], 3)
    net = lambda p, x, t, labels: unet.apply({"params": p}, x, t, None, labels)
    grid = distill.grids(np.arange(c.start_step - 1, -1, -1), 1)
    loss = distill.make_loss(net, net, params, False, grid[0], c.num_timesteps)
    student = _fit_lowers_the_loss(loss, params, images, 60)
    make = lambda **kw: model_b.make_sampler(preset.model_b, c, grid=grid[1], ddim=True, **kw)
    v_sampler, naive = make(v_prediction=True), make()
    assert v_sampler.passes == naive.passes == preset.geometry.num_patches + len(grid[1])
    keys = jax.random.split(jax.random.key(1), 4)
    full = perturb_params(model_b.init_params(preset.model_b, c, jax.random.key(0))["corrector"], 3)  # 32 x 32
    ar = jnp.asarray(stand_in_images[:4])
    out_s, out_n = (np.asarray(s.correct(full, ar, keys)) for s in (v_sampler, naive))  # one start, two readings
    assert out_s.shape == out_n.shape == ar.shape and np.all(np.abs(out_s) <= 1.0)
    assert not np.allclose(out_s, out_n)
    with pytest.raises(ValueError, match="starts at depth - 1"):
        model_b.make_sampler(preset.model_b, c, grid=[1, 0], ddim=True)


def test_a_per_block_reads_only_the_target_block_and_one_round_lowers_its_loss(preset, model_a_params,
                                                                                stand_in_images):
    """A's distillation (`generators.blockwise.distillations`): the loss reads the student only on the random target
    block A's own training draws (an output changed elsewhere changes nothing), one round on the test preset's A
    lowers it (fixed draws, 40 Adam steps), and the student samples as A's option with the passes of its grid,
    from the noise its teacher and naive DDIM start from."""
    from hybrid_jax.config import override
    from hybrid_jax.generators import blockwise
    from tests.conftest import perturb_params
    cfg = override(preset, "blockwise.halvings", "1")
    (d,) = blockwise.distillations(cfg)
    assert [len(g) for g in d.grids] == [4, 2] and d.network == "model_a"
    params = perturb_params(model_a_params, 3)
    images = (jnp.asarray(stand_in_images[:8]), jnp.zeros((8,), jnp.int32))
    loss = distill.make_loss(d.net, d.net, params, False, d.grids[0], d.num_timesteps, condition=d.condition)
    outside = lambda p, x, t, cond: d.net(p, x, t, cond) + 1e3 * (1.0 - cond[0][..., -1:])  # off the target block
    loss_outside = distill.make_loss(outside, d.net, params, False, d.grids[0], d.num_timesteps, condition=d.condition)
    key = jax.random.key(5)
    np.testing.assert_allclose(loss_outside(params, images, key), loss(params, images, key), rtol=1e-5)
    student = _fit_lowers_the_loss(loss, params, images, 40)
    trained = {"family": params, "students": {"2": student}}
    keys = jax.random.split(jax.random.key(1), 3)
    assert [g.passes for g in d.options] == [4 * 4, 4 * 2, 4 * 2]
    out = {g.name: np.asarray(g.sample_keys(trained if g.model == d.name else params, keys))
           for g in (*d.students, *d.naive)}  # (the teacher's sampler: the pipeline test)
    assert all(o.shape == (3, 32, 32, 3) and np.all(np.abs(o) <= 1.0) for o in out.values())
    assert not np.allclose(out["A/distilled 2 steps"], out["A/DDIM 2 steps"])
    with pytest.raises(ValueError, match="pure noise"):
        model_a.make_sampler(cfg.model_a, grid=[2, 0])
