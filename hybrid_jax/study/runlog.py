"""Run logging (one log file per work dir), the errors a user can act on, and the end-of-run summary."""

from __future__ import annotations

import logging
from pathlib import Path

import jax

from hybrid_jax import checkpoint, config, data, io, sharding, train
from hybrid_jax.quality import labels
from hybrid_jax.routing import router
from hybrid_jax.study import pipeline

USER_ERRORS = (config.ConfigError, data.DataError, checkpoint.CheckpointMismatch, pipeline.RunDirError,
               labels.LabelError, router.RouterError, io.WriteError, train.TrainingDiverged, sharding.MeshError,
               FileNotFoundError)


def setup(workdir: Path) -> None:
    """Log to stderr and to `<workdir>/run.log` (appended across resumes; by process 0 of several)."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        handlers = [logging.StreamHandler()]
        if sharding.is_writer():  # one writer of run.log among several processes
            handlers.append(logging.FileHandler(workdir / "run.log"))
    except OSError as e:
        raise io.WriteError(e.errno or 0, f"cannot create the work dir {workdir}: {e.strerror}. "
                            "Choose a writable --workdir.") from None
    process = f"[process {jax.process_index()}] " if sharding.multi_process() else ""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {process}%(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("hybrid_jax").info("work dir %s; device %s (%s)", workdir, jax.devices()[0],
                                         jax.default_backend())


def compile_cache(directory: Path) -> None:
    """Reuse compiled XLA programs across runs and resumes (JAX's persistent compilation cache).

    Set once at the entry point, before anything compiles: every program is cached, however fast
    it compiled, since a rerun of a stage recompiles the same samplers and probes."""
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def print_summary(run: "pipeline.Run", summaries: dict) -> None:
    print(f"\n== hybrid_jax {run.cfg.name}: {run.workdir} ==")
    if "data" in summaries:
        d = summaries["data"]
        print(("STAND-IN DATA (not CIFAR-10): " if d["stand_in"] else "data: ") + d["source"])
    for name, s in summaries.items():
        shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in s.items()
                 if not isinstance(v, (dict, list))}
        print(f"  {name:<10} " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    report = run.path("report", "report.md")
    if report.exists():
        print(f"report: {report}")
