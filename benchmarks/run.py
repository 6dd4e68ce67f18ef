"""Run the benchmarks, print their tables, and optionally write them as markdown.

    python -m benchmarks.run [--preset quick|paper|quick,paper]
                             [--only unet,samplers,kv,router,routed,throughput,router_stage,labeler,compile_cache,
                                    train_step,paper_shapes,evaluation_cost,hyperschedule]
                             [--out BENCHMARKS.md] [--repeats N]

Needs the `bench` extra (torch CPU + diffusers) for the U-Net comparison only.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import platform
import shlex
import sys
import time

import benchmarks  # noqa: F401  (sets OMP_WAIT_POLICY before torch can be imported)
from benchmarks.timing import Table, num_cores
from hybrid_jax import io

BENCHMARKS = {  # name -> (module, what it measures)
    "unet": ("benchmarks.unet", "(a) one U-Net pass, ours vs diffusers UNet2DModel"),
    "samplers": ("benchmarks.samplers", "(b) full samplers A and B, overhead over bare passes, FLOPs, scan unroll"),
    "kv": ("benchmarks.kv", "(c) KV-cached AR loop vs prefix recompute"),
    "router": ("benchmarks.router_probe", "(d) router probe: JAX trees in-graph vs sklearn on the host"),
    "routed": ("benchmarks.routed", "(e) routed pipeline throughput vs the ideal mix"),
    "throughput": ("benchmarks.throughput", "GPU: whole samplers at batch 256, f32 and bf16, ms/image, images/s, MFU"),
    "router_stage": ("benchmarks.router_stage", "(f) router study: the recipe cross-fitted, cold cache, wall time"),
    "labeler": ("benchmarks.labeler", "(h) labeler: classifier + score training, scoring 600 seeds, validation AUCs"),
    "compile_cache": ("benchmarks.compile_cache", "(i) persistent compilation cache: a stage rerun with vs without it"),
    "train_step": ("benchmarks.train_step", "GPU: train steps of A, B and the corrector at the preset's batch size"),
    "paper_shapes": ("benchmarks.paper_shapes", "(j) every stage at paper shapes end to end: seconds, peak memory"),
    "evaluation_cost": ("benchmarks.evaluation_cost", "(k) evaluation vs training: each stage's seconds of a whole run"),
    "hyperschedule": ("benchmarks.hyperschedule", "(n) hyperschedule sampler: windowed with a KV cache vs dense"),
}

KEEP_MARKER = "<!-- Hand-written notes below this line are kept when benchmarks.run rewrites the file. -->"

TARGETS = """\
## What each figure is, and its target

