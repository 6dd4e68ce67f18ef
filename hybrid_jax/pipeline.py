"""The study as resumable stages over one work directory.

Each stage writes its outputs atomically under `<workdir>/<stage>/` and, last, a
`done.json` holding a fingerprint of everything it depends on (its config section, the
data, the human labels file, upstream fingerprints). A stage whose `done.json` matches is
skipped; training stages resume from their newest orbax checkpoint; the seeds stage resumes
from its newest finished batch. `run.json` pins the preset: a work dir made under another
config or preset version is refused instead of mixed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from hybrid_jax import config as config_lib
from hybrid_jax import data as data_lib
from hybrid_jax import features as features_lib
from hybrid_jax import cost, io, labeler, labels as labels_lib, model_a, model_b, router as router_lib, routing
from hybrid_jax import sharding
from hybrid_jax import train as train_lib
from hybrid_jax.checkpoint import Checkpointer
from hybrid_jax.config import Preset

log = logging.getLogger("hybrid_jax.pipeline")


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


# ----------------------------------------------------------------------------- run dir

def open_run(cfg: Preset, workdir, labels_csv: str | None = None, **kw) -> Run:
    """Create or reopen a work dir for `cfg`, refusing one made under another config."""
    workdir = Path(workdir)
    meta = {"preset": cfg.name, "version": cfg.version, "config": config_lib.to_dict(cfg)}
    path = workdir / "run.json"
    if path.exists():
        stored = io.read_json(path)
        differing = config_lib.diff(stored["config"], meta["config"])
        if differing:
            raise RunDirError(f"{workdir} was made by preset {stored['preset']!r} (version {stored['version']}) "
                              f"with another config; differing fields: {'; '.join(differing[:8])}. "
                              "Use another --workdir (or delete this one) instead of mixing results.")
    else:
        io.write_json(path, meta)
    return Run(cfg, workdir, labels_csv, **kw)


def load_run(workdir) -> Run:
    """Reopen a finished or partial work dir with the exact config it was made with."""
    stored = io.read_json(Path(workdir) / "run.json")
    return Run(preset_from_dict(stored["config"]), Path(workdir))


def preset_from_dict(d: dict) -> Preset:
    def build(cls, values):
        kwargs = {}
        for f in dataclasses.fields(cls):
            v = values[f.name]
            if dataclasses.is_dataclass(f.default) or (f.default_factory is not dataclasses.MISSING):
                kwargs[f.name] = build(type(f.default) if dataclasses.is_dataclass(f.default) else f.default_factory, v)
            else:
                kwargs[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)
    return build(Preset, d)


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_hash(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else None


def is_done(run: Run, stage: str, fingerprint: str) -> bool:
    path = run.path(stage, "done.json")
    return path.exists() and io.read_json(path).get("fingerprint") == fingerprint


def _mark_done(run: Run, stage: str, fingerprint: str, summary: dict) -> dict:
    io.write_json(run.path(stage, "done.json"), {"fingerprint": fingerprint, "summary": summary,
                                                 "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    return summary


# ----------------------------------------------------------------------------- data

def load_data(run: Run) -> dict[str, np.ndarray]:
    return io.read_npz(run.path("data", "images.npz"))


def stage_data(run: Run) -> dict:
    d = run.cfg.data
    path = d.path or None
    train = data_lib.load_images(d.class_name, "train", path, max_images=d.max_images + d.holdout)
    try:
        if train.stand_in:  # the stand-in has no test split: hold out from the training crops
            raise data_lib.DataError("no test split")
        test = data_lib.load_images(d.class_name, "test", path, max_images=d.holdout)
        held_out, train_images = test.images, train.images[: d.max_images]
        holdout_from = "the test split"
    except data_lib.DataError:
        train_images, held_out = data_lib.holdout_split(train.images, d.holdout)
        holdout_from = f"the last {d.holdout} training images of the class (no test split available)"
    io.write_npz(run.path("data", "images.npz"), train=train_images, holdout=held_out)
    if train.stand_in:
        log.warning("DATA: %s", train.source)
    return {"source": train.source, "stand_in": train.stand_in, "n_train": len(train_images),
            "n_holdout": len(held_out), "holdout_from": holdout_from}


# ----------------------------------------------------------------------------- training

def _model_specs(cfg: Preset) -> dict[str, tuple[object, Callable, Callable]]:
    """name -> (config section, loss_fn, init(key) -> params)."""
    b_init = lambda key: model_b.init_params(cfg.model_b, cfg.corrector, key)
    return {
        "model_a": (cfg.model_a, model_a.make_loss(cfg.model_a), lambda key: model_a.init_params(cfg.model_a, key)),
        "model_b": (cfg.model_b, model_b.make_ar_loss(cfg.model_b), lambda key: b_init(key)["ar"]),
        "corrector": (cfg.corrector, model_b.make_corrector_loss(cfg.corrector), lambda key: b_init(key)["corrector"]),
    }


def _guard(run: Run, section) -> dict:
    data_done = io.read_json(run.path("data", "done.json"))
    return {"model": config_lib.to_dict(section), "data": data_done["fingerprint"]}


def make_train_stage(name: str) -> Callable[[Run], dict]:
    def stage(run: Run) -> dict:
        section, loss_fn, init = _model_specs(run.cfg)[name]
        images = load_data(run)["train"]
        ckpt = Checkpointer(run.path(name, "ckpt"), _guard(run, section))
        result = train_lib.train(loss_fn, init(jax.random.key(section.train.seed)), images, section.train, ckpt,
                                 desc=f"train {name}", mesh=run.mesh)
        Checkpointer(run.path(name, "params"), _guard(run, section)).save(len(result.losses), result.params)
        io.write_npz(run.path(name, "losses.npz"), losses=result.losses)
        return {"steps": len(result.losses), "final_loss": float(np.mean(result.losses[-10:])),
                "first_loss": float(result.losses[0]), "resumed_from": result.resumed_from,
                "seconds": result.seconds, "ema": section.train.ema_decay > 0}
    stage.__name__ = f"stage_{name}"
    return stage


def restore_params(run: Run, name: str):
    """Trained params of "model_a", "model_b" (the decoder) or "corrector" from the work dir."""
    section, _, init = _model_specs(run.cfg)[name]
    ckpt = Checkpointer(run.path(name, "params"), _guard(run, section))
    params, step = ckpt.restore(jax.eval_shape(init, jax.random.key(0)))
    if params is None:
        raise FileNotFoundError(f"no trained {name} in {run.workdir}; run the train stage first")
    return params


def restore_model_b(run: Run) -> dict:
    return {"ar": restore_params(run, "model_b"), "corrector": restore_params(run, "corrector")}


def samplers(cfg: Preset) -> tuple[model_a.Sampler, model_b.Sampler]:
    return model_a.make_sampler(cfg.model_a), model_b.make_sampler(cfg.model_b, cfg.corrector)


# ----------------------------------------------------------------------------- seeds + features

def _png(image: np.ndarray) -> bytes:
    import io as _io

    from PIL import Image
    buf = _io.BytesIO()
    Image.fromarray(np.round((np.clip(image, -1, 1) + 1) * 127.5).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def fixed_batches(seeds: np.ndarray, batch_size: int):
    """(start, chunk, chunk padded to `batch_size`) over `seeds`: one shape, so one compilation."""
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start:start + batch_size]
        yield start, chunk, np.resize(chunk, batch_size)


def stage_seeds(run: Run) -> dict:
    """A's image, B's image and B's k-step probe (features) for every seed, batch by batch (resumable)."""
    cfg = run.cfg
    sa, sb = samplers(cfg)
    mesh = run.mesh
    pa, pb = sharding.replicate((restore_params(run, "model_a"), restore_model_b(run)), mesh)
    compute_features = jax.jit(features_lib.compute)
    seeds = np.arange(cfg.seeds.num_seeds)
    bs = cfg.seeds.batch_size
    starts = range(0, len(seeds), bs)
    for start, chunk, padded in tqdm(fixed_batches(seeds, bs), total=len(starts), desc="seeds", unit="batch",
                                     disable=None):
        part = run.path("seeds", "parts", f"part_{start:06d}.npz")
        if part.exists():
            continue
        keys_a, keys_b = sharding.shard_batch(routing.seed_keys(padded, cfg.seeds.base_seed), mesh)
        prefix = sb.ar_prefix(pb, keys_b, cfg.router.prefix_steps)
        feats = compute_features(prefix)
        images_b = sb.finish(pb, prefix)
        images_a = sa.sample_keys(pa, keys_a)
        n = len(chunk)
        io.write_npz(part, seeds=chunk, images_a=np.asarray(images_a)[:n], images_b=np.asarray(images_b)[:n],
                     features=np.asarray(feats)[:n])
    parts = [io.read_npz(run.path("seeds", "parts", f"part_{s:06d}.npz")) for s in starts]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    io.write_npz(run.path("seeds", "seeds.npz"), seeds=merged["seeds"], images_a=merged["images_a"],
                 images_b=merged["images_b"])
    for s, a, b in zip(merged["seeds"], merged["images_a"], merged["images_b"]):
        io.write_bytes(run.path("seeds", "png", f"seed_{s:06d}_A.png"), _png(a))
        io.write_bytes(run.path("seeds", "png", f"seed_{s:06d}_B.png"), _png(b))
    names = features_lib.feature_names(cfg.model_b.decoder.num_layers)
    io.write_npz(run.path("features", "features.npz"), seeds=merged["seeds"], features=merged["features"],
                 names=np.asarray(names))
    return {"n_seeds": len(seeds), "passes_a": sa.passes, "passes_b": sb.passes}


