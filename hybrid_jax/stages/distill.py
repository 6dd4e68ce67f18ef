"""Stage `distill`: progressive distillation of B's corrector (`hybrid_jax.distill`), one resumable round per
halving, each student trained from its teacher's weights; then every student judged against naive DDIM at its
steps, per seed, by the MSE to the trained corrector's DDIM image from the same start (the same AR image, the
same noise), with 95 % bootstrap intervals over the seeds.

The students are options of B's family (`generators.ar_corrector.few_step_options`), so the allocation, the
report and the labeling page judge them beside every other option (quality, FD, seconds, FLOPs).
"""

from __future__ import annotations

import jax
import numpy as np

from hybrid_jax import config as config_lib
from hybrid_jax import distill, generators, io, model_b, stats, tensorboard
from hybrid_jax import train as train_lib
from hybrid_jax.checkpoint import Checkpointer
from hybrid_jax.generators import ar_corrector
from hybrid_jax.rundir import Run, Stage, done_record, fingerprint
from hybrid_jax.stages import data as data_stage
from hybrid_jax.stages import train

STAGE_NAME = "distill"


def _guard(run: Run) -> dict:
    """What a round's student depends on: the training recipe, the round and the trained corrector (and so the
    data); not the judging, so a changed `eval_seeds` re-reads the students."""
    return {"train": config_lib.to_dict(run.cfg.distill.train), "corrector": done_record(run, "corrector")["fingerprint"]}


def _round_dir(run: Run, r: int):
    return run.path(STAGE_NAME, fingerprint(_guard(run)), f"round_{r}")


def _params(run: Run) -> Checkpointer:
    """Every round's student of this preset, saved together."""
    return Checkpointer(run.path(STAGE_NAME, fingerprint(_guard(run)), f"students_{run.cfg.distill.halvings}"),
                        _guard(run))


def _net(run: Run):
    unet = model_b.make_corrector_unet(run.cfg.corrector, run.cfg.data.num_classes)
    return lambda p, x, t, labels: unet.apply({"params": p}, x, t, None, labels)


def _train_rounds(run: Run) -> tuple[dict, list[dict]]:
    """Each round's student ({steps: params}) and its training summary; a finished round is read back."""
    cfg = run.cfg
    data = data_stage.load(run)
    images = (data["train"], data["train_labels"])
    net, teacher = _net(run), train.restore_params(run, "corrector")
    grids = distill.grids(cfg.corrector.start_step, cfg.distill.halvings)
    students, rounds = {}, []
    for r, (grid, student_grid) in enumerate(zip(grids, grids[1:]), 1):
        loss = distill.make_loss(net, net, teacher, r > 1, grid, cfg.corrector.num_timesteps)
        ckpt = Checkpointer(_round_dir(run, r) / "ckpt", {**_guard(run), "round": r})
        result = train_lib.train(loss, teacher, images, cfg.distill.train, ckpt,
                                 desc=f"distill {len(grid)} -> {len(student_grid)} steps", mesh=run.mesh,
                                 scalars=tensorboard.scalar_writer(run.path("tb", STAGE_NAME, f"round_{r}")))
        students[str(len(student_grid))] = teacher = result.params
        rounds.append({"round": r, "teacher_steps": len(grid), "student_steps": len(student_grid),
                       "grid": student_grid.tolist(), "steps": len(result.losses),
                       "first_loss": float(result.losses[0]), "final_loss": float(np.mean(result.losses[-10:])),
                       "resumed_from": result.resumed_from, "seconds": result.seconds})
    return students, rounds


def _corrected(run: Run, params_b: dict, students: dict, seeds: np.ndarray) -> dict[str, np.ndarray]:
    """Every seed's image by each few-step option of B (`generators.ar_corrector.few_step_options`: the teacher, and
    per round the student and naive DDIM), all from the seed's own AR image and start noise."""
    cfg = run.cfg
    params = {ar_corrector.NAME: params_b, ar_corrector.DISTILLED: {"ar": params_b["ar"], "students": students}}
    return {g.name: generators.generate((g,), params, seeds, np.zeros(len(seeds), int), base_seed=cfg.seeds.base_seed,
                                        batch_size=cfg.seeds.batch_size, num_classes=cfg.data.num_classes)
            for g in ar_corrector.few_step_options(cfg)}


def judge(images: dict[str, np.ndarray], rounds: list[dict], rng: np.random.Generator,
          boot: stats.BootstrapConfig) -> list[dict]:
    """Per round: the mean over seeds of each image's MSE to the teacher's, for the student and for naive DDIM at
    its steps, and the student minus naive, each with its 95 % bootstrap interval over the seeds."""
    teacher = images[f"B/corrector DDIM {rounds[0]['teacher_steps']}"]
    mse = lambda x: np.mean(np.square(x - teacher), axis=(1, 2, 3))
    mean = lambda x, axis=-1: np.mean(x, axis=axis)
    out = []
    for r in rounds:
        k = r["student_steps"]
        student, naive = mse(images[f"B/corrector distilled {k}"]), mse(images[f"B/corrector DDIM {k}"])
        figures = {name: {"mean": float(v.mean()), "ci": stats.bootstrap_ci((v,), mean, rng, boot)}
                   for name, v in (("student", student), ("naive DDIM", naive), ("student - naive", student - naive))}
        hi = figures["student - naive"]["ci"][1]
        out.append({"steps": k, "n": len(student), **figures,
                    "verdict": "student closer to the teacher" if hi < 0 else "no better than naive DDIM"})
    return out


def run_stage(run: Run) -> dict:
    cfg = run.cfg
    students, rounds = _train_rounds(run)
    seeds = np.arange(cfg.distill.eval_seeds)
    judged = []
    if rounds:
        _params(run).save(len(rounds), students)
        images = _corrected(run, train.restore_model_b(run), students, seeds)
        judged = judge(images, rounds, np.random.default_rng(cfg.router.seed),
                       stats.BootstrapConfig(n_resamples=cfg.cost.bootstrap))
    io.write_json(run.path(STAGE_NAME, "results.json"), {"rounds": rounds, "judged": judged, "n_seeds": len(seeds),
                                                        "teacher": f"DDIM over the corrector's {cfg.corrector.start_step} "
                                                                   "trained steps"})
    return {"rounds": len(rounds), **{f"student_{j['steps']}_minus_naive_mse": j["student - naive"]["mean"]
                                      for j in judged}}


def restore_option_params(run: Run) -> dict:
    """The params the distilled options (`ar_corrector.DISTILLED`) sample with."""
    grids = distill.grids(run.cfg.corrector.start_step, run.cfg.distill.halvings)
    shape = jax.eval_shape(train.model_specs(run.cfg)["corrector"][2], jax.random.key(0))
    students, _ = _params(run).restore({str(len(g)): shape for g in grids[1:]})
    if students is None:
        raise FileNotFoundError(f"no distilled corrector in {run.workdir}; run the distill stage first")
    return {"ar": train.restore_params(run, "model_b"), "students": students}


def trained_params(run: Run) -> dict:
    """{DISTILLED: its params} when the preset distills, else {}: the allocation's params beside the families'."""
    return {ar_corrector.DISTILLED: restore_option_params(run)} if run.cfg.distill.halvings else {}


def load(run: Run) -> dict:
    return io.read_json(run.path(STAGE_NAME, "results.json"))


STAGE = Stage(STAGE_NAME, run_stage, config=lambda cfg: (cfg.distill, cfg.seeds.batch_size, cfg.seeds.base_seed,
                                                         cfg.cost.bootstrap, cfg.router.seed),
              after=("data", "model_b", "corrector"))
