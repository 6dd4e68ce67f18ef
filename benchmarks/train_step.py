"""GPU figures: one train step of Model A, Model B's decoder and the corrector at the preset's
batch size: ms/step, images/s, TFLOP/s, MFU.

The step is the training loop's own (`train.make_train_step`: loss, gradients, clipped Adam,
EMA), on random images of the preset's geometry, in the networks' configured dtype (f32 in the
brief). FLOPs per step come from XLA's cost analysis of the step compiled for the CPU (`timing.flops`:
GPU programs hide their convolutions from the analysis); MFU is against the
device's dense peak as in `benchmarks/throughput.py`. Anchors from outside this project: DDPM's
CIFAR-10 model trained at 21 steps/s x 128 images on a TPU v3-8; a PyTorch CIFAR-10 DDPM reaches
16.5 TFLOP/s on an A100. On a CPU `run` measures nothing (paper steps take minutes each there);
`measure` runs anywhere, so the tests exercise it on the `test` preset.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks.throughput import not_measured, peak_flops  # noqa: F401  (same rule: GPU or TPU only)
from benchmarks.timing import Table, ms, time_many, xla_flops
from hybrid_jax import timing as timing_lib
from hybrid_jax import train as train_lib
from hybrid_jax.config import Preset, get_preset
from hybrid_jax.study.stages.train import model_specs


def measure(preset: Preset, repeats: int, table: Table) -> None:
    """Add one row per network to `table` (columns as in `new_table`)."""
    device = jax.devices()[0]
    key = jax.random.key(0)
    n_classes, image_shape = preset.data.num_classes, preset.geometry.image_shape
    contenders, sizes = {}, {}
    for name, (section, loss_fn, init) in model_specs(preset).items():
        bs = section.train.batch_size
        batch = (jax.random.uniform(jax.random.fold_in(key, 1), (bs, *image_shape), minval=-1.0, maxval=1.0),
                 jnp.arange(bs, dtype=jnp.int32) % n_classes)
        state = train_lib.init_state(jax.jit(init)(key), section.train, total_steps=1)
        step = train_lib.make_train_step(loss_fn, section.train, donate=False)  # timed on one state, repeatedly
        contenders[name] = (step, (state, batch, jax.random.fold_in(key, 2)))
        sizes[name] = (bs, section)
    res = time_many(contenders, repeats=repeats)
    for name, timing in res.items():
        bs, section = sizes[name]
        dtype = getattr(getattr(section, "unet", None) or section.decoder, "dtype")
        flops = (xla_flops(timing.compiled) if jax.default_backend() == "cpu"  # already the CPU program
                 else timing_lib.flops(contenders[name][0], *contenders[name][1]))  # counted on the CPU (see there)
        peak = peak_flops(device.device_kind, dtype)
        achieved = flops / timing.median_s
        table.add(preset.name, name, dtype, bs, ms(timing.median_s), bs / timing.median_s, flops / 1e12,
                  achieved / 1e12, "n/a" if peak is None else f"{100 * achieved / peak:.1f} %", timing.compile_s)
        print(table.row_text(), flush=True)


def new_table() -> Table:
    device = jax.devices()[0]
    table = Table(f"Train step at the preset's batch size on {device.platform}:{device.device_kind}",
                  ["preset", "network", "dtype", "batch", "ms/step", "img/s", "TFLOP/step", "TFLOP/s", "MFU",
                   "compile s"])
    table.notes += ["One step of the training loop (loss, gradients, clipped Adam, EMA), median of the repeats; "
                    "TFLOP/step from XLA's cost analysis of the step compiled for the CPU (the GPU's hides cuDNN "
                    "convolutions); MFU against the dense datasheet peak (TF32 for f32).",
                    "Anchors: DDPM's CIFAR-10 model, 21 steps/s x 128 images = 2.7k img/s on a TPU v3-8; a PyTorch "
                    "CIFAR-10 DDPM at 16.5 TFLOP/s on an A100."]
    return table


def run(presets: list[str], repeats: int) -> list[Table]:
    if not_measured():
        return []
    table = new_table()
    for name in presets:
        measure(get_preset(name), repeats, table)
    return [table]
