"""`python -m experiments.run`: the whole study, end to end, resumable. Flags in, library calls out."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from hybrid_jax import config as config_lib

DEFAULT_PRESET = "quick"


_EPILOG = """\
presets (--preset):
{presets}

stages (--stages runs a subset; each is skipped when done with the same inputs):
  the data, one training stage per network of each generator family, then the study's
  stages; --list-stages prints them in order for the preset and its --set values

data (--data; default: automatic):
  automatic    $HYBRID_JAX_CIFAR10, else CIFAR-10 prepared in tensorflow-datasets, else the
               official tarball, downloaded once (MD5-checked) into ~/.cache/hybrid_jax (or
               $XDG_CACHE_HOME/hybrid_jax), else (--offline, or no network) the embedded
               stand-in images, which are not CIFAR-10
  PATH         the official cifar-10-python.tar.gz or its extracted cifar-10-batches-py folder
  tfds:NAME    an image data set prepared in tensorflow-datasets, e.g. tfds:cifar10 or
               tfds:imagenet_resized/64x64; --class is one of its label names
  stand-in     the embedded stand-in images
"""


def _stage_list(text: str) -> tuple[str, ...]:
    """Stage names as given; the pipeline checks them against the preset's stages before any work."""
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"no stage named in {text!r}; --list-stages prints them")
    return names


def parse_args(argv=None) -> argparse.Namespace:
    presets = "\n".join(f"  {name:<12} {config_lib.PRESET_DESCRIPTIONS.get(name, '')}".rstrip()
                        for name in config_lib.PRESETS)
    p = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=_EPILOG.format(presets=presets))
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=list(config_lib.PRESETS),
                   help=f"named config (default: {DEFAULT_PRESET}; list below)")
    p.add_argument("--workdir", default=None, help="run directory (default: runs/<preset>, e.g. runs/quick)")
    p.add_argument("--data", default=None, metavar="PATH|tfds:NAME|stand-in",
                   help="where the training images come from (default: automatic; see below)")
    p.add_argument("--class", dest="class_name", default=None,
                   help="class(es) to train on (default: dog; a CIFAR-10 class, or a label name of tfds:NAME; "
                        "several comma-separated, e.g. dog,cat,horse, or all: class-conditional models)")
    p.add_argument("--offline", action="store_true",
                   help="never download: without local data, use the embedded stand-in (also $HYBRID_JAX_OFFLINE=1)")
    p.add_argument("--labels", default=None, help="human labels CSV (seed,label) to import")
    p.add_argument("--stages", default=None, type=_stage_list, metavar="STAGE[,STAGE...]",
                   help="comma-separated subset of stages to run (--list-stages prints them)")
    p.add_argument("--list-stages", action="store_true",
                   help="print the preset's stages in order, one per line, and exit")
    p.add_argument("--set", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config fields, e.g. --set model_a.train.epochs=10 seeds.num_seeds=50 "
                        "(repeatable)")
    p.add_argument("--no-compile-cache", action="store_true",
                   default=os.environ.get("HYBRID_JAX_COMPILE_CACHE", "1") == "0",
                   help="do not reuse compiled programs across runs (default: cached in <workdir>/cache/jax; "
                        "also $HYBRID_JAX_COMPILE_CACHE=0)")
    p.add_argument("--devices", type=int, default=0, metavar="N",
                   help="data-parallel training, sampling, routing and cost over a mesh of N devices (0: no mesh); "
                        "with --distributed, the devices of every process")
    p.add_argument("--distributed", action="store_true",
                   help="join a multi-process run first (jax.distributed.initialize; see the next three flags)")
    p.add_argument("--coordinator", default=os.environ.get("JAX_COORDINATOR_ADDRESS"), metavar="HOST:PORT",
                   help="address of process 0 (default: $JAX_COORDINATOR_ADDRESS, else JAX's cluster detection)")
    p.add_argument("--num-processes", type=int, default=_env_int("JAX_NUM_PROCESSES"), metavar="N",
                   help="number of processes (default: $JAX_NUM_PROCESSES, else JAX's cluster detection)")
    p.add_argument("--process-id", type=int, default=_env_int("JAX_PROCESS_ID"), metavar="I",
                   help="this process's index, 0..N-1 (default: $JAX_PROCESS_ID, else JAX's cluster detection)")
    return p.parse_args(argv)


def _env_int(name: str) -> int | None:
    return int(os.environ[name]) if os.environ.get(name) else None


def distributed(args: argparse.Namespace):
    """The `sharding.Distributed` the flags ask for, or None (one process, nothing initialised)."""
    from hybrid_jax import sharding

    return sharding.Distributed(args.coordinator, args.num_processes, args.process_id) if args.distributed else None


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The `key=value` config overrides the flags stand for, in the order they apply."""
    overrides = [item for group in args.set for item in group]
    if args.data:
        overrides.append(f"data.path={args.data}")
    elif os.environ.get("HYBRID_JAX_CIFAR10"):
        overrides.append(f"data.path={os.environ['HYBRID_JAX_CIFAR10']}")
    if args.class_name:
        overrides.append(f"data.class_name={args.class_name}")
    if args.offline:
        overrides.append("data.offline=true")
    return overrides


def main(argv=None) -> int:
    args = parse_args(argv)
    from hybrid_jax import data as data_lib  # after arg parsing: --help stays fast
    from hybrid_jax import sharding
    from hybrid_jax.study import pipeline, rundir, runlog

    logging_on = False
    try:
        cfg = config_lib.apply_overrides(config_lib.get_preset(args.preset), config_overrides(args))
        cfg = dataclasses.replace(cfg, data=data_lib.resolve_all_classes(cfg.data))  # `all` of a tfds data set
        if args.list_stages:
            print("\n".join(pipeline.stage_names(cfg)))
            return 0
        if (dist := distributed(args)) is not None:
            sharding.initialize(dist)
        sharding.check_devices(args.devices)
        workdir = Path(args.workdir or f"runs/{cfg.name}")
        # every input named on the command line, read and checked before anything is written
        pipeline.check_inputs(pipeline.Run(cfg, workdir, args.labels, args.devices), args.stages)
        runlog.setup(workdir)
        logging_on = True
        with rundir.lock(workdir):
            if not args.no_compile_cache:
                runlog.compile_cache(workdir / "cache" / "jax")
            run = pipeline.open_run(cfg, workdir, labels_csv=args.labels, devices=args.devices)
            summaries = pipeline.run_stages(run, args.stages)
    except runlog.USER_ERRORS as e:
        if logging_on:
            logging.getLogger("hybrid_jax").error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    runlog.print_summary(run, summaries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