def stage_features(run: Run) -> dict:
    """Export the probe features as a plain CSV (seed, one column per feature)."""
    f = io.read_npz(run.path("features", "features.npz"))
    names = [str(n) for n in f["names"]]
    rows = ["seed," + ",".join(names)] + [f"{s}," + ",".join(f"{v:.9g}" for v in row)
                                          for s, row in zip(f["seeds"], f["features"])]
    io.write_text(run.path("features", "features.csv"), "\n".join(rows) + "\n")
    if not np.isfinite(f["features"]).all():
        raise ValueError("non-finite router features; the models may have diverged")
    return {"n_seeds": len(f["seeds"]), "n_features": len(names)}


def load_features(run: Run) -> tuple[np.ndarray, np.ndarray, list[str]]:
    f = io.read_npz(run.path("features", "features.npz"))
    return f["seeds"], f["features"], [str(n) for n in f["names"]]


# ----------------------------------------------------------------------------- labels

def human_labels_path(run: Run) -> Path:
    return run.path("labels", "human.csv")


def stage_labels(run: Run) -> dict:
    """Automated labels (always) and human labels (imported from --labels or written by the labeling page)."""
    cfg = run.cfg
    data = load_data(run)
    seeds = io.read_npz(run.path("seeds", "seeds.npz"))
    emb = labeler.embed_all
    scorer = labeler.fit_scorer(emb(data["train"]), cfg.labeler.k)
    score = lambda x: scorer(emb(x))
    feats = {k: emb(seeds[k]) for k in ("images_a", "images_b")}
    feats["holdout"] = emb(data["holdout"])
    s_a, s_b, s_real = (scorer(feats[k]) for k in ("images_a", "images_b", "holdout"))
    auto = dict(zip(map(int, seeds["seeds"]), labeler.label_pairs(s_a, s_b, s_real, cfg.labeler)))
    labels_lib.write_labels(run.path("labels", "auto.csv"), auto)
    z = {k: (v - scorer.mean) / scorer.scale for k, v in feats.items()}  # the scorer's standardised space
    io.write_npz(run.path("labels", "scores.npz"), score_a=s_a, score_b=s_b, score_real=s_real,
                 feats_a=z["images_a"], feats_b=z["images_b"], feats_real=z["holdout"])
    validation = labeler.validate(score, data["holdout"])
    lc = cfg.labeler
    rule = (f"rank rule: the {lc.a_needed_share:.1%} of seeds where A's realism most exceeds B's are A_needed"
            if lc.a_needed_share > 0 else
            f"absolute rule: A_needed iff realism(A) - realism(B) > {lc.margin} x std(realism of held-out real)")
    out = {"rule": rule, "auto_cheap_ok": sum(v == "cheap_ok" for v in auto.values()), "n": len(auto),
           "validation_auc": validation, "mean_score": {"A": float(s_a.mean()), "B": float(s_b.mean()),
                                                        "real": float(s_real.mean())}}
    human = _import_human_labels(run, seeds["seeds"])
    if human:
        out["human_cheap_ok"] = sum(v == "cheap_ok" for v in human.values())
        out["human_n"] = len(human)
        out["agreement"] = labels_lib.agreement(human, auto)
    return out