| benchmark | figure | target |
|---|---|---|
| (a) U-Net pass | time of one pass of our jitted Flax U-Net / time of diffusers' `UNet2DModel` with the same architecture (parameter counts printed, within 5 %), batch 1 and 16, CPU | ratio <= 1.0 |
| (b) samplers | sampler time / (passes x time of one bare pass), per image, batch 1 | <= 1.03 |
| (b) FLOPs | FLOPs per pass from XLA's cost analysis (`jit(f).lower(...).compile().cost_analysis()`); whether the whole-sampler analysis multiplies the scan by its trip count | report |
| (b) scan unroll | compile and run time of Model A's sampler at `model_a.scan_unroll` = 1, 2, 4 | report (keep the scan) |
| (c) KV cache | 16 AR steps with the KV cache vs recomputing the prefix every step; per-step time vs position | cached faster; cached per-step time flat |
| (d) router probe | ar_prefix(12) + features + JAX router in one jitted graph vs the same features + sklearn `predict_proba` on the host, batch 1 and 256 | report (brief: 2.3 ms/img probe overhead on a T4) |
| (e) routed pipeline | time per image of the routed pipeline / (share_A x t_A + share_B x t_B), samplers alone measured side by side | report (close to 1: the probe is cheap and B resumes from its prefix) |
| (f) router study | wall time of `crossfit.run_study` (ablation -> fit cross-fitted in 10 folds + 30 splits + the deployed fit) on synthetic 600 x 24 features, cold cache, all cores | paper <= 10 min on 2 cores |
| (h) labeler | training (classifier + score) and scoring time of the labels stage's score, with its validation (`benchmarks/labeler.py`) | scoring 600 seeds <= 60 s; training <= 5 min at quick scale; test preset a few seconds |
| (i) compile cache | wall and stage seconds of `python -m experiments.run --stages seeds` rerun in a fresh process, with the work dir's compilation cache vs `--no-compile-cache`, alternating | report (cached faster) |
| (j) paper shapes | seconds and peak memory (host RSS; device allocator where reported) per stage of `python -m experiments.run --preset paper-shapes --offline` in a fresh process (`benchmarks/paper_shapes.py`) | all stages <= 30 min on 2 CPU cores |
| (k) evaluation cost | seconds of each stage of `python -m experiments.run --preset quick --offline` in a fresh process, training (model_a + model_b + corrector) vs evaluation (every later stage); with `--baseline REV` the same trained work dir judged by that revision's code beside it (`benchmarks/evaluation_cost.py`) | evaluation <= 0.5 x training (quick) |
| (n) hyperschedule sampler | per trained schedule (ACS k = 0), batch 16: seconds per image windowed (each pass its row's window of units after a KV cache of the committed ones) and dense side by side, FLOPs per image of each, and the largest image difference (`benchmarks/hyperschedule.py`) | the same images (<= 1e-4); windowed no slower, fewer FLOPs where the window is smaller than the image |
| GPU | train step of A, B's decoder and the corrector at the paper batch size: ms/step, images/s, TFLOP/s, MFU (`benchmarks/train_step.py`) | report (anchors: DDPM 21 steps/s x 128 on a TPU v3-8; a PyTorch DDPM at 16.5 TFLOP/s on an A100) |
| GPU | paper A and B, batch 256, f32 and bf16: ms/img, images/s, MFU (`benchmarks/throughput.py`); A in bf16 on an H100 <= 25 ms/img | needs a GPU |

Every ratio is measured side by side in one process: contenders are compiled ahead of time
(compile seconds reported separately), warmed up once, then timed in alternation; the
figure is the median of the repeats, with `jax.block_until_ready` around every JAX call.
torch runs under `torch.inference_mode()` with as many threads as the cores JAX uses and
`OMP_WAIT_POLICY=PASSIVE` (see `benchmarks/__init__.py`).
"""


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def environment() -> dict[str, str]:
    import jax

    devices = jax.devices()
    return {
        "date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "jax.devices()": ", ".join(f"{d.platform}:{d.device_kind}" for d in devices),
        "CPU": f"{_cpu_model()}, {num_cores()} cores available to this process",
        "python": platform.python_version(),
        "versions": ", ".join(f"{p} {_version(p)}" for p in ("jax", "jaxlib", "flax", "torch", "diffusers",
                                                             "numpy", "scikit-learn")),
        "load average (1/5/15 min) at start": _loadavg(),
    }


def gpu_sentence(env_devices: str) -> str:
    if "gpu" in env_devices.lower() or "cuda" in env_devices.lower():
        return "A GPU was visible to this run; the GPU section below lists what was measured on it."
    return ("**No GPU was visible to this run**: every figure here was measured on the CPU listed above, and "
            "nothing here estimates a GPU figure. The GPU figures (paper A and B at batch 256 in f32 and bf16, "
            "ms/image, images/s, MFU, the <= 25 ms/image bf16 H100 target) are measured by `bash benchmarks/gpu.sh` "
            "on a GPU machine, into `BENCHMARKS_GPU.md`.")


def to_markdown(env: dict[str, str], command: str, sections: list[tuple[str, list[Table], str]],
                wall_s: float) -> str:
    out = ["# Benchmarks", "",
           "Generated by `benchmarks/run.py`; re-run the command below to refresh this file.", "",
           f"Command: `{command}`", "", "## Machine and versions", ""]
    out += [f"- {k}: {v}" for k, v in env.items()]
    out += [f"- load average (1/5/15 min) at end: {_loadavg()}",
            f"- total benchmark wall time: {wall_s / 60:.1f} min", "",
            "The machine is shared with other jobs (see the load averages): absolute times are noisy, the "
            "side-by-side ratios much less so.", "", gpu_sentence(env["jax.devices()"]), "", TARGETS]
    out += ["## Results", ""]
    for desc, tables, why in sections:
        if not tables:
            out += [f"### {desc}", "", f"Not measured: {why}.", ""]
        for t in tables:
            out += [t.to_markdown()]
    return "\n".join(out)


def write(path: str, markdown: str) -> None:
    """Write the report to `path`, keeping the hand-written notes below KEEP_MARKER of the old file."""
    kept = ""
    try:
        with open(path) as f:
            old = f.read()
        if KEEP_MARKER in old:
            kept = old[old.index(KEEP_MARKER) + len(KEEP_MARKER):]
    except FileNotFoundError:
        pass
    io.write_text(path, markdown + "\n" + KEEP_MARKER + (kept or "\n"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick", help="preset(s), comma separated: quick, paper (default quick)")
    p.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma separated subset of {','.join(BENCHMARKS)}")
    p.add_argument("--out", default=None, help="write the markdown report to this file (e.g. BENCHMARKS.md)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per contender (median reported)")
    p.add_argument("--paper-a-steps", type=int, default=5,
                   help="steps_per_block of the paper Model A sampler run (200 = the full 800-pass sampler)")
    args = p.parse_args(argv)
    args.presets = [s.strip() for s in args.preset.split(",") if s.strip()]
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [b for b in args.only if b not in BENCHMARKS]
    if bad:
        p.error(f"unknown benchmark(s) {bad}; choose from {list(BENCHMARKS)}")
    for name in args.presets:
        if name not in ("quick", "paper"):
            p.error(f"unknown preset {name!r}; choose quick or paper")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    env = environment()
    for k, v in env.items():
        print(f"{k}: {v}")
    print(gpu_sentence(env["jax.devices()"]).replace("**", ""), flush=True)
    t0 = time.perf_counter()
    sections = []
    for name in args.only:
        module_name, desc = BENCHMARKS[name]
        print(f"\n### {desc}", flush=True)
        module = importlib.import_module(module_name)
        t1 = time.perf_counter()
        why = (getattr(module, "not_measured", lambda: None)()
               or "no table for the chosen presets (see the module's docstring)")
        try:
            if name == "samplers":
                tables = module.run(args.presets, args.repeats, paper_a_steps=args.paper_a_steps)
            else:
                tables = module.run(args.presets, args.repeats)
        except ImportError as e:  # torch/diffusers missing: the other benchmarks still run
            tables, why = [], f"{e}; install the bench extra: pip install -e '.[bench]'"
        for t in tables:
            print(t.to_text(), flush=True)
        if not tables:
            print(f"not measured: {why}")
        print(f"({name}: {time.perf_counter() - t1:.0f} s)", flush=True)
        sections.append((desc, tables, why))
        if args.out:  # after every benchmark: a run stopped half-way keeps what it measured
            write(args.out, to_markdown(env, command, sections, time.perf_counter() - t0))
    print(f"\ntotal: {(time.perf_counter() - t0) / 60:.1f} min")
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
