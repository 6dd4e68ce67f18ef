"""A work directory: the config it was made with, and the stage records (`done.json`) inside it.

`run.json` pins what the trained models depend on (the preset version, the `geometry` and `data`
sections and each trained network's section: `model_a`, `model_b`, `corrector`, and those of the
families a preset adds). A work dir made under other values of those
is refused instead of mixed: retraining is hours at paper scale. Every other field (seeds,
labeler, router, cost) may change between runs: `run.json` is updated and the stages that
depend on the changed fields re-run, nothing else (see `pipeline.run_stages`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import typing
from pathlib import Path

from hybrid_jax import config as config_lib
from hybrid_jax import io, sharding
from hybrid_jax.config import Preset
from hybrid_jax.generators import registry

log = logging.getLogger("hybrid_jax.rundir")


class RunDirError(ValueError):
    """The work dir belongs to another config or preset version."""


@dataclasses.dataclass(frozen=True)
class Run:
    cfg: Preset
    workdir: Path
    labels_csv: str | None = None  # a human labels CSV to import
    devices: int = 0  # > 0: data-parallel training and sampling over a mesh of this many devices

    @property
    def mesh(self):
        return sharding.make_mesh(self.devices) if self.devices else None

    def path(self, *parts) -> Path:
        return self.workdir.joinpath(*parts)


def _sections(cfg: Preset, networks) -> dict:
    return {"geometry": config_lib.to_dict(cfg.geometry), "data": config_lib.to_dict(cfg.data),
            **{n.name: config_lib.to_dict(n.section(cfg)) for n in networks}}


def pinned(cfg: Preset) -> dict:
    """What trained models depend on: the geometry, the data and each network's section (one per training stage)."""
    return _sections(cfg, registry.networks(cfg))


def _stored_pinned(stored: dict, old: Preset) -> dict:
    """The pinned sections of a work dir's `run.json` (`old`: its config as a Preset, fields added since at their
    defaults): the study's own networks' read off `old`, the added families' networks' as written."""
    own = _sections(old, (n for f in registry.BUILTIN if f.settings(old) is not None for n in f.networks))
    return {**stored.get("pinned", {}), **own}


def check_workdir(cfg: Preset, workdir) -> list[str]:
    """Refuse a work dir whose trained models came from another config, or one that cannot be created;
    writes nothing. Returns the config fields changed since its last run (empty for a new work dir)."""
    workdir = Path(workdir)
    path = workdir / "run.json"
    if not path.exists():
        parent = next(p for p in (workdir, *workdir.parents) if p.exists())
        if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
            raise io.WriteError(0, f"cannot create the work dir {workdir}: {parent} is not a writable folder. "
                                "Choose a writable --workdir.")
        return []
    stored = io.read_json(path)
    old = preset_from_dict(stored["config"])
    theirs, ours = _stored_pinned(stored, old), pinned(cfg)
    common = [k for k in ours if k in theirs]  # a network of one config only: trained in one work dir, not mixed
    differ = config_lib.diff({k: theirs[k] for k in common}, {k: ours[k] for k in common})
    if stored.get("version") != cfg.version:
        differ.insert(0, f"version: {stored.get('version')!r} != {cfg.version!r}")
    if differ:
        raise RunDirError(f"{workdir} was made by preset {stored['preset']!r} (version {stored.get('version')}) "
                          f"whose trained models differ from this config; differing fields: "
                          f"{'; '.join(differ[:8])}. Use another --workdir (or delete this one) instead of "
                          "mixing results.")
    return config_lib.diff(config_lib.to_dict(old), config_lib.to_dict(cfg))


def open_run(cfg: Preset, workdir, labels_csv: str | None = None, **kw) -> Run:
    """Create or reopen a work dir for `cfg`; refuse one whose trained models came from another config."""
    workdir = Path(workdir)
    new = not (workdir / "run.json").exists()
    changed = check_workdir(cfg, workdir)
    if changed:
        log.info("config changed since the last run (%s); the stages that depend on it re-run",
                 "; ".join(changed[:8]))
    if new or changed:
        io.write_json(workdir / "run.json", {"preset": cfg.name, "version": cfg.version,
                                             "config": config_lib.to_dict(cfg), "pinned": pinned(cfg)})
    return Run(cfg, workdir, labels_csv, **kw)


def load_run(workdir, families: tuple = ()) -> Run:
    """Reopen a finished or partial work dir with the config of its last run. Families its preset added as values
    (`Preset.families`) are code, which `run.json` does not hold: pass the same ones again as `families`."""
    stored = io.read_json(Path(workdir) / "run.json")
    added = [f["name"] for f in stored["config"].get("families", [])]
    if added != [f.name for f in families]:
        raise RunDirError(f"{workdir} was made with the added generator families {added}; pass those Family values "
                          f"as `families` (got {[f.name for f in families]})")
    return Run(dataclasses.replace(preset_from_dict(stored["config"]), families=tuple(families)), Path(workdir))


def preset_from_dict(d: dict) -> Preset:
    """The Preset a config dict describes; fields it lacks (added since it was written) take the
    values of the preset of the same name, else the defaults."""
    def build(cls, values, default):
        kwargs, hints = {}, typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in values:
                if default is not None:
                    kwargs[f.name] = getattr(default, f.name)
                continue
            v, sub = values[f.name], config_lib.section_type(hints[f.name])
            elem = config_lib.section_type((typing.get_args(hints[f.name]) or (None,))[0])
            if sub is not None and isinstance(v, dict):  # a section (also an optional one that is set)
                kwargs[f.name] = build(sub, v, None if default is None else getattr(default, f.name))
            elif elem is not None and isinstance(v, (list, tuple)):  # a tuple of sections
                kwargs[f.name] = tuple(build(elem, x, None) for x in v)
            else:
                kwargs[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)
    return build(Preset, d, config_lib.PRESETS.get(d.get("name")))


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hash(path) -> str | None:
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else None