def _import_human_labels(run: Run, seeds: np.ndarray) -> dict[int, str]:
    path = human_labels_path(run)
    if run.labels_csv:
        labels_lib.write_labels(path, *labels_lib.read_labels_table(run.labels_csv, known_seeds=seeds.tolist()))
    return labels_lib.read_labels(path, known_seeds=seeds.tolist()) if path.exists() else {}


def router_labels(run: Run) -> tuple[dict[int, str], str]:
    """Human labels where the run has a complete set, else the automated ones."""
    seeds = io.read_npz(run.path("seeds", "seeds.npz"))["seeds"].tolist()
    path = human_labels_path(run)
    if path.exists():
        human = labels_lib.read_labels(path, known_seeds=seeds)
        if len(human) == len(seeds):
            return human, "human"
        log.warning("human labels cover %d of %d seeds; the router uses the automated labels", len(human), len(seeds))
    return labels_lib.read_labels(run.path("labels", "auto.csv"), known_seeds=seeds), "automated"


# ----------------------------------------------------------------------------- router

def stage_router(run: Run) -> dict:
    """Ablation -> kept features -> 10-fold CV, best of n splits (saved), threshold sweep, prior baseline."""
    cfg = run.cfg.router
    seeds, X, names = load_features(run)
    labels, source = router_labels(run)
    y = labels_lib.to_targets(labels, seeds.tolist())
    abl = router_lib.ablation(X, y, names, cfg) if cfg.ablation else None
    kept = abl["kept"] if abl else names
    cols = [names.index(n) for n in kept]
    Xk = X[:, cols]
    cv = router_lib.cross_validate(Xk, y, cfg, kept)
    best = router_lib.best_of_splits(Xk, y, cfg, kept)
    p_test = router_lib.predict_proba(best["router"], Xk[best["test_idx"]])
    sweep = router_lib.threshold_sweep(y[best["test_idx"]], p_test, cfg.sweep)
    router_lib.save_router(best["router"], run.path("router"), cfg, candidate_features=names)
    best = {k: v for k, v in best.items() if k != "router"}
    results = {"label_source": source, "n": len(y), "n_cheap_ok": int(y.sum()), "kept": kept,
               "ablation": abl, "cv": cv, "best_split": best, "sweep": sweep,
               "prior": router_lib.class_prior_baseline(y)}
    io.write_json(run.path("router", "results.json"), results)
    return {"label_source": source, "kept": len(kept), "of": len(names),
            "cv_precision": cv["test_mean"]["precision"], "best_precision": best["test"]["precision"]}


