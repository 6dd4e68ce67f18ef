"""Stage `labels`: a validated quality score for every seed's A and B image, the automated labels from it,
and the comparison with human labels when they are imported or written by the labeling page.

A label means what the brief's people meant: A_needed iff B's image is clearly worse than A's.
The score (`hybrid_jax.quality.score`, docs/labeler.md) is trained here: a small CIFAR-10
classifier (resumable, orbax checkpoints under `labels/classifier/`) where the data source has
the ten classes, then a degradation discriminator on natural-image statistics and the
classifier's features. Before anything is trusted it is validated on held-out real images
against every degradation family at every strength, leave-one-family-out (`labels/validation.json`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from pathlib import Path

import jax
import numpy as np
import scipy.stats
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from hybrid_jax import config as config_lib
from hybrid_jax import data as data_lib
from hybrid_jax import io
from hybrid_jax import labels as labels_lib
from hybrid_jax.checkpoint import Checkpointer
from hybrid_jax.quality import classifier as clf_lib
from hybrid_jax.quality import degradations, inception, realism, rule, trees, validation
from hybrid_jax.quality import score as score_lib
from hybrid_jax.rundir import Run, Stage, done_record, file_hash, fingerprint
from hybrid_jax.stages import data as data_stage
from hybrid_jax.stages import seeds as seeds_stage

log = logging.getLogger("hybrid_jax.stages.labels")

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
CIFAR10_TFDS = data_lib.TFDS_PREFIX + "cifar10"


def human_labels_path(run: Run) -> Path:
    return run.path("labels", "human.csv")


# ----------------------------------------------------------------------------- inputs

def _cifar10_source(run: Run) -> tuple[str | None, str]:
    """(the data stage's CIFAR-10 source, "") or (None, why the classifier is off)."""
    d = run.cfg.data
    done = done_record(run, "data")["summary"]
    if done["stand_in"]:
        return None, "stand-in data has no classes"
    path = data_lib.resolve_source(d.path, offline=d.offline, class_name=d.class_name)
    if path.startswith(data_lib.TFDS_PREFIX) and path[len(data_lib.TFDS_PREFIX):].split("/")[0].split(":")[0] != "cifar10":
        return None, f"the data source {path} is not CIFAR-10"
    if d.class_name not in data_lib.CIFAR10_CLASSES:
        return None, f"{d.class_name!r} is not a CIFAR-10 class"
    return path, ""


def _other_classes(run: Run, path: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """({class: training images}, {class: held-out images}) of the nine other CIFAR-10 classes."""
    lc = run.cfg.labeler
    train, held = {}, {}
    for c in data_lib.CIFAR10_CLASSES:
        if c == run.cfg.data.class_name:
            continue
        images = data_lib.load_images(c, "train", path, max_images=lc.images_per_class + lc.other_holdout).images
        if len(images) < 2:
            raise data_lib.DataError(f"the data source has {len(images)} image(s) of class {c!r}; the labeler's "
                                     "classifier needs at least 2 per class. Use the complete CIFAR-10.")
        n_held = min(lc.other_holdout, len(images) // 2)
        train[c], held[c] = images[:-n_held], images[-n_held:]
    return train, held


def _wrong_class_levels(class_name: str, images: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """{level of `wrong class`: images of its classes, as many from each class (shuffled, seeded)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for level, classes in degradations.wrong_class_levels(class_name).items():
        per = min(len(images[c]) for c in classes)
        x = np.concatenate([images[c][:per] for c in classes])
        out[level] = x[rng.permutation(len(x))]
    return out


# ----------------------------------------------------------------------------- the classifier

def _classifier_dir(run: Run) -> Path:
    lc = run.cfg.labeler
    fp = fingerprint(lc.classifier_widths, lc.embed_dim, lc.images_per_class, lc.other_holdout,
                     config_lib.to_dict(lc.train), done_record(run, "data")["fingerprint"])
    return run.path("labels", "classifier", fp)


def _train_classifier(run: Run, own: np.ndarray, others: dict[str, np.ndarray]) -> tuple[object, dict]:
    """Trained classifier params (resuming from labels/classifier/<config>/) and a summary."""
    lc, cls = run.cfg.labeler, data_lib.CIFAR10_CLASSES
    net = clf_lib.make_net(lc.classifier_widths, lc.embed_dim)
    images = np.concatenate([own, *others.values()])
    labels = np.concatenate([np.full(len(own), cls.index(run.cfg.data.class_name))]
                            + [np.full(len(v), cls.index(c)) for c, v in others.items()])
    directory = _classifier_dir(run)
    guard = {"labeler": config_lib.to_dict(lc), "data": done_record(run, "data")["fingerprint"]}
    result = clf_lib.train_classifier(net, images, labels, lc.train, Checkpointer(directory / "ckpt", guard))
    Checkpointer(run.path("labels", "model", "classifier"), guard).save(len(result.losses), result.params)
    return result.params, {"steps": len(result.losses), "images": len(images),
                           "final_loss": float(np.nanmean(result.losses[-10:])),
                           "resumed_from": result.resumed_from, "seconds": result.seconds}


def _restore_classifier(run: Run):
    lc = run.cfg.labeler
    net = clf_lib.make_net(lc.classifier_widths, lc.embed_dim)
    guard = {"labeler": config_lib.to_dict(lc), "data": done_record(run, "data")["fingerprint"]}
    template = jax.eval_shape(lambda: clf_lib.init_params(net, lc.train.seed))
    params, _ = Checkpointer(run.path("labels", "model", "classifier"), guard).restore(template)
    if params is None:
        raise FileNotFoundError(f"no labeler classifier in {run.workdir}; run the labels stage first")
    return net, params


def _featurizer(run: Run, classifier) -> score_lib.Featurize:
    """images -> score.Raw, memoised on the images' bytes (the suite scores the held-out set many times)."""
    lc = run.cfg.labeler
    class_feats = None
    if classifier is not None:
        net, params = classifier
        class_feats = clf_lib.class_features(net, params, data_lib.CIFAR10_CLASSES.index(run.cfg.data.class_name))
    pool = None
    if lc.inception_weights:
        pool_params = inception.load_params(lc.inception_weights, lc.inception_width, lc.inception_size)
        pool = functools.partial(inception.pool_features, pool_params, width=lc.inception_width,
                                 input_size=lc.inception_size)
    featurize = score_lib.make_featurizer(class_feats, pool)
    memo: dict[str, score_lib.Raw] = {}

    def cached(images: np.ndarray) -> score_lib.Raw:
        images = np.ascontiguousarray(images, np.float32)
        key = hashlib.sha1(images.tobytes()).hexdigest() + str(images.shape)
        if key not in memo:
            memo[key] = featurize(images)
        return memo[key]
    return cached


def _tree_config(lc) -> trees.TreeConfig:
    return trees.TreeConfig(iterations=lc.trees, depth=lc.tree_depth, learning_rate=lc.tree_lr, seed=lc.seed)


# ----------------------------------------------------------------------------- the stage

def run_stage(run: Run) -> dict:
    cfg, lc = run.cfg, run.cfg.labeler
    t0 = time.perf_counter()
    data, seeds = data_stage.load(run), seeds_stage.load(run)
    reference, held_out = data["train"], data["holdout"]
    if len(held_out) < 2:
        raise config_lib.ConfigError(f"the labeler needs at least 2 held-out real images, got {len(held_out)}; "
                                     "raise data.holdout")
    source, why_not = _cifar10_source(run)
    out: dict = {}
    classifier, wrong_train, wrong_held = None, None, None
    if source is not None:
        others_train, others_held = _other_classes(run, source)
        params, out["classifier"] = _train_classifier(run, reference, others_train)
        classifier = (clf_lib.make_net(lc.classifier_widths, lc.embed_dim), params)
        wrong_train = _wrong_class_levels(cfg.data.class_name, others_train, lc.seed + 1)
        wrong_held = _wrong_class_levels(cfg.data.class_name, others_held, lc.seed)
    else:
        log.warning("labeler: %s, so the score's classifier (content) part is off and it sees natural-image "
                    "statistics only; the wrong-class check is left out", why_not)
    t_classifier = time.perf_counter()
    featurize = _featurizer(run, classifier)
    if classifier is not None:
        out["classifier"]["accuracy_held_out"] = _held_out_accuracy(classifier, held_out, others_held, cfg)

    # the score: discriminator + calibration (cross-fitted), then leave-one-family-out refits for validation
    ts = score_lib.build_training_set(featurize, reference, lc.negatives_per_cell, wrong_train, seed=1000 + lc.seed)
    reference_raw = featurize(reference)
    tcfg = _tree_config(lc)
    model, oof = score_lib.fit(ts, reference_raw, tcfg, content_weight=lc.content_weight,
                               folds=lc.calibration_folds, quantile=lc.calibration_quantile,
                               temperature=lc.temperature)
    families = [f for f in degradations.FAMILIES if f != "wrong class" or wrong_held is not None]
    lofo = score_lib.leave_one_family_out(ts, model, tcfg, families)
    t_fit = time.perf_counter()

    raw = {"a": featurize(seeds["images_a"]), "b": featurize(seeds["images_b"]), "real": featurize(held_out)}
    s = {k: model.score(v) for k, v in raw.items()}
    s_ref = model.from_log_odds(oof)
    feats = {k: model.space.fd_features(v) for k, v in raw.items()}
    tau, rule_text = rule.label_rule(lc, s["real"])
    auto = dict(zip(map(int, seeds["seeds"]), rule.label_pairs(s["a"], s["b"], s["real"], lc)))
    labels_lib.write_labels(run.path("labels", "auto.csv"), auto)
    io.write_npz(run.path("labels", "scores.npz"), seeds=seeds["seeds"], score_a=s["a"], score_b=s["b"],
                 score_real=s["real"], score_reference=s_ref, feats_a=feats["a"], feats_b=feats["b"],
                 feats_real=feats["real"], feats_reference=model.space.fd_features(reference_raw))
    io.write_npz(run.path("labels", "model", "quality.npz"), **score_lib.to_arrays(model))
    io.write_json(run.path("labels", "model", "meta.json"),
                  {"content": classifier is not None, "inception": bool(lc.inception_weights),
                   "inputs": model.space.input_names()})

    # validation on held-out real images (never trained on), leave-one-family-out; the previous score as baseline
    suite = validation.run_suite(None, held_out, other_classes=wrong_held, families=tuple(families),
                                 score_for_family=lambda f: (lambda x, m=lofo[f]: m.log_odds(featurize(x))))
    base = validation.run_suite(realism.baseline_scorer(reference, lc.k), held_out, other_classes=wrong_held,
                                families=tuple(families))
    io.write_json(run.path("labels", "validation.json"), {
        "suite": suite, "baseline": base, "pass_rule": validation.PASS_TEXT, "leave_one_family_out": True,
        "strengths": {f: [str(v) for v in degradations.FAMILIES[f].strengths] for f in families},
        "units": {f: degradations.FAMILIES[f].unit for f in families}})
    t_val = time.perf_counter()

    out.update({
        "rule": rule_text, "tau": tau, "forced_share": lc.a_needed_share > 0,
        "auto_cheap_ok": sum(v == "cheap_ok" for v in auto.values()), "n": len(auto),
        "score": ("discriminator + classifier" if classifier is not None else "discriminator on statistics only")
                 + (" + Inception" if lc.inception_weights else ""),
        "content": {"used": classifier is not None, "why_not": why_not},
        "validation_auc": suite["auc"],
        "validation": {k: suite[k] for k in ("mean", "min", "strongest", "passed", "problems", "omitted")}
                      | {"rule": validation.PASS_TEXT, "n_real": suite["n_real"], "leave_one_family_out": True},
        "baseline_auc": {"mean": base["mean"], "min": base["min"], "auc": base["auc"]},
        "mean_score": {"A": float(s["a"].mean()), "B": float(s["b"].mean()), "real": float(s["real"].mean())},
        "score_quantiles": {name: _quantiles(v) for name, v in
                            (("A", s["a"]), ("B", s["b"]), ("real", s["real"]), ("reference", s_ref))},
        "sanity": _sanity(s, s_ref, feats, model.space.fd_features(reference_raw)),
        "seconds": {"classifier": t_classifier - t0, "fit": t_fit - t_classifier, "validation": t_val - t_fit},
    })
    if out["sanity"]["warnings"]:
        for w in out["sanity"]["warnings"]:
            log.warning("labeler: %s", w)
    if not suite["passed"]:
        log.warning("labeler validation failed its pass rule (%s): %s", validation.PASS_TEXT,
                    "; ".join(suite["problems"][:5]))
    human = _import_human_labels(run, seeds["seeds"])
    if human:
        out["human_cheap_ok"] = sum(v == "cheap_ok" for v in human.values())
        out["human_n"] = len(human)
        out["agreement"] = agreement(human, auto)
    return out


def _held_out_accuracy(classifier, held_out: np.ndarray, others_held: dict[str, np.ndarray], cfg) -> float:
    """Ten-way accuracy of the classifier on held-out images of every class (none of them trained on)."""
    net, params = classifier
    cls = data_lib.CIFAR10_CLASSES
    images = np.concatenate([held_out, *others_held.values()])
    labels = np.concatenate([np.full(len(held_out), cls.index(cfg.data.class_name))]
                            + [np.full(len(v), cls.index(c)) for c, v in others_held.items()])
    _, logits = clf_lib.make_featurizer(net)(params, score_lib.to_8bit(images))
    return clf_lib.accuracy(logits, labels)


def _quantiles(v: np.ndarray) -> dict:
    v = np.asarray(v, np.float64)
    return {"mean": float(v.mean()), **{f"q{int(q * 100):02d}": float(np.quantile(v, q)) for q in QUANTILES}}


def _sanity(s: dict, s_ref: np.ndarray, feats: dict, feats_ref: np.ndarray) -> dict:
    """Held-out real images against the reference; generated images against held-out real (score vs FD)."""
    lo, hi = np.quantile(s_ref, [0.05, 0.95])
    inside = float(np.mean((s["real"] >= lo) & (s["real"] <= hi)))
    ks = scipy.stats.ks_2samp(s["real"], s_ref)
    fd = {name: rule.frechet_distance(feats[k], feats_ref) for name, k in (("A", "a"), ("B", "b"), ("real", "real"))}
    warnings = []
    same_range = inside >= 0.8 and abs(np.median(s["real"]) - np.median(s_ref)) <= 0.5 * (
        np.quantile(s_ref, 0.75) - np.quantile(s_ref, 0.25) + 1e-9)
    if not same_range:
        warnings.append(f"held-out real images score outside the reference range (median {np.median(s['real']):.3f} "
                        f"vs {np.median(s_ref):.3f}; {inside:.0%} inside the reference's 5-95 % range)")
    for name, k in (("A", "a"), ("B", "b")):
        if s[k].mean() > s["real"].mean() and fd[name] > fd["real"]:
            warnings.append(f"{name}'s images outscore held-out real images (mean quality {s[k].mean():.3f} vs "
                            f"{s['real'].mean():.3f}) while their Frechet distance to the reference images is "
                            f"larger ({fd[name]:.3g} vs {fd['real']:.3g}): the score may reward something real "
                            "images do not have")
    return {"real_inside_reference_5_95": inside, "ks_real_vs_reference": float(ks.statistic),
            "ks_p": float(ks.pvalue), "same_range": bool(same_range), "frechet_to_reference": fd,
            "warnings": warnings}


def agreement(human: dict[int, str], auto: dict[int, str]) -> dict:
    """Automated vs human labels on their common seeds: accuracy, Cohen's kappa (sklearn), the confusion
    table (rows human, columns automated) and the seeds where they disagree."""
    out = labels_lib.agreement(human, auto)
    common = sorted(set(human) & set(auto))
    yh, ya = [human[s] for s in common], [auto[s] for s in common]
    if common and len(set(yh) | set(ya)) > 1:
        out["cohen_kappa"] = float(cohen_kappa_score(yh, ya, labels=list(labels_lib.LABELS)))
    cm = confusion_matrix(yh, ya, labels=list(labels_lib.LABELS)) if common else np.zeros((2, 2), int)
    out["confusion"] = {"labels": list(labels_lib.LABELS), "rows": "human", "columns": "automated",
                        "matrix": cm.tolist()}
    out["disagree"] = [int(s) for s in common if human[s] != auto[s]]
    return out


def _import_human_labels(run: Run, seeds: np.ndarray) -> dict[int, str]:
    path = human_labels_path(run)
    if run.labels_csv:
        labels_lib.write_labels(path, *labels_lib.read_labels_table(run.labels_csv, known_seeds=seeds.tolist()))
    return labels_lib.read_labels(path, known_seeds=seeds.tolist()) if path.exists() else {}


# ----------------------------------------------------------------------------- readers

def router_labels(run: Run) -> tuple[dict[int, str], str]:
    """Human labels where the run has a complete set, else the automated ones; and which."""
    seeds = seeds_stage.load_seed_ids(run).tolist()
    path = human_labels_path(run)
    if path.exists():
        human = labels_lib.read_labels(path, known_seeds=seeds)
        if len(human) == len(seeds):
            return human, "human"
        log.warning("human labels cover %d of %d seeds; the router uses the automated labels", len(human), len(seeds))
    return labels_lib.read_labels(run.path("labels", "auto.csv"), known_seeds=seeds), "automated"


def load_scores(run: Run) -> dict[str, np.ndarray]:
    """Per-seed quality of A's and B's image and of held-out real images, and their labeler features."""
    return io.read_npz(run.path("labels", "scores.npz"))


def load_validation(run: Run) -> dict:
    """The validation suite's results (`labels/validation.json`)."""
    return io.read_json(run.path("labels", "validation.json"))


def _inputs(run: Run) -> tuple:
    w = run.cfg.labeler.inception_weights
    return (file_hash(human_labels_path(run)), file_hash(run.labels_csv) if run.labels_csv else None,
            file_hash(w) if w else None)


STAGE = Stage("labels", run_stage, config=lambda cfg: (cfg.labeler,), after=("data", "seeds"), inputs=_inputs)


def load_model(run: Run) -> tuple[score_lib.QualityModel, score_lib.Featurize]:
    """The labels stage's fitted score and its featurizer, read back from `labels/model/`."""
    meta = io.read_json(run.path("labels", "model", "meta.json"))
    model = score_lib.from_arrays(io.read_npz(run.path("labels", "model", "quality.npz")))
    return model, _featurizer(run, _restore_classifier(run) if meta["content"] else None)


_MODELS: dict[tuple, tuple] = {}


def score_images(run: Run, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(quality [n] in [0, 1], labeler features [n, D]) of any images, by the labels stage's scorer."""
    key = (str(run.workdir.resolve()), done_record(run, "labels")["fingerprint"])
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_model(run)
    model, featurize = _MODELS[key]
    raw = featurize(np.asarray(images, np.float32))
    return model.score(raw), model.space.fd_features(raw)


def tau(run: Run) -> float:
    """The 'about the same' margin on the quality score, calibrated on held-out real images."""
    return rule.calibrate_tau(load_scores(run)["score_real"], run.cfg.labeler.margin_quantile)