def done_record(run: Run, stage: str) -> dict | None:
    path = run.path(stage, "done.json")
    return io.read_json(path) if path.exists() else None


def is_done(run: Run, stage: str, fp: str) -> bool:
    record = done_record(run, stage)
    return record is not None and record.get("fingerprint") == fp


def begin(run: Run, stage: str, fp: str) -> None:
    """Before a `fresh` stage runs under fingerprint `fp`: what another fingerprint left in its folder (a finished
    run whose config or inputs have changed since, or a run interrupted under another config) is removed, so no
    stale checkpoint is resumed; an interrupted run of `fp` stays (it resumes). Then the folder's `started.json`
    names `fp`. Every process calls it (the writer removes, all wait)."""
    folder = run.path(stage)
    started = folder / "started.json"
    theirs = {r.get("fingerprint") for r in (done_record(run, stage), started.exists() and io.read_json(started))
              if r}
    if theirs - {fp} and sharding.is_writer():
        log.info("stage %s: removing the outputs of fingerprint %s (now %s)", stage, sorted(theirs - {fp}), fp)
        stale = folder.with_name(f".{stage}.stale.{os.getpid()}")
        folder.rename(stale)  # one step: a crash leaves the stage either whole or gone
        shutil.rmtree(stale)
    sharding.sync(f"begin {stage}")
    io.write_json(started, {"fingerprint": fp})


def mark_done(run: Run, stage: str, fp: str, summary: dict) -> dict:
    io.write_json(run.path(stage, "done.json"), {"fingerprint": fp, "summary": summary,
                                                 "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    return summary


def summary(run: Run, stage: str) -> dict:
    """The summary a finished stage recorded."""
    record = done_record(run, stage)
    if record is None:
        raise FileNotFoundError(f"stage {stage} has not finished in {run.workdir}; run it first")
    return record["summary"]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the study: it owns `<workdir>/<name>/` and re-runs only when what it depends on changed.

    `config(cfg)` returns the config values it reads, `after` the stages whose outputs it reads
    (their fingerprints chain into its own), `inputs(run)` anything outside the work dir (hashes).
    `version` is bumped when the stage's outputs change meaning or format, so a work dir written by
    older code re-runs that stage (and what follows) instead of mixing formats; 0 adds nothing.
    `check(run)` reads and validates what the stage will take from outside the work dir (a data source, a
    labels file) and raises a user error naming the problem; it writes nothing and runs, for every stage
    that is to run, before the first stage starts (`pipeline.check_inputs`). `fresh`: its folder holds only what it
    makes (a training stage's checkpoints), so a run under a new fingerprint starts from an empty folder (`begin`);
    a stage whose folder also holds inputs (the labels page's CSVs) or caches keyed by their own fingerprints (the
    seeds stage's batches, the allocation's option images) keeps it.
    """

    name: str
    run: "typing.Callable[[Run], dict]"
    config: "typing.Callable[[Preset], tuple]" = lambda cfg: ()
    after: tuple[str, ...] = ()
    inputs: "typing.Callable[[Run], tuple]" = lambda run: ()
    version: int = 0
    check: "typing.Callable[[Run], None]" = lambda run: None
    fresh: bool = False

    def fingerprint(self, run: Run, upstream: dict[str, str]) -> str:
        values = [config_lib.to_dict(v) if dataclasses.is_dataclass(v) else v for v in self.config(run.cfg)]
        versioned = (self.version,) if self.version else ()
        return fingerprint(self.name, values, [upstream[a] for a in self.after], self.inputs(run), *versioned)


# ----------------------------------------------------------------------------- one writer per work dir

LOCK_FILE = "run.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _take_lock(path: Path, holder: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(holder, f)
    return True


def _acquire(workdir: Path, me: dict) -> None:
    path = workdir / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    while not _take_lock(path, me):
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):  # being written this instant, or torn: look again
            time.sleep(0.05)
            continue
        if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1))):
            log.warning("taking over the lock of a process that is gone (pid %s, started %s)", holder.get("pid"),
                        holder.get("started"))
            path.unlink(missing_ok=True)
            continue
        raise RunDirError(f"{workdir} is in use by another run (host {holder.get('host')}, pid {holder.get('pid')}, "
                          f"started {holder.get('started')}); wait for it to finish or use another --workdir")


@contextlib.contextmanager
def lock(workdir) -> "typing.Iterator[None]":
    """Hold `<workdir>/run.lock` while a run writes there: a second run on the same work dir is refused
    at once (RunDirError naming the holder); the lock of a dead process on this host is taken over.
    In a run of several processes, process 0 holds it for all, and all are refused alike."""
    workdir = Path(workdir)
    refused = None
    if sharding.is_writer():
        try:
            _acquire(workdir, {"host": socket.gethostname(), "pid": os.getpid(),
                               "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        except RunDirError as e:
            refused = e
    if not bool(sharding.agree(refused is None)):
        raise refused or RunDirError(f"{workdir} is in use by another run (process 0 of this run was refused)")
    try:
        yield
    finally:
        if sharding.is_writer():
            (workdir / LOCK_FILE).unlink(missing_ok=True)
