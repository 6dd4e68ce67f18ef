"""Stages `model_a`, `model_b`, `corrector`: train each network, resumably, from the data stage's images
(class-conditional when data.class_name names several classes)."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from hybrid_jax import config as config_lib
from hybrid_jax import io, model_a, model_b, tensorboard
from hybrid_jax import train as train_lib
from hybrid_jax.checkpoint import Checkpointer
from hybrid_jax.config import Preset
from hybrid_jax.rundir import Run, Stage, done_record
from hybrid_jax.stages import data as data_stage

MODELS = ("model_a", "model_b", "corrector")


def model_specs(cfg: Preset) -> dict[str, tuple[object, Callable, Callable]]:
    """name -> (config section, loss_fn, init(key) -> params)."""
    g, n = cfg.geometry, cfg.data.num_classes
    b_init = lambda key: model_b.init_params(cfg.model_b, cfg.corrector, key, geometry=g, num_classes=n)
    return {
        "model_a": (cfg.model_a, model_a.make_loss(cfg.model_a, geometry=g, num_classes=n),
                    lambda key: model_a.init_params(cfg.model_a, key, geometry=g, num_classes=n)),
        "model_b": (cfg.model_b, model_b.make_ar_loss(cfg.model_b, geometry=g, num_classes=n),
                    lambda key: b_init(key)["ar"]),
        "corrector": (cfg.corrector, model_b.make_corrector_loss(cfg.corrector, num_classes=n),
                      lambda key: b_init(key)["corrector"]),
    }


def _guard(run: Run, section) -> dict:
    return {"model": config_lib.to_dict(section), "data": done_record(run, "data")["fingerprint"]}


def _stage_fn(name: str) -> Callable[[Run], dict]:
    def run_stage(run: Run) -> dict:
        section, loss_fn, init = model_specs(run.cfg)[name]
        data = data_stage.load(run)
        images = (data["train"], data["train_labels"])  # one-class models ignore the labels
        ckpt = Checkpointer(run.path(name, "ckpt"), _guard(run, section))
        result = train_lib.train(loss_fn, init(jax.random.key(section.train.seed)), images, section.train, ckpt,
                                 desc=f"train {name}", mesh=run.mesh,
                                 scalars=tensorboard.scalar_writer(run.path("tb", name)))
        Checkpointer(run.path(name, "params"), _guard(run, section)).save(len(result.losses), result.params)
        io.write_npz(run.path(name, "losses.npz"), losses=result.losses)
        return {"steps": len(result.losses), "final_loss": float(np.mean(result.losses[-10:])),
                "first_loss": float(result.losses[0]), "resumed_from": result.resumed_from,
                "seconds": result.seconds, "ema": section.train.ema}
    run_stage.__name__ = f"run_{name}"
    return run_stage


def restore_params(run: Run, name: str):
    """Trained params of "model_a", "model_b" (the decoder) or "corrector" from the work dir."""
    section, _, init = model_specs(run.cfg)[name]
    ckpt = Checkpointer(run.path(name, "params"), _guard(run, section))
    params, _ = ckpt.restore(jax.eval_shape(init, jax.random.key(0)))
    if params is None:
        raise FileNotFoundError(f"no trained {name} in {run.workdir}; run the train stage first")
    return params


def restore_model_b(run: Run) -> dict:
    return {"ar": restore_params(run, "model_b"), "corrector": restore_params(run, "corrector")}


def load_losses(run: Run, name: str) -> np.ndarray:
    return io.read_npz(run.path(name, "losses.npz"))["losses"]


STAGES = tuple(Stage(name, _stage_fn(name), config=lambda cfg, n=name: (getattr(cfg, n),), after=("data",))
               for name in MODELS)
