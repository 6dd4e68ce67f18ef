"""Stage `distill`: progressive distillation (`hybrid_jax.distill`) of every family's distilled sampler
(`generators.Distillation`: B's corrector, A per block), one resumable round per halving, each student trained from
its teacher's weights.

The students are options of their families, so the allocation generates their images of every seed once, and the
report, the labeling page and `judge` (each student against naive DDIM at its steps, per seed, by the MSE to the
teacher's DDIM image from the same start) read them from there beside every other option.
"""

from __future__ import annotations

import jax
import numpy as np

from hybrid_jax import config as config_lib
from hybrid_jax import distill, generators, io, stats, tensorboard
from hybrid_jax import train as train_lib
from hybrid_jax.checkpoint import Checkpointer
from hybrid_jax.generators import Distillation
from hybrid_jax.study.rundir import Run, Stage, done_record, fingerprint
from hybrid_jax.study.stages import data as data_stage
from hybrid_jax.study.stages import train

STAGE_NAME = "distill"


def _guard(run: Run, d: Distillation) -> dict:
    """What a round's student depends on: the training recipe, the teacher's grid and the trained network (and so
    the data): a preset with more rounds re-reads the first ones."""
    return {"train": config_lib.to_dict(run.cfg.distill.train), "grid": d.grids[0].tolist(),
            d.network: done_record(run, d.network)["fingerprint"]}


def _dir(run: Run, d: Distillation, *parts: str):
    return run.path(STAGE_NAME, d.name.replace("/", "_"), fingerprint(_guard(run, d)), *parts)


def _params(run: Run, d: Distillation) -> Checkpointer:
    """Every round's student of this distillation, saved together."""
    return Checkpointer(_dir(run, d, f"students_{len(d.grids) - 1}"), _guard(run, d))


def _train_rounds(run: Run, d: Distillation, images) -> tuple[dict, list[dict]]:
    """Each round's student ({steps: params}) and its training summary; a finished round is read back."""
    teacher = train.restore_params(run, d.network)
    students, rounds = {}, []
    for r, (grid, student_grid) in enumerate(zip(d.grids, d.grids[1:]), 1):
        loss = distill.make_loss(d.net, d.net, teacher, r > 1, grid, d.num_timesteps, condition=d.condition)
        ckpt = Checkpointer(_dir(run, d, f"round_{r}", "ckpt"), {**_guard(run, d), "round": r})
        tb = run.path("tb", STAGE_NAME, d.name.replace("/", "_"), f"round_{r}")
        result = train_lib.train(loss, teacher, images, run.cfg.distill.train, ckpt, mesh=run.mesh,
                                 desc=f"distill {d.network} {len(grid)} -> {len(student_grid)} steps",
                                 scalars=tensorboard.scalar_writer(tb))
        students[str(len(student_grid))] = teacher = result.params
        rounds.append({"round": r, "teacher_steps": len(grid), "student_steps": len(student_grid),
                       "grid": student_grid.tolist(), "steps": len(result.losses),
                       "first_loss": float(result.losses[0]), "final_loss": float(np.mean(result.losses[-10:])),
                       "resumed_from": result.resumed_from, "seconds": result.seconds})
    return students, rounds


def judge(images: dict[str, np.ndarray], d: Distillation, rng: np.random.Generator,
          boot: stats.BootstrapConfig) -> list[dict]:
    """Per round, from each option's images of the same seeds ({option name: [n, S, S, 3]}): the mean over seeds of
    each image's MSE to the teacher's, for the student and for naive DDIM at its steps, and the student minus naive,
    each with its 95 % bootstrap interval over the seeds."""
    teacher = images[d.teacher.name]
    mse = lambda x: np.mean(np.square(x - teacher), axis=(1, 2, 3))
    mean = lambda x, axis=-1: np.mean(x, axis=axis)
    out = []
    for g, student_opt, naive_opt in zip(d.grids[1:], d.students, d.naive):
        student, naive = mse(images[student_opt.name]), mse(images[naive_opt.name])
        figures = {name: {"mean": float(v.mean()), "ci": stats.bootstrap_ci((v,), mean, rng, boot)}
                   for name, v in (("student", student), ("naive DDIM", naive), ("student - naive", student - naive))}
        hi = figures["student - naive"]["ci"][1]
        out.append({"steps": len(g), "n": len(student), "student_option": student_opt.name,
                    "naive_option": naive_opt.name, **figures,
                    "verdict": "student closer to the teacher" if hi < 0 else "no better than naive DDIM"})
    return out


def judged(run: Run, images: dict[str, np.ndarray], rng: np.random.Generator, boot: stats.BootstrapConfig
           ) -> list[dict]:
    """Every distillation's record (`load`) with its rounds judged (`judge`) on the allocation's images of every
    seed (none of which trained a student)."""
    records = {r["name"]: r for r in load(run)["distillations"]}
    return [{**records[d.name], "judged": judge(images, d, rng, boot), "n_seeds": len(images[d.teacher.name])}
            for _, d in generators.distillations(run.cfg)]


def run_stage(run: Run) -> dict:
    data = data_stage.load(run)
    images = (data["train"], data["train_labels"])
    results = []
    for _, d in generators.distillations(run.cfg):
        students, rounds = _train_rounds(run, d, images)
        saved = _params(run, d)
        if len(rounds) not in saved.steps():  # a rerun reads every round back to the same students
            saved.save(len(rounds), students)
        results.append({"name": d.name, "network": d.network, "teacher": d.teacher.name, "rounds": rounds,
                        "teacher_grid": f"DDIM over {len(d.grids[0])} of {d.network}'s {d.num_timesteps} trained "
                                        "timesteps"})
    io.write_json(run.path(STAGE_NAME, "results.json"), {"distillations": results})
    return {f"{r['name']} {x['teacher_steps']} -> {x['student_steps']} final loss": x["final_loss"]
            for r in results for x in r["rounds"]}


def trained_params(run: Run) -> dict:
    """{distillation name: {"family": its family's params, "students": each round's student}} of every family's
    distillation in the preset (none: {}): the allocation's params beside the families'."""
    out = {}
    for f, d in generators.distillations(run.cfg):
        shape = jax.eval_shape(train.model_specs(run.cfg)[d.network][2], jax.random.key(0))
        students, _ = _params(run, d).restore({str(len(g)): shape for g in d.grids[1:]})
        if students is None:
            raise FileNotFoundError(f"no distilled {d.network} in {run.workdir}; run the distill stage first")
        out[d.name] = {"family": train.restore_option_params(run, f.name), "students": students}
    return out


def load(run: Run) -> dict:
    return io.read_json(run.path(STAGE_NAME, "results.json"))


def _plan(cfg) -> tuple:
    """What the stage distills: each distillation's name, network and grids."""
    return tuple((d.name, d.network, [g.tolist() for g in d.grids]) for _, d in generators.distillations(cfg))


# version 2: every family's distillations; 3: judged by the report on the allocation's images, not here
def stage(cfg) -> Stage:
    """The stage, after the training stages of the families it distills (another family's retraining leaves it)."""
    distilled = dict.fromkeys(n.name for f, _ in generators.distillations(cfg) for n in f.networks)
    return Stage(STAGE_NAME, run_stage, config=lambda cfg: (cfg.distill, _plan(cfg)), after=("data", *distilled),
                 version=3)