def load_router(run: Run):
    """(TreeEnsemble, indices of its features among the candidates) of the run's router."""
    ens, meta = router_lib.load_router(run.path("router"))
    return ens, [meta["candidate_features"].index(n) for n in ens.feature_names]


def make_routed_sampler(run: Run) -> routing.RoutedSampler:
    ens, idx = load_router(run)
    sa, sb = samplers(run.cfg)
    return routing.make_routed_sampler(sa, sb, ens, idx, run.cfg.router.prefix_steps)


# ----------------------------------------------------------------------------- routed evaluation + cost

def stage_routed(run: Run) -> dict:
    cfg = run.cfg
    routed = make_routed_sampler(run)
    pa, pb = restore_params(run, "model_a"), restore_model_b(run)
    seeds = io.read_npz(run.path("seeds", "seeds.npz"))
    labels, source = router_labels(run)
    oracle_to_a = np.array([labels[int(s)] == "A_needed" for s in seeds["seeds"]])
    keys_a, keys_b = routing.seed_keys(seeds["seeds"], cfg.seeds.base_seed)
    to_a = np.concatenate([
        np.asarray(routed.probe(pb, routing.seed_keys(padded, cfg.seeds.base_seed)[1])[3])[: len(chunk)]
        for _, chunk, padded in fixed_batches(seeds["seeds"], cfg.seeds.batch_size)])
    io.write_npz(run.path("routed", "decisions.npz"), seeds=seeds["seeds"], to_a=to_a, oracle_to_a=oracle_to_a)
    table, routed_out = cost.cost_table(routed, pa, pb, keys_a, keys_b, oracle_to_a, cfg)
    quality = cost.quality_table(io.read_npz(run.path("labels", "scores.npz")), to_a, oracle_to_a)
    check = cost.consistency(routed_out, seeds)
    out = {"label_source": source, "share_to_a_all_seeds": float(to_a.mean()), "cost": table, "quality": quality,
           "consistency": check, "device": str(jax.devices()[0]), "platform": jax.default_backend()}
    io.write_json(run.path("routed", "cost.json"), out)
    return {"share_to_a": float(to_a.mean()), "device": out["device"]}


