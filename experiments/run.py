"""`python -m experiments.run`: the whole study, end to end, resumable. Flags in, library calls out."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from hybrid_jax import config as config_lib


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__)
    p.add_argument("--preset", default="quick", choices=sorted(config_lib.PRESETS))
    p.add_argument("--workdir", default=None, help="run directory (default: runs/<preset>)")
    p.add_argument("--data", default=None, help="CIFAR-10 tarball or extracted cifar-10-batches-py folder")
    p.add_argument("--class", dest="class_name", default=None, help="CIFAR-10 class (default: dog)")
    p.add_argument("--labels", default=None, help="human labels CSV (seed,label) to import")
    p.add_argument("--stages", default=None, help="comma-separated subset of stages to run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set model_a.train.epochs=10 (repeatable)")
    p.add_argument("--devices", type=int, default=0,
                   help="data-parallel training and seed sampling over a mesh of N devices (0: no mesh)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from hybrid_jax import pipeline, runlog  # after arg parsing: --help stays fast

    cfg = config_lib.get_preset(args.preset)
    overrides = list(args.set)
    if args.data:
        overrides.append(f"data.path={args.data}")
    elif os.environ.get("HYBRID_JAX_CIFAR10"):
        overrides.append(f"data.path={os.environ['HYBRID_JAX_CIFAR10']}")
    if args.class_name:
        overrides.append(f"data.class_name={args.class_name}")
    try:
        cfg = config_lib.apply_overrides(cfg, overrides)
        workdir = Path(args.workdir or f"runs/{cfg.name}")
        runlog.setup(workdir)
        run = pipeline.open_run(cfg, workdir, labels_csv=args.labels, devices=args.devices)
        only = tuple(args.stages.split(",")) if args.stages else None
        summaries = pipeline.run_stages(run, only)
    except runlog.USER_ERRORS as e:
        logging.getLogger("hybrid_jax").error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    runlog.print_summary(run, summaries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
