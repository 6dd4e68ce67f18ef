"""GPU figures: whole samplers A and B at a large batch, f32 and bf16: ms/image, images/s, MFU.

FLOPs per image are passes x XLA's cost of one pass (`cost.image_flops`). MFU = achieved
FLOP/s / the device's dense peak from its datasheet (`PEAK_FLOPS`): bf16 runs against the
bf16 tensor-core peak, f32 runs against the TF32 peak (XLA's default f32 dot/conv precision
on these GPUs). A device not in the table, or a CPU, gets no MFU. On a CPU the benchmark
measures nothing (the paper Model A at batch 256 would take hours); `measure` runs anywhere,
so the tests exercise it on the `test` preset.
"""

from __future__ import annotations

import functools

import jax

from benchmarks.samplers import perturbed
from benchmarks.timing import Table, gflop, ms, time_many
from hybrid_jax.config import Preset, apply_overrides, get_preset
from hybrid_jax.generators import model_a, model_b
from hybrid_jax.study import cost

BATCH = 256
DTYPES = ("float32", "bfloat16")
TARGET_A_BF16_MS = 25.0  # issue 8: paper Model A in bf16 on an H100, ms per image
PEAK_FLOPS = (  # (device_kind substring, {dtype: dense FLOP/s}); first match wins, so PCIe before SXM
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 378e12}),
    ("H100", {"bfloat16": 989.4e12, "float32": 494.7e12}),
    ("H200", {"bfloat16": 989.4e12, "float32": 494.7e12}),
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
    ("L4", {"bfloat16": 121e12, "float32": 60e12}),
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
    for name, peaks in PEAK_FLOPS:
        if name.lower() in device_kind.lower():
            return peaks[dtype]
    return None


def with_dtype(preset: Preset, dtype: str) -> Preset:
    """The preset with every network's compute dtype set (params stay f32)."""
    fields = ("model_a.unet.dtype", "corrector.unet.dtype", "model_b.decoder.dtype")
    return apply_overrides(preset, [f"{f}={dtype}" for f in fields])


def measure(preset: Preset, batch: int, repeats: int, table: Table, dtypes=DTYPES) -> None:
    """Add one row per (model, dtype) to `table` (columns as in `run`)."""
    device = jax.devices()[0]
    key = jax.random.key(0)
    for dtype in dtypes:
        cfg = with_dtype(preset, dtype)
        pa = perturbed(jax.jit(functools.partial(model_a.init_params, cfg.model_a))(key))
        pb = perturbed(jax.jit(functools.partial(model_b.init_params, cfg.model_b, cfg.corrector))(key))
        sa, sb = model_a.make_sampler(cfg.model_a), model_b.make_sampler(cfg.model_b, cfg.corrector)
        keys = jax.random.split(key, batch)
        flops = cost.image_flops(cfg, cost.pass_flops(cfg, {"model_a": pa, "model_b": pb}))
        res = time_many({"A": (sa.sample_keys, (pa, keys)), "B": (sb.sample_keys, (pb, keys))}, repeats=repeats)
        peak = peak_flops(device.device_kind, dtype)
        for model, passes in (("A", sa.passes), ("B", sb.passes)):
            s_img = res[model].median_s / batch
            achieved = flops[model] / s_img
            target = (("yes" if ms(s_img) <= TARGET_A_BF16_MS else "NO") if (model, dtype) == ("A", "bfloat16")
                      and "H100" in device.device_kind else "")
            table.add(preset.name, model, dtype, batch, passes, ms(s_img), 1.0 / s_img, gflop(flops[model]),
                      achieved / 1e12, "n/a" if peak is None else f"{100 * achieved / peak:.1f} %",
                      res[model].compile_s, target)
            print(table.row_text(), flush=True)


def new_table(batch: int) -> Table:
    device = jax.devices()[0]
    table = Table(f"Whole samplers at batch {batch} on {device.platform}:{device.device_kind}: ms/image, images/s, MFU",
                  ["preset", "model", "dtype", "batch", "passes", "ms/img", "img/s", "GFLOP/img", "TFLOP/s",
                   "MFU", "compile s", f"A bf16 <= {TARGET_A_BF16_MS:g} ms (H100)"])
    table.notes += ["GFLOP/img = passes x XLA's cost analysis of one pass compiled for the CPU (`timing.flops`: on a GPU "
                    "the analysis counts cuDNN convolutions as zero). "
                    "MFU = TFLOP/s / the device's dense datasheet peak (bf16 tensor cores for bf16; TF32 for "
                    "f32); n/a where the device is not in benchmarks/throughput.py's PEAK_FLOPS.",
                    "bf16 = compute dtype of every U-Net and the decoder; params and optimizer state stay f32."]
    return table


def not_measured() -> str | None:
    """Why `run` measures nothing on this machine (None where it measures)."""
    if jax.default_backend() == "cpu":
        return ("needs a GPU or TPU; none was visible to this run (paper Model A at batch 256 takes hours on a CPU); "
                "`BENCHMARKS_GPU.md` holds what a GPU run measured")
    return None


def run(presets: list[str], repeats: int, batch: int = BATCH) -> list[Table]:
    if not_measured():
        return []
    table = new_table(batch)
    for name in presets:
        measure(get_preset(name), batch, repeats, table)
    return [table]