# ----------------------------------------------------------------------------- orchestration

def _stage_table(run: Run) -> list[tuple[str, Callable[[Run], dict], Callable[[Run, dict], str]]]:
    """(name, function, fingerprint(run, upstream fingerprints)) in dependency order."""
    cfg = run.cfg
    sec = lambda *s: (lambda r, up: _fingerprint([config_lib.to_dict(x) for x in s], up))
    return [
        ("data", stage_data, sec(cfg.data)),
        ("model_a", make_train_stage("model_a"), sec(cfg.model_a)),
        ("model_b", make_train_stage("model_b"), sec(cfg.model_b)),
        ("corrector", make_train_stage("corrector"), sec(cfg.corrector)),
        ("seeds", stage_seeds, sec(cfg.seeds, cfg.router)),
        ("features", stage_features, sec()),
        ("labels", stage_labels, lambda r, up: _fingerprint(config_lib.to_dict(cfg.labeler), up,
                                                           _file_hash(human_labels_path(r)),
                                                           _file_hash(Path(r.labels_csv)) if r.labels_csv else None)),
        ("router", stage_router, sec(cfg.router)),
        ("routed", stage_routed, sec(cfg.cost)),
        ("report", _stage_report, sec()),
    ]


def _stage_report(run: Run) -> dict:
    from hybrid_jax import report
    return {"report": str(report.write_report(run))}


STAGE_NAMES = ("data", "model_a", "model_b", "corrector", "seeds", "features", "labels", "router", "routed", "report")


def run_stages(run: Run, only: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Run every stage not already done (or just `only`, which must have their inputs ready)."""
    summaries, up = {}, []
    for name, fn, fingerprint in _stage_table(run):
        fp = fingerprint(run, list(up))
        up.append(fp)
        if only and name not in only:
            continue
        if is_done(run, name, fp):
            log.info("stage %-9s done already, skipped", name)
            summaries[name] = io.read_json(run.path(name, "done.json"))["summary"]
            continue
        log.info("stage %-9s running", name)
        t0 = time.perf_counter()
        summary = fn(run)
        summary["stage_seconds"] = time.perf_counter() - t0
        summaries[name] = _mark_done(run, name, fp, summary)
        log.info("stage %-9s finished in %.1f s", name, summary["stage_seconds"])
    return summaries
