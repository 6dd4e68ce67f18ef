"""(n) The hyperschedule family's windowed sampler vs its dense one, per trained schedule of the preset.

Windowed: each pass reads only its row's window of units in the unit order, after a key/value cache of the
committed ones (`hyperschedule.Window`, `generators.hyperschedule.make_cached_net`). Dense: every pass reads every
token. The same option (ACS k = 0) of each schedule, both from the same params (fresh, perturbed: timings do not
depend on the values), the same seeds: the images must agree (the last column), the time and the FLOPs per image
need not. FLOPs per image are the option's passes x XLA's cost of one pass of its unit (`Generator.flops`). A
schedule whose window is every token samples dense in both: its ratio shows the measurement's own bias and noise
(each pair is timed in both orders, medians over both).
"""

from __future__ import annotations

import dataclasses
import statistics

import jax
import numpy as np

from benchmarks.samplers import perturbed
from benchmarks.timing import Table, ms, time_many
from hybrid_jax import generators
from hybrid_jax.config import get_preset
from hybrid_jax.generators import hyperschedule as hsf


def not_measured() -> str | None:
    return None


def run(presets: list[str], repeats: int, batch: int = 16) -> list[Table]:
    table = Table(f"Hyperschedule sampler, batch {batch}: windowed (KV cache of the committed units) vs dense",
                  ["preset", "option", "passes", "window (units)", "windowed ms/img", "dense ms/img",
                   "dense / windowed", "windowed MFLOP/img", "dense MFLOP/img", "max |image diff|"])
    for name in presets:
        preset = get_preset(name)
        if preset.hyperschedule is None:
            continue
        dense = dataclasses.replace(preset, hyperschedule=dataclasses.replace(preset.hyperschedule, windowed=False))
        params = perturbed(jax.jit(lambda key: hsf.init_params(hsf.make_model(preset), key))(jax.random.key(0)))
        flops = {cfg.hyperschedule.windowed: hsf.pass_flops(cfg, params) for cfg in (preset, dense)}
        keys = generators.stream_keys(np.arange(batch), 0, hsf.STREAM)
        for schedule in preset.hyperschedule.network.schedules:
            w, d = (hsf.option(cfg, schedule, 0) for cfg in (preset, dense))
            contenders = {"w": (w.sample_keys, (params, keys)), "d": (d.sample_keys, (params, keys))}
            # in both orders: the second of a pair was seen up to 15 % slower than the same program first
            both = [time_many(dict(order), repeats=repeats) for order in (contenders.items(),
                                                                          reversed(contenders.items()))]
            median = {k: statistics.median([r for res in both for r in res[k].runs]) for k in contenders}
            images = {k: np.asarray(contenders[k][0](params, keys)) for k in contenders}
            size = hsf.window(preset, schedule).size
            table.add(name, w.name, w.passes, size if size < preset.geometry.num_patches else "all (dense)",
                      ms(median["w"]) / batch, ms(median["d"]) / batch, median["d"] / median["w"],
                      w.flops(flops[True]) / 1e6, d.flops(flops[False]) / 1e6,
                      float(np.abs(images["w"] - images["d"]).max()))
            print(table.row_text(), flush=True)
    table.notes.append("window: the units one pass reads (the committed ones come from the cache), of "
                       f"{get_preset(presets[0]).geometry.num_patches}; a windowed pass attends over the full cache "
                       "and its window, so its FLOPs fall less than its tokens.")
    return [table]
