"""One training stage per network of every generator family (`generators.registry.networks(cfg)`: `model_a`,
`model_b`, `corrector`, then the networks of the families a preset adds): each trains resumably from the data
stage's images (class-conditional when data.class_name names several classes)."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from hybrid_jax import config as config_lib
from hybrid_jax import io, tensorboard, timing
from hybrid_jax import train as train_lib
from hybrid_jax.checkpoint import Checkpointer
from hybrid_jax.config import Preset
from hybrid_jax.generators import registry
from hybrid_jax.study.rundir import Run, Stage, done_record
from hybrid_jax.study.stages import data as data_stage

MODELS = registry.BRIEF_NETWORKS  # the training stages of the brief's pair (the seeds stage samples with them)


def models(cfg: Preset) -> tuple[str, ...]:
    """Every training stage of the preset: one per network of every family."""
    return tuple(n.name for n in registry.networks(cfg))


def added_models(cfg: Preset) -> tuple[str, ...]:
    """The training stages beyond the brief's pair's (`MODELS`): a stage that reads every family lists these after it
    (the pair's reach it through the seeds stage)."""
    return tuple(m for m in models(cfg) if m not in MODELS)


def trained_by(cfg: Preset, model: str) -> tuple[str, ...]:
    """The training stages whose params the options of `model` (`Generator.model`) sample with."""
    return tuple(n.name for n in registry.by_name(cfg, model).networks)


def model_specs(cfg: Preset) -> dict[str, tuple[object, Callable, Callable]]:
    """network name -> (its config section, loss_fn, init(key) -> params)."""
    return {n.name: (n.section(cfg), n.loss(cfg), lambda key, n=n: n.init(cfg, key)) for n in registry.networks(cfg)}


def _guard(run: Run, section) -> dict:
    return {"model": config_lib.to_dict(section), "data": done_record(run, "data")["fingerprint"]}


def _stage_fn(name: str) -> Callable[[Run], dict]:
    def run_stage(run: Run) -> dict:
        section, loss_fn, init = model_specs(run.cfg)[name]
        data = data_stage.load(run)
        images = (data["train"], data["train_labels"])  # one-class models ignore the labels
        ckpt = Checkpointer(run.path(name, "ckpt"), _guard(run, section))
        kept = _snapshots(run, name)
        steps = snapshot_steps(run, name, len(images[0]))
        result = train_lib.train(loss_fn, init(jax.random.key(section.train.seed)), images, section.train, ckpt,
                                 desc=f"train {name}", mesh=run.mesh, snapshots=steps, on_snapshot=kept.save,
                                 scalars=tensorboard.scalar_writer(run.path("tb", name)))
        Checkpointer(run.path(name, "params"), _guard(run, section)).save(len(result.losses), result.params)
        io.write_npz(run.path(name, "losses.npz"), losses=result.losses)
        return {"steps": len(result.losses), "snapshots": list(steps),
                "final_loss": float(np.mean(result.losses[-10:])),
                "first_loss": float(result.losses[0]), "resumed_from": result.resumed_from,
                "seconds": result.seconds, "ema": section.train.ema}
    run_stage.__name__ = f"run_{name}"
    return run_stage


def _snapshots(run: Run, name: str) -> Checkpointer:
    section = model_specs(run.cfg)[name][0]
    return Checkpointer(run.path(name, "snapshots"), _guard(run, section), max_to_keep=None)


def snapshot_steps(run: Run, name: str, num_images: int | None = None) -> tuple[int, ...]:
    """The training steps at which `name`'s sampling params are kept for the learning curves (`<name>.snapshots`
    of them, the last the end of training)."""
    section = model_specs(run.cfg)[name][0]
    n = num_images if num_images is not None else len(data_stage.load(run)["train"])
    return train_lib.snapshot_steps(train_lib.total_steps(n, section.train), section.snapshots)


def restore_params(run: Run, name: str, step: int | None = None):
    """Trained params of "model_a", "model_b" (the decoder) or "corrector" from the work dir; with `step`, its
    snapshot at that training step (`snapshot_steps`)."""
    section, _, init = model_specs(run.cfg)[name]
    ckpt = _snapshots(run, name) if step is not None else Checkpointer(run.path(name, "params"), _guard(run, section))
    params, _ = ckpt.restore(jax.eval_shape(init, jax.random.key(0)), step)
    if params is None:
        raise FileNotFoundError(f"no trained {name} (step {step or 'final'}) in {run.workdir}; run the train stage "
                                "first")
    return params


def restore_option_params(run: Run, model: str, steps: dict[str, int] | None = None):
    """The params an option of `model` (`Generator.model`) samples with: A's U-Net, or B's {"ar", "corrector"};
    `steps` (training stage -> snapshot step) picks snapshots instead of the trained params."""
    steps = steps or {}
    return registry.by_name(run.cfg, model).assemble({name: restore_params(run, name, steps.get(name))
                                                      for name in trained_by(run.cfg, model)})


def restore_model_b(run: Run) -> dict:
    return restore_option_params(run, "model_b")


def step_flops(run: Run, name: str) -> float:
    """FLOPs of one training step of `name` (loss and gradient at its batch size; XLA's cost analysis)."""
    section, loss_fn, _ = model_specs(run.cfg)[name]
    data = data_stage.load(run)
    b = section.train.batch_size
    batch = (data["train"][:b], data["train_labels"][:b])
    return timing.flops(jax.value_and_grad(loss_fn), restore_params(run, name), batch, jax.random.key(0))


def load_losses(run: Run, name: str) -> np.ndarray:
    return io.read_npz(run.path(name, "losses.npz"))["losses"]


def stages(cfg: Preset) -> tuple[Stage, ...]:
    """One training stage per network of the preset's families, fingerprinted by the network's config section (and
    its code's version)."""
    return tuple(Stage(n.name, _stage_fn(n.name), config=lambda cfg, n=n: (n.section(cfg),), after=("data",),
                       version=n.version, fresh=True) for n in registry.networks(cfg))
